"""Holds and spawns used out of order, twice or from the wrong task, and the
errors that pass from a held checkpoint's teardown into its parent's.

Every case is driven step by step (``__enter__``/``__exit__`` called by hand,
``contextvars.Context.run``, events), so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

import di

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # spawn() and these steps are asyncio's


class Session:
    pass


class Action:
    pass


class Boom(Exception):
    pass


class ParentFailed(Exception):
    pass


class ChildFailed(Exception):
    pass


def _container(storage: str = "contextvar") -> tuple[di.Container, list[str]]:
    log: list[str] = []
    r = di.Registry()

    @r.provider(scope="request")
    def session() -> Iterator[Session]:
        log.append("open session")
        yield Session()
        log.append("close session")

    @r.provider(scope="action")
    def action() -> Iterator[Action]:
        yield Action()
        log.append("close action")

    return di.Container(r, storage=storage), log


# -- a hold left out of order --------------------------------------------------


@pytest.mark.parametrize("storage", ["contextvar", "thread"])
def test_hold_entered_in_the_block_and_left_after_it_restores_nothing(storage: str) -> None:
    c, log = _container(storage)
    with c:
        with c.scope("request") as scope:
            scope.resolve(Session)
            hold = scope.hold()
            hold.__enter__()
        assert c.current_scope is None  # the block's exit put the root back
        assert log == ["open session"]  # still held
        hold.__exit__(None, None, None)
        assert c.current_scope is None  # and the hold's exit did not undo that
        assert log == ["open session", "close session"]
        with c.scope("request") as again:  # the next request in this thread is fine
            assert again.parent is c._root


@pytest.mark.parametrize("storage", ["contextvar", "thread"])
def test_hold_left_while_a_scope_entered_inside_it_is_current_is_refused(storage: str) -> None:
    c, log = _container(storage)
    with c, c.scope("request") as scope:
        scope.resolve(Session)
        hold = scope.hold()
        hold.__enter__()
        action = c.scope("action")
        action.__enter__()
        action.resolve(Action)
        with pytest.raises(di.ScopeError, match="exit the inner scope first"):
            hold.__exit__(None, None, None)
        assert c.current_scope is action  # nothing changed
        action.__exit__(None, None, None)  # the inner one leaves in order
        assert c.current_scope is scope
        hold.__exit__(None, None, None)  # and now the hold can go
        assert c.current_scope is scope and scope.holds == 0
    assert log == ["open session", "close action", "close session"]


def test_hold_left_in_another_context_is_released_then_refused() -> None:
    c, log = _container()
    entering, leaving = contextvars.Context(), contextvars.Context()
    with c:
        with c.scope("request") as scope:
            scope.resolve(Session)
            hold = scope.hold()
            entering.run(hold.__enter__)
        assert not scope.closed
        with pytest.raises(di.ScopeError, match="did not enter it"):
            leaving.run(hold.__exit__, None, None, None)
        assert scope.closed  # released all the same: nothing left open
        assert log == ["open session", "close session"]
        assert c.lingering_checkpoints() == 0


@pytest.mark.anyio
async def test_async_hold_left_in_another_context_is_released_then_refused() -> None:
    c, log = _container()
    entering, leaving = contextvars.Context(), contextvars.Context()
    async with c:
        async with c.scope("request") as scope:
            await scope.aresolve(Session)
            hold = scope.hold()
            await entering.run(asyncio.ensure_future, hold.__aenter__())
        exit_ = leaving.run(asyncio.ensure_future, hold.__aexit__(None, None, None))
        with pytest.raises(di.ScopeError, match="did not enter it"):
            await exit_
        assert scope.closed
        assert log == ["open session", "close session"]


# -- one Hold entered twice ----------------------------------------------------


def test_one_hold_entered_twice_is_refused_and_the_first_keeps_its_hold() -> None:
    c, log = _container()
    with c:
        with c.scope("request") as scope:
            scope.resolve(Session)
            hold = scope.hold()
            inside, done = threading.Event(), threading.Event()
            errors: list[BaseException] = []

            def worker() -> None:
                with hold:
                    inside.set()
                    done.wait(10)

            thread = threading.Thread(target=worker)
            thread.start()
            assert inside.wait(10)
            try:
                hold.__enter__()
            except di.ScopeError as exc:
                errors.append(exc)
        assert len(errors) == 1 and "already entered" in str(errors[0])
        assert log == ["open session"]  # the worker still holds it
        done.set()
        thread.join(10)
        assert log == ["open session", "close session"]


# -- spawn ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_spawn_refuses_what_is_not_a_coroutine_and_holds_nothing() -> None:
    c, log = _container()

    async def work() -> None:
        pass

    async with c:
        async with c.scope("request") as scope:
            scope.resolve(Session)
            for bad in (None, work):
                with pytest.raises(TypeError, match="takes a coroutine"):
                    scope.spawn(bad)  # type: ignore[arg-type]
            assert scope.holds == 0
        assert log == ["open session", "close session"]


@pytest.mark.anyio
async def test_spawning_one_coroutine_twice_keeps_the_first_tasks_hold() -> None:
    c, log = _container()
    release = asyncio.Event()
    seen: list[bool] = []

    async def work(scope: di.Checkpoint) -> None:
        await release.wait()
        seen.append(scope.closed)

    async with c:
        async with c.scope("request") as scope:
            scope.resolve(Session)
            coro = work(scope)
            first = scope.spawn(coro)
            second = scope.spawn(coro)
        with pytest.raises(RuntimeError, match="awaited already"):
            await asyncio.wait_for(second, 10)
        assert log == ["open session"]  # the first task still holds the request
        release.set()
        await asyncio.wait_for(first, 10)
        assert seen == [False]
        assert log == ["open session", "close session"]


@pytest.mark.anyio
async def test_spawned_task_whose_error_the_teardown_suppresses_returns_none() -> None:
    r = di.Registry()

    @r.provider(scope="request")
    async def session() -> AsyncIterator[Session]:
        with contextlib.suppress(Boom):  # swallowed: suppresses, as in asynccontextmanager
            yield Session()

    async def failing() -> int:
        raise Boom

    c = di.Container(r)
    async with c:
        async with c.scope("request") as scope:
            await scope.aresolve(Session)
            task = scope.spawn(failing())
        assert await asyncio.wait_for(task, 10) is None
        # the same as a hold block, which the suppression ends quietly
        async with c.scope("request") as scope:
            await scope.aresolve(Session)
            hold = scope.hold()
            await hold.__aenter__()
        try:
            raise Boom
        except Boom as exc:
            assert await hold.__aexit__(Boom, exc, exc.__traceback__)


# -- errors from a held child's teardown go on into its parent's -----------------


def _failing_teardowns(got: list[str]) -> di.Container:
    r = di.Registry()

    @r.provider(scope="request")
    def session() -> Iterator[Session]:
        try:
            yield Session()
        except BaseException as exc:
            got.append(repr(exc))
            raise
        finally:
            raise ParentFailed("request teardown")

    @r.provider(scope="action")
    def action() -> Iterator[Action]:
        yield Action()
        raise ChildFailed("action teardown")

    return di.Container(r)


def _chain(exc: BaseException | None) -> list[str]:
    out = []
    while exc is not None:
        out.append(type(exc).__name__)
        exc = exc.__context__
    return out


def test_nested_blocks_reference_for_the_chain() -> None:
    got: list[str] = []
    c = _failing_teardowns(got)
    with pytest.raises(ParentFailed) as info, c, c.scope("request") as req:
        req.resolve(Session)
        with c.scope("action") as act:
            act.resolve(Action)
    assert _chain(info.value) == ["ParentFailed", "ChildFailed"]
    assert got == ["ChildFailed('action teardown')"]


def test_held_childs_teardown_error_goes_into_the_parents_teardown() -> None:
    got: list[str] = []
    c = _failing_teardowns(got)
    errors: list[BaseException] = []
    inside, go = threading.Event(), threading.Event()

    def worker(act: di.Checkpoint) -> None:
        try:
            with act.hold():
                inside.set()
                go.wait(10)
        except BaseException as exc:
            errors.append(exc)

    with c:
        with c.scope("request") as req:
            req.resolve(Session)
            with c.scope("action") as act:
                act.resolve(Action)
                thread = threading.Thread(target=worker, args=(act,))
                thread.start()
                assert inside.wait(10)
        go.set()
        thread.join(10)
    assert [_chain(e) for e in errors] == [["ParentFailed", "ChildFailed"]]
    assert got == ["ChildFailed('action teardown')"]  # as with nested blocks


def test_holders_error_goes_through_the_child_into_the_parent() -> None:
    got: list[str] = []
    r = di.Registry()

    @r.provider(scope="request")
    def session() -> Iterator[Session]:
        try:
            yield Session()
        except BaseException as exc:
            got.append(f"request saw {exc!r}")
            raise ParentFailed("request teardown") from None

    @r.provider(scope="action")
    def action() -> Iterator[Action]:
        try:
            yield Action()
        except BaseException as exc:
            got.append(f"action saw {exc!r}")
            raise

    c = di.Container(r)
    with c:
        with c.scope("request") as req:
            req.resolve(Session)
            with c.scope("action") as act:
                act.resolve(Action)
                hold = act.hold()
                hold.__enter__()
        with pytest.raises(ParentFailed) as info:
            try:
                raise Boom("the held work failed")
            except Boom as exc:  # what a `with hold:` block ending in Boom does
                if not hold.__exit__(Boom, exc, exc.__traceback__):
                    raise
    assert _chain(info.value) == ["ParentFailed", "Boom"]
    assert got == [
        "action saw Boom('the held work failed')",
        "request saw Boom('the held work failed')",
    ]


@pytest.mark.anyio
async def test_async_held_childs_teardown_error_goes_into_the_parents_teardown() -> None:
    got: list[str] = []
    r = di.Registry()

    @r.provider(scope="request")
    async def session() -> AsyncIterator[Session]:
        try:
            yield Session()
        except BaseException as exc:
            got.append(repr(exc))
            raise
        finally:
            raise ParentFailed("request teardown")

    @r.provider(scope="action")
    async def action() -> AsyncIterator[Action]:
        yield Action()
        raise ChildFailed("action teardown")

    c = di.Container(r)
    go = asyncio.Event()

    async def work() -> None:
        await go.wait()

    async with c:
        async with c.scope("request") as req:
            await req.aresolve(Session)
            async with c.scope("action") as act:
                await act.aresolve(Action)
                task = act.spawn(work())
        go.set()
        with pytest.raises(ParentFailed) as info:
            await asyncio.wait_for(task, 10)
    assert _chain(info.value) == ["ParentFailed", "ChildFailed"]
    assert got == ["ChildFailed('action teardown')"]


# -- holds left by another task, in entry order, and spawns cancelled early ------


@pytest.mark.anyio
async def test_hold_left_by_another_task_inside_a_child_scope_is_released() -> None:
    c, log = _container()
    async with c:
        async with c.scope("request") as scope:
            await scope.aresolve(Session)
            hold = scope.hold()
            await asyncio.ensure_future(hold.__aenter__())  # entered by another task
            async with c.scope("action") as action:
                action.resolve(Action)
                with pytest.raises(di.ScopeError, match="did not enter it"):
                    await hold.__aexit__(None, None, None)
                assert c.current_scope is action  # this task's stack untouched
            assert scope.holds == 0
        assert scope.closed  # released: the block's exit was the last
        assert log == ["open session", "close action", "close session"]


@pytest.mark.parametrize("storage", ["contextvar", "thread"])
def test_holds_left_in_entry_order_leave_no_container_active(storage: str) -> None:
    class Settings:
        pass

    r = di.Registry()
    r.provider(singleton=True)(Settings)
    r.provider(scope="request")(Session)
    c = di.Container(r, storage=storage)

    @di.inject
    def settings(settings: Settings = di.Depends(Settings)) -> Settings:
        return settings

    with c, c.scope("request") as scope:
        scope.resolve(Session)
        first, second = scope.hold(), scope.hold()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
        assert isinstance(settings(), Settings)
    with pytest.raises(di.NoActiveScopeError):
        settings()  # the closed container is not active here any more


@pytest.mark.anyio
async def test_spawned_task_cancelled_before_it_starts_tears_down_with_the_cancellation() -> None:
    seen: list[str] = []
    r = di.Registry()

    @r.provider(scope="request")
    async def session() -> AsyncIterator[Session]:
        try:
            yield Session()
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise
        seen.append("clean exit")

    async def work() -> None:
        pass

    c = di.Container(r)
    async with c:
        async with c.scope("request") as scope:
            await scope.aresolve(Session)
            task = scope.spawn(work())
            task.cancel()  # before its first step
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(1000):  # the release runs in a task of its own
            if scope.closed:
                break
            await asyncio.sleep(0)
        assert scope.closed
    assert seen == ["CancelledError"]


class Old:
    pass


class New:
    closed = False


def test_a_checkpoint_torn_down_at_shutdown_serves_nothing_while_its_exits_run() -> None:
    reg = di.Registry()
    in_old_teardown, release_old, holding = threading.Event(), threading.Event(), threading.Event()
    result: list[object] = []

    @reg.provider(scope="request")
    def old() -> Iterator[Old]:
        yield Old()
        in_old_teardown.set()  # Old is older: torn down last
        release_old.wait(10)

    @reg.provider(scope="request")
    def new() -> Iterator[New]:
        made = New()
        yield made
        made.closed = True  # torn down first

    c = di.Container(reg, shutdown_timeout=0.05)

    def worker(scope: di.Checkpoint) -> None:
        try:
            with scope.hold():  # still running when the shutdown gives up waiting
                holding.set()
                assert in_old_teardown.wait(10)
                try:
                    result.append(scope.resolve(New))
                except di.CheckpointClosedError as exc:
                    result.append(exc)
                release_old.set()
        except di.DIError:
            pass

    with c, c.scope("request") as scope:
        scope.resolve(Old)
        scope.resolve(New)
        thread = threading.Thread(target=worker, args=(scope,))
        thread.start()
        assert holding.wait(10)
    thread.join(10)
    assert len(result) == 1 and isinstance(result[0], di.CheckpointClosedError)


_armed = threading.local()


class _HookMeta(type):
    """Pauses the thread that armed it at the next hash of the class: the
    plan's store of the new instance into its checkpoint."""

    pause: threading.Event
    reached: threading.Event

    def __hash__(cls) -> int:
        if getattr(_armed, "on", False):
            _armed.on = False
            cls.reached.set()
            cls.pause.wait(10)
        return id(cls) >> 4

    def __eq__(cls, other: object) -> bool:
        return cls is other


class _Stored(metaclass=_HookMeta):
    closed = False


def test_a_scoped_instance_stored_as_a_forced_teardown_runs_is_taken_back() -> None:
    _Stored.pause, _Stored.reached = threading.Event(), threading.Event()
    reg = di.Registry()

    @reg.provider(scope="request")
    def stored() -> Iterator[_Stored]:
        made = _Stored()
        _armed.on = True  # the next hash of _Stored in this thread: the store
        yield made
        made.closed = True

    @reg.provider(scope="request")
    def first() -> Iterator[_Made]:
        yield _Made()
        _Stored.pause.set()  # the teardown has reached the request's exits: go on

    c = di.Container(reg, shutdown_timeout=0.05)
    out: list[object] = []
    holding = threading.Event()

    def worker(scope: di.Checkpoint) -> None:
        try:
            with scope.hold():
                holding.set()
                for _ in range(2):
                    try:
                        out.append(scope.resolve(_Stored))
                    except di.CheckpointClosedError as exc:
                        out.append(exc)
        except di.DIError:
            pass

    with c, c.scope("request") as scope:
        scope.resolve(_Made)
        thread = threading.Thread(target=worker, args=(scope,))
        thread.start()
        assert holding.wait(10)
        assert _Stored.reached.wait(10)  # between creation and store when the block ends
    thread.join(10)
    assert [type(o) for o in out] == [di.CheckpointClosedError] * 2
    assert _Stored not in dict.keys(scope)


# -- a shutdown forced while a hold() is creating something ----------------------


class _Late:
    closed = False


class _Later:
    pass


class _Made:
    pass


def test_a_late_creation_unwinds_only_its_own_exits() -> None:
    reg = di.Registry()
    finalizing, holder_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    @reg.provider(scope="request")
    def late() -> Iterator[_Late]:
        made = _Late()
        yield made
        made.closed = True

    @reg.provider(scope="request")
    def later(dep: _Late) -> Iterator[_Later]:
        yield _Later()
        finalizing.set()
        holder_done.wait(2)  # its teardown still running...
        seen["dependency closed under it"] = dep.closed

    @reg.provider(scope="request")
    def made() -> Iterator[_Made]:
        assert finalizing.wait(10)  # made while the teardown is under way
        yield _Made()

    c = di.Container(reg, shutdown_timeout=0.05)

    def holder(scope: di.Checkpoint) -> None:
        with scope.hold():
            with contextlib.suppress(di.CheckpointClosedError):
                scope.resolve(_Made)
            holder_done.set()

    with c, c.scope("request") as scope:
        scope.resolve(_Later)
        thread = threading.Thread(target=holder, args=(scope,))
        thread.start()
    thread.join(10)
    assert seen == {"dependency closed under it": False}


class _Baked:
    closed = False
    made = 0  # instances ever made

    def __init__(self) -> None:
        type(self).made += 1


class _First:
    pass


class _Uses:
    def __init__(self, first: _First, baked: _Baked) -> None:
        self.baked = baked
        self.baked_closed = baked.closed


class _Second:
    pass


class _BakedFirst(_Uses):
    def __init__(self, baked: _Baked, first: _First) -> None:
        super().__init__(first, baked)


class _BakedBetween(_Uses):
    def __init__(self, second: _Second, baked: _Baked, first: _First) -> None:
        super().__init__(first, baked)


class _Nested:
    def __init__(self, uses: _BakedFirst, second: _Second) -> None:
        self.uses = uses


def _baking_registry(
    in_first: threading.Event, release: threading.Event, armed: list[bool]
) -> di.Registry:
    """_Uses(first(), baked) and the other argument orders: once compiled, the
    created _Baked is a constant of the plan; first() waits while armed."""
    reg = di.Registry()
    reg.provider(_Second)
    for cls in (_BakedFirst, _BakedBetween, _Nested):
        reg.provider(cls)

    @reg.provider(singleton=True)
    def baked() -> Iterator[_Baked]:
        made = _Baked()
        yield made
        made.closed = True
        release.set()

    @reg.provider()
    def first() -> _First:
        if armed[0]:
            in_first.set()
            release.wait(10)  # a close or an override happens meanwhile
        return _First()

    reg.provider(_Uses)
    return reg


@pytest.mark.parametrize("uses", [_Uses, _BakedFirst, _BakedBetween, _Nested])
def test_a_running_plan_does_not_pass_a_singleton_torn_down_meanwhile(uses: type) -> None:
    """Whatever the argument order: the singleton read before first() runs is
    passed after it, so the close that tears it down meanwhile must show."""
    in_first, baked_closed = threading.Event(), threading.Event()
    armed = [False]
    out: list[object] = []
    c = di.Container(_baking_registry(in_first, baked_closed, armed), shutdown_timeout=0.05)

    def worker(scope: di.Checkpoint) -> None:
        with scope.hold():
            try:
                out.append(scope.resolve(uses))
            except di.DIError as exc:
                out.append(exc)

    with c:
        c.resolve(_Baked)
        c.resolve(uses)
        c.resolve(uses)  # compiled now, _Baked baked in
        with c.scope("request") as scope:
            armed[0] = True
            thread = threading.Thread(target=worker, args=(scope,))
            thread.start()
            assert in_first.wait(10)
    thread.join(10)
    assert [type(o) for o in out] == [di.CheckpointClosedError]


@pytest.mark.anyio
async def test_a_running_async_plan_does_not_pass_a_singleton_torn_down_meanwhile() -> None:
    in_first, baked_closed = threading.Event(), threading.Event()
    armed = [False]
    reg = _baking_registry(in_first, baked_closed, armed)

    @reg.provider(scope="request")
    async def session() -> AsyncIterator[Session]:
        yield Session()

    class _UsesAsync:  # an async plan: a scoped async key below it
        def __init__(self, session: Session, uses: _Uses) -> None:
            self.uses = uses

    reg.provider(_UsesAsync)
    c = di.Container(reg, shutdown_timeout=0.05)
    out: list[object] = []

    async def worker(scope: di.Checkpoint) -> None:
        try:
            out.append(await scope.aresolve(_UsesAsync))
        except di.DIError as exc:
            out.append(exc)

    async with c:
        await c.aresolve(_Baked)
        async with c.scope("request") as warm:
            await warm.aresolve(_UsesAsync)
            await warm.aresolve(_UsesAsync)  # compiled now, _Baked baked in
        async with c.scope("request") as scope:
            armed[0] = True
            task = asyncio.ensure_future(asyncio.to_thread(asyncio.run, _held(scope, worker)))
            assert await asyncio.to_thread(in_first.wait, 10)
    await task
    assert [type(o) for o in out] == [di.CheckpointClosedError]


async def _held(scope: di.Checkpoint, work: object) -> None:
    async with scope.hold():
        await work(scope)  # type: ignore[operator]


def test_a_running_plan_from_the_container_refuses_a_singleton_a_close_tore_down() -> None:
    """No scope: the call spans the container's whole close. It is refused,
    and makes no new singleton in the closed container."""
    in_first, baked_closed = threading.Event(), threading.Event()
    armed = [False]
    out: list[object] = []
    reg = _baking_registry(in_first, baked_closed, armed)
    c = di.Container(reg)
    with c:
        c.resolve(_Baked)
        c.resolve(_BakedFirst)
        c.resolve(_BakedFirst)  # compiled now, _Baked baked in
        armed[0] = True
        count = _Baked.made

        def worker() -> None:
            try:
                out.append(c.resolve(_BakedFirst))
            except di.DIError as exc:
                out.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        assert in_first.wait(10)
    thread.join(10)
    assert [type(o) for o in out] == [di.CheckpointClosedError]
    assert "Baked" in str(out[0]) and "torn down" in str(out[0])
    assert not c.is_open and _Baked.made == count  # nothing made meanwhile


def test_resolving_one_key_spelled_otherwise_does_not_grow_memory() -> None:
    """`Annotated[T, "doc"]` is T: its plan is compiled once, not on every resolve."""
    import tracemalloc
    from typing import Annotated

    class Service(_Uses):  # a singleton: its plan serves the cached one
        pass

    in_first, release = threading.Event(), threading.Event()
    reg = _baking_registry(in_first, release, [False])
    reg.provider(Service, singleton=True)
    c = di.Container(reg)
    with c:
        c.resolve(_Baked)
        for _ in range(100):
            c.resolve(Annotated[Service, "doc"])
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(2000):
                c.resolve(Annotated[Service, "doc"])
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert grown < 64 * 1024, grown


def test_a_running_plan_keeps_a_singleton_an_override_sets_aside() -> None:
    """An override sets cached singletons aside without closing them: a call
    already running passes on the one it baked in (still open), and the
    next resolve sees the override."""
    in_first, release = threading.Event(), threading.Event()
    armed = [False]
    c = di.Container(_baking_registry(in_first, release, armed))
    replacement = _Baked()
    out: list[_Uses] = []

    with c:
        original = c.resolve(_Baked)
        c.resolve(_Uses)
        c.resolve(_Uses)  # compiled now, _Baked baked in
        armed[0] = True
        thread = threading.Thread(target=lambda: out.append(c.resolve(_Uses)))
        thread.start()
        assert in_first.wait(10)
        with c.override(_Baked, replacement):
            release.set()
            thread.join(10)
            armed[0] = False
            assert c.resolve(_Uses).baked is replacement
    assert len(out) == 1 and out[0].baked is original and not out[0].baked_closed
