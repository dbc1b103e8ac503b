"""di.RefCounted: opened on first enter, closed on last exit, shared safely."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from unittest.mock import AsyncMock

import anyio
import pytest
import trio

import di
from di import ResourceOpenError

TIMEOUT = 15.0
# How long a thread waits for the event loop before the test calls the loop
# blocked; only reached when it is.
BLOCKED = 5.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Res:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closes = 0

    def __repr__(self) -> str:
        return f"Res({self.n}, closes={self.closes})"


class Tracker:
    """Counts opens and closes; fails loudly if two resources are ever open
    at once or one is closed twice."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[Res] = []
        self.open_now = 0
        self.max_open_now = 0

    def open(self) -> Res:
        time.sleep(0)  # let other threads in, as real I/O would
        with self.lock:
            res = Res(len(self.opened))
            self.opened.append(res)
            self.open_now += 1
            self.max_open_now = max(self.max_open_now, self.open_now)
            return res

    def close(self, res: Res) -> None:
        time.sleep(0)
        with self.lock:
            res.closes += 1
            self.open_now -= 1

    async def aopen(self) -> Res:
        await anyio.sleep(0)  # suspend, in whatever library runs us
        return self.open()

    async def aclose(self, res: Res) -> None:
        await anyio.sleep(0)
        self.close(res)

    @property
    def closes(self) -> int:
        return sum(r.closes for r in self.opened)

    def assert_balanced(self) -> None:
        assert self.max_open_now == 1, "two resources were open at the same time"
        assert self.open_now == 0
        assert [r.closes for r in self.opened] == [1] * len(self.opened)


def sync_rc(tracker: Tracker) -> di.RefCounted[Res]:
    return di.RefCounted(tracker.open, tracker.close)


def async_rc(tracker: Tracker) -> di.RefCounted[Res]:
    return di.RefCounted(tracker.aopen, tracker.aclose)


def run_threads(target: Callable[[int], None], n: int) -> None:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread deadlocked"
    if errors:
        raise errors[0]


def arun(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


# -- basics ----------------------------------------------------------------


def test_first_enter_opens_last_exit_closes_sync() -> None:
    t = Tracker()
    rc = sync_rc(t)
    assert (rc.ref_count, rc.is_open) == (0, False)
    with rc as a:
        assert (rc.ref_count, rc.is_open) == (1, True)
        with rc as b:
            assert b is a is rc.resource
            assert rc.ref_count == 2
        assert (rc.ref_count, rc.is_open, a.closes) == (1, True, 0)
    assert (rc.ref_count, rc.is_open, a.closes) == (0, False, 1)
    assert len(t.opened) == 1


def test_first_enter_opens_last_exit_closes_async() -> None:
    t = Tracker()
    rc = async_rc(t)

    async def main() -> None:
        async with rc as a:
            async with rc as b:
                assert b is a and rc.ref_count == 2
            assert rc.is_open
        assert (rc.ref_count, rc.is_open, a.closes) == (0, False, 1)

    arun(main())


def test_async_with_works_for_sync_callables() -> None:
    t = Tracker()
    rc = sync_rc(t)

    async def main() -> None:
        async with rc as a:
            with rc as b:  # sync and async users share it, even in one thread
                assert a is b
            assert rc.ref_count == 1
        await rc.aclose()

    arun(main())
    t.assert_balanced()


def test_reopen_after_close_gives_a_fresh_resource() -> None:
    t = Tracker()
    rc = sync_rc(t)
    with rc as first:
        pass
    with rc as second:
        assert second is not first
        assert first.closes == 1 and second.closes == 0
    t.assert_balanced()
    assert len(t.opened) == 2


def test_reopen_after_explicit_close_async() -> None:
    t = Tracker()
    rc = async_rc(t)

    async def main() -> None:
        await rc.aclose()  # closing a closed one does nothing
        async with rc as first:
            await rc.aclose(force=True)
        assert first.closes == 1 and not rc.is_open
        async with rc as second:
            assert second is not first and second.closes == 0
        await rc.aclose()

    arun(main())
    t.assert_balanced()


def test_resource_when_closed_names_the_fix() -> None:
    rc = sync_rc(Tracker())
    with pytest.raises(RuntimeError, match=r"not open.*with rc as res"):
        _ = rc.resource


def test_name_appears_in_messages() -> None:
    rc = di.RefCounted(lambda: 1, lambda r: None, name="the pool")
    assert rc.name == "the pool" and "the pool" in repr(rc)
    with pytest.raises(RuntimeError, match="the pool is not open"):
        _ = rc.resource


def test_repr_shows_state() -> None:
    rc = di.RefCounted(lambda: 1, lambda r: None)
    with rc:
        assert "open ref_count=1" in repr(rc)
    assert "closed ref_count=0" in repr(rc)


# -- count never negative ---------------------------------------------------


def test_exit_without_enter_is_an_error_sync() -> None:
    rc = sync_rc(Tracker())
    with pytest.raises(RuntimeError, match="exit without a matching enter"):
        rc.__exit__(None, None, None)
    assert rc.ref_count == 0
    with rc:
        pass
    with pytest.raises(RuntimeError, match="exit without a matching enter"):
        rc.__exit__(None, None, None)
    assert rc.ref_count == 0


def test_exit_without_enter_is_an_error_async() -> None:
    rc = async_rc(Tracker())

    async def main() -> None:
        with pytest.raises(RuntimeError, match="exit without a matching enter"):
            await rc.__aexit__(None, None, None)
        assert rc.ref_count == 0

    arun(main())


# -- sync use of async callables ---------------------------------------------


@pytest.mark.parametrize("which", ["open", "close", "both"])
def test_sync_with_on_async_rc_raises_and_changes_nothing(which: str) -> None:
    t = Tracker()
    rc = di.RefCounted(
        t.aopen if which in ("open", "both") else t.open,
        t.aclose if which in ("close", "both") else t.close,
    )
    with pytest.raises(di.AsyncProviderError, match="use `async with` instead of `with`"):
        rc.__enter__()
    assert (rc.ref_count, rc.is_open, t.opened) == (0, False, [])
    with pytest.raises(di.AsyncProviderError, match=r"await rc\.aclose\(\)"):
        rc.close()

    async def main() -> None:
        async with rc:
            with pytest.raises(di.AsyncProviderError), rc:
                pass  # pragma: no cover
            with pytest.raises(di.AsyncProviderError):
                rc.__exit__(None, None, None)
            with pytest.raises(di.AsyncProviderError):
                rc.close(force=True)
            assert (rc.ref_count, rc.is_open) == (1, True)

    arun(main())
    t.assert_balanced()


def test_lambda_returning_a_coroutine_is_a_clear_error_from_sync_code() -> None:
    t = Tracker()
    rc = di.RefCounted(lambda: t.aopen(), t.close)
    with pytest.raises(di.AsyncProviderError, match="pass the `async def` itself"), rc:
        pass  # pragma: no cover
    assert (rc.ref_count, rc.is_open) == (0, False)


def test_lambda_returning_a_coroutine_is_awaited_on_the_async_path() -> None:
    t = Tracker()
    rc = di.RefCounted(t.aopen, lambda r: t.aclose(r))

    async def main() -> None:
        async with rc as r:
            assert r.closes == 0

    arun(main())
    t.assert_balanced()


def test_awaitable_resource_from_sync_open_is_not_awaited() -> None:
    class Awaitable_:
        def __await__(self) -> Any:
            raise AssertionError("the resource itself must not be awaited")

    async def close(res: object) -> None:
        pass

    thing = Awaitable_()
    rc = di.RefCounted(lambda: thing, close)

    async def main() -> None:
        async with rc as r:
            assert r is thing

    arun(main())


@pytest.mark.anyio
async def test_a_coroutine_from_a_plain_close_is_awaited_by_async_with(anyio_backend: str) -> None:
    t = Tracker()
    rc = di.RefCounted(t.open, lambda r: t.aclose(r))
    assert not rc.is_async  # both are plain functions; only the result is a coroutine
    with anyio.fail_after(TIMEOUT):
        async with rc as first:
            pass
        assert (rc.is_open, first.closes) == (False, 1)
        async with rc as second:
            await rc.aclose(force=True)
            assert (rc.is_open, second.closes) == (False, 1)
    t.assert_balanced()


@pytest.mark.anyio
async def test_a_coroutine_from_a_plain_open_is_awaited_by_async_with(anyio_backend: str) -> None:
    t = Tracker()
    rc = di.RefCounted(lambda: t.aopen(), t.close)
    with anyio.fail_after(TIMEOUT):
        async with rc as res:
            assert isinstance(res, Res) and rc.ref_count == 1
    assert (rc.is_open, res.closes) == (False, 1)
    t.assert_balanced()


def test_a_coroutine_from_a_plain_close_is_a_clear_error_from_sync_code() -> None:
    t = Tracker()
    rc = di.RefCounted(t.open, lambda r: t.aclose(r))
    with pytest.raises(di.AsyncProviderError, match=r"close of .* returned a coroutine"), rc:
        pass
    assert (rc.ref_count, rc.is_open) == (0, False)


@pytest.mark.anyio
async def test_asyncmock_open_and_close_are_async(anyio_backend: str) -> None:
    res = Res(0)
    opener, closer = AsyncMock(return_value=res), AsyncMock()
    rc = di.RefCounted(opener, closer)
    assert rc.is_async
    with pytest.raises(di.AsyncProviderError, match="use `async with` instead of `with`"):
        rc.__enter__()
    with anyio.fail_after(TIMEOUT):
        async with rc as got:
            assert got is res
    opener.assert_awaited_once_with()
    closer.assert_awaited_once_with(res)
    assert (rc.ref_count, rc.is_open) == (0, False)


# -- failing open ------------------------------------------------------------


def test_failing_open_sync_chains_the_cause_and_leaves_it_closed() -> None:
    calls = 0

    def bad_open() -> Res:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("no route to host")
        return Res(calls)

    rc = di.RefCounted(bad_open, lambda r: None)
    pattern = r"opening bad_open failed.*no route"
    with pytest.raises(ResourceOpenError, match=pattern) as info, rc:
        pass  # pragma: no cover
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, di.DIError)
    assert isinstance(info.value.__cause__, ValueError)
    assert (rc.ref_count, rc.is_open) == (0, False)
    with rc as res:  # the next enter tries again
        assert res.n == 2


def test_failing_open_while_held_elsewhere_is_not_possible_but_state_is_exact() -> None:
    # A failed open with other references alive cannot happen (it would already
    # be open); check the count is exact around a failure after a close.
    t = Tracker()
    fail = [False]

    def flaky() -> Res:
        if fail[0]:
            raise OSError("down")
        return t.open()

    rc = di.RefCounted(flaky, t.close)
    with rc:
        pass
    fail[0] = True
    for _ in range(3):
        with pytest.raises(ResourceOpenError):
            rc.__enter__()
        assert (rc.ref_count, rc.is_open) == (0, False)
    t.assert_balanced()


def test_failing_open_async_chains_the_cause() -> None:
    async def bad_open() -> Res:
        await asyncio.sleep(0)
        raise ConnectionError("refused")

    rc = di.RefCounted(bad_open, lambda r: None)

    async def main() -> None:
        with pytest.raises(ResourceOpenError, match="refused") as info:
            async with rc:
                pass  # pragma: no cover
        assert isinstance(info.value.__cause__, ConnectionError)
        assert (rc.ref_count, rc.is_open) == (0, False)

    arun(main())


def test_base_exception_from_open_propagates_unwrapped() -> None:
    def interrupted() -> Res:
        raise KeyboardInterrupt

    rc = di.RefCounted(interrupted, lambda r: None)
    with pytest.raises(KeyboardInterrupt), rc:
        pass  # pragma: no cover
    assert (rc.ref_count, rc.is_open) == (0, False)


# -- cancellation during open --------------------------------------------------


@pytest.mark.timeout(20)
def test_cancelled_open_asyncio_leaves_state_unchanged() -> None:
    t = Tracker()
    started = asyncio.Event()
    release = asyncio.Event()
    attempts = 0

    async def slow_open() -> Res:
        nonlocal attempts
        attempts += 1
        started.set()
        await release.wait()
        return t.open()

    rc = di.RefCounted(slow_open, t.aclose)

    async def holder() -> None:
        async with rc:
            raise AssertionError("must not get here")  # pragma: no cover

    async def main() -> None:
        task = asyncio.create_task(holder())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (rc.ref_count, rc.is_open, t.opened) == (0, False, [])
        release.set()
        async with rc as res:  # the lock was released; the next enter opens
            assert rc.ref_count == 1 and res.closes == 0
        assert attempts == 2

    arun(main())
    t.assert_balanced()


@pytest.mark.timeout(20)
def test_waiter_opens_itself_when_the_opener_is_cancelled() -> None:
    t = Tracker()
    first_started = asyncio.Event()
    calls = 0

    async def open_() -> Res:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_started.set()
            await asyncio.Event().wait()  # hangs until cancelled
        return t.open()

    rc = di.RefCounted(open_, t.aclose)

    entered = 0
    all_in = asyncio.Event()

    async def use() -> int:
        nonlocal entered
        async with rc as r:
            entered += 1
            if entered == 10:
                all_in.set()
            await all_in.wait()  # all ten share one open period
            return r.n

    async def main() -> None:
        opener = asyncio.create_task(use())
        await first_started.wait()
        waiters = [asyncio.create_task(use()) for _ in range(10)]
        await asyncio.sleep(0.01)  # let them queue on the transition lock
        opener.cancel()
        assert await asyncio.gather(*waiters) == [0] * 10
        with pytest.raises(asyncio.CancelledError):
            await opener
        assert (rc.ref_count, rc.is_open) == (0, False)

    arun(main())
    assert calls == 2  # the cancelled attempt and exactly one more
    t.assert_balanced()


@pytest.mark.timeout(20)
def test_cancelled_waiter_does_not_disturb_the_opener() -> None:
    t = Tracker()
    gate = asyncio.Event()

    async def open_() -> Res:
        await gate.wait()
        return t.open()

    rc = di.RefCounted(open_, t.aclose)

    async def main() -> None:
        entered = asyncio.Event()
        done = asyncio.Event()

        async def opener() -> None:
            async with rc:
                entered.set()
                await done.wait()

        async def waiter() -> None:
            async with rc:
                raise AssertionError("cancelled before entering")  # pragma: no cover

        a = asyncio.create_task(opener())
        await asyncio.sleep(0)
        b = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        gate.set()
        await entered.wait()
        assert rc.ref_count == 1
        done.set()
        await a
        assert (rc.ref_count, rc.is_open) == (0, False)

    arun(main())
    t.assert_balanced()


@pytest.mark.timeout(20)
def test_cancelled_open_trio_leaves_state_unchanged() -> None:
    t = Tracker()
    attempts = 0

    async def slow_open() -> Res:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await trio.sleep_forever()
        return t.open()

    rc = di.RefCounted(slow_open, t.aclose)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            with trio.move_on_after(0.05) as scope:
                async with rc:
                    raise AssertionError("must not get here")  # pragma: no cover
            assert scope.cancelled_caught
            assert (rc.ref_count, rc.is_open, t.opened) == (0, False, [])
            async with rc as res:
                assert res.n == 0 and rc.ref_count == 1

    trio.run(main)
    assert attempts == 2
    t.assert_balanced()


def test_last_exit_of_a_cancelled_trio_block_still_closes() -> None:
    """The last exit takes a free transition lock without a checkpoint, so a
    block that ends by cancellation closes the resource (before, the lock's
    checkpoint was cancelled and the resource stayed open, unreferenced)."""
    t = Tracker()

    async def close(res: Res) -> None:  # no checkpoint before it counts the close
        t.close(res)

    rc = di.RefCounted(t.aopen, close)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            with trio.CancelScope() as scope:
                async with rc:
                    scope.cancel()
                    await trio.sleep(0)
            assert scope.cancelled_caught
            assert (rc.ref_count, rc.is_open, t.closes) == (0, False, 1)

    trio.run(main)
    t.assert_balanced()


# -- failing close -------------------------------------------------------------


def test_failing_close_propagates_and_leaves_it_closed_sync() -> None:
    t = Tracker()
    fail = [True]

    def bad_close(res: Res) -> None:
        t.close(res)
        if fail[0]:
            raise OSError("flush failed")

    rc = di.RefCounted(t.open, bad_close)
    with pytest.raises(OSError, match="flush failed"), rc:
        pass
    assert (rc.ref_count, rc.is_open) == (0, False)
    fail[0] = False
    with rc as res:
        assert res.n == 1
    t.assert_balanced()


def test_failing_close_keeps_the_body_error_as_context() -> None:
    def bad_close(res: object) -> None:
        raise OSError("close failed")

    rc = di.RefCounted(object, bad_close)
    with pytest.raises(OSError) as info, rc:
        raise KeyError("body")
    assert isinstance(info.value.__context__, KeyError)
    assert not rc.is_open


def test_failing_explicit_close_async() -> None:
    t = Tracker()

    async def bad_close(res: Res) -> None:
        await t.aclose(res)
        raise OSError("close failed")

    rc = di.RefCounted(t.aopen, bad_close)

    async def main() -> None:
        async with rc:
            with pytest.raises(OSError, match="close failed"):
                await rc.aclose(force=True)
            assert not rc.is_open
        # the holder's exit does not try to close it a second time
        assert (rc.ref_count, rc.is_open) == (0, False)
        with pytest.raises(OSError, match="close failed"):
            async with rc:
                pass
        assert (rc.ref_count, rc.is_open) == (0, False)

    arun(main())
    t.assert_balanced()


# -- re-entry --------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_open_that_enters_its_own_resource_is_a_cycle(anyio_backend: str) -> None:
    t = Tracker()

    async def open_() -> Res:
        async with rc:
            raise AssertionError("entered itself")  # pragma: no cover
        return t.open()  # pragma: no cover

    rc = di.RefCounted(open_, t.aclose, name="the pool")
    with anyio.fail_after(TIMEOUT):
        for _ in range(2):  # the same error every time: no retry can help
            with pytest.raises(di.CircularDependencyError) as info:
                async with rc:
                    pass  # pragma: no cover
            assert not isinstance(info.value, ResourceOpenError)
            message = str(info.value)
            assert "the pool re-entered itself while opening" in message
            assert "already holding" not in message and info.value.__cause__ is None
            assert (rc.ref_count, rc.is_open) == (0, False)
    assert t.opened == []


@pytest.mark.parametrize("runner", ["thread", "asyncio", "trio"])
@pytest.mark.parametrize(
    ("during", "reentry"),
    [("open", "with"), ("open", "close"), ("close", "with"), ("close", "close")],
)
def test_plain_open_or_close_that_enters_its_own_resource_is_a_cycle(
    during: str, reentry: str, runner: str
) -> None:
    """A sync `with` or `close()` from inside a plain open or close of the
    same resource, whether the outer transition came from `with` (a thread)
    or from `async with` (a task of asyncio or trio)."""
    t = Tracker()

    def reenter() -> None:
        if reentry == "with":
            with rc:
                raise AssertionError("entered itself")  # pragma: no cover
        else:
            rc.close()

    def open_() -> Res:
        if during == "open":
            reenter()
        return t.open()

    def close(res: Res) -> None:
        t.close(res)
        if during == "close":
            reenter()

    rc = di.RefCounted(open_, close, name="the pool")
    doing = "opening" if during == "open" else "closing"

    def check(info: pytest.ExceptionInfo[di.CircularDependencyError]) -> None:
        assert f"the pool re-entered itself while {doing}" in str(info.value)
        assert not isinstance(info.value, ResourceOpenError)
        # A failed open leaves it closed; a failed close too, as for any close error.
        assert (rc.ref_count, rc.is_open) == (0, False)

    def in_thread(_: int) -> None:
        with pytest.raises(di.CircularDependencyError) as info, rc:
            pass
        check(info)

    async def in_task() -> None:
        with pytest.raises(di.CircularDependencyError) as info:
            async with rc:
                pass
        check(info)

    async def in_trio() -> None:
        with trio.fail_after(TIMEOUT):
            await in_task()

    if runner == "thread":
        run_threads(in_thread, 1)
    elif runner == "asyncio":
        arun(in_task())
    else:
        trio.run(in_trio)
    if during == "open":
        assert t.opened == []
    else:
        t.assert_balanced()
        assert len(t.opened) == 1


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_open_running_an_event_loop_that_enters_its_own_resource_is_a_cycle(loop: str) -> None:
    """A sync open that runs an event loop of its own, in which a task enters
    the resource being opened: that task can never get the transition lock."""
    t = Tracker()

    async def enter() -> None:
        async with rc:
            raise AssertionError("entered itself")  # pragma: no cover

    async def enter_in_trio() -> None:
        with trio.fail_after(TIMEOUT):
            await enter()

    def open_() -> Res:
        with pytest.raises(di.CircularDependencyError, match="the pool re-entered itself"):
            if loop == "asyncio":
                arun(enter())
            else:
                trio.run(enter_in_trio)
        return t.open()

    rc = di.RefCounted(open_, t.close, name="the pool")

    def use(_: int) -> None:
        with rc as res:
            assert res.n == 0 and rc.ref_count == 1

    run_threads(use, 1)
    t.assert_balanced()


# -- close while held --------------------------------------------------------------


def test_close_while_held_warns_and_defers_sync(caplog: pytest.LogCaptureFixture) -> None:
    t = Tracker()
    rc = sync_rc(t)
    with caplog.at_level(logging.WARNING, logger="di"):
        with rc as res:
            with rc:
                rc.close()
                assert rc.is_open and res.closes == 0
            assert rc.is_open and res.closes == 0
        assert not rc.is_open and res.closes == 1
    [record] = [r for r in caplog.records if r.name == "di"]
    assert record.levelno == logging.WARNING
    assert "deferred" in record.getMessage() and "2 reference" in record.getMessage()
    assert "force=True" in record.getMessage()


def test_close_while_held_warns_and_defers_async(caplog: pytest.LogCaptureFixture) -> None:
    t = Tracker()
    rc = async_rc(t)

    async def main() -> None:
        async with rc as res:
            await rc.aclose()
            assert rc.is_open and res.closes == 0
        assert not rc.is_open and res.closes == 1

    with caplog.at_level(logging.WARNING, logger="di"):
        arun(main())
    assert any("deferred" in r.getMessage() for r in caplog.records if r.name == "di")


def test_close_when_nothing_is_held_does_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = Tracker()
    rc = async_rc(t)

    async def main() -> None:
        await rc.aclose()
        async with rc as res:
            await rc.aclose(force=True)  # forcing is explicit: no warning
        await rc.aclose()
        assert res.closes == 1

    with caplog.at_level(logging.WARNING, logger="di"):
        arun(main())
    assert not [r for r in caplog.records if r.name == "di"]


def test_force_close_closes_at_once_sync() -> None:
    t = Tracker()
    rc = sync_rc(t)
    with rc as res:
        with rc:
            rc.close(force=True)
            assert res.closes == 1 and not rc.is_open
            assert rc.ref_count == 2  # the holders have not exited yet
        assert rc.ref_count == 1
    assert rc.ref_count == 0 and res.closes == 1  # their exits close nothing more
    with rc as fresh:
        assert fresh is not res
    t.assert_balanced()


def test_close_after_force_close_while_still_held_does_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = Tracker()
    rc = sync_rc(t)
    with caplog.at_level(logging.WARNING, logger="di"), rc:
        rc.close(force=True)
        rc.close()  # nothing is open: nothing to defer, nothing to warn about
        assert rc.ref_count == 1
    assert not [r for r in caplog.records if r.name == "di"]
    t.assert_balanced()


def test_force_close_then_new_holder_while_old_still_held() -> None:
    t = Tracker()
    rc = sync_rc(t)
    rc.__enter__()  # an old holder that outlives the forced close
    rc.close(force=True)
    with rc as fresh:  # a new open period starts although the old holder remains
        assert fresh.n == 1 and rc.ref_count == 2
    assert rc.is_open  # the old holder still holds it
    rc.__exit__(None, None, None)
    assert (rc.ref_count, rc.is_open) == (0, False)
    t.assert_balanced()


def test_force_close_async() -> None:
    t = Tracker()
    rc = async_rc(t)

    async def main() -> None:
        async with rc as res:
            await rc.aclose(force=True)
            assert res.closes == 1 and not rc.is_open
        assert rc.ref_count == 0 and res.closes == 1

    arun(main())
    t.assert_balanced()


# -- concurrency ---------------------------------------------------------------


@pytest.mark.timeout(20)
def test_concurrent_first_enter_opens_once_asyncio() -> None:
    t = Tracker()

    async def slow_open() -> Res:
        await asyncio.sleep(0.02)
        return t.open()

    rc = di.RefCounted(slow_open, t.aclose)
    all_in = asyncio.Event()

    async def use() -> int:
        async with rc as r:
            if rc.ref_count == 50:
                all_in.set()
            await all_in.wait()  # everyone holds it at once
            return r.n

    async def main() -> list[int]:
        return await asyncio.gather(*(use() for _ in range(50)))

    assert arun(main()) == [0] * 50
    t.assert_balanced()
    assert len(t.opened) == 1


@pytest.mark.timeout(20)
def test_concurrent_first_enter_opens_once_threads() -> None:
    t = Tracker()

    def slow_open() -> Res:
        time.sleep(0.02)
        return t.open()

    rc = di.RefCounted(slow_open, t.close)
    start = threading.Barrier(16, timeout=TIMEOUT)
    all_in = threading.Barrier(16, timeout=TIMEOUT)
    seen: list[int] = []

    def use(i: int) -> None:
        start.wait()
        with rc as r:
            seen.append(r.n)
            all_in.wait()  # everyone holds it at once

    run_threads(use, 16)
    assert seen == [0] * 16
    assert len(t.opened) == 1
    t.assert_balanced()


def _check_held(rc: di.RefCounted[Res], res: Res) -> None:
    assert res.closes == 0, f"{res} was closed while still held"
    assert rc.is_open and rc.ref_count >= 1


def _pause(rnd: random.Random) -> float:
    # Bimodal on purpose: back-to-back enters keep the resource contended,
    # longer gaps let the count fall to zero, so a run crosses hundreds of
    # open/close transitions with other users racing each one.
    return 0.0 if rnd.random() < 0.3 else rnd.random() / 20


async def _async_user(
    rc: di.RefCounted[Res], seed: int, rounds: int, sleep: Callable[[float], Awaitable[None]]
) -> None:
    rnd = random.Random(seed)
    for _ in range(rounds):
        async with rc as res:
            _check_held(rc, res)
            if rnd.random() < 0.5:
                await sleep(0 if rnd.random() < 0.5 else rnd.random() / 1000)
            _check_held(rc, res)
        await sleep(_pause(rnd))


def _sync_user(rc: di.RefCounted[Res], seed: int, rounds: int) -> None:
    rnd = random.Random(seed)
    for _ in range(rounds):
        with rc as res:
            _check_held(rc, res)
            if rnd.random() < 0.5:
                time.sleep(0 if rnd.random() < 0.5 else rnd.random() / 1000)
            _check_held(rc, res)
        time.sleep(_pause(rnd))


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads far more often than the default
    5 ms, so that races between threads show up in a short run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _run_with_threads(thread_target: Callable[[int], None], main: Awaitable[None]) -> None:
    """Run 16 threads and an asyncio main at the same time; bound both."""
    outcome: list[BaseException | None] = []

    def threads() -> None:
        try:
            run_threads(thread_target, 16)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=threads, daemon=True)
    runner.start()
    try:
        arun(main)
    finally:
        runner.join(TIMEOUT)
    assert not runner.is_alive(), "the threads deadlocked"
    if outcome != [None]:
        raise outcome[0] or AssertionError("threads did not report")


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("fast_switching")
def test_stress_200_tasks_and_16_threads_sync_callables() -> None:
    """200 asyncio tasks (`async with`) and 16 threads (`with`) share one
    RefCounted with sync open/close."""
    t = Tracker()
    rc = sync_rc(t)

    async def main() -> None:
        await asyncio.gather(*(_async_user(rc, 1000 + i, 10, asyncio.sleep) for i in range(200)))

    _run_with_threads(lambda i: _sync_user(rc, i, 10), main())
    assert (rc.ref_count, rc.is_open) == (0, False)
    t.assert_balanced()
    assert t.opened  # usually hundreds of open periods; how many depends on timing


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("fast_switching")
def test_stress_200_tasks_and_16_threads_async_callables() -> None:
    """200 asyncio tasks on the main loop, plus 16 threads each running its own
    event loop (half asyncio, half trio), all sharing one async RefCounted."""
    t = Tracker()
    rc = async_rc(t)

    def thread_user(i: int) -> None:
        if i % 2:
            asyncio.run(asyncio.wait_for(_async_user(rc, i, 10, asyncio.sleep), TIMEOUT))
        else:

            async def in_trio() -> None:
                with trio.fail_after(TIMEOUT):
                    await _async_user(rc, i, 10, trio.sleep)

            trio.run(in_trio)

    async def main() -> None:
        await asyncio.gather(*(_async_user(rc, 1000 + i, 10, asyncio.sleep) for i in range(200)))

    _run_with_threads(thread_user, main())
    assert (rc.ref_count, rc.is_open) == (0, False)
    t.assert_balanced()
    assert t.opened


@pytest.mark.timeout(20)
def test_stress_200_trio_tasks() -> None:
    t = Tracker()
    rc = async_rc(t)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(_async_user, rc, i, 10, trio.sleep)

    trio.run(main)
    assert (rc.ref_count, rc.is_open) == (0, False)
    t.assert_balanced()
    assert t.opened


@pytest.mark.timeout(20)
def test_trio_mixes_sync_and_async_users_of_a_sync_rc() -> None:
    t = Tracker()
    rc = sync_rc(t)

    async def async_user() -> None:
        for _ in range(20):
            async with rc as res:
                await trio.sleep(0)
                _check_held(rc, res)

    async def sync_user() -> None:
        for _ in range(20):
            with rc as res:  # sync code called from inside a trio task
                _check_held(rc, res)
            await trio.sleep(0)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(async_user)
                    nursery.start_soon(sync_user)

    trio.run(main)
    assert rc.ref_count == 0
    t.assert_balanced()


@pytest.mark.anyio
async def test_async_with_waits_for_another_threads_sync_open_without_blocking_the_loop(
    anyio_backend: str,
) -> None:
    """A thread is in a sync open that needs the event loop to go on; an
    `async with` that arrives meanwhile must let the loop run while it waits."""
    t = Tracker()
    opening, release, inside = threading.Event(), threading.Event(), threading.Event()
    opens = 0

    def open_() -> Res:
        nonlocal opens
        opens += 1
        if opens == 1:
            opening.set()
            assert release.wait(BLOCKED), "the event loop was blocked"
        return t.open()

    rc = di.RefCounted(open_, t.close)
    thread_error: list[BaseException] = []

    def holder() -> None:
        try:
            with rc as res:
                assert res.n == 0
                assert inside.wait(TIMEOUT)  # both hold it at once
        except BaseException as exc:
            thread_error.append(exc)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    with anyio.fail_after(TIMEOUT):
        assert await anyio.to_thread.run_sync(opening.wait, TIMEOUT)
        about_to_enter = anyio.Event()
        got: list[Res] = []

        async def enter() -> None:
            about_to_enter.set()
            # From here to the lock wait nothing yields: the test body resumes
            # only once this task waits for the thread's open (or never, if the
            # wait blocks the loop).
            async with rc as res:
                got.append(res)
                inside.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(enter)
            await about_to_enter.wait()
            release.set()
        await anyio.to_thread.run_sync(thread.join, TIMEOUT)
    assert not thread.is_alive() and thread_error == []
    assert opens == 1 and got == t.opened
    assert (rc.ref_count, rc.is_open) == (0, False)
    t.assert_balanced()


@pytest.mark.anyio
async def test_sync_with_in_the_loop_thread_cannot_wait_for_a_task_of_it(
    anyio_backend: str,
) -> None:
    """Another thread hands the transition lock to an `async with` of this
    thread that has not run yet; a sync `with` (or close()) of this thread
    that needs the lock then cannot wait for it: a clear error, no deadlock."""
    t = Tracker()
    closing, release = threading.Event(), threading.Event()

    def close(res: Res) -> None:
        closing.set()
        assert release.wait(BLOCKED), "the event loop was blocked"
        t.close(res)

    rc = di.RefCounted(t.open, close)
    thread_error: list[BaseException] = []

    def user() -> None:
        try:
            with rc:
                pass
        except BaseException as exc:
            thread_error.append(exc)

    thread = threading.Thread(target=user, daemon=True)
    thread.start()
    with anyio.fail_after(TIMEOUT):
        assert await anyio.to_thread.run_sync(closing.wait, TIMEOUT)
        about_to_enter = anyio.Event()
        got: list[Res] = []

        async def enter() -> None:
            about_to_enter.set()
            async with rc as res:  # waits for the thread's close
                got.append(res)

        async with anyio.create_task_group() as tg:
            tg.start_soon(enter)
            await about_to_enter.wait()
            release.set()
            # Block the loop on purpose: the thread's close ends and hands the
            # lock to `enter`, which cannot run before this body yields.
            thread.join(TIMEOUT)
            assert not thread.is_alive() and thread_error == []
            assert got == [] and not rc.is_open
            with pytest.raises(di.AsyncProviderError, match="another task of this thread"), rc:
                pass  # pragma: no cover
            with pytest.raises(di.AsyncProviderError, match="another task of this thread"):
                rc.close()
            assert (rc.ref_count, rc.is_open) == (0, False)
        assert got == [t.opened[1]]
    assert (rc.ref_count, rc.is_open) == (0, False)
    t.assert_balanced()


@pytest.mark.timeout(20)
def test_close_racing_with_enters_never_closes_a_held_resource() -> None:
    t = Tracker()
    rc = sync_rc(t)
    stop = threading.Event()

    def closer() -> None:
        while not stop.is_set():
            rc.close()  # deferred whenever someone holds it
            time.sleep(0)

    def user(i: int) -> None:
        for _ in range(300):
            with rc as res:
                _check_held(rc, res)

    logging.getLogger("di").disabled = True  # the deferral warning would flood
    try:
        c = threading.Thread(target=closer, daemon=True)
        c.start()
        run_threads(user, 8)
        stop.set()
        c.join(TIMEOUT)
        assert not c.is_alive()
    finally:
        logging.getLogger("di").disabled = False
    rc.close()
    assert (rc.ref_count, rc.is_open) == (0, False)
    t.assert_balanced()


# -- seeded, model-based randomized test -------------------------------------------
#
# Several actors share one RefCounted; a seeded driver picks one step at a time
# (an actor enters, exits, closes, is cancelled, or a blocked open/close is let
# go), waits until every actor is blocked again and compares the real state with
# a small model after every step. Interleavings come from the seed, never from
# timing: gates are events, and "everyone is blocked" is read off the scheduler
# (asyncio's ready queue, trio.testing.wait_all_tasks_blocked, or for threads the
# lock's waiter count and the reports the model predicts).
#
# The rules the model encodes (RefCounted docstring, README, docs/design.md):
# - open runs only on an enter that finds the resource closed, under the
#   transition lock (FIFO); enters queued behind it find it open and join it, so
#   one open per cycle, and every enter of a cycle returns the same object;
# - ref_count rises only after a successful open; a failed open raises
#   ResourceOpenError (cause: the original error), leaves the count and state as
#   they were, and the next enter (a queued one, at once) calls open again;
# - a cancelled enter (waiting for the lock, or inside its own open) changes
#   nothing: the cancellation propagates and a queued enter opens instead;
# - every exit drops its reference first; the exit that brings the count to 0
#   while it is open closes it, and so does a cancelled block's last exit (the
#   free lock is taken without a checkpoint; under trio an async close then sees
#   the cancellation at its first checkpoint);
# - close()/aclose() while references are held logs a warning and defers to the
#   last exit; force=True closes at once (holders' exits only count down and a
#   later enter opens a fresh resource); closing a closed resource does nothing;
# - a failing close propagates its error, and the resource is still considered
#   closed (no second close; the next enter opens a fresh one).


class _MCancel(BaseException):
    """Cancellation, in the model."""


class _MError(Exception):
    """An error the real code raises, by the name of its type, in the model."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


_Step = tuple[Any, ...]
_Wait = tuple[Any, ...]


class _RcModel:
    """What RefCounted should do, as generators: an actor runs until it waits
    for a command, the transition lock (FIFO) or a gate of a blocked call."""

    def __init__(
        self, n: int, open_plan: list[str], close_plan: list[str], trio_cancel: bool
    ) -> None:
        self.open_plan = open_plan
        self.close_plan = close_plan
        self.trio = trio_cancel  # trio: a cancelled actor fails at every checkpoint
        self.count = 0
        self.res: int | None = None
        self.opens = 0
        self.closes = 0
        self.warnings = 0
        self.journal: list[tuple[str, int]] = []
        self.owner: int | None = None
        self.queue: list[int] = []
        self.runnable: list[int] = []
        self.cancelled: set[int] = set()
        self.events: dict[int, list[tuple[Any, ...]]] = {a: [] for a in range(n)}
        self.held: dict[int, list[int]] = {a: [] for a in range(n)}
        self.wait: dict[int, _Wait] = {}
        self.gens = {a: self._actor(a) for a in range(n)}
        for a in range(n):
            self._resume(a, None)

    # -- the driver's side

    def apply(self, step: _Step) -> None:
        kind, arg = step[0], step[1]
        if kind == "close":
            self._resume(arg, ("close", step[2]))
        elif kind == "release":
            (a,) = [a for a, w in self.wait.items() if w == ("gate", arg)]
            self._resume(a, None)
        elif kind == "cancel":
            self.cancelled.add(arg)
            if self.wait[arg] == ("lock",):
                self.queue.remove(arg)
            self._resume(arg, None, throw=True)
        else:
            self._resume(arg, kind)
        while self.runnable:
            self._resume(self.runnable.pop(0), None)

    def gates(self) -> list[tuple[str, int]]:
        return sorted(w[1] for w in self.wait.values() if w[0] == "gate")

    def _resume(self, a: int, value: Any, throw: bool = False) -> None:
        gen = self.gens[a]
        while True:
            try:
                wait = gen.throw(_MCancel()) if throw else gen.send(value)
            except StopIteration:
                self.wait[a] = ("done",)
                return
            if self.trio and a in self.cancelled:
                throw = True  # a wait is a checkpoint: it raises at once
                continue
            self.wait[a] = wait
            return

    # -- the actors

    def _actor(self, a: int) -> Any:
        try:
            yield from self._block(a)
        except _MCancel:
            self.events[a].append(("died",))
        else:
            self.events[a].append(("stopped",))

    def _block(self, a: int) -> Any:
        while True:
            cmd = yield ("cmd",)
            if cmd in ("exit", "stop"):
                return
            try:
                if cmd == "enter":
                    got = yield from self._enter(a)
                    self.events[a].append(("entered", got))
                    self.held[a].append(got)
                    try:
                        yield from self._block(a)
                    except _MCancel:
                        self.held[a].pop()
                        yield from self._exit(a)  # an error here replaces the original
                        raise
                    self.held[a].pop()
                    yield from self._exit(a)
                    self.events[a].append(("exited",))
                else:
                    yield from self._close(a, force=cmd[1])
                    self.events[a].append(("closed",))
            except _MError as exc:
                self.events[a].append(("error", exc.name))

    def _acquire(self, a: int) -> Any:
        if self.owner is None:
            self.owner = a  # a free lock is taken without a checkpoint
            return
        if self.trio and a in self.cancelled:
            raise _MCancel
        self.queue.append(a)
        yield ("lock",)
        assert self.owner == a

    def _unlock(self) -> None:
        if self.queue:
            self.owner = self.queue.pop(0)
            self.runnable.append(self.owner)
        else:
            self.owner = None

    def _call(self, what: str, index: int, subject: int, plan: str, fails: str) -> Any:
        self.journal.append((what, subject))
        if plan.startswith("block"):
            try:
                yield ("gate", (what, index))
            except _MCancel:
                self.journal.append((f"{what}-cancelled", subject))
                raise
        if plan.endswith("fail"):
            self.journal.append((f"{what}-failed", subject))
            raise _MError(fails)
        self.journal.append((f"{what}ed", subject))

    def _enter(self, a: int) -> Any:
        if self.res is not None:
            self.count += 1
            return self.res
        yield from self._acquire(a)
        try:
            if self.res is None:
                k = self.opens
                self.opens += 1
                yield from self._call("open", k, k, self.open_plan[k], "ResourceOpenError")
                self.res = k
            self.count += 1
            return self.res
        finally:
            self._unlock()

    def _exit(self, a: int) -> Any:
        self.count -= 1
        if self.count == 0 and self.res is not None:
            yield from self._close_now(a, force=False)

    def _close(self, a: int, force: bool) -> Any:
        if not force and self.count > 0 and self.res is not None:
            self.warnings += 1
            return
        yield from self._close_now(a, force)

    def _close_now(self, a: int, force: bool) -> Any:
        yield from self._acquire(a)
        try:
            if self.res is None or (self.count > 0 and not force):
                return
            n, self.res = self.res, None
            c = self.closes
            self.closes += 1
            yield from self._call("close", c, n, self.close_plan[c], "OSError")
        finally:
            self._unlock()


class _MRes:
    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"_MRes({self.n})"


class _Script:
    """The real open and close, following the same plans as the model. A
    blocking call waits on a gate made by ``make_gate`` (an Event of the
    library in use)."""

    def __init__(self, open_plan: list[str], close_plan: list[str], make_gate: Any) -> None:
        self.open_plan = open_plan
        self.close_plan = close_plan
        self.make_gate = make_gate
        self.journal: list[tuple[str, int]] = []
        self.created: dict[int, _MRes] = {}
        self.gates: dict[tuple[str, int], Any] = {}
        self.opens = 0
        self.closes = 0
        self.aborted = False

    def abort(self) -> None:
        """After a failed check: let every call through, so the actors end."""
        self.aborted = True
        for gate in self.gates.values():
            gate.set()

    def _start(self, what: str, index: int, subject: int, plan: str) -> Any:
        self.journal.append((what, subject))
        if plan.startswith("block") and not self.aborted:
            gate = self.gates[(what, index)] = self.make_gate()
            return gate
        return None

    def _finish(self, what: str, subject: int, plan: str) -> None:
        if plan.endswith("fail"):
            self.journal.append((f"{what}-failed", subject))
            raise OSError(f"{what} {subject} failed")
        self.journal.append((f"{what}ed", subject))

    def _next_open(self) -> tuple[int, str]:
        k = self.opens
        self.opens += 1
        return k, self.open_plan[k]

    def _next_close(self) -> tuple[int, str]:
        c = self.closes
        self.closes += 1
        return c, self.close_plan[c]

    def _made(self, k: int) -> _MRes:
        res = self.created[k] = _MRes(k)
        return res

    def open(self) -> _MRes:
        k, plan = self._next_open()
        gate = self._start("open", k, k, plan)
        if gate is not None:
            assert gate.wait(TIMEOUT), "gate never opened"
        self._finish("open", k, plan)
        return self._made(k)

    def close(self, res: _MRes) -> None:
        c, plan = self._next_close()
        gate = self._start("close", c, res.n, plan)
        if gate is not None:
            assert gate.wait(TIMEOUT), "gate never opened"
        self._finish("close", res.n, plan)

    async def aopen(self) -> _MRes:
        k, plan = self._next_open()
        gate = self._start("open", k, k, plan)
        if gate is not None:
            try:
                await gate.wait()
            except BaseException:
                self.journal.append(("open-cancelled", k))
                raise
        self._finish("open", k, plan)
        return self._made(k)

    async def aclose(self, res: _MRes) -> None:
        c, plan = self._next_close()
        gate = self._start("close", c, res.n, plan)
        if gate is not None:
            try:
                await gate.wait()
            except BaseException:
                self.journal.append(("close-cancelled", res.n))
                raise
        self._finish("close", res.n, plan)

    def seen(self, res: object) -> Any:
        """What an enter returned: the number of the resource, if it is the
        very object that open made."""
        n = getattr(res, "n", None)
        return n if isinstance(n, int) and self.created.get(n) is res else ("stranger", res)


def _error_name(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, ResourceOpenError) and not isinstance(exc.__cause__, OSError):
        name += " without its cause"
    return name


class _WarningCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "deferred" in record.getMessage():
            self.count += 1


def _plans(rnd: random.Random, blocking: bool) -> tuple[list[str], list[str]]:
    kinds = ["ok", "fail", "block-ok", "block-fail"] if blocking else ["ok", "fail"]
    weights = [5, 2, 3, 1] if blocking else [3, 1]
    return (rnd.choices(kinds, weights, k=200), rnd.choices(kinds, weights, k=200))


def _steps(model: _RcModel, rnd: random.Random, n: int, can_cancel: bool) -> Iterator[_Step]:
    """The seeded steps: ``n`` random ones, then a wind-down that lets every
    gate go, exits every block and stops every actor."""
    for _ in range(n):
        options: list[_Step] = []
        for a, wait in model.wait.items():
            depth = len(model.held[a])
            if wait == ("cmd",):
                options += [("enter", a)] * (4 if depth < 3 else 0)
                options += [("exit", a)] * (3 if depth else 0)
                options.append(("close", a, rnd.random() < 0.4))
            if can_cancel and (
                wait[0] in ("lock", "gate") or (wait == ("cmd",) and depth and rnd.random() < 0.4)
            ):
                options.append(("cancel", a))
        options += [("release", key) for key in model.gates() for _ in range(3)]
        if not options:
            break
        yield rnd.choice(options)
    for _ in range(500):
        gates = model.gates()
        if gates:
            yield ("release", rnd.choice(gates))
            continue
        idle = [a for a, w in model.wait.items() if w == ("cmd",)]
        holding = [a for a in idle if model.held[a]]
        if holding:
            yield ("exit", rnd.choice(holding))
        elif idle:
            yield ("stop", idle[0])
        else:
            return
    raise AssertionError("the wind-down did not end")


class _Run:
    """One seeded sequence: the model, the real RefCounted and the check."""

    def __init__(self, seed: int, blocking: bool, trio_cancel: bool = False) -> None:
        self.seed = seed
        self.rnd = random.Random(seed)
        self.n = self.rnd.randint(2, 4)
        self.open_plan, self.close_plan = _plans(self.rnd, blocking)
        self.model = _RcModel(self.n, self.open_plan, self.close_plan, trio_cancel)
        self.events: dict[int, list[tuple[Any, ...]]] = {a: [] for a in range(self.n)}
        self.trace: list[_Step] = []
        self.warnings = _WarningCounter()

    def steps(self, count: int, can_cancel: bool) -> Iterator[_Step]:
        for step in _steps(self.model, self.rnd, count, can_cancel):
            self.trace.append(step)
            self.model.apply(step)
            yield step

    def actual(self, rc: di.RefCounted[Any], script: _Script) -> Any:
        return (script.journal, rc.ref_count, rc.is_open, self.events, self.warnings.count)

    def expected(self) -> Any:
        m = self.model
        return (m.journal, m.count, m.res is not None, m.events, m.warnings)

    def check(self, rc: di.RefCounted[Any], script: _Script) -> None:
        actual, expected = self.actual(rc, script), self.expected()
        assert actual == expected, (
            f"seed {self.seed}, after steps {self.trace}:\n"
            f"journal  {actual[0]}\n   model {expected[0]}\n"
            f"ref_count {actual[1]} (model {expected[1]}), is_open {actual[2]} "
            f"(model {expected[2]}), warnings {actual[4]} (model {expected[4]})\n"
            f"events   {actual[3]}\n   model {expected[3]}"
        )
        if self.model.res is not None:
            assert rc.resource is script.created[self.model.res], f"seed {self.seed}"

    def check_end(self, rc: di.RefCounted[Any], script: _Script) -> None:
        self.check(rc, script)
        assert (rc.ref_count, rc.is_open) == (0, False)
        opened = [n for what, n in script.journal if what == "opened"]
        closing = [n for what, n in script.journal if what == "close"]
        assert opened == closing, f"seed {self.seed}: every open resource closed once"

    def __enter__(self) -> _Run:
        # Counted whatever another module left the logger's level at.
        logger = logging.getLogger("di")
        self.saved = (logger.level, logger.disabled)
        logger.setLevel(logging.WARNING)
        logger.disabled = False
        logger.addHandler(self.warnings)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("di")
        logger.removeHandler(self.warnings)
        logger.setLevel(self.saved[0])
        logger.disabled = self.saved[1]


class _AioActor:
    def __init__(self, rc: di.RefCounted[Any], script: _Script, events: list[Any]) -> None:
        self.rc = rc
        self.script = script
        self.events = events
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self) -> None:
        try:
            await self._block()
        except asyncio.CancelledError:
            self.events.append(("died",))
        else:
            self.events.append(("stopped",))

    async def _next(self) -> Any:
        return await self.inbox.get()

    async def _block(self) -> None:
        while True:
            cmd = await self._next()
            if cmd in ("exit", "stop"):
                return
            try:
                if cmd == "enter":
                    async with self.rc as res:
                        self.events.append(("entered", self.script.seen(res)))
                        await self._block()
                    self.events.append(("exited",))
                else:
                    await self.rc.aclose(force=cmd[1])
                    self.events.append(("closed",))
            except Exception as exc:
                self.events.append(("error", _error_name(exc)))


class _TrioActor(_AioActor):
    def __init__(self, rc: di.RefCounted[Any], script: _Script, events: list[Any]) -> None:
        super().__init__(rc, script, events)
        self.send, self.receive = trio.open_memory_channel[Any](100)
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            try:
                await self._block()
            except trio.Cancelled:
                self.events.append(("died",))
                raise
            self.events.append(("stopped",))

    async def _next(self) -> Any:
        return await self.receive.receive()


async def _settle_asyncio() -> None:
    """Until no other task of the loop can run: all wait for an event."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    for _ in range(1000):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            await asyncio.sleep(0)
            if not ready:
                return
    assert ready is None, "the event loop never settled"


def _command(step: _Step) -> Any:
    return ("close", step[2]) if step[0] == "close" else step[0]


async def _asyncio_sequence(seed: int, blocking: bool) -> None:
    with _Run(seed, blocking) as run:
        script = _Script(run.open_plan, run.close_plan, asyncio.Event)
        rc: di.RefCounted[Any] = (
            di.RefCounted(script.aopen, script.aclose)
            if blocking
            else di.RefCounted(script.open, script.close)
        )
        actors = [_AioActor(rc, script, run.events[a]) for a in range(run.n)]
        tasks = [asyncio.create_task(actor.run()) for actor in actors]
        try:
            await _settle_asyncio()
            for step in run.steps(30, can_cancel=True):
                if step[0] == "cancel":
                    tasks[step[1]].cancel()
                elif step[0] == "release":
                    script.gates[step[1]].set()
                else:
                    actors[step[1]].inbox.put_nowait(_command(step))
                await _settle_asyncio()
                run.check(rc, script)
        except BaseException:
            script.abort()
            for task in tasks:
                task.cancel()
            raise
        await asyncio.gather(*tasks)
        run.check_end(rc, script)


async def _trio_sequence(seed: int) -> None:
    import trio.testing

    with _Run(seed, blocking=True, trio_cancel=True) as run:
        script = _Script(run.open_plan, run.close_plan, trio.Event)
        rc: di.RefCounted[Any] = di.RefCounted(script.aopen, script.aclose)
        actors = [_TrioActor(rc, script, run.events[a]) for a in range(run.n)]
        async with trio.open_nursery() as nursery:
            for actor in actors:
                nursery.start_soon(actor.run)
            try:
                await trio.testing.wait_all_tasks_blocked()
                for step in run.steps(30, can_cancel=True):
                    if step[0] == "cancel":
                        actors[step[1]].scope.cancel()
                    elif step[0] == "release":
                        script.gates[step[1]].set()
                    else:
                        actors[step[1]].send.send_nowait(_command(step))
                    await trio.testing.wait_all_tasks_blocked()
                    run.check(rc, script)
            except BaseException:
                script.abort()
                raise
        run.check_end(rc, script)


class _ThreadActor:
    def __init__(self, rc: di.RefCounted[Any], script: _Script, events: list[Any]) -> None:
        import queue

        self.rc = rc
        self.script = script
        self.events = events
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        self._block()
        self.events.append(("stopped",))

    def _block(self) -> None:
        while True:
            cmd = self.inbox.get(timeout=TIMEOUT)
            if cmd in ("exit", "stop"):
                return
            try:
                if cmd == "enter":
                    with self.rc as res:
                        self.events.append(("entered", self.script.seen(res)))
                        self._block()
                    self.events.append(("exited",))
                else:
                    self.rc.close(force=cmd[1])
                    self.events.append(("closed",))
            except Exception as exc:
                self.events.append(("error", _error_name(exc)))


def _thread_sequence(seed: int) -> None:
    with _Run(seed, blocking=True) as run:
        script = _Script(run.open_plan, run.close_plan, threading.Event)
        rc: di.RefCounted[Any] = di.RefCounted(script.open, script.close)
        actors = [_ThreadActor(rc, script, run.events[a]) for a in range(run.n)]
        for actor in actors:
            actor.thread.start()
        lock = rc._transition

        def settled() -> bool:
            # The reports and calls the model predicts have happened, and the
            # threads it says wait for the transition lock are parked on it.
            return run.actual(rc, script)[:4] == run.expected()[:4] and lock.waiting == len(
                run.model.queue
            )

        try:
            for step in run.steps(30, can_cancel=False):
                if step[0] == "release":
                    script.gates[step[1]].set()
                else:
                    actors[step[1]].inbox.put(_command(step))
                deadline = time.monotonic() + BLOCKED  # only reached when they differ
                while not settled() and time.monotonic() < deadline:
                    time.sleep(0)
                run.check(rc, script)
        except BaseException:
            script.abort()
            raise
        for actor in actors:
            actor.thread.join(TIMEOUT)
            assert not actor.thread.is_alive(), f"seed {seed}: a thread is stuck"
        run.check_end(rc, script)


@pytest.mark.timeout(60)
def test_model_asyncio_tasks_sync_callables() -> None:
    for seed in range(30):
        asyncio.run(_asyncio_sequence(seed, blocking=False))


@pytest.mark.timeout(60)
def test_model_asyncio_tasks_async_callables() -> None:
    for seed in range(1000, 1080):
        asyncio.run(_asyncio_sequence(seed, blocking=True))


@pytest.mark.timeout(60)
def test_model_trio_tasks_async_callables() -> None:
    for seed in range(2000, 2050):
        trio.run(_trio_sequence, seed)


@pytest.mark.timeout(60)
def test_model_threads_sync_callables() -> None:
    for seed in range(3000, 3040):
        _thread_sequence(seed)


def test_resource_of_a_force_closed_holder_says_so() -> None:
    t = Tracker()
    rc = di.RefCounted(t.open, t.close)
    with rc as res:
        rc.close(force=True)
        with pytest.raises(RuntimeError, match=r"closed by close\(force=True\) while held"):
            _ = rc.resource
        assert res.closes == 1
    with pytest.raises(RuntimeError, match="is not open; enter it first"):
        _ = rc.resource


def test_names_never_come_from_repr() -> None:
    # A repr may hold secrets (a partial's keyword arguments); messages and
    # log lines name the callable instead.
    class Opener:
        def __call__(self, token: str = "") -> object:
            return object()

        def __repr__(self) -> str:
            return "Opener(token='sk-secret')"

    def close(res: object) -> None:
        pass

    for opener, name in [
        (functools.partial(Opener(), token="sk-secret"), "partial(Opener instance)"),
        (Opener(), "Opener instance"),
    ]:
        rc = di.RefCounted(opener, close)
        assert name in repr(rc) and "sk-secret" not in repr(rc)
