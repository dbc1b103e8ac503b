"""wireup: ``@injectable`` declarations + ``create_sync_container`` / ``create_async_container``
(the graph is validated when the container is created)."""

import asyncio
from typing import Any

import wireup

from benchmarks.libs.base import Bench, Case, ColdCase
from benchmarks.model import A, B, C, ColdGraph, D, R, S, T, r_agen, r_gen

NAME = "wireup"
DIST = "wireup"


def _injectables(factory: Any) -> list[Any]:
    # @injectable only marks the object; applying it to the shared model classes is harmless.
    return [
        wireup.injectable(S, lifetime="singleton"),
        *(wireup.injectable(cls, lifetime="transient") for cls in (T, D, B, C, A)),
        wireup.injectable(factory, lifetime="scoped"),
    ]


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    container = wireup.create_sync_container(injectables=_injectables(r_gen))
    acontainer = wireup.create_async_container(injectables=_injectables(r_agen))
    get = container.get
    get(S)
    # wireup resolves transients only inside a scope: one scope, entered once, untimed.
    long_scope = container.enter_scope()
    loop.run_until_complete(acontainer.get(S))

    def request_cycle() -> tuple[Any, Any]:
        with container.enter_scope() as scoped:
            r1, r2 = scoped.get(R), scoped.get(R)
        return r1, r2

    async def arequest_cycle() -> tuple[Any, Any]:
        async with acontainer.enter_scope() as scoped:
            r1, r2 = await scoped.get(R), await scoped.get(R)
        return r1, r2

    def cold_start(graph: ColdGraph) -> Any:
        injectables = [wireup.injectable(cls, lifetime="transient") for cls in graph.classes]
        cold = wireup.create_sync_container(injectables=injectables)
        with cold.enter_scope() as scoped:  # transients resolve only in a scope
            return scoped.get(graph.root)

    def close() -> None:
        long_scope.close()
        container.close()
        loop.run_until_complete(acontainer.close())

    return Bench(
        name=NAME,
        singleton=Case(get, S),
        transient=Case(
            long_scope.get, A, note="resolved in a scope entered once, untimed (no root transients)"
        ),
        request=Case(request_cycle),
        arequest=Case(arequest_cycle),
        cold=ColdCase(
            cold_start, note="autowired, validated; root resolved in a scope (no root transients)"
        ),
        close=close,
    )
