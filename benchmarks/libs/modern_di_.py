"""modern-di: a ``Group`` of providers, ``Container(groups=...)``, ``validate()``,
children built per request with ``build_child_container``.

modern-di has no generator or async factories: ``R`` is a cached request-scoped
``Factory`` whose teardown is a ``CacheSettings(finalizer=...)`` (async for the async
scenario, run by ``close_async``), the library's documented teardown mechanism.
"""

import asyncio
from typing import Any

from modern_di import Container, Group, Scope, providers

from benchmarks.libs.base import Bench, Case, ColdCase
from benchmarks.model import A, B, C, ColdGraph, D, R, S, T

NAME = "modern-di"
DIST = "modern-di"


def _finalize(r: R) -> None:
    r.closes += 1


async def _afinalize(r: R) -> None:
    r.closes += 1


class Graph(Group):
    s = providers.Factory(S, cache=True)  # APP scope, cached: a singleton
    t = providers.Factory(T)
    d = providers.Factory(D)
    b = providers.Factory(B)
    c = providers.Factory(C)
    a = providers.Factory(A)
    r = providers.Factory(
        R, scope=Scope.REQUEST, cache=providers.CacheSettings(finalizer=_finalize)
    )


class AsyncGraph(Group):
    s = providers.Factory(S, cache=True)
    t = providers.Factory(T)
    r = providers.Factory(
        R, scope=Scope.REQUEST, cache=providers.CacheSettings(finalizer=_afinalize)
    )


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    container = Container(groups=[Graph])
    container.validate()
    acontainer = Container(groups=[AsyncGraph])
    acontainer.validate()
    resolve = container.resolve
    resolve(S)
    acontainer.resolve(S)
    child = container.build_child_container
    achild = acontainer.build_child_container
    request = Scope.REQUEST

    def request_cycle() -> tuple[Any, Any]:
        with child(scope=request) as req:
            r1, r2 = req.resolve(R), req.resolve(R)
        return r1, r2

    async def arequest_cycle() -> tuple[Any, Any]:
        async with achild(scope=request) as req:
            r1, r2 = req.resolve(R), req.resolve(R)
        return r1, r2

    def cold_start(graph: ColdGraph) -> Any:
        cold = Container()
        cold.add_providers(*(providers.Factory(cls) for cls in graph.classes))  # autowired
        cold.validate()
        return cold.resolve(graph.root)

    note = "finalizer via CacheSettings (no generator factories)"
    return Bench(
        name=NAME,
        singleton=Case(resolve, S),
        transient=Case(resolve, A),
        request=Case(request_cycle, note=note),
        arequest=Case(arequest_cycle, note="sync factory + async finalizer (no async factories)"),
        cold=ColdCase(cold_start, note="autowired, validated"),
        close=container.close_sync,
    )
