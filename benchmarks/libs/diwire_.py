"""diwire in its documented strict mode (no autoregistration, ``use_resolver_context=False``,
``compile()`` once), which rebinds ``resolve`` / ``enter_scope`` to the generated resolver."""

import asyncio
from typing import Any

from diwire import Container, DependencyRegistrationPolicy, Lifetime, MissingPolicy, Scope

from benchmarks.libs.base import Bench, Case, ColdCase
from benchmarks.model import A, B, C, ColdGraph, D, R, S, T, r_agen, r_gen

NAME = "diwire"
DIST = "diwire"


def _strict() -> Container:
    return Container(
        missing_policy=MissingPolicy.ERROR,
        dependency_registration_policy=DependencyRegistrationPolicy.IGNORE,
        use_resolver_context=False,
    )


def _container(factory: Any) -> Container:
    c = _strict()
    c.add(S, lifetime=Lifetime.SCOPED)  # scoped to the root scope: a singleton
    for cls in (T, D, B, C, A):
        c.add(cls, lifetime=Lifetime.TRANSIENT)
    c.add_generator(factory, provides=R, scope=Scope.REQUEST, lifetime=Lifetime.SCOPED)
    c.compile()
    return c


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    container = _container(r_gen)
    acontainer = _container(r_agen)
    resolve = container.resolve
    resolve(S)
    loop.run_until_complete(acontainer.aresolve(S))
    enter = container.enter_scope
    aenter = acontainer.enter_scope
    request = Scope.REQUEST

    def request_cycle() -> tuple[Any, Any]:
        with enter(request) as req:
            r1, r2 = req.resolve(R), req.resolve(R)
        return r1, r2

    async def arequest_cycle() -> tuple[Any, Any]:
        async with aenter(request) as req:
            r1, r2 = await req.aresolve(R), await req.aresolve(R)
        return r1, r2

    def cold_start(graph: ColdGraph) -> Any:
        cold = _strict()
        for cls in graph.classes:
            cold.add(cls, lifetime=Lifetime.TRANSIENT)  # autowired from __init__ hints
        cold.compile()
        return cold.resolve(graph.root)

    def close() -> None:
        container.close()
        loop.run_until_complete(acontainer.aclose())

    return Bench(
        name=NAME,
        singleton=Case(resolve, S),
        transient=Case(resolve, A),
        request=Case(request_cycle),
        arequest=Case(arequest_cycle),
        cold=ColdCase(cold_start, note="autowired, strict mode; validated by compile()"),
        close=close,
    )
