"""Refcounted checkpoints: background work keeps its scope alive (issue 10).

A checkpoint is torn down once, when its last holder leaves: the block that
entered it, a ``scope.hold()`` block, or a task started with
``scope.spawn(coro)``. The entering block never waits for the others.

Every wait in this module is bounded (``asyncio.wait_for``, ``trio.fail_after``,
``thread.join(timeout)``, event waits with a timeout, plus a per-test
``pytest.mark.timeout``), so a deadlock fails a test instead of hanging the
run. Nothing here asserts on elapsed time: order is checked with logs and
monotonic sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import itertools
import logging
import random
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import di

trio = pytest.importorskip("trio")
anyio = pytest.importorskip("anyio")

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0  # upper bound for any single wait on something that should happen "soon"


# --------------------------------------------------------------------------- fixtures


class Engine:
    """A singleton that scoped resources depend on."""

    def __init__(self) -> None:
        self.closed = False


class Session:
    """A request-scoped async resource (async generator provider)."""

    _ids = itertools.count(1)

    def __init__(self, engine: Engine) -> None:
        self.id = next(self._ids)
        self.engine = engine
        self.closed = False


class AuditLog:
    """A request-scoped async resource that background work creates late."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.closed = False


class SyncSession:
    """A request-scoped sync resource (sync generator provider)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.closed = False


class Account:
    """A session-scoped resource (one level above the request)."""

    def __init__(self) -> None:
        self.closed = False


class Cart:
    """A request-scoped async resource that depends on a session-scoped one."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.closed = False


class Log:
    """A thread-safe event log: ``(name, detail, thread ident)`` tuples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, Any, int]] = []
        self.violations: list[str] = []
        _logs.append(self)

    def violation(self, message: str) -> None:
        """Providers report broken invariants here rather than raising inside
        teardown (checked after every test by `_no_teardown_violations`)."""
        with self._lock:
            self.violations.append(message)

    def add(self, name: str, detail: Any = None) -> None:
        with self._lock:
            self.events.append((name, detail, threading.get_ident()))

    def names(self) -> list[str]:
        with self._lock:
            return [e[0] for e in self.events]

    def count(self, name: str) -> int:
        return self.names().count(name)

    def index(self, name: str) -> int:
        names = self.names()
        assert name in names, f"{name!r} never happened; log: {names}"
        return names.index(name)

    def details(self, name: str) -> list[Any]:
        with self._lock:
            return [e[1] for e in self.events if e[0] == name]

    def thread_of(self, name: str) -> int:
        with self._lock:
            return next(e[2] for e in self.events if e[0] == name)


_logs: list[Log] = []


@pytest.fixture(autouse=True)
def _no_teardown_violations() -> Iterator[None]:
    _logs.clear()
    yield
    found = [v for log in _logs for v in log.violations]
    _logs.clear()
    # Collect this test's garbage now (a failed test leaves frames holding
    # generators and tasks): on CPython 3.11.7 a finalizer that runs later,
    # in the middle of some ast.parse, crashes pytest with "AST constructor
    # recursion depth mismatch" (gh-106905) instead of reporting the failure.
    gc.collect()
    assert not found, f"teardown invariants broken: {found}"


def build(log: Log, *, shutdown_timeout: float = 5.0) -> di.Container:
    """A fresh registry and container whose providers record into ``log``.

    Generator providers log ``<name>-exit`` with the exception type thrown into
    them at teardown (``None`` for a clean exit), then ``<name>-close``.
    """
    reg = di.Registry()

    @reg.provider(singleton=True)
    def engine() -> Iterator[Engine]:
        e = Engine()
        log.add("engine-open")
        try:
            yield e
        finally:
            e.closed = True
            log.add("engine-close")

    @reg.provider(scope="request")
    async def session(engine: Engine) -> AsyncIterator[Session]:
        s = Session(engine)
        log.add("session-open", s)
        try:
            yield s
        except BaseException as exc:
            log.add("session-exit", type(exc))
            raise
        else:
            log.add("session-exit", None)
        finally:
            if engine.closed:
                log.violation("the singleton closed before a session using it")
            s.closed = True
            log.add("session-close", s)

    @reg.provider(scope="request")
    async def audit(session: Session) -> AsyncIterator[AuditLog]:
        a = AuditLog(session)
        log.add("audit-open", a)
        try:
            yield a
        finally:
            if session.closed:
                log.violation("audit log outlived its session (teardown not LIFO)")
            a.closed = True
            log.add("audit-close", a)

    @reg.provider(scope="request")
    def sync_session(engine: Engine) -> Iterator[SyncSession]:
        s = SyncSession(engine)
        log.add("sync-open", s)
        try:
            yield s
        except BaseException as exc:
            log.add("sync-exit", type(exc))
            raise
        else:
            log.add("sync-exit", None)
        finally:
            if engine.closed:
                log.violation("the singleton closed before a sync session using it")
            s.closed = True
            log.add("sync-close", s)

    @reg.provider(scope="session")
    def account() -> Iterator[Account]:
        a = Account()
        log.add("account-open", a)
        try:
            yield a
        finally:
            a.closed = True
            log.add("account-close", a)

    @reg.provider(scope="request")
    async def cart(account: Account) -> AsyncIterator[Cart]:
        c = Cart(account)
        log.add("cart-open", c)
        try:
            yield c
        finally:
            log.add("cart-close", c)
            if account.closed:
                log.violation("a request resource outlived the session it depends on")
            c.closed = True

    return di.Container(reg, shutdown_timeout=shutdown_timeout)


def arun(fn: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Run ``fn()`` (a coroutine function) under asyncio, bounded by ``timeout``."""

    async def main() -> Any:
        return await asyncio.wait_for(fn(), timeout)

    return asyncio.run(main())


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll (bounded) until ``predicate()``: teardown after a spawned task ends
    may legitimately complete a loop iteration after the task itself."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.002)


def start_thread(target: Callable[[], None], *, copy_context: bool = True) -> threading.Thread:
    ctx = contextvars.copy_context() if copy_context else None
    run = (lambda: ctx.run(target)) if ctx is not None else target
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def join(t: threading.Thread) -> None:
    t.join(WAIT)
    assert not t.is_alive(), "thread did not finish (deadlock?)"


def di_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if (r.name == "di" or r.name.startswith("di.")) and r.levelno >= logging.WARNING
    ]


def assert_counts_zero(container: di.Container) -> None:
    assert container.lingering_checkpoints() == 0
    assert container.held_checkpoints() == 0
    assert container.lingering_checkpoints("request") == 0
    assert container.held_checkpoints("request") == 0


# --------------------------------------------------------------------------- spawn (asyncio)


def test_spawned_task_outlives_request_block_and_keeps_its_session() -> None:
    log = Log()
    container = build(log)

    @di.inject
    async def injected_session(session: di.Injected[Session]) -> Session:
        return session

    async def main() -> None:
        release = asyncio.Event()
        async with container:
            async with container.scope("request") as s:
                first = await s.aresolve(Session)

                async def background() -> None:
                    await release.wait()
                    log.add("task-use")
                    # contextvars: the task runs in the checkpoint it was spawned from
                    assert container.current_scope is s
                    assert await container.aresolve(Session) is first
                    assert await s.aresolve(Session) is first
                    assert await injected_session() is first
                    assert not first.closed
                    # a scoped instance first created after the block exited
                    audit = await container.aresolve(AuditLog)
                    assert audit.session is first
                    assert await container.aresolve(AuditLog) is audit
                    log.add("task-done")

                task = s.spawn(background())
                assert isinstance(task, asyncio.Task)
            log.add("block-exited")

            # the block returned at once: the task has not even started its work
            assert not task.done()
            assert not s.closed
            assert not first.closed
            assert log.count("session-close") == 0
            assert container.lingering_checkpoints("request") == 1
            assert container.held_checkpoints("request") == 1

            release.set()
            await asyncio.wait_for(task, WAIT)
            await wait_until(lambda: s.closed, "the checkpoint is torn down")
            assert first.closed
            assert_counts_zero(container)
            assert log.count("engine-close") == 0

        assert log.count("session-open") == 1
        assert log.count("session-close") == 1
        assert log.count("audit-open") == 1
        assert log.count("audit-close") == 1
        # order: the block returned, the task used the session, then teardown (LIFO)
        assert log.index("block-exited") < log.index("task-use") < log.index("task-done")
        assert log.index("task-done") < log.index("audit-close") < log.index("session-close")
        assert log.index("session-close") < log.index("engine-close")
        assert log.details("session-exit") == [None]

    arun(main)


def test_several_spawned_tasks_share_one_session_closed_after_the_last() -> None:
    log = Log()
    container = build(log)

    async def main() -> None:
        gates = [asyncio.Event() for _ in range(3)]
        seen: list[Session] = []
        async with container:
            async with container.scope("request") as s:

                async def worker(n: int) -> None:
                    await gates[n].wait()
                    seen.append(await container.aresolve(Session))
                    log.add(f"worker-{n}-done")

                tasks = [s.spawn(worker(n)) for n in range(3)]
            assert container.held_checkpoints("request") == 3
            for n in (2, 0):
                gates[n].set()
                await asyncio.wait_for(tasks[n], WAIT)
                assert not s.closed, "torn down while a holder was still running"
            assert container.held_checkpoints("request") == 1
            gates[1].set()
            await asyncio.wait_for(tasks[1], WAIT)
            await wait_until(lambda: s.closed, "the checkpoint is torn down")
            assert_counts_zero(container)
        assert len(seen) == 3 and seen[0] is seen[1] is seen[2]
        assert log.count("session-open") == 1 and log.count("session-close") == 1
        assert log.index("worker-1-done") < log.index("session-close")

    arun(main)


def test_block_that_outlives_its_spawned_task_tears_down_on_its_own_exit() -> None:
    log = Log()
    container = build(log)

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:
                session = await s.aresolve(Session)

                async def quick() -> Session:
                    return await container.aresolve(Session)

                task = s.spawn(quick())
                assert await asyncio.wait_for(task, WAIT) is session
                await asyncio.sleep(0)
                assert not s.closed, "a finished holder tore down a checkpoint its block still uses"
                assert await s.aresolve(Session) is session
                log.add("block-end")
            assert s.closed
            assert_counts_zero(container)
        assert log.index("block-end") < log.index("session-close")
        assert log.count("session-close") == 1

    arun(main)


@pytest.mark.parametrize("ending", ["raises", "cancelled"])
def test_spawned_task_that_raises_or_is_cancelled_releases_its_hold(ending: str) -> None:
    log = Log()
    container = build(log)

    class Boom(Exception):
        pass

    async def main() -> None:
        go = asyncio.Event()
        async with container:
            async with container.scope("request") as s:
                session = await s.aresolve(Session)

                async def doomed() -> None:
                    assert await container.aresolve(Session) is session
                    log.add("task-started")
                    if ending == "raises":
                        await go.wait()
                        raise Boom("background work failed")
                    await asyncio.Event().wait()  # runs until cancelled

                task = s.spawn(doomed())
            await wait_until(lambda: log.count("task-started") == 1, "the task started")
            assert container.held_checkpoints("request") == 1
            assert not session.closed

            if ending == "raises":
                go.set()
                with pytest.raises(Boom):
                    await asyncio.wait_for(task, WAIT)
            else:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, WAIT)
                assert task.cancelled()

            await wait_until(lambda: s.closed, "the checkpoint is torn down")
            assert_counts_zero(container)
        assert log.count("session-open") == 1
        assert log.count("session-close") == 1

    arun(main)


@pytest.mark.parametrize("ending", ["raises", "cancelled"])
def test_teardown_receives_exception_of_last_spawned_holder(ending: str) -> None:
    """A spawned task is a holder like any other: when it is the last to leave,
    its exception (cancellation included) is what generator providers see."""
    log = Log()
    container = build(log)

    class Boom(Exception):
        pass

    async def main() -> None:
        started = asyncio.Event()
        async with container:
            async with container.scope("request") as s:
                await s.aresolve(Session)

                async def doomed() -> None:
                    started.set()
                    if ending == "raises":
                        await asyncio.sleep(0)
                        raise Boom
                    await asyncio.Event().wait()

                task = s.spawn(doomed())
            await asyncio.wait_for(started.wait(), WAIT)
            if ending == "cancelled":
                task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), WAIT)
            await wait_until(lambda: s.closed, "the checkpoint is torn down")
        expected = Boom if ending == "raises" else asyncio.CancelledError
        assert log.details("session-exit") == [expected]
        assert log.count("session-close") == 1

    arun(main)


def test_spawn_returns_task_with_coroutine_result() -> None:
    container = build(Log())

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:

                async def compute() -> int:
                    await asyncio.sleep(0)
                    return 42

                task = s.spawn(compute())
            assert await asyncio.wait_for(task, WAIT) == 42
            await wait_until(lambda: s.closed, "the checkpoint is torn down")
            assert_counts_zero(container)

    arun(main)


# --------------------------------------------------------------------------- hold() from a thread


def test_thread_hold_outlives_request_block_and_tears_down_in_the_thread() -> None:
    log = Log()
    container = build(log)
    entered = threading.Event()
    go = threading.Event()
    result: dict[str, Any] = {}

    with container:
        with container.scope("request") as s:
            first = s.resolve(SyncSession)

            def worker() -> None:
                try:
                    with s.hold():
                        entered.set()
                        # bounded: if the block wrongly waited for us, we carry on after
                        # WAIT and the order assertions below fail instead of hanging
                        go.wait(WAIT)
                        log.add("thread-use")
                        result["via_scope"] = s.resolve(SyncSession)
                        # the thread was started with a copy of the request's context
                        result["via_container"] = container.resolve(SyncSession)
                        result["closed_during_use"] = first.closed
                        log.add("thread-release")
                    log.add("thread-released")
                    result["ident"] = threading.get_ident()
                except BaseException as exc:  # surfaced by the assertions below
                    result["error"] = exc
                    entered.set()

            t = start_thread(worker)
            assert entered.wait(WAIT)
        log.add("block-exited")

        assert "error" not in result, result.get("error")
        assert not s.closed
        assert not first.closed
        assert log.count("sync-close") == 0
        assert container.lingering_checkpoints("request") == 1
        assert container.held_checkpoints("request") == 1

        go.set()
        join(t)
        assert "error" not in result, result.get("error")
        assert s.closed
        assert_counts_zero(container)

    assert result["via_scope"] is first
    assert result["via_container"] is first
    assert result["closed_during_use"] is False
    assert log.count("sync-open") == 1 and log.count("sync-close") == 1
    assert log.index("block-exited") < log.index("thread-use")
    assert log.index("thread-release") < log.index("sync-close") < log.index("thread-released")
    assert log.thread_of("sync-close") == result["ident"], (
        "teardown did not run in the releasing thread"
    )
    assert log.index("sync-close") < log.index("engine-close")


def test_many_threads_releasing_at_once_tear_down_exactly_once() -> None:
    log = Log()
    container = build(log)
    n = 32
    all_in = threading.Barrier(n + 1, timeout=WAIT)
    release = threading.Barrier(n, timeout=WAIT)
    errors: list[BaseException] = []
    seen: list[SyncSession] = []
    lock = threading.Lock()

    with container:
        with container.scope("request") as s:
            first = s.resolve(SyncSession)

            def worker() -> None:
                try:
                    with s.hold():
                        all_in.wait()
                        got = s.resolve(SyncSession)
                        with lock:
                            seen.append(got)
                        release.wait()  # everyone leaves at the same moment
                except BaseException as exc:
                    with lock:
                        errors.append(exc)

            threads = [start_thread(worker) for _ in range(n)]
            all_in.wait()
        assert container.held_checkpoints("request") == n
        for t in threads:
            join(t)
        assert not errors, errors
        assert s.closed
        assert_counts_zero(container)

    assert len(seen) == n and all(x is first for x in seen)
    assert log.count("sync-open") == 1
    assert log.count("sync-close") == 1


def test_new_hold_while_held_extends_life() -> None:
    """Holds can be handed over: A holds, B joins, A leaves, B leaves last."""
    log = Log()
    container = build(log)

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:
                session = await s.aresolve(Session)
                a_may_leave = asyncio.Event()
                b_joined = asyncio.Event()
                b_may_leave = asyncio.Event()

                async def a() -> None:
                    await a_may_leave.wait()

                async def b() -> None:
                    async with s.hold():
                        b_joined.set()
                        await b_may_leave.wait()
                        assert await container.aresolve(Session) is session

                ta = s.spawn(a())
            # the block has exited; only A holds. B (an ordinary task) joins now.
            tb = asyncio.get_running_loop().create_task(b())
            await asyncio.wait_for(b_joined.wait(), WAIT)
            assert container.held_checkpoints("request") == 2
            a_may_leave.set()
            await asyncio.wait_for(ta, WAIT)
            await asyncio.sleep(0)
            assert not s.closed and not session.closed
            b_may_leave.set()
            await asyncio.wait_for(tb, WAIT)
            await wait_until(lambda: s.closed, "the checkpoint is torn down")
            assert_counts_zero(container)
        assert log.count("session-close") == 1

    arun(main)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "created-late"])
def test_held_child_keeps_its_parent_checkpoint_alive(cached: bool) -> None:
    """A request spawned from inside a session scope outlives the session's
    block too: a checkpoint sees everything its parents hold, and teardown is
    LIFO across levels, so the session must not be torn down before the
    request that depends on it."""
    log = Log()
    container = build(log)
    out: dict[str, Any] = {}

    async def main() -> None:
        go = asyncio.Event()
        async with container:
            async with container.scope("session") as sess, container.scope("request") as req:
                if cached:
                    out["cart"] = await req.aresolve(Cart)

                async def background() -> None:
                    await go.wait()
                    cart = await container.aresolve(Cart)
                    out["late_cart"] = cart
                    out["account_closed_during_use"] = cart.account.closed
                    await container.aresolve(Session)  # and a singleton (Engine) behind it
                    log.add("task-done")

                task = req.spawn(background())
            log.add("session-block-exited")
            try:
                assert not req.closed
                assert not sess.closed, "the session was torn down under a request still held"
            finally:
                go.set()  # a failure must not leave shutdown waiting for the task
            await asyncio.wait_for(task, WAIT)
            await wait_until(lambda: sess.closed, "the session checkpoint is torn down")
            assert req.closed
            assert_counts_zero(container)

    arun(main)
    assert out["account_closed_during_use"] is False
    if cached:
        assert out["late_cart"] is out["cart"]
    assert log.count("account-close") == 1 and log.count("cart-close") == 1
    assert log.index("session-block-exited") < log.index("task-done")
    assert log.index("task-done") < log.index("cart-close") < log.index("account-close")
    assert log.index("session-close") < log.index("account-close") < log.index("engine-close")


def test_cancelled_creator_does_not_strand_or_duplicate_a_shared_scoped_instance() -> None:
    """Task A starts creating a request-scoped resource, task B asks for it and
    waits; A is cancelled mid-creation. B must not hang, and exactly one
    instance is produced and torn down once."""
    gate = asyncio.Event
    state: dict[str, Any] = {"attempts": 0, "created": 0, "closed": 0}
    reg = di.Registry()

    @reg.provider(scope="request")
    async def slow() -> AsyncIterator[SlowResource]:
        state["attempts"] += 1
        state["started"].set()
        await state["gate"].wait()
        r = SlowResource()
        state["created"] += 1
        try:
            yield r
        finally:
            state["closed"] += 1

    container = di.Container(reg)

    async def main() -> None:
        state["started"] = gate()
        state["gate"] = gate()
        async with container:
            async with container.scope("request") as s:

                async def want() -> SlowResource:
                    return await container.aresolve(SlowResource)

                a = s.spawn(want())
                await asyncio.wait_for(state["started"].wait(), WAIT)  # A is creating
                b = s.spawn(want())
                for _ in range(5):
                    await asyncio.sleep(0)  # B finds A's creation in progress and waits
                assert not b.done()
                a.cancel()
                await asyncio.wait_for(asyncio.gather(a, return_exceptions=True), WAIT)
                state["gate"].set()
                got = await asyncio.wait_for(b, WAIT)
                assert isinstance(got, SlowResource)
                assert await s.aresolve(SlowResource) is got
            assert s.closed
            assert_counts_zero(container)

    arun(main)
    assert state["created"] == 1
    assert state["closed"] == 1
    assert state["attempts"] in (1, 2)


# --------------------------------------------------------------------------- trio / anyio


def test_trio_hold_in_nursery_task_outlives_request_block() -> None:
    log = Log()
    container = build(log)
    out: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(10):
            async with container:
                async with trio.open_nursery() as nursery:
                    go = trio.Event()
                    async with container.scope("request") as s:
                        first = await s.aresolve(Session)

                        async def background(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                            async with s.hold():
                                task_status.started()
                                await go.wait()
                                log.add("task-use")
                                out["via_scope"] = await s.aresolve(Session)
                                out["via_container"] = await container.aresolve(Session)
                                out["closed_during_use"] = first.closed
                                audit = await s.aresolve(AuditLog)
                                out["audit_session"] = audit.session
                                log.add("task-release")
                            log.add("task-released")

                        await nursery.start(background)
                    log.add("block-exited")
                    assert not s.closed
                    assert not first.closed
                    assert container.lingering_checkpoints("request") == 1
                    assert container.held_checkpoints("request") == 1
                    go.set()
                assert s.closed
                assert first.closed
                assert_counts_zero(container)

    trio.run(main)

    assert out["via_scope"] is out["via_container"] is out["audit_session"]
    assert out["closed_during_use"] is False
    assert log.count("session-open") == 1 and log.count("session-close") == 1
    assert log.index("block-exited") < log.index("task-use") < log.index("task-release")
    assert log.index("task-release") < log.index("audit-close") < log.index("session-close")
    assert log.index("session-close") < log.index("task-released")
    assert log.index("session-close") < log.index("engine-close")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_anyio_task_group_hold_outlives_request_block(anyio_backend: str) -> None:
    log = Log()
    container = build(log)
    with anyio.fail_after(10):
        async with container:
            go = anyio.Event()
            async with anyio.create_task_group() as tg:
                async with container.scope("request") as s:
                    first = await s.aresolve(Session)

                    async def background(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
                        async with s.hold():
                            task_status.started()
                            await go.wait()
                            assert await container.aresolve(Session) is first
                            log.add("task-use")

                    await tg.start(background)
                log.add("block-exited")
                assert not first.closed
                assert container.held_checkpoints("request") == 1
                go.set()
            assert first.closed
            assert_counts_zero(container)
    assert log.index("block-exited") < log.index("task-use") < log.index("session-close")
    assert log.count("session-close") == 1


# --------------------------------------------------------------------------- errors


def test_holding_a_torn_down_checkpoint_raises_checkpoint_closed_error() -> None:
    log = Log()
    container = build(log)
    with container:
        with container.scope("request") as s:
            s.resolve(SyncSession)
        assert s.closed
        assert issubclass(di.CheckpointClosedError, di.ScopeError)
        with pytest.raises(di.CheckpointClosedError) as info, s.hold():
            pytest.fail("entered a hold on a torn-down checkpoint")
        assert str(info.value), "the error should say what happened"
        assert_counts_zero(container)
    assert log.count("sync-close") == 1


def test_resolving_from_a_torn_down_checkpoint_raises() -> None:
    """A late user must not be handed an instance that was already torn down
    (errors.py: a torn-down checkpoint can no longer be "held, spawned into,
    or resolved from"), whether or not the key was cached before teardown."""
    log = Log()
    container = build(log)
    with container:
        with container.scope("request") as s:
            closed_session = s.resolve(SyncSession)
        assert s.closed and closed_session.closed
        with pytest.raises(di.CheckpointClosedError):
            s.resolve(SyncSession)  # cached before teardown
        with container.scope("request") as s2:
            pass
        with pytest.raises(di.CheckpointClosedError):
            s2.resolve(SyncSession)  # never created in it
        assert_counts_zero(container)
    assert log.count("sync-open") == 1


def test_async_hold_and_spawn_on_a_torn_down_checkpoint_raise() -> None:
    log = Log()
    container = build(log)

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:
                await s.aresolve(Session)
            assert s.closed
            with pytest.raises(di.CheckpointClosedError):
                async with s.hold():
                    pytest.fail("entered a hold on a torn-down checkpoint")

            ran = []

            async def late() -> None:
                ran.append(True)

            coro = late()
            try:
                with pytest.raises(di.CheckpointClosedError):
                    s.spawn(coro)
            finally:
                coro.close()  # never scheduled: do not leak a "never awaited" warning
            await asyncio.sleep(0)
            assert ran == []
            assert_counts_zero(container)
        assert log.count("session-close") == 1

    arun(main)


def test_sync_release_that_needs_async_teardown_raises_async_provider_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="di")
    log = Log()
    container = build(log, shutdown_timeout=1.0)
    out: dict[str, Any] = {}

    async def main() -> None:
        entered = threading.Event()
        go = threading.Event()
        async with container:
            async with container.scope("request") as s:
                session = await s.aresolve(Session)  # an async teardown now exists

                def worker() -> None:
                    try:
                        with s.hold():
                            entered.set()
                            go.wait(WAIT)
                    except BaseException as exc:
                        out["exc"] = exc
                    else:
                        out["exc"] = None
                    entered.set()

                t = start_thread(worker)
                assert await asyncio.to_thread(entered.wait, WAIT)
            # the async block has exited; the thread's sync hold is the last one
            assert not session.closed
            go.set()
            await asyncio.to_thread(t.join, WAIT)
            assert not t.is_alive()
            assert isinstance(out["exc"], di.AsyncProviderError), out["exc"]
            # never a private event loop: the session was not closed by the thread
            assert log.count("session-close") == 0
            assert container.held_checkpoints("request") == 0
        # the container's shutdown tore it down, with a warning
        assert session.closed
        assert log.count("session-close") == 1
        assert log.index("session-close") < log.index("engine-close")
        assert_counts_zero(container)

    arun(main)
    warnings = di_warnings(caplog)
    assert warnings, "shutdown tore down an orphaned checkpoint without a warning"
    assert any("request" in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]


def test_sync_hold_of_async_checkpoint_is_fine_when_async_block_exits_last() -> None:
    log = Log()
    container = build(log)
    out: dict[str, Any] = {}

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:
                session = await s.aresolve(Session)

                def worker() -> None:
                    try:
                        with s.hold():
                            out["same"] = s.resolve(Engine) is session.engine
                    except BaseException as exc:
                        out["exc"] = exc
                    else:
                        out["exc"] = None

                t = start_thread(worker)
                await asyncio.to_thread(t.join, WAIT)
                assert not t.is_alive()
                assert not session.closed
            assert session.closed
            assert_counts_zero(container)

    arun(main)
    assert out["exc"] is None, out["exc"]
    assert out["same"] is True
    assert log.count("session-close") == 1


# ------------------------------------------------------------ which exception teardown sees


def test_teardown_receives_exception_of_last_holder_sync() -> None:
    """A thread's hold block raises ValueError and is the last to leave."""
    log = Log()
    container = build(log)
    entered = threading.Event()
    go = threading.Event()
    out: dict[str, Any] = {}

    with container:
        with container.scope("request") as s:
            s.resolve(SyncSession)

            def worker() -> None:
                try:
                    with s.hold():
                        entered.set()
                        go.wait(WAIT)
                        raise ValueError("background failed")
                except BaseException as exc:
                    out["exc"] = exc

            t = start_thread(worker)
            assert entered.wait(WAIT)
        assert log.count("sync-exit") == 0
        go.set()
        join(t)
        assert_counts_zero(container)
    assert isinstance(out["exc"], ValueError), "hold() swallowed or replaced the block's exception"
    assert log.details("sync-exit") == [ValueError]
    assert log.count("sync-close") == 1


def test_failing_entering_block_does_not_tear_down_while_held() -> None:
    """The entering block raises KeyError but a holder leaves later, cleanly:
    the KeyError propagates at once and teardown sees no exception."""
    log = Log()
    container = build(log)
    entered = threading.Event()
    go = threading.Event()
    out: dict[str, Any] = {}

    with container:
        with pytest.raises(KeyError), container.scope("request") as s:
            first = s.resolve(SyncSession)

            def worker() -> None:
                try:
                    with s.hold():
                        entered.set()
                        go.wait(WAIT)
                        out["same"] = s.resolve(SyncSession) is first
                except BaseException as exc:
                    out["exc"] = exc

            t = start_thread(worker)
            assert entered.wait(WAIT)
            raise KeyError("request failed")
        assert log.count("sync-exit") == 0
        assert not first.closed
        go.set()
        join(t)
        assert "exc" not in out, out.get("exc")
        assert out["same"] is True
        assert_counts_zero(container)
    assert log.details("sync-exit") == [None]


def test_teardown_receives_exception_of_last_holder_async() -> None:
    """Two async holders fail differently; only the last exit's exception counts."""
    log = Log()
    container = build(log)

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:
                await s.aresolve(Session)
                first_go = asyncio.Event()
                last_go = asyncio.Event()
                both_in = asyncio.Event()
                inside = []

                async def holder(go: asyncio.Event, exc: BaseException) -> None:
                    async with s.hold():
                        inside.append(1)
                        if len(inside) == 2:
                            both_in.set()
                        await go.wait()
                        raise exc

                loop = asyncio.get_running_loop()
                t1 = loop.create_task(holder(first_go, KeyError("first out")))
                t2 = loop.create_task(holder(last_go, ValueError("last out")))
                await asyncio.wait_for(both_in.wait(), WAIT)
            first_go.set()
            with pytest.raises(KeyError):
                await asyncio.wait_for(t1, WAIT)
            assert log.count("session-exit") == 0
            last_go.set()
            with pytest.raises(ValueError):
                await asyncio.wait_for(t2, WAIT)
            await wait_until(lambda: s.closed, "the checkpoint is torn down")
            assert_counts_zero(container)
        assert log.details("session-exit") == [ValueError]

    arun(main)


def test_holder_leaving_first_with_error_does_not_leak_into_teardown() -> None:
    log = Log()
    container = build(log)

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:
                await s.aresolve(Session)

                async def fail() -> None:
                    async with s.hold():
                        raise ValueError("early holder fails")

                with pytest.raises(ValueError):
                    await asyncio.wait_for(asyncio.get_running_loop().create_task(fail()), WAIT)
                assert not s.closed
            assert s.closed
        assert log.details("session-exit") == [None]

    arun(main)


# --------------------------------------------------------------------------- shutdown


def test_shutdown_waits_for_slow_spawned_holder(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="di")
    log = Log()
    container = build(log, shutdown_timeout=5.0)

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:
                session = await s.aresolve(Session)

                async def slow() -> None:
                    await asyncio.sleep(0.1)
                    assert await container.aresolve(Session) is session
                    log.add("task-done")

                task = s.spawn(slow())
            log.add("container-exit")
        log.add("container-closed")
        assert task.done() and task.exception() is None
        assert s.closed and session.closed
        assert_counts_zero(container)

    arun(main)
    names = log.names()
    assert names.index("container-exit") < names.index("task-done")
    assert names.index("task-done") < names.index("session-close")
    assert names.index("session-close") < names.index("engine-close")
    assert names.index("engine-close") < names.index("container-closed")
    assert log.count("session-close") == 1 and log.count("engine-close") == 1
    assert not di_warnings(caplog), [r.getMessage() for r in di_warnings(caplog)]


def test_sync_shutdown_waits_for_slow_thread_holder(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="di")
    log = Log()
    container = build(log, shutdown_timeout=5.0)
    entered = threading.Event()
    out: dict[str, Any] = {}

    with container:
        with container.scope("request") as s:
            first = s.resolve(SyncSession)

            def worker() -> None:
                try:
                    with s.hold():
                        entered.set()
                        threading.Event().wait(0.1)  # slow, but well within shutdown_timeout
                        out["same"] = s.resolve(SyncSession) is first
                        log.add("thread-done")
                except BaseException as exc:
                    out["exc"] = exc

            t = start_thread(worker)
            assert entered.wait(WAIT)
        log.add("container-exit")
    log.add("container-closed")
    join(t)

    assert "exc" not in out, out.get("exc")
    assert out["same"] is True
    assert log.index("container-exit") < log.index("thread-done") < log.index("sync-close")
    assert log.index("sync-close") < log.index("engine-close") < log.index("container-closed")
    assert log.count("sync-close") == 1
    assert_counts_zero(container)
    assert not di_warnings(caplog), [r.getMessage() for r in di_warnings(caplog)]


def test_shutdown_force_closes_stuck_spawned_holder_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="di")
    log = Log()
    container = build(log, shutdown_timeout=0.2)

    async def stuck_audit_write() -> None:
        await asyncio.Event().wait()  # never finishes on its own

    async def main() -> None:
        async with container:
            async with container.scope("request") as s:
                session = await s.aresolve(Session)
                task = s.spawn(stuck_audit_write())
                task.set_name("stuck-audit-task")
            log.add("container-exit")
        log.add("container-closed")

        # torn down anyway, singletons only after it
        assert s.closed and session.closed
        assert container.lingering_checkpoints() == 0

        # the stuck holder finally goes away: its late release is a no-op
        task.cancel()
        results = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), WAIT)
        assert isinstance(results[0], asyncio.CancelledError), results
        await asyncio.sleep(0)
        assert_counts_zero(container)

    arun(main)
    assert log.index("container-exit") < log.index("session-close") < log.index("engine-close")
    assert log.index("engine-close") < log.index("container-closed")
    assert log.count("session-close") == 1 and log.count("engine-close") == 1

    warnings = di_warnings(caplog)
    assert warnings, "force-closing a held checkpoint must warn"
    text = "\n".join(r.getMessage() for r in warnings)
    assert "request" in text, f"the warning should name the checkpoint's level: {text}"
    assert "stuck_audit_write" in text or "stuck-audit-task" in text, (
        f"the warning should name what holds the checkpoint: {text}"
    )


def test_sync_shutdown_force_closes_stuck_thread_holder_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="di")
    log = Log()
    container = build(log, shutdown_timeout=0.2)
    entered = threading.Event()
    go = threading.Event()
    out: dict[str, Any] = {}

    with container, container.scope("request") as s:
        first = s.resolve(SyncSession)

        def worker() -> None:
            try:
                with s.hold():
                    entered.set()
                    go.wait(WAIT)
                    log.add("thread-release")
            except BaseException as exc:
                out["exc"] = exc
            else:
                out["exc"] = None

        t = start_thread(worker)
        assert entered.wait(WAIT)
    log.add("container-closed")

    assert first.closed and s.closed
    assert log.index("sync-close") < log.index("engine-close") < log.index("container-closed")
    assert container.lingering_checkpoints() == 0
    warnings = di_warnings(caplog)
    assert warnings, "force-closing a held checkpoint must warn"
    assert any("request" in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]

    # the stuck thread lets go after the fact: no error, no second teardown
    go.set()
    join(t)
    assert out["exc"] is None, out["exc"]
    assert log.count("sync-close") == 1
    assert log.count("engine-close") == 1
    assert_counts_zero(container)


def test_forced_shutdown_tears_down_children_before_parents(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both a session and its child request are stuck: forced teardown is
    still LIFO (request resources close before the session's, singletons last)."""
    caplog.set_level(logging.WARNING, logger="di")
    log = Log()
    container = build(log, shutdown_timeout=0.2)

    async def main() -> None:
        async with container, container.scope("session") as sess:
            stuck_session = sess.spawn(asyncio.Event().wait())
            async with container.scope("request") as req:
                cart = await req.aresolve(Cart)
                await req.aresolve(Session)  # creates the Engine singleton too
                stuck_request = req.spawn(asyncio.Event().wait())
        assert sess.closed and req.closed and cart.closed
        for t in (stuck_session, stuck_request):
            t.cancel()
        await asyncio.wait_for(
            asyncio.gather(stuck_session, stuck_request, return_exceptions=True), WAIT
        )
        await asyncio.sleep(0)
        assert_counts_zero(container)

    arun(main)
    assert log.count("cart-close") == 1 and log.count("account-close") == 1
    assert log.index("cart-close") < log.index("account-close") < log.index("engine-close")
    text = "\n".join(r.getMessage() for r in di_warnings(caplog))
    assert "session" in text and "request" in text, text


def test_aclose_waits_for_holders_then_closes_singletons() -> None:
    """``aclose()`` (not only the last ``async with`` exit) waits for held
    checkpoints before it closes singletons."""
    log = Log()
    container = build(log, shutdown_timeout=5.0)

    async def main() -> None:
        async with container.scope("request") as s:
            await s.aresolve(Session)

            async def slow() -> None:
                await asyncio.sleep(0.05)
                log.add("task-done")

            task = s.spawn(slow())
        assert log.count("engine-open") == 1
        await container.aclose()
        assert task.done()
        assert log.index("task-done") < log.index("session-close") < log.index("engine-close")
        assert log.count("engine-close") == 1
        assert_counts_zero(container)

    arun(main)


# --------------------------------------------------------------------------- counts


def test_live_and_held_counts_per_level_and_total() -> None:
    log = Log()
    container = build(log)

    async def main() -> None:
        async with container:
            assert_counts_zero(container)
            async with container.scope("session") as sess:
                # Inside their blocks, nothing lingers: the blocks will tear them down.
                assert container.lingering_checkpoints() == 0
                async with container.scope("request") as req:
                    assert container.lingering_checkpoints() == 0
                    assert container.held_checkpoints() == 0  # the entering block is not a "hold"
                    async with req.hold():
                        assert container.held_checkpoints("request") == 1
                        with req.hold():
                            assert container.held_checkpoints("request") == 2
                        assert container.held_checkpoints("request") == 1
                        async with sess.hold():
                            assert container.held_checkpoints("session") == 1
                            assert container.held_checkpoints("request") == 1
                            assert container.held_checkpoints() == 2
                        assert container.held_checkpoints("session") == 0
                    assert container.held_checkpoints() == 0
                    assert not req.closed

                    gate = asyncio.Event()

                    async def bg() -> None:
                        await gate.wait()

                    t1 = req.spawn(bg())
                    t2 = req.spawn(bg())
                    assert container.held_checkpoints("request") == 2
                assert container.lingering_checkpoints("request") == 1
                assert container.held_checkpoints("request") == 2
                assert container.held_checkpoints() == 2
                async with container.scope("request") as req2:
                    assert req2 is not req
                    assert container.lingering_checkpoints("request") == 1
                    assert container.lingering_checkpoints() == 1
                assert container.lingering_checkpoints("request") == 1
                gate.set()
                await asyncio.wait_for(asyncio.gather(t1, t2), WAIT)
                await wait_until(lambda: req.closed, "the request checkpoint is torn down")
                assert container.lingering_checkpoints("request") == 0
                assert container.held_checkpoints() == 0
                assert container.lingering_checkpoints() == 0
            assert_counts_zero(container)
            assert container.lingering_checkpoints("session") == 0

    arun(main)


def test_counts_return_to_zero_after_failures_and_cancellations() -> None:
    log = Log()
    container = build(log)

    async def main() -> None:
        async with container:
            for i in range(20):
                async with container.scope("request") as s:
                    await s.aresolve(Session)

                    async def fails() -> None:
                        await asyncio.sleep(0)
                        raise RuntimeError("boom")

                    async def hangs() -> None:
                        await asyncio.Event().wait()

                    async def works() -> Session:
                        return await container.aresolve(Session)

                    tasks = [s.spawn(fails()), s.spawn(hangs()), s.spawn(works())]
                    if i % 2:
                        async with s.hold():
                            pass
                tasks[1].cancel()
                results = await asyncio.wait_for(
                    asyncio.gather(*tasks, return_exceptions=True), WAIT
                )
                assert isinstance(results[0], RuntimeError)
                assert isinstance(results[1], asyncio.CancelledError)
                assert isinstance(results[2], Session)
            await wait_until(
                lambda: container.lingering_checkpoints() == 0, "every checkpoint is torn down"
            )
            assert_counts_zero(container)
        assert log.count("session-open") == 20
        assert log.count("session-close") == 20

    arun(main)


# --------------------------------------------------------------------------- concurrency


class SlowResource:
    pass


class Req:
    def __init__(self, id: int) -> None:
        self.id = id


class DB:
    def __init__(self, req: int) -> None:
        self.req = req
        self.closed = False


class Cache:
    def __init__(self, req: int) -> None:
        self.req = req
        self.closed = False


@pytest.mark.timeout(20)
def test_200_requests_each_spawning_3_background_tasks() -> None:
    """200 concurrent requests; each spawns 3 tasks that resolve request-scoped
    resources at random times after the request block has exited. Every
    resource is created once per request and closed exactly once, after its
    last use; some tasks fail and some are cancelled; counts end at zero."""
    n_requests, n_tasks = 200, 3
    rng = random.Random(20240610)
    seq = itertools.count()  # a logical clock: order without timing
    attempts: Counter[tuple[str, int]] = Counter()
    created: Counter[tuple[str, int]] = Counter()
    closed: Counter[tuple[str, int]] = Counter()
    close_at: dict[tuple[str, int], int] = {}
    uses: defaultdict[int, list[int]] = defaultdict(list)
    exit_at: dict[int, int] = {}
    instances: defaultdict[tuple[str, int], set[int]] = defaultdict(set)

    reg = di.Registry()
    reg.context(Req, scope="request")

    @reg.provider(scope="request")
    async def db(req: Req) -> AsyncIterator[DB]:
        # A creation whose creator task is cancelled here never produces a DB;
        # a waiting task then creates it instead. Count attempts and products.
        attempts[("db", req.id)] += 1
        await asyncio.sleep(0)  # widen the window for a double creation
        d = DB(req.id)
        created[("db", req.id)] += 1
        try:
            yield d
        finally:
            await asyncio.sleep(0)
            d.closed = True
            closed[("db", req.id)] += 1
            close_at[("db", req.id)] = next(seq)

    @reg.provider(scope="request")
    def cache(req: Req) -> Iterator[Cache]:
        created[("cache", req.id)] += 1
        c = Cache(req.id)
        try:
            yield c
        finally:
            c.closed = True
            closed[("cache", req.id)] += 1
            close_at[("cache", req.id)] = next(seq)

    container = di.Container(reg)

    class Boom(Exception):
        pass

    async def background(i: int, k: int, s: Any, exited: asyncio.Event) -> None:
        await exited.wait()
        await asyncio.sleep(rng.random() * 0.01)
        assert container.current_scope is s
        d = await container.aresolve(DB)
        c = await container.aresolve(Cache)
        assert (d.req, c.req) == (i, i)
        assert not d.closed and not c.closed
        instances[("db", i)].add(id(d))
        instances[("cache", i)].add(id(c))
        uses[i].append(next(seq))
        await asyncio.sleep(rng.random() * 0.01)
        assert await container.aresolve(DB) is d
        assert await s.aresolve(Cache) is c
        assert not d.closed and not c.closed
        uses[i].append(next(seq))
        if i % 10 == 0 and k == 2:
            raise Boom(i)

    async def request(i: int) -> list[asyncio.Task[None]]:
        exited = asyncio.Event()
        async with container.scope("request", context={Req: Req(i)}) as s:
            if i % 2 == 0:  # half the requests create the DB themselves, half leave it to the tasks
                d = await s.aresolve(DB)
                instances[("db", i)].add(id(d))
            await asyncio.sleep(0)
            tasks = [s.spawn(background(i, k, s, exited)) for k in range(n_tasks)]
        exit_at[i] = next(seq)
        exited.set()
        if i % 10 == 5:  # cancel one task of some requests, at a random moment
            asyncio.get_running_loop().call_later(rng.random() * 0.01, tasks[1].cancel)
        return tasks

    async def main() -> None:
        async with container:
            per_request = await asyncio.gather(*(request(i) for i in range(n_requests)))
            tasks = [t for ts in per_request for t in ts]
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
            for idx, res in enumerate(results):
                i, k = divmod(idx, n_tasks)
                if i % 10 == 0 and k == 2:
                    assert isinstance(res, Boom), (i, k, res)
                elif i % 10 == 5 and k == 1:
                    assert res is None or isinstance(res, asyncio.CancelledError), (i, k, res)
                else:
                    assert res is None, (i, k, res)  # e.g. an AssertionError inside a task
            await wait_until(
                lambda: container.lingering_checkpoints() == 0,
                "every request checkpoint is torn down",
            )
            assert_counts_zero(container)

    arun(main, timeout=18)

    for i in range(n_requests):
        for name in ("db", "cache"):
            key = (name, i)
            assert created[key] == 1, f"{key} created {created[key]} times"
            if name == "db" and i % 10 != 5:  # no creator was cancelled in this request
                assert attempts[key] == 1, f"{key}: factory ran {attempts[key]} times"
            assert closed[key] == 1, f"{key} closed {closed[key]} times"
            assert len(instances[key]) == 1, f"{key}: several instances in one request"
            assert close_at[key] > max(uses[i]), f"{key} closed before its last use"
        assert min(uses[i]) > exit_at[i], f"request {i}: background use before the block exited"


class Part:
    pass


class ClosedConn:
    pass


class Whole:
    def __init__(self, part: Part, conn: ClosedConn) -> None:
        pass


def test_a_torn_down_checkpoint_refuses_a_transient_with_teardown_before_any_factory_runs() -> None:
    """The interpreted first resolve and the generated plans behave alike:
    no factory runs, and the error names the key."""
    calls: list[str] = []
    reg = di.Registry()

    @reg.provider()
    def part() -> Part:
        calls.append("part")
        return Part()

    @reg.provider(cm=True)
    def conn() -> contextlib.AbstractContextManager[ClosedConn]:
        calls.append("conn")
        return contextlib.nullcontext(ClosedConn())

    reg.register(Whole, Whole)
    c = di.Container(reg)
    with c.scope("request") as request:
        pass

    async def aresolve() -> None:
        await request.aresolve(Whole)

    for _ in range(3):
        with pytest.raises(di.CheckpointClosedError, match="cannot resolve Whole in"):
            request.resolve(Whole)
        with pytest.raises(di.CheckpointClosedError, match="cannot resolve Whole in"):
            asyncio.run(aresolve())
    assert calls == []


class Tenant:
    pass


def test_a_context_value_read_from_a_torn_down_checkpoint_says_it_is_closed() -> None:
    reg = di.Registry()
    reg.context(Tenant, scope="request")
    c = di.Container(reg)
    tenant = Tenant()
    with c.scope("request", context={Tenant: tenant}) as request:
        assert request.resolve(Tenant) is tenant
    for _ in range(3):
        with pytest.raises(di.CheckpointClosedError, match="cannot resolve Tenant in"):
            request.resolve(Tenant)


class Settings:
    pass


class Plain:
    pass


class Scoped:
    pass


class NeedsScoped:
    def __init__(self, scoped: Scoped) -> None:
        self.scoped = scoped


def _levels_registry(log: list[str]) -> di.Registry:
    reg = di.Registry()
    reg.register(Settings, Settings, singleton=True)
    reg.register(Plain, Plain)  # transient, no teardown
    reg.register(Scoped, Scoped, scope="session")
    reg.register(NeedsScoped, NeedsScoped, scope="request")

    @reg.provider(scope="request")
    def session() -> Iterator[Session]:
        log.append("open")
        yield Session(Engine())
        log.append("close")

    return reg


KEYS = [Settings, Plain, Scoped, NeedsScoped, Session]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.__name__)
def test_a_checkpoint_never_entered_resolves_nothing(key: type) -> None:
    log: list[str] = []
    c = di.Container(_levels_registry(log))
    scope = c.scope("request")  # made, never entered
    assert not scope.closed and "new" in repr(scope)
    with pytest.raises(di.ScopeError, match="has not been entered; enter it first"):
        scope.resolve(key)

    async def aresolve() -> None:
        await scope.aresolve(key)

    with pytest.raises(di.ScopeError, match="has not been entered"):
        asyncio.run(aresolve())
    with pytest.raises(di.ScopeError, match="has not been entered"), scope.hold():
        pass
    assert log == []  # no generator started that nothing would finish
    with c.scope("session"), scope:  # entering it later works as usual
        assert isinstance(scope.resolve(key), key)
    assert log == (["open", "close"] if key is Session else [])


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.__name__)
def test_a_torn_down_checkpoint_resolves_nothing_not_even_what_its_parents_own(
    key: type,
) -> None:
    log: list[str] = []
    c = di.Container(_levels_registry(log))
    with c.scope("session"):
        with c.scope("request") as request:
            request.resolve(key)
        assert request.closed
        with pytest.raises(di.CheckpointClosedError, match="it has been torn down"):
            request.resolve(key)


def test_inject_sees_a_checkpoint_held_in_a_thread() -> None:
    """hold() makes the checkpoint current in the holding thread, and its container
    the active one there, so injected functions resolve in it."""
    reg = di.Registry()
    reg.register(Scoped, Scoped, scope="request")
    c = di.Container(reg)

    @di.inject
    def work(scoped: di.Injected[Scoped]) -> Scoped:
        return scoped

    seen: dict[str, Any] = {}

    def thread(scope: di.Checkpoint) -> None:
        seen["before"] = di.container.active_container()
        with scope.hold():
            seen["inside"] = di.container.active_container()
            seen["value"] = work()
        seen["after"] = di.container.active_container()

    with c, c.scope("request") as scope:
        worker = threading.Thread(target=thread, args=(scope,))
        worker.start()
        worker.join(10)
        mine = scope.resolve(Scoped)
    assert seen == {"before": None, "inside": c, "value": mine, "after": None}


def _closing_registry(log: list[str]) -> di.Registry:
    reg = di.Registry()

    @reg.provider(scope="request")
    def session() -> Iterator[Session]:
        try:
            yield Session(Engine())
        finally:
            log.append("closed")

    return reg


def test_trio_a_hold_left_by_cancellation_releases_the_checkpoint() -> None:
    """Releasing takes no trio checkpoint, so a holder whose task is cancelled
    still lets go, and the teardown that was due runs then and there."""
    log: list[str] = []
    c = di.Container(_closing_registry(log), shutdown_timeout=0.1)

    async def main() -> None:
        with trio.fail_after(10):
            await run()

    async def run() -> None:
        async with c:
            async with trio.open_nursery() as nursery:
                async with c.scope("request") as scope:
                    scope.resolve(Session)

                    async def background(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                        async with scope.hold():
                            task_status.started()
                            await trio.sleep_forever()

                    await nursery.start(background)
                assert not scope.closed and log == []  # the hold keeps it open
                nursery.cancel_scope.cancel()
            assert scope.closed and log == ["closed"]
            assert c.held_checkpoints() == 0

    trio.run(main)


def test_trio_a_scope_block_left_by_cancellation_releases_its_share() -> None:
    log: list[str] = []
    c = di.Container(_closing_registry(log), shutdown_timeout=0.1)
    seen: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(10):
            await run()

    async def run() -> None:
        async with c:
            held, done = trio.Event(), trio.Event()

            async def background(scope: di.Checkpoint) -> None:
                async with scope.hold():
                    held.set()
                    await done.wait()

            async with trio.open_nursery() as nursery:

                async def request() -> None:
                    with trio.CancelScope() as cancel:
                        seen["cancel"] = cancel
                        async with c.scope("request") as scope:
                            seen["scope"] = scope
                            scope.resolve(Session)
                            nursery.start_soon(background, scope)
                            await trio.sleep_forever()

                nursery.start_soon(request)
                await held.wait()
                seen["cancel"].cancel()
                await trio.sleep(0.01)
                assert not seen["scope"].closed  # the hold still has it
                done.set()
            assert seen["scope"].closed and log == ["closed"]

    trio.run(main)


@pytest.mark.parametrize("where", ["trio", "no event loop"])
def test_spawn_without_a_running_asyncio_loop_says_to_hold_and_closes_the_coroutine(
    where: str,
) -> None:
    c = di.Container(_closing_registry([]))
    ran: list[str] = []

    async def work() -> None:
        ran.append("ran")  # pragma: no cover - must never run

    def attempt() -> None:
        with c.scope("request") as scope:
            coro = work()
            with pytest.raises(di.ScopeError, match=r"async with scope.hold\(\)"):
                scope.spawn(coro)
            assert coro.cr_frame is None  # closed: no 'never awaited' warning
            assert scope.holds == 0

    if where == "trio":

        async def main() -> None:
            attempt()

        trio.run(main)
    else:
        attempt()
    assert ran == []


class Late:
    pass


@pytest.mark.parametrize("lifetime", ["singleton", "transient"])
def test_a_creation_still_running_when_a_forced_shutdown_ends_is_torn_down_not_kept(
    lifetime: str,
) -> None:
    """A held thread is inside Late's factory when the container's last exit
    gives up waiting and closes. When the factory returns, nothing would ever
    tear its instance down: it is unwound at once and the thread gets
    CheckpointClosedError (a singleton is not kept for the container's next
    open; a transient's first, interpreted resolve behaves as its plan does)."""
    log: list[str] = []
    started, release = threading.Event(), threading.Event()
    reg = di.Registry()

    @reg.provider(singleton=lifetime == "singleton")
    def late() -> Iterator[Late]:
        started.set()
        release.wait(10)
        log.append("made")
        yield Late()
        log.append("torn down")

    c = di.Container(reg, shutdown_timeout=0.05)
    outcome: list[Any] = []

    def held(scope: di.Checkpoint) -> None:
        with scope.hold():
            try:
                outcome.append(scope.resolve(Late))
            except di.DIError as exc:
                outcome.append(exc)

    with c, c.scope("request") as scope:
        worker = threading.Thread(target=held, args=(scope,))
        worker.start()
        assert started.wait(10)
    assert not c.is_open  # the last exit forced the teardown and closed
    release.set()
    worker.join(10)
    assert log == ["made", "torn down"]
    assert len(outcome) == 1 and isinstance(outcome[0], di.CheckpointClosedError)
    if lifetime == "singleton":
        started.clear()
        release.set()
        with c:
            fresh = c.resolve(Late)  # made afresh, not the late one
        assert isinstance(fresh, Late) and log == ["made", "torn down"] * 2


def _code_qualname(frame: Any) -> str:
    """The qualified name of the function running in ``frame``: its code's
    ``co_qualname`` (3.11+); before that, found from the class of the ``self``
    it runs on, as the class in its MRO that defines the function."""
    code = frame.f_code
    if sys.version_info >= (3, 11):
        return str(code.co_qualname)
    owner = frame.f_locals.get("self")
    for cls in type(owner).__mro__ if owner is not None else ():
        attr = vars(cls).get(code.co_name)
        if getattr(getattr(attr, "fget", attr), "__code__", None) is code:
            return f"{cls.__qualname__}.{code.co_name}"
    return str(code.co_name)


def _pause_thread_at(
    qualname: str, event: str, paused: threading.Event, resume: threading.Event
) -> None:
    """White-box: make one thread interleaving deterministic. The calling
    thread blocks the first time ``qualname`` (in di/scopes.py) reaches
    ``event`` ("call" or "return") until ``resume`` is set; nothing else
    changes."""
    done: list[bool] = []
    name = qualname.rpartition(".")[2]

    def hook(frame: Any, kind: str, arg: Any) -> None:
        code = frame.f_code
        if (
            not done
            and kind == event
            and code.co_name == name
            and code.co_filename.endswith("scopes.py")
            and _code_qualname(frame) == qualname
        ):
            done.append(True)
            paused.set()
            resume.wait(10)

    sys.setprofile(hook)


@pytest.mark.parametrize(
    "pause",
    [("_Holds.__init__", "call"), ("Checkpoint._state", "return")],
    ids=["before the hold state is installed", "before the holder is added"],
)
def test_a_hold_that_loses_the_race_with_the_block_exit_leaves_nothing_behind(
    pause: tuple[str, str],
) -> None:
    """hold() from another thread, paused inside, while the request block ends
    and tears the request down: the hold is refused, and the torn-down request
    neither stays registered with the container nor keeps its session held."""
    c = di.Container(_levels_registry([]), shutdown_timeout=0.0)
    paused, resume = threading.Event(), threading.Event()
    outcome: list[Any] = []

    def holder(request: di.Checkpoint) -> None:
        _pause_thread_at(*pause, paused, resume)
        try:
            with request.hold():
                outcome.append("held")  # pragma: no cover - it lost the race
        except di.DIError as exc:
            outcome.append(exc)
        finally:
            sys.setprofile(None)

    with c:
        with c.scope("session") as session:
            with c.scope("request") as request:
                request.resolve(NeedsScoped)
                worker = threading.Thread(target=holder, args=(request,))
                worker.start()
                assert paused.wait(10)
            resume.set()  # the request block has ended: the hold resumes too late
            worker.join(10)
            assert len(outcome) == 1 and isinstance(outcome[0], di.CheckpointClosedError)
            assert request.closed and c.held_checkpoints() == 0
        assert session.closed  # torn down by its own block, not held by its dead child


class SlowDep:
    pass


class NeedsSlowDep:
    def __init__(self, dep: SlowDep) -> None:
        self.dep = dep


def test_a_first_resolve_at_the_root_cut_short_by_a_forced_close_tears_its_resource_down() -> None:
    """The first (interpreted) resolve of a transient generator from the container
    itself, while close(force=True) runs: the close gives the root a fresh exit
    list, so what the resolve pushes must go to the list it began with, and be
    unwound there, and the error must say the container closed."""
    started, go = threading.Event(), threading.Event()
    log: list[str] = []
    reg = di.Registry()

    @reg.provider()
    def slow_dep() -> SlowDep:
        started.set()
        go.wait(10)
        return SlowDep()

    @reg.provider()
    def needs(dep: SlowDep) -> Iterator[NeedsSlowDep]:
        yield NeedsSlowDep(dep)
        log.append("torn down")

    c = di.Container(reg)
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append(c.resolve(NeedsSlowDep))
        except di.DIError as exc:
            outcome.append(exc)

    with c:
        worker = threading.Thread(target=work)
        worker.start()
        assert started.wait(10)
        c.close(force=True)
        go.set()
        worker.join(10)
    assert log == ["torn down"]
    assert isinstance(outcome[0], di.CheckpointClosedError)
    assert "the container closed while NeedsSlowDep was being made" in str(outcome[0])


class AsyncMade:
    pass


def test_a_scoped_instance_made_by_an_async_provider_is_a_plain_value_to_sync_code() -> None:
    """Once aresolve has made it, sync resolves see it like any held instance: from
    the container, from a child scope, from a sync injected function. Before it
    exists, a sync resolve still says to await it."""
    reg = di.Registry()

    @reg.provider(scope="request")
    async def made() -> AsyncIterator[AsyncMade]:
        yield AsyncMade()

    c = di.Container(reg)

    @di.inject
    def handler(value: AsyncMade = di.Depends(AsyncMade)) -> AsyncMade:
        return value

    async def main() -> None:
        async with c, c.scope("request") as request:
            with pytest.raises(di.AsyncProviderError, match=r"await container\.aresolve"):
                c.resolve(AsyncMade)
            value = await request.aresolve(AsyncMade)
            assert request.resolve(AsyncMade) is value
            assert c.resolve(AsyncMade) is value
            assert handler() is value
            async with c.scope("action") as action:
                assert action.resolve(AsyncMade) is value

    asyncio.run(main())
