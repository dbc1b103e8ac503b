"""Review of the cycle-breaking commits: compiled plans no longer in their own
globals (3.11+), the async scoped plan resolving in its owner through
``aresolve``, the recursive closures broken, the teardown frames clearing the
exception they re-raise, and the third review's override claim, key checks and
``ProviderNotFoundError.__reduce__``.

What held: a running frame holds its function on 3.11 (a suspended or not yet
started coroutine too), and on 3.10 the plan's own globals do, so
``Container._baked`` / ``Container._scoped`` never lose a plan that can still
reach its guard, even across ``gc.collect()``. What did not (fixed): a
coroutine's *call* and its *run* are two moments, and ``aresolve`` looked its
plan up at the call, so a task created before a close or an override and first
run after it ran the old plan (a baked-in singleton the close tore down passed
on, the provider an override replaced run). ``aresolve`` is an ``async def``
now and looks the plan up when it runs. Also pinned: one override exited from
two threads at once ends once, and a copied or pickled ProviderNotFoundError
keeps what was set on it.

Interleavings are forced with asyncio (a task is created, then the close or
override happens before the loop first runs it) or a ``sys.settrace`` line hook
that parks a thread between two lines of di. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import logging
import pickle
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _park import park_at_line

import di
from di.container import _Overriding

WAIT = 5.0


@pytest.fixture(autouse=True)
def _quiet_di_logger() -> Iterator[None]:
    logger = logging.getLogger("di")
    saved = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(saved)


class S:
    closed = False


class T:
    def __init__(self, s: S) -> None:
        self.s = s


class U:
    pass


class W:
    def __init__(self, u: U) -> None:
        self.u = u


class R:
    pass


def _singleton_s(reg: di.Registry) -> None:
    @reg.provider(singleton=True)
    def make_s() -> Iterator[S]:
        s = S()
        yield s
        s.closed = True


# ---------------------------------------------------------------- defects


def test_a_resolve_task_first_run_after_a_close_does_not_pass_on_a_torn_down_singleton() -> None:
    """T's async factory takes S, a singleton with teardown made before T's async
    plan was compiled: S is baked in as a constant, and since no user code runs
    in the plan before it is read, it is not behind `_stale` (_guard_baked: "reading
    a constant has no effects to keep in order"). That holds for a call, not for a
    coroutine: `create_task(container.aresolve(T))` is made while the container is
    open, the container closes (S torn down) before the loop first runs the task,
    and the task then builds T on the closed S. A fresh `aresolve(T)` at that point
    makes a new S. Fix: every async plan that bakes a singleton in guards it (or
    checks `_stale` on entry): its first send is not its call."""
    reg = di.Registry()
    _singleton_s(reg)

    @reg.provider
    async def make_t(s: S) -> T:
        return T(s)

    container = di.Container(reg)
    out: list[object] = []

    async def main() -> None:
        async with container:
            await container.aresolve(S)
            await container.aresolve(T)  # compiled now, S baked in
            task = asyncio.create_task(container.aresolve(T))
        # closed: S torn down; the task has not run a bytecode yet
        try:
            out.append(await task)
        except di.CheckpointClosedError as exc:
            out.append(exc)

    asyncio.run(main())
    got = out[0]
    assert isinstance(got, di.CheckpointClosedError) or not got.s.closed, "T got the closed S"


@pytest.mark.parametrize("kind", ["scoped", "transient"])
def test_a_resolve_task_first_run_under_an_override_serves_the_override(kind: str) -> None:
    """docs/design.md: an override taken while a request is open applies to what
    that request has not created yet, and a transient's first-use plan fetched
    before a swap and run after it asks for the current plan. A task made with
    `create_task(scope.aresolve(K))` before `override(...)` and first run under it
    has created nothing before the override, yet runs the compiled plan of the old
    graph from its first bytecode: the scoped R is made by the replaced factory
    (and, `_gone` being set, handed to the caller unstored), the transient W gets
    the replaced U. A singleton key in the same position gets the override (its
    `attempt` compares generations), and so does a fresh aresolve. Fix: a compiled
    async plan that is not the current one when it first runs (the generation it
    was compiled in, read on entry, or `_gone` tested before anything is made)
    hands over to the current plan."""
    reg = di.Registry()

    @reg.provider(scope="request")
    async def make_r() -> R:
        return R()

    @reg.provider
    async def make_u() -> U:
        return U()

    @reg.provider
    async def make_w(u: U) -> W:
        return W(u)

    container = di.Container(reg)
    fake_r, fake_u = R(), U()
    got: list[bool] = []

    async def main() -> None:
        async with container, container.scope("request") as scope:
            if kind == "scoped":
                task = asyncio.create_task(scope.aresolve(R))
                with container.override(R, fake_r):
                    got.append((await asyncio.wait_for(task, WAIT)) is fake_r)
                    got.append((await scope.aresolve(R)) is fake_r)
            else:
                await scope.aresolve(W)  # compiled
                task = asyncio.create_task(scope.aresolve(W))
                with container.override(U, fake_u):
                    got.append((await asyncio.wait_for(task, WAIT)).u is fake_u)
                    got.append((await scope.aresolve(W)).u is fake_u)

    asyncio.run(main())
    assert got == [True, True], got


def test_one_override_exited_from_two_threads_at_once_ends_once() -> None:
    """`__exit__` takes the entry under the override lock, as `__enter__` claims
    it. Thread W is parked inside that lock, just as it reads the entry; thread
    M exits the same override meanwhile (and waits for the lock); then W goes
    on. W ends the override; M gets the RuntimeError a second, sequential exit
    gets ("exited without being entered"), never a bare StopIteration from
    ending an entry twice."""
    reg = di.Registry()
    reg.register(U, U)
    container = di.Container(reg)
    fake = U()
    ov = container.override(U, fake)
    ov.__enter__()
    paused, resume = threading.Event(), threading.Event()
    results: dict[str, BaseException | None] = {}

    def exit_as(name: str, park: bool) -> None:
        if park:
            sys.settrace(park_at_line(_Overriding.__exit__, "entry = self._entry", paused, resume))
        try:
            ov.__exit__(None, None, None)
            results[name] = None
        except BaseException as exc:  # reported below
            results[name] = exc
        finally:
            sys.settrace(None)

    w = threading.Thread(target=exit_as, args=("W", True), daemon=True)
    w.start()
    assert paused.wait(WAIT)
    m = threading.Thread(target=exit_as, args=("M", False), daemon=True)
    m.start()
    m.join(0.05)  # M waits for the lock W holds
    resume.set()
    w.join(WAIT)
    m.join(WAIT)
    assert not w.is_alive() and not m.is_alive()
    assert results["W"] is None, repr(results["W"])
    assert isinstance(results["M"], RuntimeError), repr(results["M"])
    assert "exited without being entered" in str(results["M"])
    with container:
        assert isinstance(container.resolve(U), U) and container.resolve(U) is not fake


@pytest.mark.parametrize("how", ["copy", "pickle"])
def test_provider_not_found_error_copies_keep_what_was_set_on_it(how: str) -> None:
    """Every other exception copies and pickles with its ``__dict__``
    (BaseException.__reduce__ returns it as the state): an attribute a handler put
    on the error, or a note (`add_note` keeps ``__notes__`` in that dict), goes
    along. The new `__reduce__` returns ``{"args": ...}`` as the whole state, so
    they are dropped. Fix: return ``{**self.__dict__, "args": self.args}``."""
    container = di.Container(di.Registry())
    with container, pytest.raises(di.ProviderNotFoundError) as info:
        container.resolve(U)
    err = info.value
    err.request_id = 42  # type: ignore[attr-defined]
    err.__notes__ = ["while handling request 42"]  # what add_note() stores (3.11)
    other = copy.copy(err) if how == "copy" else pickle.loads(pickle.dumps(err))
    assert other.key is U and str(other) == str(err)
    assert getattr(other, "request_id", None) == 42
    assert getattr(other, "__notes__", None) == ["while handling request 42"]


# ---------------------------------------------------------------- verified behaviours


def test_a_guarded_async_plan_suspended_across_a_close_and_a_gc_pass_refuses() -> None:
    """A plan that reads a baked singleton after user code (behind `_stale`) is
    suspended at an await in that user code, nobody but its coroutine refers to it
    (the close dropped the plans; 3.11: the suspended frame holds the function,
    3.10: its globals do), a GC pass runs, and the close sets `_stale` in its
    globals all the same: resumed, it refuses rather than pass the closed S on."""
    started, release = asyncio.Event(), asyncio.Event()
    waiting: list[bool] = []
    reg = di.Registry()
    _singleton_s(reg)

    @reg.provider
    async def make_u() -> U:
        if waiting:
            started.set()
            await release.wait()
        return U()

    class TU:
        def __init__(self, u: U, s: S) -> None:
            self.u, self.s = u, s

    reg.register(TU, TU)
    container = di.Container(reg)
    out: list[object] = []

    async def main() -> None:
        async with container:
            await container.aresolve(S)
            await container.aresolve(TU)  # compiled, S baked in behind `_stale`
            waiting.append(True)  # the next make_u waits
            task = asyncio.create_task(container.aresolve(TU))
            await asyncio.wait_for(started.wait(), WAIT)  # suspended in make_u
        gc.collect()
        release.set()
        try:
            out.append(await asyncio.wait_for(task, WAIT))
        except di.CheckpointClosedError as exc:
            out.append(exc)

    asyncio.run(main())
    assert isinstance(out[0], di.CheckpointClosedError), out


def test_a_scoped_creation_suspended_across_an_override_and_a_gc_pass_is_not_stored() -> None:
    """The async scoped plan, suspended in its factory, is referenced only by its
    coroutine when the override clears the plans; after a GC pass it is still in
    `Container._scoped`, gets `_gone`, and hands its R to its caller unstored: the
    request serves the override after it."""
    started, release = asyncio.Event(), asyncio.Event()
    reg = di.Registry()

    @reg.provider(scope="request")
    async def make_r() -> R:
        started.set()
        await release.wait()
        return R()

    container = di.Container(reg)
    fake = R()
    seen: list[object] = []

    async def main() -> None:
        async with container, container.scope("request") as scope:
            creating = asyncio.create_task(scope.aresolve(R))
            await asyncio.wait_for(started.wait(), WAIT)
            with container.override(R, fake):
                gc.collect()
                release.set()
                made = await asyncio.wait_for(creating, WAIT)
                seen.append(made is not fake)
                seen.append((await scope.aresolve(R)) is fake)
                seen.append(scope.resolve(R) is fake)

    asyncio.run(main())
    assert seen == [True, True, True], seen


def test_singleton_and_run_sync_tasks_first_run_after_a_close_take_fresh_singletons() -> None:
    """The counterparts of the first defect that hold: an async singleton plan's
    `attempt` compares generations, and `_run_sync` reads the sync plan when it
    runs, so a task created before the close and run after it gets a fresh S."""
    reg = di.Registry()
    _singleton_s(reg)

    class Q:
        def __init__(self, s: S) -> None:
            self.s = s

    class Plain:
        def __init__(self, s: S) -> None:
            self.s = s

    reg.register(Q, Q, singleton=True)
    reg.register(Plain, Plain)
    container = di.Container(reg)
    out: list[Any] = []

    async def main() -> None:
        async with container:
            await container.aresolve(S)
            q_task = asyncio.create_task(container.aresolve(Q))
            await container.aresolve(Plain)
            p_task = asyncio.create_task(container.aresolve(Plain))
        out.extend([await q_task, await p_task])

    asyncio.run(main())
    assert [x.s.closed for x in out] == [False, False]


class TeardownError(Exception):
    pass


class Interrupt(BaseException):
    pass


class A1:
    pass


class A2:
    pass


def _failing(log: list[str], name: str, exc: type[BaseException] | None) -> Callable[[], Any]:
    def gen() -> Iterator[Any]:
        try:
            yield object()
        except BaseException as e:
            log.append(f"{name} got {type(e).__name__}")
            if exc is not None:
                raise exc(name)  # noqa: B904  (chained, as a teardown's would be)
            raise
        log.append(f"{name} clean")
        if exc is not None:
            raise exc(name)

    return gen


def _chain(exc: BaseException | None) -> list[str]:
    out = []
    while exc is not None and len(out) < 10:
        out.append(f"{type(exc).__name__}:{exc}")
        exc = exc.__context__
    return out


@pytest.mark.parametrize("inner_exc", [None, TeardownError, Interrupt])
@pytest.mark.parametrize("outer_exc", [None, TeardownError, Interrupt])
@pytest.mark.parametrize("block", [None, ValueError])
def test_nested_checkpoints_raising_teardowns_inside_a_handler_match_nested_exit_stacks(
    inner_exc: type[BaseException] | None,
    outer_exc: type[BaseException] | None,
    block: type[BaseException] | None,
) -> None:
    """Two nested checkpoints (session, request), each with a generator teardown
    that raises or not, left from inside an `except` handler (ExitStack's frame
    exception): what each teardown received, the exception that propagates and
    its `__context__` chain are those of two nested ExitStacks."""

    def run(use_di: bool) -> tuple[list[str], list[str]]:
        log: list[str] = []
        outer = _failing(log, "outer", outer_exc)
        inner = _failing(log, "inner", inner_exc)
        caught: BaseException | None = None
        try:
            try:
                raise KeyError("handled")
            except KeyError:
                if use_di:
                    reg = di.Registry()
                    reg.provider(scope="session", provides=A1)(outer)
                    reg.provider(scope="request", provides=A2)(inner)
                    c = di.Container(reg)
                    with c, c.scope("session") as s1:
                        s1.resolve(A1)
                        with c.scope("request") as s2:
                            s2.resolve(A2)
                            if block is not None:
                                raise block("block")  # noqa: B904
                else:
                    with contextlib.ExitStack() as st1:
                        st1.enter_context(contextlib.contextmanager(outer)())
                        with contextlib.ExitStack() as st2:
                            st2.enter_context(contextlib.contextmanager(inner)())
                            if block is not None:
                                raise block("block")  # noqa: B904
        except BaseException as e:
            caught = e
        return log, _chain(caught)

    assert run(True) == run(False)


def test_a_failed_teardown_after_a_failed_block_frees_the_checkpoint_without_gc() -> None:
    """Block raised, then a teardown raised another error (the unwind path with a
    received exception, not the inline one the growth review pinned): the caught
    error dropped, the checkpoint and its instance go without a GC pass."""
    log: list[str] = []
    reg = di.Registry()
    reg.provider(scope="request", provides=A2)(_failing(log, "inner", TeardownError))
    c = di.Container(reg)
    refs: list[weakref.ref[Any]] = []
    gc.collect()
    gc.disable()
    try:
        with c:
            for _ in range(3):
                with contextlib.suppress(TeardownError), c.scope("request") as s:
                    v = s.resolve(A2)
                    refs.append(weakref.ref(s))
                    raise ValueError("block")
                del s, v
        assert sum(r() is not None for r in refs) == 0
    finally:
        gc.enable()
