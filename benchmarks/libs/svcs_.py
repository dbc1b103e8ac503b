"""svcs: a ``Registry`` of factories and one ``Container`` per request.

svcs is a service locator: no autowiring (factories take the container and ``get`` what
they need), no validation, no scope hierarchy and no transient lifetime — every service is
cached for the life of its container. Singletons are registered values read through a
long-lived container; the request scope is a fresh ``svcs.Container`` closed by ``with``.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import svcs

from benchmarks.libs.base import Bench, Case, ColdCase, Unsupported
from benchmarks.model import ColdGraph, R, S, T

NAME = "svcs"
DIST = "svcs"


def r_factory(svcs_container: svcs.Container) -> Iterator[R]:
    s, t = svcs_container.get(S, T)
    r = R(s, t)
    try:
        yield r
    finally:
        r.closes += 1


async def r_afactory(svcs_container: svcs.Container) -> AsyncIterator[R]:
    s, t = svcs_container.get(S, T)
    r = R(s, t)
    try:
        yield r
    finally:
        r.closes += 1


def _factory(cls: type, deps: tuple[type, ...]) -> Callable[[svcs.Container], Any]:
    if len(deps) == 2:
        return lambda svcs_container: cls(*svcs_container.get(*deps))
    if len(deps) == 1:
        (dep,) = deps
        return lambda svcs_container: cls(svcs_container.get(dep))
    return lambda svcs_container: cls()


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    registry = svcs.Registry()
    registry.register_value(S, S())
    registry.register_factory(T, T)  # cached per container: resolved once per request anyway
    registry.register_factory(R, r_factory)
    aregistry = svcs.Registry()
    aregistry.register_value(S, S())
    aregistry.register_factory(T, T)
    aregistry.register_factory(R, r_afactory)
    app = svcs.Container(registry)
    get = app.get
    get(S)

    def request_cycle() -> tuple[Any, Any]:
        with svcs.Container(registry) as req:
            r1, r2 = req.get(R), req.get(R)
        return r1, r2

    async def arequest_cycle() -> tuple[Any, Any]:
        async with svcs.Container(aregistry) as req:
            r1, r2 = await req.aget(R), await req.aget(R)
        return r1, r2

    def cold_start(graph: ColdGraph) -> Any:
        reg = svcs.Registry()
        classes = graph.classes
        for i, cls in enumerate(classes):
            reg.register_factory(cls, _factory(cls, tuple(classes[j] for j in graph.deps[i])))
        return svcs.Container(reg).get(graph.root)

    return Bench(
        name=NAME,
        singleton=Case(get, S, note="a registered value read through a container"),
        transient=Unsupported("no transient lifetime: svcs caches every service per container"),
        request=Case(request_cycle, note="one svcs.Container per request"),
        arequest=Case(arequest_cycle, note="one svcs.Container per request"),
        cold=ColdCase(cold_start, note="explicit factories (no autowiring), no validation"),
        close=app.close,
    )
