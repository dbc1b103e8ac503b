"""Review of "aresolve is an async def" (d3b0e24).

``Checkpoint.aresolve`` (and so ``Container.aresolve``) used to be a plain
function that returned a coroutine: a hit returned ``_ready(value)``, a miss the
plan's own coroutine, and a missing provider, a torn-down or never-entered
checkpoint or an unhashable key raised at the *call*. It is an ``async def``
now: everything happens when the coroutine runs.

What the review found: ``di.Container.aresolve`` was still a plain ``def``
returning a coroutine, though documented as an ``async def`` (fixed); and each
scoped level the generated async code resolves in its owner now costs two
frames, so the longest chain ``aresolve`` follows fell from 950+ to about 490
scoped levels (about 326 to 245 singletons) at a recursion limit of 1000: still
deeper than sync ``resolve`` (about 330 and 197), kept by decision and written
in docs/design.md.

Verified (plain tests): errors now come at the await, not the call, and di's
own refusals (``spawn``) close the coroutine they were given (no "never
awaited" warning); a coroutine made before a teardown, a close or an override
and run after it sees the current state (CheckpointClosedError for a torn-down
checkpoint, including a deeper checkpoint whose owner is still open, the
override's value, a fresh singleton); cancellation of a waiter or of the
creator of a scoped key, and of a singleton's creator, under asyncio and trio;
``asyncio.shield`` / ``wait_for``; a scoped factory that resolves its own key
through ``aresolve`` is still a CircularDependencyError; no ``__context__`` is
chained onto the errors aresolve raises; the sync-subtree path (``_run_sync``)
under trio.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import di

WAIT = 5  # seconds: a safety net only


class Req:
    pass


class Sess:
    pass


class Act:
    pass


class Single:
    pass


class SyncSingle:
    pass


class Trans:
    def __init__(self, single: SyncSingle) -> None:
        self.single = single


class Missing:
    pass


def _container(gate: list[Any] | None = None, log: list[str] | None = None) -> di.Container:
    """Req: request context; Sess: request-scoped async (waits on gate[0] if
    given); Act: action-scoped, needs Sess; Single: async singleton (waits on
    gate[0]); SyncSingle: sync singleton; Trans: transient over SyncSingle."""
    reg = di.Registry()
    reg.context(Req, scope="request")
    made = log if log is not None else []

    @reg.provider(scope="request")
    async def sess() -> Sess:
        made.append("sess")
        if gate is not None:
            await gate[0].wait()
        return Sess()

    @reg.provider(scope="action")
    async def act(s: Sess) -> Act:
        return Act()

    @reg.provider(singleton=True)
    async def single() -> AsyncIterator[Single]:
        made.append("single")
        if gate is not None:
            await gate[0].wait()
        yield Single()
        made.append("single closed")

    reg.provider(singleton=True)(SyncSingle)
    reg.provider(Trans)
    return di.Container(reg)


def _scoped_chain(n: int, **options: Any) -> tuple[di.Container, list[type]]:
    """C0 <- C1 <- ... <- C(n-1): each Ci's factory needs C(i+1)."""
    reg = di.Registry()
    classes = [type(f"Link{i}", (), {}) for i in range(n)]
    for i, cls in enumerate(classes):
        if i + 1 < n:

            def make(below: Any, _cls: type = cls) -> Any:
                return _cls()

            make.__annotations__ = {"below": classes[i + 1], "return": cls}
        else:

            def make(_cls: type = cls) -> Any:  # type: ignore[misc]
                return _cls()

            make.__annotations__ = {"return": cls}
        reg.provider(**options)(make)
    return di.Container(reg), classes


def _run_short(main: Any) -> object:
    """asyncio.run(main()), a GraphError reported in one line: pytest would
    otherwise spend seconds formatting the RecursionError's thousand frames."""
    error = None
    try:
        return asyncio.run(main())
    except di.GraphError as exc:
        error = str(exc)
    pytest.fail(f"GraphError: {error}", pytrace=False)


# ---------------------------------------------- depth, and what the review found


def test_a_400_deep_chain_of_scoped_keys_resolves_through_aresolve() -> None:
    # Each level is two frames under aresolve now (its own coroutine and the
    # plan): it follows some 490 levels at a recursion limit of 1000, more
    # than sync resolve (some 330). (Before aresolve was an async def: 950+.)
    assert sys.getrecursionlimit() >= 1000
    c, classes = _scoped_chain(400, scope="request")

    async def main() -> object:
        async with c, c.scope("request") as scope:
            return await scope.aresolve(classes[0])

    assert isinstance(_run_short(main), classes[0])


def test_a_200_deep_chain_of_singletons_resolves_through_aresolve() -> None:
    # About 245 levels (four frames each; sync resolve: about 197).
    assert sys.getrecursionlimit() >= 1000
    c, classes = _scoped_chain(200, singleton=True)

    async def main() -> object:
        async with c:
            return await c.aresolve(classes[0])

    assert isinstance(_run_short(main), classes[0])


def test_container_aresolve_is_an_async_def_as_documented() -> None:
    c = _container()
    assert inspect.iscoroutinefunction(c.aresolve)  # the per-instance one is
    assert inspect.iscoroutinefunction(di.Checkpoint.aresolve)
    assert inspect.iscoroutinefunction(di.Container.aresolve)


# --------------------------------------------------------------------------- verified


def test_errors_come_at_the_await_not_at_the_call() -> None:
    c = _container()

    async def main() -> None:
        async with c:
            coro = c.aresolve(Missing)  # no error yet
            assert inspect.iscoroutine(coro)
            with pytest.raises(di.ProviderNotFoundError) as info:
                await coro
            assert info.value.key is Missing
            assert info.value.__context__ is None  # nothing chained in aresolve
            unentered = c.scope("request")
            with pytest.raises(di.ScopeError, match="has not been entered"):
                await unentered.aresolve(Sess)
            with pytest.raises(TypeError, match="cannot resolve the key"):
                await c.aresolve([1])  # type: ignore[arg-type]

    asyncio.run(main())


def test_di_refusing_a_spawn_closes_the_aresolve_coroutine_it_was_given() -> None:
    c = _container()

    async def main() -> None:
        async with c:
            async with c.scope("request", context={Req: Req()}) as scope:
                pass
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # "never awaited" would be an error
                coro = scope.aresolve(Sess)
                with pytest.raises(di.CheckpointClosedError):
                    scope.spawn(coro)
                # closed, not left for the GC to warn about
                assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

    asyncio.run(main())


def test_a_spawned_aresolve_of_a_missing_key_fails_in_the_task_and_releases() -> None:
    c = _container()

    async def main() -> None:
        async with c:
            async with c.scope("request", context={Req: Req()}) as scope:
                task = scope.spawn(scope.aresolve(Missing))
            with pytest.raises(di.ProviderNotFoundError):
                await asyncio.wait_for(task, WAIT)
            assert scope.closed and scope.holds == 0

    asyncio.run(main())


def test_a_coroutine_made_before_a_teardown_raises_when_it_runs() -> None:
    c = _container()

    async def main() -> None:
        async with c:
            async with c.scope("request", context={Req: Req()}) as request:
                await request.aresolve(Sess)  # cached
                async with c.scope("action") as action:
                    await action.aresolve(Act)
                    act_late = action.aresolve(Sess)  # its owner stays open
                ctx_late = request.aresolve(Req)
                sess_late = request.aresolve(Sess)
                single_late = request.aresolve(SyncSingle)
                with pytest.raises(di.CheckpointClosedError):
                    await act_late
                # (before the change: served from the still-open request)
            for late in (ctx_late, sess_late, single_late):
                with pytest.raises(di.CheckpointClosedError):
                    await late

    asyncio.run(main())


def test_a_coroutine_made_before_an_override_or_a_close_runs_the_current_plan() -> None:
    log: list[str] = []
    c = _container(log=log)

    async def main() -> None:
        async with c:
            first = await c.aresolve(Single)
            late = c.aresolve(Single)
        async with c:
            again = await late
            assert again is not first  # not the singleton the close tore down
            assert again is await c.aresolve(Single)
            late_trans = c.aresolve(Trans)
            replacement = Trans(SyncSingle())
            with c.override(Trans, replacement):
                assert await late_trans is replacement

    asyncio.run(main())
    assert log == ["single", "single closed", "single", "single closed"]


def test_asyncio_cancelling_a_waiter_or_the_creator_of_a_scoped_key() -> None:
    gate: list[Any] = []
    log: list[str] = []
    c = _container(gate, log)

    async def main() -> None:
        async with c:
            gate[:] = [asyncio.Event()]
            async with c.scope("request", context={Req: Req()}) as scope:
                creator = asyncio.create_task(scope.aresolve(Sess))
                await asyncio.sleep(0)
                waiter = asyncio.create_task(scope.aresolve(Sess))
                await asyncio.sleep(0)
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                gate[0].set()
                made = await asyncio.wait_for(creator, WAIT)
                assert await scope.aresolve(Sess) is made
            assert log == ["sess"]
            gate[:] = [asyncio.Event()]
            async with c.scope("request", context={Req: Req()}) as scope:
                creator = asyncio.create_task(scope.aresolve(Sess))
                await asyncio.sleep(0)
                waiter = asyncio.create_task(scope.aresolve(Sess))
                await asyncio.sleep(0)
                creator.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await creator
                gate[0].set()
                made = await asyncio.wait_for(waiter, WAIT)  # it creates afresh
                assert await scope.aresolve(Sess) is made
            assert log == ["sess", "sess", "sess"]

    asyncio.run(main())


def test_asyncio_cancelled_singleton_creation_shield_and_wait_for() -> None:
    gate: list[Any] = []
    log: list[str] = []
    c = _container(gate, log)

    async def main() -> None:
        async with c:
            gate[:] = [asyncio.Event()]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.aresolve(Single), 0.01)
            creator = asyncio.create_task(c.aresolve(Single))
            await asyncio.sleep(0)
            waiter = asyncio.create_task(c.aresolve(Single))
            await asyncio.sleep(0)
            creator.cancel()
            with pytest.raises(asyncio.CancelledError):
                await creator
            gate[0].set()
            made = await asyncio.wait_for(waiter, WAIT)
            assert await c.aresolve(Single) is made
            async with c.scope("request", context={Req: Req()}) as scope:
                shielded = await asyncio.shield(scope.aresolve(Sess))
                assert await asyncio.shield(c.aresolve(Sess)) is shielded
                assert await asyncio.wait_for(scope.aresolve(Sess), WAIT) is shielded

    asyncio.run(main())
    assert log.count("single") == 3


def test_a_scoped_factory_that_aresolves_its_own_key_is_a_cycle() -> None:
    reg = di.Registry()

    @reg.provider(scope="request")
    async def sess() -> Sess:
        return await container.aresolve(Sess)  # through the root path

    container = di.Container(reg)

    async def main() -> None:
        async with container, container.scope("request") as scope:
            with pytest.raises(di.CircularDependencyError, match="needed itself"):
                await asyncio.wait_for(scope.aresolve(Sess), WAIT)

    asyncio.run(main())


def test_trio_every_path() -> None:
    gate: list[Any] = []
    log: list[str] = []
    c = _container(gate, log)

    async def main() -> None:
        gate[:] = [trio.Event()]
        gate[0].set()
        with trio.fail_after(WAIT):
            async with c:
                made = await c.aresolve(Trans)  # sync subtree, singleton not made yet
                assert made.single is await c.aresolve(SyncSingle)
                assert await c.aresolve(Single) is await c.aresolve(Single)
                async with c.scope("request", context={Req: Req()}) as request:
                    async with c.scope("action") as action:
                        await action.aresolve(Act)
                        assert await action.aresolve(Sess) is await request.aresolve(Sess)
                        assert await c.aresolve(Sess) is await request.aresolve(Sess)
                        assert await c.aresolve(Req) is await request.aresolve(Req)
                    late = action.aresolve(Act)
                with pytest.raises(di.CheckpointClosedError):
                    await late
                with pytest.raises(di.ProviderNotFoundError):
                    await c.aresolve(Missing)
                # a cancelled creator of a scoped key: the waiter creates afresh
                gate[:] = [trio.Event()]
                async with c.scope("request", context={Req: Req()}) as request:
                    got: dict[str, Any] = {}
                    async with trio.open_nursery() as nursery:
                        cancel = trio.CancelScope()

                        async def creator() -> None:
                            with cancel:
                                await request.aresolve(Sess)

                        async def waiter() -> None:
                            got["w"] = await request.aresolve(Sess)

                        nursery.start_soon(creator)
                        await trio.testing.wait_all_tasks_blocked()
                        nursery.start_soon(waiter)
                        await trio.testing.wait_all_tasks_blocked()
                        cancel.cancel()
                        await trio.testing.wait_all_tasks_blocked()
                        # and a cancelled waiter
                        with trio.CancelScope() as cs:
                            cs.cancel()
                            await request.aresolve(Sess)
                        assert cs.cancelled_caught
                        gate[0].set()
                    assert await request.aresolve(Sess) is got["w"]

    log.clear()
    trio.run(main)
    assert log.count("sess") == 3  # the first request, the cancelled creator, the waiter
