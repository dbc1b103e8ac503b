"""``python -m benchmarks.wide``: the transient graph inside a registry the size of an app.

The harness's transient scenario registers the seven model classes and resolves ``A``
again and again. A container may serve that one key faster than it serves keys in
general: diwire, for one, puts the largest transient graph it holds into the first
``if key is ...`` branch of its generated ``resolve``, and remembers the last key
resolved. This script measures what is left of that in an app: ``FAMILIES`` copies of the
graph, ``A_i(B_i(D_i), C_i(D_i, S))`` of fresh classes sharing one singleton ``S``
(``4 * FAMILIES + 1`` providers), registered the same way as in the harness, and times
two operations:

* ``varying``: resolve every ``A_i`` once, in a fixed shuffled order (the next key is
  never the last one);
* ``one key``: resolve one ``A_i`` from the middle of the registry, again and again.

``manual`` calls each family's hand-written function (``A_i(B_i(D_i()), C_i(D_i(),
get_s()))``) in the same order: the ratios read like the harness's transient column.
Only the libraries with the fastest transient resolve in the harness are measured, with
the same interleaved rounds (``interleave.py``).
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from benchmarks.interleave import compare
from benchmarks.libs.manual import get_s
from benchmarks.model import S, make_init

FAMILIES = 50


@dataclass
class Family:
    a: type
    b: type
    c: type
    d: type

    @property
    def classes(self) -> tuple[type, ...]:
        return (self.d, self.b, self.c, self.a)  # leaves first, as the harness registers


def _class(name: str, *kids: type) -> type:
    return type(name, (), {"__init__": make_init(kids), "__module__": __name__})


def make_families(n: int = FAMILIES) -> list[Family]:
    families = []
    for i in range(n):
        d = _class(f"D{i}")
        b = _class(f"B{i}", d)
        c = _class(f"C{i}", d, S)
        families.append(Family(a=_class(f"A{i}", b, c), b=b, c=c, d=d))
    return families


# -- one resolve function per library: key -> instance -------------------------------


def _manual(families: list[Family]) -> dict[type, Callable[[], Any]]:
    def maker(f: Family) -> Callable[[], Any]:
        a, b, c, d = f.a, f.b, f.c, f.d
        return lambda: a(b(d()), c(d(), get_s()))

    return {f.a: maker(f) for f in families}


def _di(families: list[Family]) -> Callable[[type], Any]:
    import di

    reg = di.Registry()
    reg.provider(singleton=True)(S)
    for f in families:
        for cls in f.classes:
            reg.provider(cls)
    container = di.Container(reg)
    container.__enter__()
    container.resolve(S)
    return container.resolve


def _diwire(families: list[Family]) -> Callable[[type], Any]:
    from diwire import Lifetime

    from benchmarks.libs.diwire_ import _strict

    c = _strict()
    c.add(S, lifetime=Lifetime.SCOPED)
    for f in families:
        for cls in f.classes:
            c.add(cls, lifetime=Lifetime.TRANSIENT)
    c.compile()
    c.resolve(S)
    return c.resolve


def _dishka(families: list[Family]) -> Callable[[type], Any]:
    from dishka import Provider, Scope, make_container

    p = Provider(scope=Scope.APP)
    p.provide(S)
    for f in families:
        for cls in f.classes:
            p.provide(cls, cache=False)
    get = make_container(p).get
    get(S)
    return get


def _modern_di(families: list[Family]) -> Callable[[type], Any]:
    from modern_di import Container, providers

    container = Container()
    container.add_providers(
        providers.Factory(S, cache=True),
        *(providers.Factory(cls) for f in families for cls in f.classes),
    )
    container.validate()
    container.resolve(S)
    return container.resolve


LIBS: dict[str, Callable[[list[Family]], Callable[[type], Any]]] = {
    "di": _di,
    "diwire": _diwire,
    "dishka": _dishka,
    "modern-di": _modern_di,
}


def _check(resolve: Callable[[type], Any], families: list[Family], name: str) -> None:
    s = resolve(S)
    for f in families:
        one, two = resolve(f.a), resolve(f.a)
        b, c = one.left, one.right
        kinds = [type(x) for x in (one, b, c, b.left, c.left)]
        assert kinds == [f.a, f.b, f.c, f.d, f.d], (name, kinds)
        assert one is not two and b.left is not c.left and c.right is s, name


def _batch(resolve: Callable[[type], Any], keys: list[type]) -> Callable[[], None]:
    def run() -> None:
        for key in keys:
            resolve(key)

    return run


def _manual_batch(makers: dict[type, Callable[[], Any]], keys: list[type]) -> Callable[[], None]:
    calls = [makers[key] for key in keys]

    def run() -> None:
        for make in calls:
            make()

    return run


def _sample(fn: Callable[[], None], n: int) -> int:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for _ in repeat(None, n):
            fn()
        return time.perf_counter_ns() - t0
    finally:
        gc.enable()


def main(rounds: int = 41, seed: int = 0) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    families = make_families()
    resolvers = {name: build(families) for name, build in LIBS.items()}
    for name, resolve in resolvers.items():
        _check(resolve, families, name)
    makers = _manual(families)
    varying = [f.a for f in families]
    rng.shuffle(varying)
    middle = [families[len(families) // 2].a] * len(families)
    print(
        f"{len(families)} transient graphs A_i(B_i(D_i), C_i(D_i, S)): "
        f"{4 * len(families) + 1} providers"
    )
    results = {}
    for title, keys in (("varying", varying), ("one key", middle)):
        fns: dict[str, Callable[[], None]] = {"manual": _manual_batch(makers, keys)}
        fns.update({name: _batch(resolve, keys) for name, resolve in resolvers.items()})
        results[title] = compare(title, fns, _sample, rounds, 400)
    return results


if __name__ == "__main__":
    main()
