"""Hand-written wiring: plain function calls and a dict cache doing the same work.

This is the baseline every ratio is taken against, written the way a careful
programmer would write it without a container.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from benchmarks.libs.base import Bench, Case, ColdCase
from benchmarks.model import A, B, C, ColdGraph, D, R, S, T, r_agen, r_gen

NAME = "manual"
DIST = None

_singletons: dict[type, Any] = {}


def get_s() -> S:
    """Singleton: a cached instance from a dict, created on first use."""
    try:
        return _singletons[S]  # type: ignore[no-any-return]
    except KeyError:
        s = _singletons[S] = S()
        return s


def make_a() -> A:
    """Transient graph: one function building the whole tree."""
    return A(B(D()), C(D(), get_s()))


def request_cycle() -> tuple[Any, Any]:
    """Request scope: a per-request dict cache; R comes from its generator factory,
    is cached, read again, and the generator is finished at the end of the request."""
    cache: dict[type, Any] = {}
    gen = r_gen(get_s(), T())
    r1 = cache[R] = next(gen)
    r2 = cache[R]
    for _ in gen:  # finish the generator: runs its finalizer
        pass
    return r1, r2


async def arequest_cycle() -> tuple[Any, Any]:
    """The same with the async-generator factory."""
    cache: dict[type, Any] = {}
    agen = r_agen(get_s(), T())
    r1 = cache[R] = await agen.__anext__()
    r2 = cache[R]
    async for _ in agen:
        pass
    return r1, r2


def _maker(cls: type, kids: list[Callable[[], Any]]) -> Callable[[], Any]:
    if len(kids) == 2:
        left, right = kids
        return lambda: cls(left(), right())
    if len(kids) == 1:
        (only,) = kids
        return lambda: cls(only())
    return cls


def cold_start(graph: ColdGraph) -> Any:
    """Hand-written factories for the 50 classes, registered in a dict, then the root."""
    makers: dict[type, Callable[[], Any]] = {}
    classes = graph.classes
    for i in graph.leaves_first():
        makers[classes[i]] = _maker(classes[i], [makers[classes[j]] for j in graph.deps[i]])
    return makers[graph.root]()


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    get_s()  # the singleton exists before timing
    return Bench(
        name=NAME,
        singleton=Case(get_s),
        transient=Case(make_a),
        request=Case(request_cycle),
        arequest=Case(arequest_cycle),
        cold=ColdCase(cold_start, note="explicit factories (no autowiring), no validation"),
    )
