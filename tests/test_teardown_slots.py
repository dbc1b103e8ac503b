"""The place a creation keeps in its checkpoint's exit list (a Slot).

A creation that enters more than its own generator keeps the place of what it
entered so far before a scoped or singleton key it needs is made there and
then; the entries stay its own until its hand-over commits the place, and an
unwind that reaches a committed place runs them there. These tests force the
interleavings of that hand-over with a teardown running in another thread (a
forced close, a sync close unwinding the root in place), and compare what a
slot's entries see with what nested ``with`` blocks (an ExitStack) would.
"""

import asyncio
import contextlib
import gc
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

import anyio
import pytest

import di

WAIT = 5  # seconds: a safety net for events only, never a timing assertion


class ACM:
    pass


class Cv:
    pass


class Dv:
    pass


class S:
    pass


class B:
    pass


class A:
    pass


class Y:
    pass


class X:
    def __init__(self, *parts: object) -> None:
        self.parts = parts


class _Async:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    async def __aenter__(self) -> "_Async":
        self.log.append(f"enter {self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.log.append(f"exit {self.name}")


class _Sync:
    def __init__(self, log: list[str], name: str, suppress: bool = False) -> None:
        self.log, self.name, self.suppress = log, name, suppress

    def __enter__(self) -> "_Sync":
        self.log.append(f"enter {self.name}")
        return self

    def __exit__(self, et: Any, exc: Any, tb: Any) -> bool:
        self.log.append(f"exit {self.name}" + (f" {et.__name__}" if et else ""))
        return self.suppress


def _async_cm(registry: di.Registry, log: list[str]) -> None:
    def acm() -> AbstractAsyncContextManager[ACM]:
        return _Async(log, "acm")  # type: ignore[return-value]

    registry.provider(cm=True)(acm)


# --------------------------------------------- a teardown in another thread, forced


@pytest.mark.parametrize("nested", [True, False], ids=["slot", "plain"])
def test_a_sync_close_never_loses_the_async_exit_of_a_transient_made_meanwhile(
    nested: bool,
) -> None:
    # The close unwinds the root's list in place; singleton A's exit lets
    # another thread's loop aresolve transient X(c: ACM[, b: B]) at the root
    # (no scope) and waits for it. With B (a singleton not made yet) X keeps
    # the place of its async exit before B is made; either way X hands that
    # async exit to the root's list the sync close is unwinding.
    log: list[str] = []
    in_a_exit, x_done = threading.Event(), threading.Event()
    registry = di.Registry()

    @registry.provider(singleton=True)
    def a() -> Iterator[A]:
        yield A()
        in_a_exit.set()
        assert x_done.wait(WAIT)

    @registry.provider(singleton=True)
    def b() -> Iterator[B]:
        yield B()

    _async_cm(registry, log)
    if nested:

        @registry.provider()
        def x(c: ACM, bb: B) -> X:
            return X(c, bb)
    else:

        @registry.provider()
        def x(c: ACM) -> X:  # type: ignore[misc]
            return X(c)

    container = di.Container(registry)
    results: list[Any] = []

    def work() -> None:
        async def make() -> None:
            try:
                results.append(await container.aresolve(X))
            except BaseException as exc:
                results.append(exc)

        try:
            assert in_a_exit.wait(WAIT)
            asyncio.run(make())
        finally:
            x_done.set()

    container.resolve(A)
    thread = threading.Thread(target=work)
    thread.start()
    raised: list[BaseException] = []
    try:
        try:
            container.close()
        except BaseException as exc:  # a refusal (AsyncProviderError) is fine
            raised.append(exc)
    finally:
        x_done.set()
        thread.join(WAIT)
    asyncio.run(container.aclose())  # whatever a refused close left open
    assert log.count("enter acm") == 1
    assert log.count("exit acm") == 1  # run once: by the maker, or by aclose()
    assert not [e for e in raised if not isinstance(e, di.AsyncProviderError)]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_forced_sync_teardown_never_loses_the_async_exit_of_a_failing_creation(
    backend: str,
) -> None:
    # A thread holding the request scope aresolves X(c: ACM, s: S, y: Y): the
    # async exit of c is kept in a slot before S is made, then Y waits for the
    # forced close to be inside S's exit, and fails. The close tears the scope
    # down from sync code.
    log: list[str] = []
    s_made, in_s_exit, x_done = threading.Event(), threading.Event(), threading.Event()
    registry = di.Registry()

    @registry.provider(scope="request")
    def s() -> Iterator[S]:
        s_made.set()
        yield S()
        in_s_exit.set()
        assert x_done.wait(WAIT)

    _async_cm(registry, log)

    @registry.provider()
    def y() -> Y:
        assert in_s_exit.wait(WAIT)
        raise KeyError("y")

    @registry.provider()
    def x(c: ACM, ss: S, yy: Y) -> X:
        return X(c, ss, yy)

    container = di.Container(registry)
    results: list[Any] = []
    raised: list[BaseException] = []
    with container, container.scope("request") as request:
        hold = request.hold()

        def work() -> None:
            async def make() -> None:
                try:
                    with hold:
                        results.append(await request.aresolve(X))
                except BaseException as exc:
                    results.append(exc)

            try:
                anyio.run(make, backend=backend)
            finally:
                x_done.set()

        thread = threading.Thread(target=work)
        thread.start()
        try:
            assert s_made.wait(WAIT)
            try:
                container.close(force=True)
            except BaseException as exc:  # a refusal is fine
                raised.append(exc)
        finally:
            x_done.set()
            thread.join(WAIT)
    asyncio.run(container.aclose())  # whatever a refused close left open
    assert len(results) == 1 and isinstance(results[0], BaseException)
    assert log.count("exit acm") == 1
    assert not [e for e in raised if not isinstance(e, di.AsyncProviderError)]


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
def test_a_scoped_creation_cut_short_by_a_forced_teardown_exits_each_entry_once(
    api: str,
) -> None:
    # A thread holding the request scope makes scoped X(c: Cv, s: S, d: Dv):
    # c is kept in a slot before S is made, d comes after it. X's factory
    # waits until the forced close is inside S's exit: X finds its
    # checkpoint torn down and unwinds what it entered, c and d, once each.
    log: list[str] = []
    s_made, in_s_exit, x_done = threading.Event(), threading.Event(), threading.Event()
    registry = di.Registry()

    @registry.provider(scope="request")
    def s() -> Iterator[S]:
        s_made.set()
        yield S()
        log.append("exit s")
        in_s_exit.set()
        assert x_done.wait(WAIT)

    def c() -> AbstractContextManager[Cv]:
        return _Sync(log, "c")  # type: ignore[return-value]

    def d() -> AbstractContextManager[Dv]:
        return _Sync(log, "d")  # type: ignore[return-value]

    registry.provider(cm=True)(c)
    registry.provider(cm=True)(d)

    @registry.provider(scope="request")
    def x(cc: Cv, ss: S, dd: Dv) -> X:
        assert in_s_exit.wait(WAIT)
        return X(cc, ss, dd)

    container = di.Container(registry)
    results: list[Any] = []
    with container, container.scope("request") as request:
        hold = request.hold()

        def work() -> None:
            try:
                with hold:
                    if api == "resolve":
                        results.append(request.resolve(X))
                    else:
                        results.append(asyncio.run(request.aresolve(X)))
            except BaseException as exc:
                results.append(exc)
            finally:
                x_done.set()

        thread = threading.Thread(target=work)
        thread.start()
        try:
            assert s_made.wait(WAIT)
            container.close(force=True)
        finally:
            x_done.set()
            thread.join(WAIT)
    assert [type(r) for r in results] == [di.CheckpointClosedError]
    assert log == ["enter c", "enter d", "exit s", "exit d", "exit c"]


# ------------------------------------------------------- verified behaviour


class Sup:
    pass


class Boom:
    pass


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
@pytest.mark.parametrize("fail_in", ["factory", "s-exit"])
def test_a_failed_creations_slot_unwinds_like_nested_with_blocks(api: str, fail_in: str) -> None:
    # Transient X(sup: Sup, s: S, d: Dv) fails in the request scope: sup
    # (a cm=True provider that suppresses) is kept in a slot before S is made,
    # d comes after it. At scope exit the slot's entries run in their place,
    # each seeing what nested `with` blocks would hand it (the factory's
    # KeyError, or S's teardown error chained onto it), and sup suppresses.
    # Three rounds: first use (interpreted), compiled, compiled again.
    log: list[str] = []
    registry = di.Registry()

    def sup() -> AbstractContextManager[Sup]:
        return _Sync(log, "sup", suppress=True)  # type: ignore[return-value]

    def d() -> AbstractContextManager[Dv]:
        return _Sync(log, "d")  # type: ignore[return-value]

    registry.provider(cm=True)(sup)
    registry.provider(cm=True)(d)

    @registry.provider(scope="request")
    def s() -> Iterator[S]:
        log.append("enter s")
        try:
            yield S()
        finally:
            log.append("exit s")
            if fail_in == "s-exit":
                raise ValueError("s")

    @registry.provider()
    def x(a: Sup, ss: S, dd: Dv) -> X:
        raise KeyError("x")

    def model() -> list[str]:
        # The same program with ExitStack: what each exit must see.
        expected: list[str] = []
        with contextlib.ExitStack() as stack:
            stack.enter_context(_Sync(expected, "sup", suppress=True))

            @contextlib.contextmanager
            def s_cm() -> Iterator[None]:
                expected.append("enter s")
                try:
                    yield
                finally:
                    expected.append("exit s")
                    if fail_in == "s-exit":
                        raise ValueError("s")

            stack.enter_context(s_cm())
            stack.enter_context(_Sync(expected, "d"))
            raise KeyError("x")
        return expected

    container = di.Container(registry)

    async def body() -> None:
        async with container:
            for _ in range(3):
                log.clear()
                async with container.scope("request") as request:
                    if api == "resolve":
                        request.resolve(X)
                    else:
                        await request.aresolve(X)
                assert log == model()  # and nothing escaped: sup suppressed

    asyncio.run(body())


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
def test_a_failed_creations_slot_passes_the_error_chain_exitstack_would(api: str) -> None:
    # As above with nothing suppressing: what leaves the scope is S's
    # teardown error with the factory's KeyError as its __context__, and the
    # slot's entry (c, run after S's exit) sees the ValueError.
    log: list[str] = []
    registry = di.Registry()

    def c() -> AbstractContextManager[Cv]:
        return _Sync(log, "c")  # type: ignore[return-value]

    registry.provider(cm=True)(c)

    @registry.provider(scope="request")
    def s() -> Iterator[S]:
        try:
            yield S()
        finally:
            raise ValueError("s")

    @registry.provider()
    def x(cc: Cv, ss: S) -> X:
        raise KeyError("x")

    container = di.Container(registry)

    async def body() -> None:
        async with container:
            for _ in range(2):
                log.clear()
                with pytest.raises(ValueError) as info:
                    async with container.scope("request") as request:
                        if api == "resolve":
                            request.resolve(X)
                        else:
                            await request.aresolve(X)
                assert isinstance(info.value.__context__, KeyError)
                assert log == ["enter c", "exit c ValueError"]

    asyncio.run(body())


class Fails:
    pass


class Needs:
    def __init__(self, c: Cv, f: Fails) -> None:
        self.c = c


@pytest.mark.parametrize("api", ["resolve", "aresolve"])
def test_a_singleton_that_keeps_failing_holds_on_to_nothing(api: str) -> None:
    # Singleton Needs(c: Cv, f: Fails): c's exit is kept in a slot of the
    # root's list before singleton Fails is made, which fails. Each failure
    # unwinds c at once (with the error), and what it entered is freed: the
    # root keeps no place for it.
    log: list[str] = []
    made: list[weakref.ref[_Sync]] = []
    registry = di.Registry()

    def c() -> AbstractContextManager[Cv]:
        cm = _Sync(log, "c")
        made.append(weakref.ref(cm))
        return cm  # type: ignore[return-value]

    registry.provider(cm=True)(c)

    @registry.provider(singleton=True)
    def fails() -> Fails:
        raise KeyError("fails")

    registry.provider(singleton=True)(Needs)
    container = di.Container(registry)

    async def body() -> None:
        async with container:
            for _ in range(3):
                with pytest.raises(KeyError):
                    if api == "resolve":
                        container.resolve(Needs)
                    else:
                        await container.aresolve(Needs)
            gc.collect()
            assert [r() for r in made] == [None, None, None]
        assert log == ["enter c", "exit c KeyError"] * 3

    asyncio.run(body())


class AG:
    pass


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_committed_slot_with_async_entries_refuses_a_sync_release(backend: str) -> None:
    # X(ag: AG, s: S) made in a held request scope under aresolve: the slot
    # holding the async generator is committed. The last holder leaves from
    # sync code: refused (AsyncProviderError) and left for the async close,
    # which runs the async generator's exit after S's, once.
    log: list[str] = []
    registry = di.Registry()

    @registry.provider()
    async def ag() -> AsyncIterator[AG]:
        log.append("enter ag")
        yield AG()
        log.append("exit ag")

    @registry.provider(scope="request")
    def s() -> Iterator[S]:
        log.append("enter s")
        yield S()
        log.append("exit s")

    @registry.provider()
    def x(a: AG, ss: S) -> X:
        return X(a, ss)

    container = di.Container(registry)

    async def body() -> None:
        async with container:
            async with container.scope("request") as request:
                hold = request.hold()
                hold.__enter__()
                await request.aresolve(X)
            with pytest.raises(di.AsyncProviderError):
                hold.__exit__(None, None, None)
            assert log == ["enter ag", "enter s"]
        assert log == ["enter ag", "enter s", "exit s", "exit ag"]

    anyio.run(body, backend=backend)
