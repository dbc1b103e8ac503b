"""Resolving during a close (a teardown that resolves a singleton needing
another works, sync and async; after a failed close everything resolves), and
the chain of an exit's error raised while a creation cut short unwinds (no
cycle when an exit re-raises the creation's error; as ExitStack)."""

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

import di

WAIT = 5  # seconds: a safety net for events only, never a timing assertion


class G:
    pass


class Config:
    pass


class Logger:
    def __init__(self, config: Config) -> None:
        self.config = config


class Plain:
    pass


class Uses:
    def __init__(self, config: Config, plain: Plain) -> None:
        self.config = config


def _registry(teardown: Any) -> di.Registry:
    registry = di.Registry()
    registry.provider(singleton=True)(teardown)
    registry.provider(singleton=True)(Config)
    registry.provider(singleton=True)(Logger)
    registry.provider()(Plain)
    registry.provider()(Uses)
    return registry


# ------------------- a teardown that resolves a singleton with a singleton below it


def test_a_teardown_resolves_a_singleton_that_needs_a_singleton() -> None:
    made: list[Any] = []

    def g() -> Iterator[G]:
        yield G()
        made.append(container.resolve(Logger))  # a final report...

    container = di.Container(_registry(g))
    container.resolve(G)
    container.close()
    assert len(made) == 1 and isinstance(made[0], Logger)


def test_an_async_teardown_aresolves_a_singleton_that_needs_a_singleton() -> None:
    made: list[Any] = []

    async def g() -> AsyncIterator[G]:
        yield G()
        made.append(await container.aresolve(Logger))

    container = di.Container(_registry(g))

    async def main() -> None:
        await container.aresolve(G)
        await container.aclose()

    asyncio.run(main())
    assert len(made) == 1 and isinstance(made[0], Logger)


# ------------------------------------------------- what still works during a close


def test_a_teardown_resolves_what_passes_no_singleton_and_a_leaf_singleton() -> None:
    # Twice each: the first-use interpreter, then a plan compiled during the close.
    got: list[Any] = []

    def g() -> Iterator[G]:
        yield G()
        got.extend(container.resolve(k) for k in (Plain, Plain, Config, Config))

    container = di.Container(_registry(g))
    container.resolve(G)
    container.close()
    assert [type(v) for v in got] == [Plain, Plain, Config, Config]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_after_a_failed_close_a_call_passing_a_singleton_works(error: type) -> None:
    # Plans compiled during the failed close are dropped
    # at its reset; `_unwinding` does not outlive it.
    def g() -> Iterator[G]:
        yield G()
        for _ in range(2):  # refused since cab5ad8 (test_failed_review.py), or made
            with contextlib.suppress(di.CheckpointClosedError):
                container.resolve(Uses)
        raise error("g")

    container = di.Container(_registry(g))
    container.resolve(G)
    with pytest.raises(error):
        container.close()
    for _ in range(3):  # first use, then the compiled plan
        assert isinstance(container.resolve(Uses).config, Config)
    assert isinstance(container.resolve(Logger).config, Config)
    container.close()


# --------------------------- _chain_to: an exit that re-raises the handled exception


class C1:
    pass


class C2:
    pass


class S:
    pass


class X:
    pass


class _Reraise:
    """A context manager whose exit re-raises whatever is being handled."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        raise  # re-raises the exception being handled: the point of the test


def _contexts(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and not any(exc is s for s in seen):
        seen.append(exc)
        exc = exc.__context__
    return seen


def _has_context_cycle(exc: BaseException) -> bool:
    chain = _contexts(exc)
    return chain[-1].__context__ is not None


def test_an_exit_re_raising_the_creations_error_makes_no_context_cycle() -> None:
    # A thread holding the request scope makes X(c1: C1, c2: C2, s: S); X's
    # factory waits until a forced close tore the scope down, then raises
    # LookupError while handling KeyError. c2's exit re-raises that error.
    in_x, closed, held = threading.Event(), threading.Event(), threading.Event()
    registry = di.Registry()

    def c1() -> AbstractContextManager[C1]:
        return contextlib.nullcontext(C1())

    def c2() -> AbstractContextManager[C2]:
        return _Reraise(C2())

    registry.provider(cm=True)(c1)
    registry.provider(cm=True)(c2)
    registry.provider(scope="request")(S)

    def x(a: C1, b: C2, s: S) -> X:
        in_x.set()
        assert closed.wait(WAIT)
        try:
            raise KeyError("inner")
        except KeyError:
            raise LookupError("creation")  # noqa: B904 - implicit context wanted

    registry.provider(scope="request")(x)
    container = di.Container(registry, shutdown_timeout=0)
    raised: list[BaseException] = []
    with container:
        with container.scope("request") as request:
            hold = request.hold()

            def work() -> None:
                try:
                    with hold:
                        held.set()
                        request.resolve(X)
                except BaseException as exc:
                    raised.append(exc)
                finally:
                    held.set()

            thread = threading.Thread(target=work)
            thread.start()
            assert held.wait(WAIT)
        try:
            assert in_x.wait(WAIT)
            container.close(force=True)
        finally:
            closed.set()
            thread.join(WAIT)
    assert len(raised) == 1 and isinstance(raised[0], LookupError)
    assert not _has_context_cycle(raised[0])
    assert [type(e) for e in _contexts(raised[0])] == [LookupError, KeyError]


def test_exit_stack_leaves_no_cycle_for_the_same_program() -> None:
    # The reference the test above compares with.
    with pytest.raises(LookupError) as info, contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.nullcontext(C1()))
        stack.enter_context(_Reraise(C2()))
        try:
            raise KeyError("inner")
        except KeyError:
            raise LookupError("creation")  # noqa: B904
    assert not _has_context_cycle(info.value)
    assert [type(e) for e in _contexts(info.value)] == [LookupError, KeyError]
