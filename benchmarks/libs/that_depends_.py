# mypy: disable-error-code="arg-type"
"""that-depends: ``BaseContainer`` classes of providers; the request scope is
``container_context(scope=ContextScopes.REQUEST)`` with a ``ContextResource``.

No autowiring (providers name their dependencies) and no validation. Entering a named
scope enters the context of every context resource of that scope in every container
class defined in the process, so the async scenario also pays for the sync scenario's
resource (about +25% measured); it does not change the ranking.
"""

import asyncio
import itertools
import types
from typing import Any

from that_depends import BaseContainer, ContextScopes, container_context, providers
from that_depends.meta import BaseContainerMeta

from benchmarks.libs.base import Bench, Case, ColdCase
from benchmarks.model import A, B, C, ColdGraph, D, S, T, r_agen, r_gen

NAME = "that-depends"
DIST = "that-depends"


class BenchGraph(BaseContainer):
    default_scope = ContextScopes.ANY
    s = providers.Singleton(S)
    t = providers.Factory(T)
    d = providers.Factory(D)
    b = providers.Factory(B, d)
    c = providers.Factory(C, d, s)
    a = providers.Factory(A, b, c)
    r = providers.ContextResource(r_gen, s, t).with_config(scope=ContextScopes.REQUEST)


class BenchAsyncGraph(BaseContainer):
    default_scope = ContextScopes.ANY
    s = providers.Singleton(S)
    t = providers.Factory(T)
    r = providers.ContextResource(r_agen, s, t).with_config(scope=ContextScopes.REQUEST)


_cold_names = (f"BenchCold{i}" for i in itertools.count())
_cold_made: list[str] = []


def _cold_cleanup() -> None:
    # Container classes register themselves globally by name, and entering a named scope
    # walks every registered container: forget the cold-start ones so they cannot slow
    # the other scenarios down. Untimed.
    for name in _cold_made:
        BaseContainerMeta._instances.pop(name, None)
    _cold_made.clear()


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    singleton = BenchGraph.s.resolve_sync
    singleton()
    loop.run_until_complete(BenchAsyncGraph.s.resolve())
    sync_r = BenchGraph.r.resolve_sync
    async_r = BenchAsyncGraph.r.resolve
    request = ContextScopes.REQUEST

    def request_cycle() -> tuple[Any, Any]:
        with container_context(scope=request):
            r1, r2 = sync_r(), sync_r()
        return r1, r2

    async def arequest_cycle() -> tuple[Any, Any]:
        async with container_context(scope=request):
            r1, r2 = await async_r(), await async_r()
        return r1, r2

    def cold_start(graph: ColdGraph) -> Any:
        made: list[Any] = [None] * len(graph.classes)
        for i in graph.leaves_first():
            made[i] = providers.Factory(graph.classes[i], *(made[j] for j in graph.deps[i]))
        name = next(_cold_names)
        _cold_made.append(name)

        def body(ns: dict[str, Any]) -> None:
            ns["default_scope"] = ContextScopes.ANY
            ns.update({f"p{i}": p for i, p in enumerate(made)})

        container = types.new_class(name, (BaseContainer,), exec_body=body)
        return container.p0.resolve_sync()  # type: ignore[attr-defined]

    return Bench(
        name=NAME,
        singleton=Case(singleton),
        transient=Case(BenchGraph.a.resolve_sync),
        request=Case(request_cycle),
        arequest=Case(arequest_cycle),
        cold=ColdCase(
            cold_start,
            note="explicit providers (no autowiring), no validation",
            cleanup=_cold_cleanup,
        ),
    )
