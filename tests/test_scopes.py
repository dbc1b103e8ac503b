"""di/scopes.py: levels, stack checkpoints, context values, isolation, and
teardown that behaves exactly like nested ``with`` statements / ExitStack."""

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import di


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Settings:
    pass


class SessionState:
    pass


class Conn:
    pass


class ActionThing:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn


class Request:
    pass


class User:
    pass


def basic_registry() -> tuple[di.Registry, dict[str, int], list[str]]:
    reg = di.Registry()
    calls = {"state": 0, "conn": 0}
    log: list[str] = []

    reg.provider(singleton=True)(Settings)

    @reg.provider(scope="session")
    def state() -> SessionState:
        calls["state"] += 1
        return SessionState()

    @reg.provider(scope="request")
    def conn() -> Iterator[Conn]:
        calls["conn"] += 1
        log.append("open conn")
        yield Conn()
        log.append("close conn")

    reg.provider(scope="action")(ActionThing)
    return reg, calls, log


# ------------------------------------------------------------------- levels


def test_scope_levels_and_order() -> None:
    assert di.Scope.ORDER == ("app", "session", "request", "action", "step")
    assert [di.Scope.APP, di.Scope.SESSION, di.Scope.REQUEST, di.Scope.ACTION, di.Scope.STEP] == [
        "app",
        "session",
        "request",
        "action",
        "step",
    ]
    assert isinstance(di.Scope.REQUEST, str)


def test_nested_checkpoints_parent_chain_and_current() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c:
        assert c.current_scope is None
        with c.scope("session") as sess:
            assert isinstance(sess, di.Checkpoint)
            assert sess.level == "session"
            assert c.current_scope is sess
            with c.scope(di.Scope.REQUEST) as req:
                assert req.level == "request"
                assert req.parent is sess
                with c.scope("action") as act:
                    assert act.parent is req
                    assert c.current_scope is act
                assert act.closed
                assert not req.closed
                assert c.current_scope is req
            assert c.current_scope is sess
        assert sess.closed
        assert c.current_scope is None


def test_zero_copy_lookup_from_nested_checkpoint() -> None:
    reg, calls, _ = basic_registry()
    c = di.Container(reg)
    with c, c.scope("request") as req:
        conn = req.resolve(Conn)
        with c.scope("action") as act:
            assert act.resolve(Conn) is conn
            assert act.resolve(ActionThing).conn is conn
        assert calls["conn"] == 1


def test_parent_scoped_instance_first_resolved_in_child_lives_in_parent() -> None:
    reg, calls, log = basic_registry()
    c = di.Container(reg)
    with c:
        with c.scope("request") as req:
            with c.scope("action") as act:
                conn = act.resolve(Conn)  # first created from the nested checkpoint
            assert log == ["open conn"]  # not torn down with the action
            assert req.resolve(Conn) is conn  # cached on the request checkpoint
            with c.scope("action") as act2:
                assert act2.resolve(Conn) is conn
            assert calls["conn"] == 1
        assert log == ["open conn", "close conn"]


def test_action_scoped_fresh_per_action() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c, c.scope("request"):
        with c.scope("action") as a1:
            t1 = a1.resolve(ActionThing)
            assert a1.resolve(ActionThing) is t1
        with c.scope("action") as a2:
            t2 = a2.resolve(ActionThing)
        assert t1 is not t2
        assert t1.conn is t2.conn


@pytest.mark.parametrize(
    ("outer", "inner"),
    [("request", "request"), ("request", "session"), ("action", "request"), ("step", "app")],
)
def test_entering_a_level_not_deeper_raises(outer: str, inner: str) -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c, c.scope(outer) as o:
        with pytest.raises(di.ScopeError) as ei, c.scope(inner):
            pass
        assert inner in str(ei.value)
        if inner != "app":  # "app" is the container itself: a message of its own
            assert outer in str(ei.value)
        assert c.current_scope is o  # nothing was pushed


def test_unknown_level_raises() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c, pytest.raises(di.ScopeError), c.scope("galaxy"):
        pass


def test_skipping_levels_is_allowed() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c:
        with c.scope("request") as req:  # no session
            conn = req.resolve(Conn)
            with c.scope("step") as step:  # no action
                assert step.parent is req
                assert step.resolve(Conn) is conn
        with c.scope("action") as act:  # straight to action
            assert act.parent is not None and act.parent.level == "app"
            assert isinstance(act.resolve(Settings), Settings)
            with pytest.raises(di.NoActiveScopeError):
                act.resolve(ActionThing)  # needs request-scoped Conn: no request entered


def test_session_scoped_without_session_checkpoint() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c:
        with pytest.raises(di.NoActiveScopeError) as ei:
            c.resolve(SessionState)
        assert "session" in str(ei.value)
        assert "SessionState" in str(ei.value)
        with c.scope("request") as req, pytest.raises(di.ScopeError):
            req.resolve(SessionState)  # request entered, session skipped
        with c.scope("session") as sess, c.scope("request") as req:
            assert req.resolve(SessionState) is sess.resolve(SessionState)
    assert issubclass(di.NoActiveScopeError, di.ScopeError)


def test_request_scoped_at_app_root_raises_no_active_scope() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c, pytest.raises(di.NoActiveScopeError):
        c.resolve(Conn)


def test_custom_levels() -> None:
    reg = di.Registry(levels=("app", "tenant", "job"))
    reg.provider(scope="tenant")(Settings)
    reg.provider(scope="job")(Conn)
    c = di.Container(reg)
    with c:
        with c.scope("tenant") as t, c.scope("job") as j:
            assert j.resolve(Settings) is t.resolve(Settings)
            assert isinstance(j.resolve(Conn), Conn)
        with pytest.raises(di.ScopeError), c.scope("request"):
            pass


# ----------------------------------------------------------- context values


def context_registry() -> di.Registry:
    reg = di.Registry()
    reg.context(Request, scope="request")
    reg.context(User, scope="session")

    @reg.provider(scope="request")
    def pair(req: Request, user: User) -> tuple[Request, User]:
        return (req, user)

    return reg


def test_context_values_supplied_at_scope_entry() -> None:
    c = di.Container(context_registry())
    req, user = Request(), User()
    with c, c.scope("session", context={User: user}) as sess:
        assert sess.resolve(User) is user
        with c.scope("request", context={Request: req}) as r:
            assert r.resolve(Request) is req
            assert r.resolve(User) is user  # from the parent, no copy
            assert r.resolve(tuple[Request, User]) == (req, user)
        req2 = Request()
        with c.scope("request", context={Request: req2}) as r2:
            assert r2.resolve(Request) is req2


def test_undeclared_context_key_is_a_scope_error() -> None:
    c = di.Container(context_registry())
    with c:
        with pytest.raises(di.ScopeError) as ei, c.scope("request", context={Settings: Settings()}):
            pass
        assert "Settings" in str(ei.value)


def test_context_key_declared_for_another_level_is_a_scope_error() -> None:
    c = di.Container(context_registry())
    with c:
        # User belongs to "session"
        with pytest.raises(di.ScopeError) as ei, c.scope("request", context={User: User()}):
            pass
        assert "User" in str(ei.value) and "session" in str(ei.value)


def test_declared_context_value_not_supplied_raises_clearly_on_resolve() -> None:
    c = di.Container(context_registry())
    with c, c.scope("session", context={User: User()}), c.scope("request") as r:
        with pytest.raises(di.DIError) as ei:
            r.resolve(Request)
        msg = str(ei.value)
        assert "Request" in msg
        assert "context" in msg  # how to fix: pass it in context={...}


# ------------------------------------------------------------------ isolation


@pytest.mark.anyio
async def test_two_tasks_each_in_their_own_request_scope() -> None:
    import anyio

    reg, calls, _ = basic_registry()
    c = di.Container(reg)
    seen: dict[int, tuple[Any, Any, Any]] = {}
    both_in = anyio.Event()
    entered = 0

    async def handle(i: int) -> None:
        nonlocal entered
        async with c.scope("request") as s:
            mine = await c.aresolve(Conn)
            entered += 1
            if entered == 2:
                both_in.set()
            await both_in.wait()  # both scopes are open at the same time
            seen[i] = (s, c.current_scope, await c.aresolve(Conn) is mine and mine)

    async with c:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(handle, 0)
                tg.start_soon(handle, 1)
    (s0, cur0, conn0), (s1, cur1, conn1) = seen[0], seen[1]
    assert s0 is cur0 and s1 is cur1
    assert s0 is not s1
    assert isinstance(conn0, Conn) and isinstance(conn1, Conn)
    assert conn0 is not conn1
    assert calls["conn"] == 2


@pytest.mark.anyio
async def test_child_task_sees_parents_checkpoint() -> None:
    import anyio

    reg, calls, _ = basic_registry()
    c = di.Container(reg)
    got: list[Any] = []

    async def child() -> None:
        got.append(c.current_scope)
        got.append(await c.aresolve(Conn))

    async with c, c.scope("request") as s:
        conn = await s.aresolve(Conn)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(child)
    assert got == [s, conn]
    assert calls["conn"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_create_task_inside_scope_sees_checkpoint() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)

    async def main() -> None:
        async with c, c.scope("request") as s:
            conn = await s.aresolve(Conn)

            async def child() -> tuple[Any, Any]:
                return c.current_scope, await c.aresolve(Conn)

            cur, got = await asyncio.wait_for(asyncio.create_task(child()), 10)
            assert cur is s
            assert got is conn

    await main()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("storage", ["contextvar", "thread"])
def test_threads_are_isolated(storage: str) -> None:
    reg, _, log = basic_registry()
    c = di.Container(reg, storage=storage)
    n = 4
    both_in = threading.Barrier(n, timeout=10)
    out: dict[int, tuple[Any, Any, Any]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            before = c.current_scope
            with c.scope("request") as s:
                conn = s.resolve(Conn)
                both_in.wait()
                out[i] = (before, c.current_scope is s and s, c.resolve(Conn) is conn and conn)
                both_in.wait()
        except BaseException as e:
            errors.append(e)

    with c, c.scope("session"):  # the main thread's checkpoint is not seen by the workers
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == []
    assert all(before is None for before, _, _ in out.values())
    scopes = [s for _, s, _ in out.values()]
    conns = [cn for _, _, cn in out.values()]
    assert all(isinstance(s, di.Checkpoint) for s in scopes)
    assert all(isinstance(cn, Conn) for cn in conns)
    assert len({id(s) for s in scopes}) == n
    assert len({id(cn) for cn in conns}) == n
    assert log.count("close conn") == n


def test_exiting_out_of_order_raises() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c:
        a = c.scope("session")
        b = c.scope("request")
        a.__enter__()
        b.__enter__()
        with pytest.raises(di.ScopeError) as ei:
            a.__exit__(None, None, None)
        assert "order" in str(ei.value).lower() or "request" in str(ei.value)
        assert c.current_scope is not None
        # the stack is intact: the inner one can still be left, then the outer one
        b.__exit__(None, None, None)
        a.__exit__(None, None, None)
        assert c.current_scope is None


@pytest.mark.anyio
async def test_exiting_in_a_task_that_did_not_enter_tears_down_and_raises(
    anyio_backend: str,
) -> None:
    import anyio

    reg, _, log = basic_registry()
    c = di.Container(reg)
    async with c:
        scope = c.scope("request")

        async def enter() -> None:
            await scope.__aenter__()
            scope.resolve(Conn)

        async def leave() -> None:
            with pytest.raises(di.ScopeError, match="did not enter it") as info:
                await scope.__aexit__(None, None, None)
            assert "hold() or spawn()" in str(info.value)

        # Each task runs in its own copy of the context: the one that leaves
        # never had the scope current.
        async with anyio.create_task_group() as tg:
            tg.start_soon(enter)
        async with anyio.create_task_group() as tg:
            tg.start_soon(leave)
        assert scope.closed
        assert log == ["open conn", "close conn"]  # nothing left open
        assert c.lingering_checkpoints() == 0
        assert c.current_scope is None
    assert log == ["open conn", "close conn"]


@pytest.mark.parametrize("how", ["async", "sync"])
def test_exiting_in_a_child_task_that_inherited_the_scope_tears_down_and_raises(
    how: str,
) -> None:
    """A child task sees its parent's scope current (create_task copies the
    context) but holds no token for it: its exit is foreign too, not a raw
    ValueError from ContextVar.reset that leaves the scope open."""
    reg, _, log = basic_registry()
    c = di.Container(reg)

    async def main() -> None:
        async with c:
            scope = c.scope("request")
            await scope.__aenter__()
            scope.resolve(Conn)

            async def leave() -> None:
                with pytest.raises(di.ScopeError, match="it inherited it"):
                    if how == "async":
                        await scope.__aexit__(None, None, None)
                    else:
                        scope.__exit__(None, None, None)
                assert c.current_scope is None  # this task's copy is back at the parent

            await asyncio.create_task(leave())
            assert scope.closed and log == ["open conn", "close conn"]
            assert c.current_scope is scope  # the entering task still has it current
            # ...and leaves its own block cleanly: torn down already, storage restored
            if how == "async":
                await scope.__aexit__(None, None, None)
            else:
                scope.__exit__(None, None, None)
            assert c.current_scope is None
            with c.scope("request") as fresh:  # the task goes on as usual
                assert fresh.resolve(Conn) is not None
        assert log == ["open conn", "close conn"] * 2

    asyncio.run(main())


def test_exiting_in_a_thread_that_did_not_enter_tears_down_and_raises() -> None:
    reg, _, log = basic_registry()
    c = di.Container(reg, storage="thread")
    errors: list[BaseException] = []
    with c:
        scope = c.scope("request").__enter__()
        scope.resolve(Conn)

        worker = threading.Thread(target=lambda: _exit_collecting(scope, errors))
        worker.start()
        worker.join()
        assert len(errors) == 1 and isinstance(errors[0], di.ScopeError)
        assert "did not enter it" in str(errors[0])
        assert scope.closed and log == ["open conn", "close conn"]
        assert c.current_scope is scope
        scope.__exit__(None, None, None)  # the entering thread leaves its block cleanly
        assert c.current_scope is None
    assert log == ["open conn", "close conn"]


def test_a_held_checkpoint_exited_elsewhere_waits_for_its_holder() -> None:
    reg, _, log = basic_registry()
    c = di.Container(reg, storage="thread")
    with c:
        scope = c.scope("request").__enter__()
        scope.resolve(Conn)
        hold = scope.hold()
        hold.__enter__()
        errors: list[BaseException] = []
        worker = threading.Thread(target=lambda: _exit_collecting(scope, errors))
        worker.start()
        worker.join()
        assert len(errors) == 1 and isinstance(errors[0], di.ScopeError)
        assert not scope.closed and log == ["open conn"]  # the hold keeps it
        hold.__exit__(None, None, None)
        assert scope.closed and log == ["open conn", "close conn"]


def _exit_collecting(scope: di.Checkpoint, errors: list[BaseException]) -> None:
    try:
        scope.__exit__(None, None, None)
    except BaseException as exc:
        errors.append(exc)


def test_resolving_from_a_closed_checkpoint_raises() -> None:
    reg, _, _ = basic_registry()
    c = di.Container(reg)
    with c:
        with c.scope("request") as s:
            pass
        assert s.closed
        with pytest.raises(di.CheckpointClosedError):
            s.resolve(Conn)
    assert issubclass(di.CheckpointClosedError, di.ScopeError)


# --------------------------------------------------------------- teardown basics


class Boom(Exception):
    pass


def test_generator_receives_the_exception_that_ended_the_block() -> None:
    reg = di.Registry()
    received: list[BaseException | None] = []

    @reg.provider(scope="request")
    def conn() -> Iterator[Conn]:
        try:
            yield Conn()
        except BaseException as e:
            received.append(e)
            raise
        else:
            received.append(None)

    c = di.Container(reg)
    err = Boom("in block")
    with c:
        with pytest.raises(Boom) as ei, c.scope("request") as s:
            s.resolve(Conn)
            raise err
        assert ei.value is err
        assert received == [err]  # the very same exception, thrown in at the yield
        with c.scope("request") as s:
            s.resolve(Conn)
        assert received == [err, None]  # clean exit: resumed, not closed/thrown


def test_generator_that_swallows_suppresses() -> None:
    reg = di.Registry()

    @reg.provider(scope="request")
    def conn() -> Iterator[Conn]:
        try:  # noqa: SIM105 - the plain form is what users write
            yield Conn()
        except Boom:
            pass  # swallowed: like contextlib.contextmanager, the block's error is suppressed

    c = di.Container(reg)
    reached = False
    with c:
        with c.scope("request") as s:
            s.resolve(Conn)
            raise Boom()
        reached = True
    assert reached


def test_sync_scope_with_async_teardown_is_an_error() -> None:
    """A resource whose teardown is async cannot be torn down by a sync `with`."""
    reg = di.Registry()

    @reg.provider(scope="request")
    async def conn() -> AsyncIterator[Conn]:
        yield Conn()

    c = di.Container(reg)

    async def main() -> None:
        async with c:
            with pytest.raises(di.AsyncProviderError), c.scope("request") as s:  # sync with
                await s.aresolve(Conn)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_resources_entered_before_a_failed_resolution_are_unwound() -> None:
    reg = di.Registry()
    log: list[str] = []

    class Tmp:
        pass

    class Repo:
        pass

    @reg.provider(scope="request")
    def conn() -> Iterator[Conn]:
        log.append("open conn")
        yield Conn()
        log.append("close conn")

    @reg.provider()
    def tmp() -> Iterator[Tmp]:
        log.append("open tmp")
        yield Tmp()
        log.append("close tmp")

    @reg.provider()
    def repo(conn: Conn, tmp: Tmp) -> Repo:
        raise Boom("repo failed")

    c = di.Container(reg)
    with c:
        with c.scope("request") as s:
            with pytest.raises(Boom):
                s.resolve(Repo)
            assert log[:2] == ["open conn", "open tmp"]
        assert sorted(log) == sorted(["open conn", "open tmp", "close tmp", "close conn"])
        assert log.count("close tmp") == 1 and log.count("close conn") == 1
        assert log.index("close tmp") < log.index("close conn")  # LIFO


@pytest.mark.anyio
async def test_async_resources_entered_before_a_failed_resolution_are_unwound() -> None:
    reg = di.Registry()
    log: list[str] = []

    class Repo:
        pass

    @reg.provider(scope="request")
    async def conn() -> AsyncIterator[Conn]:
        log.append("open conn")
        yield Conn()
        log.append("close conn")

    @reg.provider()
    async def repo(conn: Conn) -> Repo:
        raise Boom("repo failed")

    c = di.Container(reg)
    async with c:
        async with c.scope("request") as s:
            with pytest.raises(Boom):
                await s.aresolve(Repo)
        assert log == ["open conn", "close conn"]


def test_transient_generators_torn_down_at_checkpoint_exit() -> None:
    reg = di.Registry()
    log: list[str] = []
    counter = itertools.count()

    class Tmp:
        def __init__(self, n: int) -> None:
            self.n = n

    @reg.provider()
    def tmp() -> Iterator[Tmp]:
        n = next(counter)
        log.append(f"open {n}")
        yield Tmp(n)
        log.append(f"close {n}")

    c = di.Container(reg)
    with c:
        with c.scope("request") as req:
            a = req.resolve(Tmp)
            with c.scope("action") as act:
                b = act.resolve(Tmp)
            assert log == ["open 0", "open 1", "close 1"]  # b belonged to the action
            d = req.resolve(Tmp)
            assert (a.n, b.n, d.n) == (0, 1, 2)
            assert log == ["open 0", "open 1", "close 1", "open 2"]
        assert log == ["open 0", "open 1", "close 1", "open 2", "close 2", "close 0"]


@pytest.mark.anyio
async def test_cancellation_forwarded_into_async_generator_teardown() -> None:
    import anyio

    reg = di.Registry()
    received: list[type[BaseException] | None] = []
    ready = anyio.Event()

    @reg.provider(scope="request")
    async def conn() -> AsyncIterator[Conn]:
        try:
            yield Conn()
        except BaseException as e:
            received.append(type(e))
            raise
        received.append(None)

    c = di.Container(reg)
    cancelled_exc = anyio.get_cancelled_exc_class()
    after_block: list[str] = []

    async def request_handler() -> None:
        async with c.scope("request") as s:
            await s.aresolve(Conn)
            ready.set()
            await anyio.sleep_forever()
        after_block.append("not reached")

    async with c:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(request_handler)
                await ready.wait()
                tg.cancel_scope.cancel()
    assert received == [cancelled_exc]
    assert after_block == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_task_cancel_forwarded() -> None:
    reg = di.Registry()
    received: list[type[BaseException]] = []
    ready = asyncio.Event()

    @reg.provider(scope="request")
    async def conn() -> AsyncIterator[Conn]:
        try:
            yield Conn()
        except BaseException as e:
            received.append(type(e))
            raise

    c = di.Container(reg)

    async def handler() -> None:
        async with c.scope("request") as s:
            await s.aresolve(Conn)
            ready.set()
            await asyncio.sleep(3600)

    async with c:
        t = asyncio.create_task(handler())
        await asyncio.wait_for(ready.wait(), 10)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(t, 10)
    assert received == [asyncio.CancelledError]


def test_trio_cancelled_forwarded() -> None:
    import trio

    reg = di.Registry()
    received: list[type[BaseException]] = []

    @reg.provider(scope="request")
    async def conn() -> AsyncIterator[Conn]:
        try:
            yield Conn()
        except BaseException as e:
            received.append(type(e))
            raise

    c = di.Container(reg)

    async def main() -> None:
        with trio.fail_after(10):
            async with c:
                with trio.CancelScope() as cs:
                    async with c.scope("request") as s:
                        await s.aresolve(Conn)
                        cs.cancel()
                        await trio.sleep_forever()
                assert cs.cancelled_caught

    trio.run(main)
    assert received == [trio.Cancelled]


# -------------------------------------------------------- ExitStack equivalence
#
# The same sequence of resources is built twice: once with contextlib's
# ExitStack / AsyncExitStack (the reference), once as di providers resolved in
# a request checkpoint. Each resource is a generator / async generator (the
# reference wraps it in contextmanager / asynccontextmanager) or a class-based
# (async) context manager (registered with cm=True). Teardown order, what each
# exit received, the final exception, suppression and __context__ chaining must
# all be identical.


class TeardownError(Exception):
    pass


class Interrupt(BaseException):
    """KeyboardInterrupt-like: a BaseException that is not an Exception."""


class BlockError(Exception):
    pass


BEHAVIOURS = ("clean", "raise", "suppress", "base")
SYNC_KINDS = ("gen", "cm")
ASYNC_KINDS = ("agen", "acm")
RES_TYPES = [type(f"Res{i}", (), {}) for i in range(4)]
BLOCKS: dict[str, Callable[[], BaseException] | None] = {
    "none": None,
    "error": lambda: BlockError("block"),
    "interrupt": lambda: Interrupt("block"),
}


def _exc_name(e: BaseException | None) -> str | None:
    return None if e is None else type(e).__name__


def _after_exit(i: int, behaviour: str) -> None:
    if behaviour == "raise":
        raise TeardownError(f"teardown {i}")
    if behaviour == "base":
        raise Interrupt(f"teardown {i}")


def make_gen(i: int, behaviour: str, log: list[Any]) -> Callable[[], Iterator[Any]]:
    def gen() -> Iterator[Any]:
        log.append(("enter", i))
        try:
            yield RES_TYPES[i]()
        except BaseException as e:
            log.append(("exit", i, _exc_name(e)))
            if behaviour == "suppress":
                return
            _after_exit(i, behaviour)
            raise
        log.append(("exit", i, None))
        _after_exit(i, behaviour)

    return gen


def make_agen(i: int, behaviour: str, log: list[Any]) -> Callable[[], AsyncIterator[Any]]:
    async def agen() -> AsyncIterator[Any]:
        log.append(("enter", i))
        try:
            yield RES_TYPES[i]()
        except BaseException as e:
            log.append(("exit", i, _exc_name(e)))
            if behaviour == "suppress":
                return
            _after_exit(i, behaviour)
            raise
        log.append(("exit", i, None))
        _after_exit(i, behaviour)

    return agen


class CM:
    def __init__(self, i: int, behaviour: str, log: list[Any]) -> None:
        self.i, self.behaviour, self.log = i, behaviour, log

    def __enter__(self) -> Any:
        self.log.append(("enter", self.i))
        return RES_TYPES[self.i]()

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        self.log.append(("exit", self.i, None if et is None else et.__name__))
        if self.behaviour == "suppress":
            return True
        _after_exit(self.i, self.behaviour)
        return False


class ACM(CM):
    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> bool:
        return self.__exit__(et, ev, tb)


def chain(exc: BaseException | None) -> list[tuple[str, str, bool]]:
    out: list[tuple[str, str, bool]] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append((type(exc).__name__, str(exc), exc.__suppress_context__))
        exc = exc.__context__
    return out


def register(reg: di.Registry, i: int, kind: str, behaviour: str, log: list[Any]) -> None:
    key = RES_TYPES[i]
    if kind == "gen":
        reg.provider(scope="request", provides=key)(make_gen(i, behaviour, log))
    elif kind == "agen":
        reg.provider(scope="request", provides=key)(make_agen(i, behaviour, log))
    else:
        cls = CM if kind == "cm" else ACM

        def factory() -> Any:
            return cls(i, behaviour, log)

        factory.__annotations__["return"] = cls  # says whether the manager is sync or async
        reg.provider(scope="request", provides=key, cm=True)(factory)


def reference_sync(
    specs: list[tuple[str, str]], block: str
) -> tuple[list[Any], BaseException | None]:
    log: list[Any] = []
    try:
        with contextlib.ExitStack() as stack:
            for i, (kind, behaviour) in enumerate(specs):
                if kind == "gen":
                    stack.enter_context(contextlib.contextmanager(make_gen(i, behaviour, log))())
                else:
                    stack.enter_context(CM(i, behaviour, log))
            log.append("block")
            make = BLOCKS[block]
            if make is not None:
                raise make()
    except BaseException as e:
        return log, e
    return log, None


def via_di_sync(specs: list[tuple[str, str]], block: str) -> tuple[list[Any], BaseException | None]:
    log: list[Any] = []
    reg = di.Registry()
    for i, (kind, behaviour) in enumerate(specs):
        register(reg, i, kind, behaviour, log)
    c = di.Container(reg)
    caught: BaseException | None = None
    with c:
        try:
            with c.scope("request") as s:
                for i in range(len(specs)):
                    s.resolve(RES_TYPES[i])
                log.append("block")
                make = BLOCKS[block]
                if make is not None:
                    raise make()
        except BaseException as e:
            caught = e
    return log, caught


async def reference_async(
    specs: list[tuple[str, str]], block: str
) -> tuple[list[Any], BaseException | None]:
    log: list[Any] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            for i, (kind, behaviour) in enumerate(specs):
                if kind == "gen":
                    stack.enter_context(contextlib.contextmanager(make_gen(i, behaviour, log))())
                elif kind == "cm":
                    stack.enter_context(CM(i, behaviour, log))
                elif kind == "agen":
                    await stack.enter_async_context(
                        contextlib.asynccontextmanager(make_agen(i, behaviour, log))()
                    )
                else:
                    await stack.enter_async_context(ACM(i, behaviour, log))
            log.append("block")
            make = BLOCKS[block]
            if make is not None:
                raise make()
    except BaseException as e:
        return log, e
    return log, None


async def via_di_async(
    specs: list[tuple[str, str]], block: str
) -> tuple[list[Any], BaseException | None]:
    log: list[Any] = []
    reg = di.Registry()
    for i, (kind, behaviour) in enumerate(specs):
        register(reg, i, kind, behaviour, log)
    c = di.Container(reg)
    caught: BaseException | None = None
    async with c:
        try:
            async with c.scope("request") as s:
                for i in range(len(specs)):
                    await s.aresolve(RES_TYPES[i])
                log.append("block")
                make = BLOCKS[block]
                if make is not None:
                    raise make()
        except BaseException as e:
            caught = e
    return log, caught


def assert_equivalent(
    ref: tuple[list[Any], BaseException | None], got: tuple[list[Any], BaseException | None]
) -> None:
    ref_log, ref_exc = ref
    got_log, got_exc = got
    assert got_log == ref_log, "teardown order / what each exit received differs"
    assert type(got_exc) is type(ref_exc), f"final exception: {got_exc!r} vs ExitStack {ref_exc!r}"
    assert chain(got_exc) == chain(ref_exc), "__context__ chain differs from ExitStack"


def _cases(kinds: tuple[str, ...], n: int) -> list[list[tuple[str, str]]]:
    one = [(k, b) for k in kinds for b in BEHAVIOURS]
    return [list(p) for p in itertools.product(one, repeat=n)]


def _id(specs: list[tuple[str, str]]) -> str:
    return "-".join(f"{k}:{b}" for k, b in specs)


SYNC_CASES = _cases(SYNC_KINDS, 2) + [
    [("gen", b0), ("cm", b1), ("gen", b2)] for b0, b1, b2 in itertools.product(BEHAVIOURS, repeat=3)
]
ASYNC_CASES = (
    _cases(ASYNC_KINDS, 2)
    # sync and async resources mixed in one checkpoint
    + [
        [("agen", b0), ("cm", b1), ("gen", b2)]
        for b0, b1, b2 in itertools.product(BEHAVIOURS, repeat=3)
    ]
    # four resources, every ordering of the four behaviours
    + [
        [("acm", b0), ("gen", b1), ("agen", b2), ("cm", b3)]
        for b0, b1, b2, b3 in itertools.permutations(BEHAVIOURS)
    ]
)


def test_reference_harness_sanity() -> None:
    """The harness itself distinguishes the behaviours, so equality means something."""
    log, exc = reference_sync([("gen", "clean"), ("cm", "suppress")], "error")
    assert exc is None  # the cm (entered last, exited first) suppressed BlockError
    assert log == [
        ("enter", 0),
        ("enter", 1),
        "block",
        ("exit", 1, "BlockError"),
        ("exit", 0, None),
    ]
    log, exc = reference_sync([("gen", "raise"), ("cm", "clean")], "error")
    assert isinstance(exc, TeardownError)
    assert chain(exc) == [("TeardownError", "teardown 0", False), ("BlockError", "block", False)]
    log, exc = reference_sync([("gen", "suppress"), ("cm", "base")], "none")
    assert exc is None  # the generator swallowed the Interrupt raised by the cm's exit
    assert log[-1] == ("exit", 0, "Interrupt")


@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("specs", SYNC_CASES, ids=_id)
def test_teardown_equivalent_to_exitstack(specs: list[tuple[str, str]], block: str) -> None:
    assert_equivalent(reference_sync(specs, block), via_di_sync(specs, block))


@pytest.mark.anyio
@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("specs", ASYNC_CASES, ids=_id)
async def test_async_teardown_equivalent_to_async_exitstack(
    specs: list[tuple[str, str]], block: str
) -> None:
    assert_equivalent(await reference_async(specs, block), await via_di_async(specs, block))


def test_a_checkpoint_is_truthy_even_while_it_holds_nothing() -> None:
    c = di.Container(di.Registry())
    with c.scope("request") as scope:
        assert len(scope) == 0
        assert scope and c.current_scope and scope.parent  # the root, empty too


@pytest.mark.parametrize("kind", ["thread", "contextvar"])
def test_a_storage_instance_serves_one_container_only(kind: str) -> None:
    """Shared, each container would take the other's checkpoints for its own
    (and nest its scopes into them): refused when the second container is built."""
    from di.scopes import ContextVarStorage, ThreadLocalStorage

    storage = ThreadLocalStorage() if kind == "thread" else ContextVarStorage()
    first = di.Container(di.Registry(), storage=storage)
    with pytest.raises(ValueError, match="already serves another container"):
        di.Container(di.Registry(), storage=storage)
    with first.scope("request") as scope:
        assert first.current_scope is scope


def test_a_storage_instance_is_free_again_once_its_container_is_gone() -> None:
    import gc

    from di.scopes import ThreadLocalStorage

    storage = ThreadLocalStorage()
    first = di.Container(di.Registry(), storage=storage)
    del first
    gc.collect()
    second = di.Container(di.Registry(), storage=storage)  # e.g. one per test, one storage
    with second.scope("request") as scope:
        assert second.current_scope is scope


def test_two_tasks_that_inherited_a_scope_both_exiting_it_are_refused_cleanly() -> None:
    reg, _, log = basic_registry()
    c = di.Container(reg)

    async def main() -> None:
        async with c:
            scope = c.scope("request")
            await scope.__aenter__()
            scope.resolve(Conn)

            async def leave() -> None:
                with pytest.raises(di.ScopeError):
                    await scope.__aexit__(None, None, None)
                assert c.current_scope is None

            await asyncio.create_task(leave())
            await asyncio.create_task(leave())  # a second one, after the first
            assert scope.closed and log == ["open conn", "close conn"]
            await scope.__aexit__(None, None, None)  # the entering task leaves cleanly
            assert c.current_scope is None

    asyncio.run(main())


# ----------------------------------------- teardown order across nested creations
#
# A creation gathers what it enters in a list of its own, handed to its checkpoint
# when it is done; a scoped or singleton key it needs, made there and then, hands
# over its own exits. What the first gathered so far goes first, so that teardown
# runs in entering order, as nested `with` blocks would.


class _Res:
    pass


class _Scoped:
    pass


class _Later:
    pass


class _Uses:
    def __init__(self, *parts: object) -> None:
        self.parts = parts


def _order_registry(log: list[str], scope: str | None, fail: list[bool]) -> di.Registry:
    registry = di.Registry()

    def resource(name: str, cls: type) -> Any:
        def make() -> Iterator[Any]:
            log.append(f"enter {name}")
            try:
                yield cls()
            finally:
                log.append(f"exit {name}")

        make.__name__ = name
        return make

    registry.provider(provides=_Res)(resource("res", _Res))
    registry.provider(provides=_Later)(resource("later", _Later))
    lifetime: dict[str, Any] = {"singleton": True} if scope is None else {"scope": scope}
    registry.provider(provides=_Scoped, **lifetime)(resource("nested", _Scoped))

    def uses(r: _Res, s: _Scoped, later: _Later) -> _Uses:
        if fail[0]:
            raise RuntimeError("uses failed")
        return _Uses(r, s, later)

    if scope is None:
        registry.provider(singleton=True)(uses)
    else:
        registry.provider()(uses)  # a transient in the request scope
    return registry


@pytest.mark.parametrize("times", [1, 2], ids=["first-use", "compiled"])
@pytest.mark.parametrize("api", ["resolve", "aresolve"])
def test_a_scoped_key_made_inside_a_creation_is_torn_down_in_entering_order(
    api: str, times: int
) -> None:
    log: list[str] = []
    container = di.Container(_order_registry(log, "request", [False]))

    async def body() -> None:
        async with container:
            for _ in range(times):
                log.clear()
                async with container.scope("request") as request:
                    if api == "resolve":
                        request.resolve(_Uses)
                    else:
                        await request.aresolve(_Uses)
                assert log == [
                    *("enter res", "enter nested", "enter later"),
                    *("exit later", "exit nested", "exit res"),
                ]

    asyncio.run(body())


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
def test_a_singleton_made_inside_a_singleton_creation_closes_in_entering_order(api: str) -> None:
    log: list[str] = []
    container = di.Container(_order_registry(log, None, [False]))

    async def body() -> None:
        async with container:
            if api == "resolve":
                container.resolve(_Uses)
            else:
                await container.aresolve(_Uses)
            assert log == ["enter res", "enter nested", "enter later"]
        assert log[3:] == ["exit later", "exit nested", "exit res"]

    asyncio.run(body())


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
def test_a_failed_singleton_still_unwinds_all_it_entered_at_once(api: str) -> None:
    # What it handed to the root before the nested singleton was made is taken
    # back and unwound with the rest; the nested singleton, made for good, stays.
    log: list[str] = []
    fail = [True]
    container = di.Container(_order_registry(log, None, fail))

    async def body() -> None:
        async with container:
            with pytest.raises(RuntimeError, match="uses failed"):
                if api == "resolve":
                    container.resolve(_Uses)
                else:
                    await container.aresolve(_Uses)
            assert log == [
                *("enter res", "enter nested", "enter later"),
                *("exit later", "exit res"),
            ]
            fail[0] = False
            log.clear()
            if api == "resolve":
                container.resolve(_Uses)
            else:
                await container.aresolve(_Uses)
            assert log == ["enter res", "enter later"]  # the nested one is made already
        assert log[2:] == ["exit later", "exit res", "exit nested"]

    asyncio.run(body())


def test_failed_singleton_creations_leave_nothing_behind_in_the_root() -> None:
    # Each failure kept a place in the root's exit list before the nested
    # singleton was made; it takes that place back, so that a singleton that
    # keeps failing (a retry loop) does not grow the root's list.
    import gc

    from di.teardown import Slot

    log: list[str] = []
    fail = [True]
    container = di.Container(_order_registry(log, None, fail))
    with container:
        for _ in range(200):
            with pytest.raises(RuntimeError, match="uses failed"):
                container.resolve(_Uses)
        gc.collect()
        assert sum(type(o) is Slot for o in gc.get_objects()) == 0
        assert log.count("enter res") == log.count("exit res") == 200
