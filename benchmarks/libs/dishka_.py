"""dishka: ``Provider`` + ``make_container`` (validation on, the default)."""

import asyncio
from typing import Any

from dishka import Provider, Scope, make_async_container, make_container

from benchmarks.libs.base import Bench, Case, ColdCase
from benchmarks.model import A, B, C, ColdGraph, D, R, S, T, r_agen, r_gen

NAME = "dishka"
DIST = "dishka"


def _provider(factory: Any) -> Provider:
    p = Provider(scope=Scope.APP)
    p.provide(S)  # cached in APP = singleton
    for transient in (T, D, B, C, A):
        p.provide(transient, cache=False)
    p.provide(factory, scope=Scope.REQUEST)  # cached per request container
    return p


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    container = make_container(_provider(r_gen))
    acontainer = make_async_container(_provider(r_agen))
    get = container.get
    get(S)
    loop.run_until_complete(acontainer.get(S))

    def request_cycle() -> tuple[Any, Any]:
        with container() as req:
            r1, r2 = req.get(R), req.get(R)
        return r1, r2

    async def arequest_cycle() -> tuple[Any, Any]:
        async with acontainer() as req:
            r1, r2 = await req.get(R), await req.get(R)
        return r1, r2

    def cold_start(graph: ColdGraph) -> Any:
        p = Provider(scope=Scope.APP)
        for cls in graph.classes:
            p.provide(cls, cache=False)  # autowired from __init__ hints
        return make_container(p).get(graph.root)

    def close() -> None:
        container.close()
        loop.run_until_complete(acontainer.close())

    return Bench(
        name=NAME,
        singleton=Case(get, S),
        transient=Case(get, A),
        request=Case(request_cycle),
        arequest=Case(arequest_cycle),
        cold=ColdCase(cold_start, note="autowired, validated"),
        close=close,
    )
