"""Adversarial review of what `di` promises under trio (and anyio on both backends).

Three defects the review found are pinned here (a cancelled ``aclose()`` that
closed nothing, a sync resolve beside a trio ``aresolve`` taken for a cycle,
the close's wait for holders measured on the wrong clock); the other tests pin
promised trio behaviours that no other test file covers.

Everything is deterministic: ordering comes from ``trio.Event`` and
``trio.testing.wait_all_tasks_blocked``; ``fail_after`` is only a safety net.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import di

WAIT = 5  # seconds: a safety net only, never a timing assertion


class Settings:
    pass


class Engine:
    pass


class Session:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


def _closing_singletons(log: list[str]) -> di.Container:
    reg = di.Registry()

    @reg.provider(singleton=True)
    def settings() -> Iterator[Settings]:
        yield Settings()
        log.append("settings closed")

    @reg.provider(singleton=True)
    async def engine() -> AsyncIterator[Engine]:
        yield Engine()
        log.append("engine closed")

    return di.Container(reg)


# --------------------------------------------------------------------------- defects


@pytest.mark.parametrize("entered", [False, True], ids=["never-entered", "entered-force"])
def test_aclose_in_a_cancelled_trio_scope_still_closes_the_singletons(entered: bool) -> None:
    """The common trio cleanup, ``finally: await container.aclose()`` after a
    cancellation, must release the singletons: design.md says a cancelled
    ``aclose()`` is "not abandoned" and the container ends closed, and
    ``__aexit__`` / ``RefCounted.aclose`` take a free lock without a checkpoint
    precisely so that a cancelled scope still closes. Under asyncio the same
    code closes both singletons. Here Cancelled is raised by the lifecycle
    lock's post-acquire checkpoint and both singletons leak."""
    log: list[str] = []
    c = _closing_singletons(log)

    async def main() -> None:
        with trio.fail_after(WAIT):
            if entered:
                await c.__aenter__()  # a block that never ends: aclose(force=True) below
            await c.aresolve(Settings)
            await c.aresolve(Engine)
            with trio.CancelScope() as cancel:
                cancel.cancel()
                await c.aclose(force=entered)  # may or may not checkpoint: either is fine

    trio.run(main)
    # Neither teardown awaits anything, so even a cancelled scope lets them finish.
    assert log == ["engine closed", "settings closed"]
    assert not c.is_open


def test_aclose_after_asyncio_cancellation_closes_the_singletons() -> None:
    """The asyncio twin of the test above (passes): the same cleanup closes."""
    log: list[str] = []
    c = _closing_singletons(log)

    async def main() -> None:
        await c.aresolve(Settings)
        await c.aresolve(Engine)
        started = asyncio.Event()

        async def worker() -> None:
            try:
                started.set()
                await asyncio.sleep(3600)
            finally:
                await c.aclose()

        task = asyncio.create_task(worker())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert log == ["engine closed", "settings closed"]
    assert not c.is_open


def _interleave(
    enter: Any, async_resolve: Any, sync_resolve: Any
) -> tuple[list[Any], list[BaseException]]:
    """Run ``async_resolve`` in task A and ``sync_resolve`` in tasks B1 and B2,
    made runnable in the order B1, A, B2 in one scheduler batch. Trio runs a
    batch in order or reversed, so exactly one of B1/B2 runs right after A's
    first step (A suspended at whatever it awaits first) and the other one
    before A started (it sees ``started`` unset and does nothing)."""
    got: list[Any] = []
    errors: list[BaseException] = []

    async def main() -> None:
        started = False
        events = [trio.Event() for _ in range(3)]

        async def task_a() -> None:
            nonlocal started
            await events[1].wait()
            started = True
            got.append(await async_resolve())

        async def task_b(event: trio.Event) -> None:
            await event.wait()
            if started:
                try:
                    got.append(sync_resolve())
                except Exception as exc:
                    errors.append(exc)

        with trio.fail_after(WAIT):
            async with enter(), trio.open_nursery() as nursery:
                nursery.start_soon(task_b, events[0])
                nursery.start_soon(task_a)
                nursery.start_soon(task_b, events[2])
                await trio.testing.wait_all_tasks_blocked()
                for event in events:  # one step: runnable as B1, A, B2
                    event.set()

    trio.run(main)
    return got, errors


def test_sync_resolve_beside_a_trio_aresolve_of_a_sync_singleton_is_no_cycle() -> None:
    """A sync ``@di.inject`` helper (or ``container.resolve``) called in one trio
    task while another task ``aresolve``\\s the same sync singleton. Nothing is
    async and there is no cycle; under asyncio this always works (the free
    singleton lock is taken without yielding). Under trio the async singleton
    plan's ``async with lock`` yields at aiologic's checkpoint right after
    taking the lock, and the sync resolve that runs meanwhile is refused with a
    CircularDependencyError ("is being created by `aresolve` in a task of this
    thread")."""
    reg = di.Registry()
    made: list[Settings] = []

    @reg.provider(singleton=True)
    def settings() -> Settings:
        made.append(Settings())
        return made[-1]

    c = di.Container(reg)
    got, errors = _interleave(lambda: c, lambda: c.aresolve(Settings), lambda: c.resolve(Settings))
    assert errors == []
    assert len(got) == 2 and got[0] is got[1] is made[0] and len(made) == 1


def test_sync_resolve_beside_a_trio_aresolve_of_a_sync_scoped_key_is_no_cycle() -> None:
    """The scoped face of the same checkpoint: Session (scoped, plain def) needs
    Settings (singleton, plain def, not made yet). Task A's aresolve marks
    Session as in creation, then yields at the singleton lock's checkpoint; a
    sync resolve of Session in another task then finds the mark and raises
    "cannot wait ... in a thread that runs an event loop". Under asyncio the
    whole creation runs without yielding and the sync resolve gets the
    instance."""
    reg = di.Registry()

    @reg.provider(singleton=True)
    def settings() -> Settings:
        return Settings()

    @reg.provider(scope="request")
    def session(settings: Settings) -> Session:
        return Session(settings)

    c = di.Container(reg)
    scopes: list[di.Checkpoint] = []

    @asynccontextmanager
    async def request() -> AsyncIterator[None]:
        async with c, c.scope("request") as scope:  # one checkpoint the three tasks share
            scopes.append(scope)
            yield

    async def aresolve() -> Any:
        return await scopes[0].aresolve(Session)

    def resolve() -> Any:
        return scopes[0].resolve(Session)

    got, errors = _interleave(request, aresolve, resolve)
    assert errors == []
    assert len(got) == 2 and got[0] is got[1]


def test_shutdown_timeout_follows_trios_clock() -> None:
    """Trio code (and its tests, with ``MockClock(autojump_threshold=0)``)
    expresses every timeout in ``trio.current_time()``. The container's close
    waits for a holder by sleeping ``_POLL`` on trio's clock but compares
    against a wall-clock deadline, so with a mock clock a 1 s shutdown_timeout
    never expires in trio's time: here 10 virtual seconds pass and the
    ``fail_after`` fires before the close gives up (in real time it busy-loops
    for the whole shutdown_timeout)."""
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(scope="request")
    def session() -> Iterator[Session]:
        yield Session(Settings())
        log.append("session closed")

    c = di.Container(reg, shutdown_timeout=1)
    out: dict[str, Any] = {}

    async def main() -> None:
        never = trio.Event()
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            try:
                with trio.fail_after(10):
                    async with c, c.scope("request") as scope:
                        scope.resolve(Session)

                        async def holder(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                            async with scope.hold():
                                task_status.started()
                                await never.wait()

                        await nursery.start(holder)
            except trio.TooSlowError:
                out["too slow"] = True
            out["elapsed"] = trio.current_time() - start
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert "too slow" not in out
    assert 1 <= out["elapsed"] < 2  # gave up after shutdown_timeout, in trio's time
    assert log == ["session closed"]  # then tore the held request down


# --------------------------------------------------------------------------- promised, verified


def test_trio_aclose_force_cancelled_while_waiting_for_a_holder_still_closes_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """design.md: a cancelled ``aclose()`` stops waiting for holders at once but
    tears down what is held, then the singletons (their awaits not cancelled),
    and only then re-raises. The trio twin of the asyncio test in
    test_container.py (there only the last exit is tested under trio)."""
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(singleton=True)
    async def engine() -> AsyncIterator[Engine]:
        yield Engine()
        await trio.sleep(0)  # cut short if the teardown saw the cancellation
        log.append("engine closed")

    @reg.provider(scope="request")
    async def session(engine: Engine) -> AsyncIterator[Session]:
        yield Session(Settings())
        await trio.sleep(0)
        log.append("session closed")

    c = di.Container(reg, shutdown_timeout=60)  # never reached

    async def main() -> None:
        with trio.fail_after(WAIT):
            release = trio.Event()
            async with trio.open_nursery() as nursery:
                async with c.scope("request") as scope:
                    await scope.aresolve(Session)

                    async def holder(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                        async with scope.hold():
                            task_status.started()
                            await release.wait()

                    await nursery.start(holder)
                with trio.CancelScope() as cancel:

                    async def canceller() -> None:
                        await trio.testing.wait_all_tasks_blocked()
                        cancel.cancel()

                    nursery.start_soon(canceller)
                    await c.aclose(force=True)
                assert cancel.cancelled_caught
                assert scope.closed and not c.is_open
                assert log == ["session closed", "engine closed"]
                release.set()  # the late release of a torn-down request is a no-op
        assert log == ["session closed", "engine closed"]
        assert c.held_checkpoints() == 0 and c.lingering_checkpoints() == 0

    trio.run(main)
    assert any("interrupted (Cancelled)" in r.getMessage() for r in caplog.records)


def test_trio_tasks_await_a_singleton_a_worker_thread_is_creating_without_blocking_the_loop() -> (
    None
):
    """trio.to_thread.run_sync resolves a slow sync singleton in a worker thread;
    trio tasks that aresolve it meanwhile wait without blocking the loop (the
    test's own task releases the factory only once they are all blocked) and
    all get the one instance."""
    reg = di.Registry()
    made: list[Settings] = []
    inside, go = threading.Event(), threading.Event()

    @reg.provider(singleton=True)
    def settings() -> Iterator[Settings]:
        inside.set()
        assert go.wait(WAIT)
        made.append(Settings())
        yield made[-1]

    c = di.Container(reg)
    got: list[Settings] = []

    async def main() -> None:
        with trio.fail_after(WAIT):
            async with c, trio.open_nursery() as nursery:

                async def in_thread() -> None:
                    got.append(await trio.to_thread.run_sync(c.resolve, Settings))

                async def in_task() -> None:
                    got.append(await c.aresolve(Settings))

                nursery.start_soon(in_thread)
                await trio.to_thread.run_sync(inside.wait, WAIT)
                for _ in range(3):
                    nursery.start_soon(in_task)
                await trio.testing.wait_all_tasks_blocked()  # the loop still runs
                assert got == []
                go.set()

    trio.run(main)
    assert len(made) == 1 and len(got) == 4 and all(g is made[0] for g in got)


def test_trio_enter_during_an_async_close_waits_and_opens_afresh() -> None:
    """Task A's last exit is tearing down (an async finalizer waits); task B's
    ``async with container`` waits for that close without blocking, then gets a
    fresh open state: a new singleton, closed once at B's own last exit."""
    reg = di.Registry()
    log: list[str] = []
    gate: list[trio.Event] = []

    @reg.provider(singleton=True)
    async def engine() -> AsyncIterator[Engine]:
        n = sum(1 for x in log if x.startswith("open"))
        log.append(f"open {n}")
        yield Engine()
        await gate[n].wait()
        log.append(f"close {n}")

    c = di.Container(reg)

    async def main() -> None:
        gate.extend([trio.Event(), trio.Event()])
        gate[1].set()
        seen: list[Engine] = []
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:

                async def first_user() -> None:
                    async with c:
                        seen.append(await c.aresolve(Engine))
                    # its last exit parks in close 0's finalizer

                async def late_user() -> None:
                    async with c:
                        log.append("B in")
                        seen.append(await c.aresolve(Engine))

                nursery.start_soon(first_user)
                await trio.testing.wait_all_tasks_blocked()
                assert log == ["open 0"] and c.ref_count == 0
                nursery.start_soon(late_user)
                await trio.testing.wait_all_tasks_blocked()
                assert log == ["open 0"]  # B waits for the close: it is not in
                gate[0].set()
        assert log == ["open 0", "close 0", "B in", "open 1", "close 1"]
        assert seen[0] is not seen[1]
        assert not c.is_open and c.ref_count == 0

    trio.run(main)


_PURE_TRIO_INTERRUPTED_CLOSE = r"""
import sys
from collections.abc import AsyncIterator
import trio
import di

assert "anyio" not in sys.modules, "this must run the close's own trio shield, not anyio's"

class Engine: pass
class Conn: pass

reg = di.Registry()
log = []

@reg.provider(singleton=True)
async def engine() -> AsyncIterator[Engine]:
    yield Engine()
    await trio.sleep(0)
    log.append("engine close")

@reg.provider(scope="request")
async def conn(engine: Engine) -> AsyncIterator[Conn]:
    yield Conn()
    await trio.sleep(0)
    log.append("conn close")

c = di.Container(reg, shutdown_timeout=60)

async def main():
    release = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as cancel:
                async with c:
                    async with c.scope("request") as scope:
                        await scope.aresolve(Conn)

                        async def holder(task_status=trio.TASK_STATUS_IGNORED):
                            async with scope.hold():
                                task_status.started()
                                await release.wait()

                        await nursery.start(holder)
                    cancel.cancel()
                    await trio.sleep_forever()
            assert cancel.cancelled_caught
            assert (c.ref_count, c.is_open, scope.closed) == (0, False, True), c
            release.set()
    assert log == ["conn close", "engine close"], log
    assert "anyio" not in sys.modules
    print("OK")

trio.run(main)
"""


def test_pure_trio_interrupted_close_uses_its_own_shield_and_closes_once() -> None:
    """Under pytest anyio is always imported (its plugin), so every other test
    of a cancelled close takes the anyio.CancelScope branch of
    ``Container._aclose_interrupted``. A trio application without anyio takes
    the ``aiologic.lowlevel.shield`` branch: run it in a fresh interpreter."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PURE_TRIO_INTERRUPTED_CLOSE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "OK"
