"""The guard on singletons a call reads (baked in or not) and
`_failed`: what a call under way passes on across a close, and what a
creation cut short by a forced teardown lets through when its factory raises
an interrupt.
"""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from _cut_short import cut_short

import di

WAIT = 5  # seconds: a safety net for events only, never a timing assertion


class E:
    pass


class A:
    closed = False


class W:
    pass


class T:
    def __init__(self, a: A, w: W) -> None:
        self.a_closed_at_call = a.closed


@pytest.mark.parametrize("plan", ["first-use", "compiled"])
def test_a_call_never_passes_a_singleton_a_close_under_way_finalized(plan: str) -> None:
    # T(a: A, w: W) at the root: A is read, then W's factory waits until A's
    # exit ran. E, made before A, is finalized after it (LIFO): its exit keeps
    # the close under way until the resolve is over.
    a_closed, resolved, in_w = threading.Event(), threading.Event(), threading.Event()
    armed = [False]
    registry = di.Registry()

    @registry.provider(singleton=True)
    def e() -> Iterator[E]:
        yield E()
        resolved.wait(WAIT)

    @registry.provider(singleton=True)
    def a() -> Iterator[A]:
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
    container.resolve(E)
    container.resolve(A)
    if plan == "compiled":
        container.resolve(T)  # the first resolve interprets; the next runs a plan
    armed[0] = True

    def closer() -> None:
        assert in_w.wait(WAIT)
        container.close()

    thread = threading.Thread(target=closer)
    thread.start()
    out: list[Any] = []
    try:
        out.append(container.resolve(T))
    except di.DIError as exc:
        out.append(exc)
    finally:
        resolved.set()
        thread.join(WAIT)
    assert not (isinstance(out[0], T) and out[0].a_closed_at_call)
    assert isinstance(out[0], di.CheckpointClosedError)


# ------------------------------------------------- an exit's error under an interrupt


class Cv:
    pass


class S:
    pass


class X:
    pass


class _FailingExit:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __enter__(self) -> Cv:
        self.log.append("enter c")
        return Cv()

    def __exit__(self, *exc: object) -> None:
        self.log.append("exit c")
        raise ValueError("exit c failed")


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


@pytest.mark.parametrize(
    ("lifetime", "api"), [("transient", "resolve"), ("scoped", "resolve"), ("scoped", "aresolve")]
)
def test_an_exit_error_of_a_creation_cut_short_by_a_forced_teardown_is_not_lost(
    lifetime: str, api: str
) -> None:
    # A thread holding the request scope makes X(c: Cv, s: S): c's exit (it
    # raises ValueError) is kept in a slot before S is made. X's factory waits
    # until a forced close tore the scope down, then raises KeyboardInterrupt.
    log: list[str] = []
    in_x, closed = threading.Event(), threading.Event()
    registry = di.Registry()

    def c() -> AbstractContextManager[Cv]:
        return _FailingExit(log)

    registry.provider(cm=True)(c)

    @registry.provider(scope="request")
    def s() -> Iterator[S]:
        yield S()
        log.append("exit s")

    def x(cc: Cv, ss: S) -> X:
        in_x.set()
        assert closed.wait(WAIT)
        raise KeyboardInterrupt

    registry.provider(**({"scope": "request"} if lifetime == "scoped" else {}))(x)
    container = di.Container(registry, shutdown_timeout=0)
    raised = cut_short(container, X, api, in_x, closed)
    assert log == ["enter c", "exit s", "exit c"]  # each once
    assert len(raised) == 1
    assert any(isinstance(e, KeyboardInterrupt) for e in _chain(raised[0]))
    assert any(isinstance(e, ValueError) and str(e) == "exit c failed" for e in _chain(raised[0]))


# ------------------------------------------------------------- verified behaviour


class Q:
    def __init__(self) -> None:
        self.closed = False


class B:
    pass


class Y:
    def __init__(self, q: Q, b: B) -> None:
        self.q, self.q_closed_at_call = q, q.closed


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
@pytest.mark.parametrize("keyword_only", [False, True])
@pytest.mark.parametrize("order", ["q first", "b first"])
@pytest.mark.parametrize("calls", [1, 2])
@pytest.mark.parametrize("meanwhile", ["an override", "nothing"])
def test_a_singleton_a_call_reads_or_makes_is_refused_only_across_a_close(
    meanwhile: str, calls: int, order: str, keyword_only: bool, api: str
) -> None:
    # Y(q: Q, b: B) in either order, B keyword-only or not; Q is not made when
    # Y's plan is compiled (its first making fails, on the first call if two),
    # so the call reads it, or makes it, where its parameter comes. B's
    # factory enters an override meanwhile (or does nothing): no close, so no
    # refusal, whether Y was interpreted (call 1) or compiled (call 2).
    armed, fail_q = [False], [calls - 1]
    overrides: list[Any] = []
    registry = di.Registry()

    @registry.provider(singleton=True)
    def q() -> Iterator[Q]:
        if fail_q[0]:
            fail_q[0] -= 1
            raise LookupError("q")
        made = Q()
        yield made
        made.closed = True

    container_box: list[di.Container] = []

    @registry.provider()
    def b() -> B:
        if armed[0] and meanwhile == "an override":
            armed[0] = False
            cm = container_box[0].override(Q, Q())
            cm.__enter__()
            overrides.append(cm)
        return B()

    ns: dict[str, Any] = {"Q": Q, "B": B, "Y": Y}
    star = "*, " if keyword_only else ""
    params = f"q: Q, {star}b: B" if order == "q first" else f"b: B, {star}q: Q"
    exec(f"def y({params}) -> Y:\n    return Y(q, b)", ns)
    registry.provider()(ns["y"])
    container = di.Container(registry)
    container_box.append(container)

    def call() -> Any:
        if api == "resolve":
            return container.resolve(Y)
        return asyncio.run(container.aresolve(Y))

    with container:
        for _ in range(calls - 1):
            with pytest.raises(LookupError):
                call()
        armed[0] = True
        made = call()
        assert isinstance(made, Y) and not made.q_closed_at_call
        for cm in overrides:
            cm.__exit__(None, None, None)
