"""di.RefCounted and di.ClientContext: adversarial cases (cancellation at awkward
points, re-entry from the cleanup of a failed initialize(), threads running their own
event loops, one resource used from asyncio, trio and plain threads in turn)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio

import di

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the cleanup of a failed initialize() is part of the build -------------------------
#
# ClientContext.get_client's docstring: "A client whose initialize() (or close) needs
# this context again, through get_client(), async with ctx or close(), gets
# di.CircularDependencyError there instead of waiting for ever for the build (or close)
# it is part of." The close of a half-built client is part of the build. Under trio the
# cleanup runs in the building task; under asyncio it runs in a task of its own (the
# only way asyncio can shield it), which is marked as working for the build.


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("reentry", ["get_client", "close"])
def test_close_of_a_client_whose_initialize_failed_that_reenters_is_a_cycle(
    backend: str, reentry: str
) -> None:
    holder: list[di.ClientContext[Any]] = []
    outcome: list[str] = []

    class ClosesThroughItsContext:
        async def initialize(self) -> None:
            raise ConnectionError("server unreachable")

        async def aclose(self) -> None:
            ctx = holder[0]
            # Safety net only: a re-entry taken for a wait would wait for ever.
            with anyio.move_on_after(0.25):
                try:
                    if reentry == "get_client":
                        await ctx.get_client()
                    else:
                        await ctx.close()
                except di.CircularDependencyError:
                    outcome.append("cycle")
                    return
                outcome.append("returned")  # pragma: no cover
                return
            outcome.append("waited for ever")

    ctx = di.ClientContext(lambda conn, verify_ssl: ClosesThroughItsContext())
    holder.append(ctx)

    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            with pytest.raises(RuntimeError, match="server unreachable") as info:
                await ctx.get_client()
            assert isinstance(info.value.__cause__, ConnectionError)
        assert (ctx.is_open, ctx.ref_count) == (False, 0)

    anyio.run(main, backend=backend)
    assert outcome == ["cycle"]


# -- cancelling every task while a failed initialize() is cleaned up -------------------
#
# The same separate close task may be cancelled too (a graceful shutdown that cancels
# asyncio.all_tasks(), or asyncio.run's own shutdown after main returns): the build
# then ends with CancelledError. (A shield that waited on that cancelled task in a loop
# spun the event loop at 100% CPU for ever.) Run in a subprocess, which a watchdog ends,
# so that a spin cannot touch this process.

_SHUTDOWN_DURING_CLEANUP = """
import asyncio, os, threading

import di

def watchdog():
    threading.Event().wait(2.0)  # safety net: this takes milliseconds
    print("event loop frozen", flush=True)
    os._exit(3)

threading.Thread(target=watchdog, daemon=True).start()

class Flaky:
    async def initialize(self):
        raise ConnectionError("server unreachable")

    async def aclose(self):
        closing.set()
        await release.wait()

async def main():
    global closing, release
    closing, release = asyncio.Event(), asyncio.Event()
    ctx = di.ClientContext(lambda conn, verify_ssl: Flaky())
    task = asyncio.create_task(ctx.get_client())
    await closing.wait()
    for other in asyncio.all_tasks() - {asyncio.current_task()}:  # graceful shutdown
        other.cancel()
    release.set()
    (result,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(result, asyncio.CancelledError), repr(result)
    assert not ctx.is_open and ctx.ref_count == 0
    print("shut down", flush=True)

asyncio.run(main())
"""


def test_shutdown_while_a_failed_initialize_is_cleaned_up_does_not_freeze_the_loop() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SHUTDOWN_DURING_CLEANUP)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "event loop frozen" not in proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shut down" in proc.stdout


# -- verified behaviour ---------------------------------------------------------------


class Tracked:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closes = 0


class Tracker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: list[Tracked] = []

    def open(self) -> Tracked:
        with self.lock:
            self.made.append(Tracked(len(self.made)))
            return self.made[-1]

    def close(self, res: Tracked) -> None:
        with self.lock:
            res.closes += 1

    async def aopen(self) -> Tracked:
        await anyio.sleep(0)  # a checkpoint in whatever library runs us
        return self.open()

    async def aclose(self, res: Tracked) -> None:
        self.close(res)
        await anyio.sleep(0)


@pytest.mark.timeout(30)
def test_first_enters_from_threads_running_their_own_asyncio_and_trio_loops() -> None:
    """Eight threads, each with its own event loop (half asyncio, half trio), enter
    one async RefCounted together: one open, everyone gets it, one close."""
    t = Tracker()
    rc = di.RefCounted(t.aopen, t.aclose)
    start = threading.Barrier(8, timeout=TIMEOUT)
    inside = threading.Barrier(8, timeout=TIMEOUT)
    got: list[Tracked] = []
    errors: list[BaseException] = []

    async def use() -> None:
        start.wait()
        async with rc as res:
            got.append(res)
            inside.wait()  # all eight hold it at once (each loop has only this task)

    def worker(i: int) -> None:
        try:
            if i % 2:
                asyncio.run(use())
            else:
                trio.run(use)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    assert len(t.made) == 1 and got == t.made * 8
    assert t.made[0].closes == 1
    assert (rc.ref_count, rc.is_open) == (0, False)


def test_the_same_refcounted_from_asyncio_then_trio_then_a_thread() -> None:
    t = Tracker()
    rc = di.RefCounted(t.open, t.close)  # sync callables: `with` works too

    async def once() -> Tracked:
        async with rc as res:
            assert rc.ref_count == 1
            return res

    first = asyncio.run(once())
    second = trio.run(once)
    third: list[Tracked] = []

    def sync_user() -> None:
        with rc as res:
            third.append(res)

    th = threading.Thread(target=sync_user)
    th.start()
    th.join(TIMEOUT)
    assert t.made == [first, second, *third] and len(t.made) == 3
    assert [r.closes for r in t.made] == [1, 1, 1]
    assert (rc.ref_count, rc.is_open) == (0, False)


@pytest.mark.anyio
async def test_exit_from_another_task_than_the_enter(anyio_backend: str) -> None:
    t = Tracker()
    rc = di.RefCounted(t.aopen, t.aclose)
    with anyio.fail_after(TIMEOUT):
        res = await rc.__aenter__()
        async with anyio.create_task_group() as tg:
            tg.start_soon(rc.__aexit__, None, None, None)
        assert (rc.ref_count, rc.is_open, res.closes) == (0, False, 1)
        async with rc as again:  # a fresh one
            assert again is not res
    assert [r.closes for r in t.made] == [1, 1]


def test_waiter_cancelled_just_after_being_handed_the_lock_does_not_keep_it() -> None:
    """The opener hands the transition lock to a queued enter and cancels it before it
    runs: the lock is not lost, the state is exact, and later enters work."""
    t = Tracker()
    opening, gate = asyncio.Event(), asyncio.Event()

    async def open_() -> Tracked:
        opening.set()
        await gate.wait()
        return t.open()

    rc = di.RefCounted(open_, t.aclose)

    async def main() -> None:
        queued = asyncio.Event()
        waiter: list[asyncio.Task[None]] = []

        async def enter_queued() -> None:
            queued.set()  # nothing yields from here until it waits for the lock
            async with rc:
                raise AssertionError("cancelled before it ran")  # pragma: no cover

        async def opener() -> None:
            async with rc:
                # open_ returned and the lock went to the queued enter, which has
                # not run yet: cancel it now.
                waiter[0].cancel()
                assert rc.ref_count == 1

        first = asyncio.create_task(opener())
        await opening.wait()  # it holds the transition lock, waiting at the gate
        waiter.append(asyncio.create_task(enter_queued()))
        await queued.wait()
        gate.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await waiter[0]
        assert (rc.ref_count, rc.is_open) == (0, False)
        async with rc as res:
            assert res is t.made[1]

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert [r.closes for r in t.made] == [1, 1]


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt / SystemExit without their runner side effects."""


@pytest.mark.anyio
async def test_base_exception_from_initialize_closes_the_client_and_propagates(
    anyio_backend: str,
) -> None:
    log: list[str] = []

    class Interrupted:
        async def initialize(self) -> None:
            await anyio.sleep(0)
            raise _Interrupt

        async def aclose(self) -> None:
            await anyio.sleep(0)
            log.append("closed")

    ctx = di.ClientContext(lambda conn, verify_ssl: Interrupted())
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(_Interrupt):  # unchanged, not a ResourceOpenError
            async with ctx:
                raise AssertionError("must not get here")  # pragma: no cover
    assert log == ["closed"]
    assert (ctx.is_open, ctx.ref_count) == (False, 0)


@pytest.mark.anyio
async def test_base_exception_from_an_async_open_leaves_refcounted_untouched(
    anyio_backend: str,
) -> None:
    calls = 0

    async def open_() -> object:
        nonlocal calls
        calls += 1
        await anyio.sleep(0)
        if calls == 1:
            raise _Interrupt
        return object()

    async def close(res: object) -> None:
        pass

    rc = di.RefCounted(open_, close)
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(_Interrupt) as info:
            async with rc:
                raise AssertionError("must not get here")  # pragma: no cover
        assert info.value.__cause__ is None
        assert (rc.ref_count, rc.is_open) == (0, False)
        async with rc:  # the transition lock was released
            assert rc.ref_count == 1
    assert calls == 2
