"""A creation's hand-over meeting a teardown in another thread or task.

A third review of the hand-over (tests/test_teardown_order.py and
tests/test_teardown_slots.py hold the first two). A creation cut short by a
forced teardown unwinds what it entered itself and is refused; these tests
pin what it lets through when its factory, or one of its exits, raises a
BaseException (an interrupt, a cancellation) meanwhile, whether a call under
way passes on a singleton a close finalized, and what a creation straddling a
close and a re-open leaves behind.
"""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

import anyio
import pytest
from _cut_short import cut_short

import di

WAIT = 5  # seconds: a safety net for events only, never a timing assertion


class Cv:
    pass


class S:
    pass


class X:
    def __init__(self, *parts: object) -> None:
        self.parts = parts


class _Sync:
    def __init__(
        self, log: list[str], name: str, raises: type[BaseException] | None = None
    ) -> None:
        self.log, self.name, self.raises = log, name, raises

    def __enter__(self) -> Cv:
        self.log.append(f"enter {self.name}")
        return Cv()

    def __exit__(self, *exc: object) -> None:
        self.log.append(f"exit {self.name}")
        if self.raises is not None:
            raise self.raises()


class _Async:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __aenter__(self) -> Cv:
        self.log.append("enter c")
        return Cv()

    async def __aexit__(self, *exc: object) -> None:
        self.log.append("exit c")


def _cut_short(
    lifetime: str, api: str, factory: Any, exit_raises: type[BaseException] | None = None
) -> tuple[list[BaseException], list[str]]:
    """A thread holding the request scope makes X(c: Cv, s: S) (``lifetime``,
    through ``api``): c's exit is kept in a slot before S is made. X's
    ``factory(in_x, closed)`` signals it runs and waits until a forced close
    has torn the scope down. What the thread's resolve raised, and the log."""
    log: list[str] = []
    in_x, closed = threading.Event(), threading.Event()
    registry = di.Registry()

    def c() -> AbstractContextManager[Cv]:
        return _Sync(log, "c", exit_raises)

    registry.provider(cm=True)(c)

    @registry.provider(scope="request")
    def s() -> Iterator[S]:
        yield S()
        log.append("exit s")

    def x(cc: Cv, ss: S) -> X:
        return factory(in_x, closed)  # type: ignore[no-any-return]

    lifetime_kw: dict[str, Any] = {"scope": "request"} if lifetime == "scoped" else {}
    registry.provider(**lifetime_kw)(x)
    container = di.Container(registry, shutdown_timeout=0)
    raised = cut_short(container, X, api, in_x, closed)
    return raised, log


# ------------------------------------------ an interrupt, a cancellation, a close meanwhile


@pytest.mark.parametrize(
    ("lifetime", "api"), [("transient", "resolve"), ("scoped", "resolve"), ("scoped", "aresolve")]
)
def test_an_interrupt_raised_by_a_factory_cut_short_propagates(lifetime: str, api: str) -> None:
    def interrupted(in_x: threading.Event, closed: threading.Event) -> X:
        in_x.set()
        assert closed.wait(WAIT)
        raise KeyboardInterrupt

    raised, log = _cut_short(lifetime, api, interrupted)
    assert log == ["enter c", "exit s", "exit c"]  # each once: holds today too
    assert [type(e) for e in raised] == [KeyboardInterrupt]


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
def test_an_interrupt_raised_by_an_exit_a_refused_creation_runs_propagates(api: str) -> None:
    def waits(in_x: threading.Event, closed: threading.Event) -> X:
        in_x.set()
        assert closed.wait(WAIT)
        return X()

    raised, log = _cut_short("scoped", api, waits, exit_raises=KeyboardInterrupt)
    assert log == ["enter c", "exit s", "exit c"]
    assert [type(e) for e in raised] == [KeyboardInterrupt]


@pytest.mark.parametrize("lifetime", ["transient", "scoped"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancellation_of_a_creation_cut_short_stays_a_cancellation(
    backend: str, lifetime: str
) -> None:
    # A task holding the request scope aresolves X(c: Cv, s: S), async cm c
    # kept in a slot before S; X's factory sleeps. A forced aclose() tears the
    # scope down, then the task's own cancel scope is cancelled.
    log: list[str] = []
    outcome: list[str] = []

    async def body() -> None:
        in_x = anyio.Event()
        registry = di.Registry()

        def c() -> AbstractAsyncContextManager[Cv]:
            return _Async(log)

        registry.provider(cm=True)(c)

        @registry.provider(scope="request")
        def s() -> Iterator[S]:
            yield S()
            log.append("exit s")

        async def x(cc: Cv, ss: S) -> X:
            in_x.set()
            await anyio.sleep_forever()
            raise AssertionError("not reached")  # pragma: no cover

        lifetime_kw: dict[str, Any] = {"scope": "request"} if lifetime == "scoped" else {}
        registry.provider(**lifetime_kw)(x)
        container = di.Container(registry, shutdown_timeout=0)
        scope = anyio.CancelScope()
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg, container:
                async with container.scope("request") as request:
                    hold = request.hold()

                    async def work() -> None:
                        try:
                            with scope:
                                async with hold:
                                    await request.aresolve(X)
                            outcome.append("absorbed by its cancel scope")
                        except BaseException as exc:
                            outcome.append(type(exc).__name__)

                    tg.start_soon(work)
                    await in_x.wait()
                await container.aclose(force=True)
                scope.cancel()

    anyio.run(body, backend=backend)
    assert log == ["enter c", "exit s", "exit c"]
    assert outcome == ["absorbed by its cancel scope"]


class A:
    closed = False


class W:
    pass


class T:
    def __init__(self, a: A, w: W) -> None:
        self.a_closed_at_call = a.closed


@pytest.mark.parametrize("plan", ["first-use", "compiled-lookup"])
def test_a_call_under_way_never_passes_on_a_singleton_a_close_finalized(plan: str) -> None:
    # T(a: A, w: W), no exits of its own: A is read, then W's factory waits
    # while the container's block ends and closes A.
    in_w, a_closed = threading.Event(), threading.Event()
    armed, fail_a = [False], [plan == "compiled-lookup"]
    registry = di.Registry()

    @registry.provider(singleton=True)
    def a() -> Iterator[A]:
        if fail_a[0]:  # so that T's plan is compiled while A does not exist
            fail_a[0] = False
            raise KeyError("a")
        made = A()
        yield made
        made.closed = True
        a_closed.set()

    @registry.provider()
    def w() -> W:
        if armed[0]:
            in_w.set()
            assert a_closed.wait(WAIT)
        return W()

    registry.provider()(T)
    container = di.Container(registry)
    out: list[Any] = []

    def work() -> None:
        try:
            out.append(container.resolve(T))
        except BaseException as exc:
            out.append(exc)

    with container:
        if plan == "compiled-lookup":
            with pytest.raises(KeyError):
                container.resolve(T)  # first use: A fails
            container.resolve(T)  # compiled now, A looked up (and made)
        else:
            container.resolve(A)
        armed[0] = True
        thread = threading.Thread(target=work)
        thread.start()
        try:
            assert in_w.wait(WAIT)
        finally:
            a_closed.set()
    thread.join(WAIT)
    assert len(out) == 1
    assert not (isinstance(out[0], T) and out[0].a_closed_at_call)
    assert isinstance(out[0], di.CheckpointClosedError)


# ------------------------------------------------------- verified behaviour


class G:
    pass


class B:
    pass


class H:
    pass


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
@pytest.mark.parametrize("outer", ["singleton", "transient"])
def test_a_creation_straddling_a_close_and_a_reopen_is_refused_and_leaves_nothing(
    outer: str, api: str
) -> None:
    # At the root (no scope), A(g: G, b: B, h: H) keeps g's place in the root's
    # list before singleton B is made; B's factory waits while the container
    # is closed and opened again. A is refused, every exit runs once (b, then
    # g, in entering order), and the new open state holds nothing of it.
    log: list[str] = []
    in_b, go, armed = threading.Event(), threading.Event(), [True]
    registry = di.Registry()

    @registry.provider()
    def g() -> Iterator[G]:
        log.append("enter g")
        try:
            yield G()
        finally:
            log.append("exit g")

    @registry.provider(singleton=True)
    def b() -> Iterator[B]:
        log.append("enter b")
        if armed[0]:
            in_b.set()
            assert go.wait(WAIT)
        try:
            yield B()
        finally:
            log.append("exit b")

    def h() -> AbstractContextManager[H]:
        return _Sync(log, "h")  # type: ignore[return-value]

    registry.provider(cm=True, provides=H)(h)

    def a(x: G, y: B, z: H) -> X:
        return X(x, y, z)

    outer_kw: dict[str, Any] = {"singleton": True} if outer == "singleton" else {}
    registry.provider(provides=X, **outer_kw)(a)
    container = di.Container(registry)
    out: list[Any] = []

    def work() -> None:
        try:
            if api == "resolve":
                out.append(container.resolve(X))
            else:
                out.append(asyncio.run(container.aresolve(X)))
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert in_b.wait(WAIT)
        container.close()
        container.__enter__()  # open again before the creation ends
    finally:
        go.set()
        thread.join(WAIT)
    assert [type(o) for o in out] == [di.CheckpointClosedError]
    assert log == ["enter g", "enter b", "exit b", "exit g"]
    armed[0] = False
    log.clear()
    container.__exit__(None, None, None)  # the new open state closes nothing of it
    assert log == []
