"""di (this project), written against docs/api.md: a ``Registry`` of providers, a
``Container`` (validates and compiles at construction), ``container.scope("request")``."""

import asyncio
from typing import Any

import di
from benchmarks.libs.base import Bench, Case, ColdCase
from benchmarks.model import A, B, C, ColdGraph, D, R, S, T, r_agen, r_gen

NAME = "di"
DIST = "stackdi"


def _registry(factory: Any) -> "di.Registry":
    reg = di.Registry()
    reg.provider(singleton=True)(S)
    for cls in (T, D, B, C, A):
        reg.provider(cls)  # transient, autowired from __init__ hints
    reg.provider(scope="request")(factory)
    return reg


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    container = di.Container(_registry(r_gen))
    acontainer = di.Container(_registry(r_agen))
    container.__enter__()
    loop.run_until_complete(acontainer.__aenter__())
    resolve = container.resolve
    resolve(S)
    loop.run_until_complete(acontainer.aresolve(S))
    scope = container.scope
    ascope = acontainer.scope

    def request_cycle() -> tuple[Any, Any]:
        with scope("request") as req:
            r1, r2 = req.resolve(R), req.resolve(R)
        return r1, r2

    async def arequest_cycle() -> tuple[Any, Any]:
        async with ascope("request") as req:
            r1, r2 = await req.aresolve(R), await req.aresolve(R)
        return r1, r2

    def cold_start(graph: ColdGraph) -> Any:
        reg = di.Registry()
        for cls in graph.classes:
            reg.provider(cls)  # transient, autowired from __init__ hints
        return di.Container(reg).resolve(graph.root)  # validates at construction

    def close() -> None:
        container.__exit__(None, None, None)
        loop.run_until_complete(acontainer.__aexit__(None, None, None))

    return Bench(
        name=NAME,
        singleton=Case(resolve, S),
        transient=Case(resolve, A),
        request=Case(request_cycle),
        arequest=Case(arequest_cycle),
        cold=ColdCase(cold_start, note="autowired, validated"),
        close=close,
    )
