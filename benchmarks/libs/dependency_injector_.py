"""dependency-injector: a ``DeclarativeContainer`` with ``Singleton`` / ``Factory`` providers.

It has no request scope: the scenario uses a ``Resource`` provider (its documented way to
run a generator's teardown), initialised by the first call and finalised by
``provider.shutdown()`` at the end of each cycle. That state is process-global, not per
task, so it is a weaker guarantee than a scope. There is no autowiring and no validation.
"""

import asyncio
from typing import Any

from dependency_injector import containers, providers

from benchmarks.libs.base import Bench, Case, ColdCase
from benchmarks.model import A, B, C, ColdGraph, D, S, T, r_agen, r_gen

NAME = "dependency-injector"
DIST = "dependency-injector"


class Graph(containers.DeclarativeContainer):
    s = providers.Singleton(S)
    t = providers.Factory(T)
    d = providers.Factory(D)
    b = providers.Factory(B, d)
    c = providers.Factory(C, d, s)
    a = providers.Factory(A, b, c)
    r = providers.Resource(r_gen, s, t)
    ar = providers.Resource(r_agen, s, t)


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    graph = Graph()
    get_s = graph.s
    get_s()
    r = graph.r
    ar = graph.ar

    def request_cycle() -> tuple[Any, Any]:
        r1 = r()
        r2 = r()
        r.shutdown()
        return r1, r2

    async def arequest_cycle() -> tuple[Any, Any]:
        r1 = await ar()  # type: ignore[misc]  # an async Resource returns an awaitable
        r2 = await ar()  # type: ignore[misc]
        await ar.shutdown()  # type: ignore[misc]
        return r1, r2

    def cold_start(g: ColdGraph) -> Any:
        container = containers.DynamicContainer()
        made: list[Any] = [None] * len(g.classes)
        for i in g.leaves_first():
            made[i] = providers.Factory(g.classes[i], *(made[j] for j in g.deps[i]))
        container.set_providers(**{f"p{i}": p for i, p in enumerate(made)})
        return container.p0()

    emulated = "emulated: Resource init + shutdown() per cycle (no scopes)"
    return Bench(
        name=NAME,
        singleton=Case(get_s),
        transient=Case(graph.a),
        request=Case(request_cycle, note=emulated),
        arequest=Case(arequest_cycle, note=emulated),
        cold=ColdCase(cold_start, note="explicit providers (no autowiring), no validation"),
        close=lambda: None,
    )
