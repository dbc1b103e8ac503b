"""container.override(): three defects a review found (an out-of-order end into
an invalid graph that kept serving the ended value; a first-use plan fetched
before an override ran after it; a scoped creation under way across an
override stored what the override replaced), and promised behaviours that no
other test pins down.

Interleavings are forced with threading.Event / asyncio.Event; one race can only
be reached between two bytecodes of di, and is forced the way
tests/test_container_overrides.py forces its races: a sys.setprofile hook that
parks the worker thread when a named function of di/compiler.py is called (the
hook changes no behaviour). Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from _park import park_when_called

import di

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


# ---------------------------------------------------------------- defects


class A:
    pass


class B:
    pass


def _a_from_b(b: B) -> A:
    return A()


def _b_from_a(a: A) -> B:
    return B()


def test_an_override_ended_out_of_order_into_a_cycle_is_not_served_any_more() -> None:
    """A needs B in the registry. override(A, value) makes A need nothing, so a later
    override(B, factory needing A) is valid. Ending the A override first (out of order)
    would make A -> B -> A: `_remove_override` deletes the entry, then `_rebuild` raises
    GraphError before it swaps the graph, so `_overrides` and `_graph` disagree: the ended
    override's value is still served (and any later override, even of an unrelated key,
    raises the same GraphError). Whether the exit raises or not, a value whose override
    block has ended must not be served."""
    reg = di.Registry()
    reg.provider(_a_from_b)
    reg.provider(B)
    container = di.Container(reg)
    ended = A()
    with container:
        first = container.override(A, ended)
        first.__enter__()
        second = container.override(B, _b_from_a)
        second.__enter__()
        try:
            with contextlib.suppress(di.DIError):
                first.__exit__(None, None, None)  # out of order
            try:
                got = container.resolve(A)
            except di.DIError:
                got = None  # refusing the now-cyclic graph is fine
            assert got is not ended, "the value of an ended override is still served"
        finally:
            with contextlib.suppress(Exception):
                second.__exit__(None, None, None)


class T:
    pass


def test_a_first_resolve_racing_an_override_of_its_key_does_not_call_the_value() -> None:
    """Thread W misses T in its scope and gets T's first-use plan (`first`) from
    `Container._plan`, then (parked here, between lookup and call) the main thread
    overrides T with a value. `first` does not check that it is out of date: it puts
    its `compile_now` back into the plans the override just cleared and interprets the
    *current* graph, where T's factory is the value: `T()` instance called. The
    compile step left behind compiles a transient plan for a value key, so every scope
    resolve of T under the override then fails with an internal AssertionError."""
    reg = di.Registry()
    reg.register(T, T)
    container = di.Container(reg)
    fake = T()
    paused, resume = threading.Event(), threading.Event()
    out: list[object] = []

    def worker() -> None:
        with container.scope("request") as scope:
            sys.setprofile(park_when_called("first", paused, resume))
            try:
                out.append(scope.resolve(T))
            except BaseException as exc:  # reported below
                out.append(exc)
            finally:
                sys.setprofile(None)

    with container:
        th = threading.Thread(target=worker, daemon=True)
        th.start()
        try:
            assert paused.wait(WAIT)  # W holds T's first-use plan, not called yet
            with container.override(T, fake):
                resume.set()
                th.join(WAIT)
                assert not th.is_alive()
                later: list[object] = []
                with container.scope("request") as scope:
                    for _ in range(3):
                        try:
                            later.append(scope.resolve(T))
                        except BaseException as exc:
                            later.append(exc)
        finally:
            resume.set()
    # W's resolve was under way when the override began: a real T or the fake, but
    # not an internal error; a resolve begun under the override gets the fake.
    assert isinstance(out[0], T), out
    assert later == [fake, fake, fake], later


class R:
    pass


def test_a_scoped_creation_across_an_override_of_its_key_does_not_replace_the_override() -> None:
    """docs/design.md: an override taken while a request is open applies to what that
    request has not created yet. R is being created (its async factory waits) when
    override(R, fake) begins; the request serves the fake. Then the creation finishes
    and the scoped plan stores the real R in the checkpoint with no check of the
    override (singletons have one: made across an override of the key, a singleton
    goes to its caller but is never cached), so from then on the same request, under
    the same active override, serves the real R."""
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
                seen.append(await scope.aresolve(R))  # not created yet: the fake
                release.set()
                await asyncio.wait_for(creating, WAIT)  # its caller gets its R
                seen.append(await scope.aresolve(R))
                seen.append(scope.resolve(R))

    asyncio.run(main())
    assert seen == [fake, fake, fake], seen


# ---------------------------------------------------------------- verified behaviours


class S:
    fake = False


class X:
    fake = False


class Top:
    def __init__(self, x: X, s: S) -> None:
        self.x, self.s = x, s


class Req:
    def __init__(self, top: Top, x: X) -> None:
        self.top, self.x = top, x


@pytest.mark.parametrize("runner", ["asyncio", "trio"])
def test_an_async_generator_override_deep_in_compiled_async_plans(runner: str) -> None:
    """Under aresolve (asyncio and trio), an override of a transient that is inlined in
    a scoped key's compiled plan (and of a singleton it shares) by async generator
    factories: every resolve during the override, the third and later (generated code)
    included, gets the fakes; each fake is entered once and finalized once, LIFO, when
    its request ends; the singleton set aside comes back when the override ends."""
    log: list[tuple[str, int]] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def make_s() -> AsyncIterator[S]:
        s = S()
        log.append(("+S", id(s)))
        yield s
        log.append(("-S", id(s)))

    @reg.provider
    def make_x() -> Iterator[X]:
        x = X()
        log.append(("+X", id(x)))
        yield x
        log.append(("-X", id(x)))

    reg.register(Top, Top)
    reg.register(Req, Req, scope="request")

    async def fake_x() -> AsyncIterator[X]:
        x = X()
        x.fake = True
        log.append(("+F", id(x)))
        yield x
        log.append(("-F", id(x)))

    async def fake_s() -> AsyncIterator[S]:
        s = S()
        s.fake = True
        log.append(("+G", id(s)))
        yield s
        log.append(("-G", id(s)))

    container = di.Container(reg)

    async def requests(fakes: bool) -> S:
        s = None
        for _ in range(3):
            log.clear()
            async with container.scope("request") as scope:
                for _ in range(3):
                    req = await scope.aresolve(Req)
                    assert req.x.fake is fakes and req.top.x.fake is fakes
                    assert req.top.s.fake is fakes
                    s = req.top.s
            made = [i for k, i in log if k[0] == "+" and k != "+S"]
            gone = [i for k, i in log if k[0] == "-" and k != "-S"]
            assert gone == made[::-1], log
        assert s is not None
        return s

    async def main() -> None:
        async with container:
            real = await requests(False)
            with container.override(X, fake_x), container.override(S, fake_s):
                await requests(True)
            assert await requests(False) is real
        assert ("-S", id(real)) in log

    if runner == "trio":
        trio = pytest.importorskip("trio")
        trio.run(main)
    else:
        asyncio.run(main())


class Conn:
    pass


def test_a_value_override_that_is_a_context_manager_is_served_as_is() -> None:
    """api.md: a callable (not a class instance) is a factory, anything else a value: a
    context-manager (or generator) object given to override() is served itself, never
    entered, and never exited, by scopes or the close."""
    calls: list[str] = []

    class FakeConn(Conn):
        def __enter__(self) -> Conn:
            calls.append("enter")
            return Conn()

        def __exit__(self, *exc: object) -> None:
            calls.append("exit")

    reg = di.Registry()

    @reg.provider(scope="request", cm=True)
    def conn() -> contextlib.AbstractContextManager[Conn]:
        return contextlib.nullcontext(Conn())

    container = di.Container(reg)
    value = FakeConn()
    with container, container.override(Conn, value):
        for _ in range(3):
            with container.scope("request") as scope:
                assert scope.resolve(Conn) is value
    assert calls == []


def test_a_generator_override_used_by_inject_is_closed_when_the_call_returns() -> None:
    """DESIGN.md: resources a call opens for itself (transient generator providers) are
    closed when the call returns; that holds for a singleton key overridden by a
    generator function (a transient factory), from the root and from a scope, and the
    singleton comes back after."""
    log: list[str] = []
    reg = di.Registry()
    reg.register(S, S, singleton=True)

    def fake() -> Iterator[S]:
        s = S()
        s.fake = True
        log.append("open")
        yield s
        log.append("close")

    @di.inject
    def handler(s: S = di.Depends(S)) -> S:
        log.append("body")
        return s

    container = di.Container(reg)
    with container:
        real = handler()
        with container.override(S, fake):
            for _ in range(3):
                assert handler().fake
            with container.scope("request"):
                assert handler().fake
        assert handler() is real
    assert log == ["body"] + ["open", "body", "close"] * 4 + ["body"]


class D:
    def __init__(self, s: S) -> None:
        self.s = s


class Slow:
    pass


def test_an_override_begun_and_ended_while_an_async_close_tears_down() -> None:
    """A task enters and leaves an override while another task's aclose() waits in a
    singleton's async teardown: what is made meanwhile (under the override and after
    it) is the close's to tear down, once each, LIFO, and the container ends closed."""
    log: list[tuple[str, bool]] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def make_s() -> Iterator[S]:
        s = S()
        yield s
        log.append(("-S", s.fake))

    @reg.provider(singleton=True)
    def make_d(s: S) -> Iterator[D]:
        yield D(s)
        log.append(("-D", s.fake))

    async def main() -> None:
        inside, gate = asyncio.Event(), asyncio.Event()

        @reg.provider(singleton=True)
        async def make_slow() -> AsyncIterator[Slow]:
            yield Slow()
            inside.set()
            await gate.wait()
            log.append(("-Slow", False))

        container = di.Container(reg)
        fake = S()
        fake.fake = True
        await container.__aenter__()
        await container.aresolve(Slow)
        for _ in range(3):
            container.resolve(D)
        closer = asyncio.create_task(container.__aexit__(None, None, None))
        await asyncio.wait_for(inside.wait(), WAIT)
        assert log == [("-D", False), ("-S", False)]  # LIFO so far: Slow is in its teardown
        with container.override(S, fake):
            assert container.resolve(D).s is fake
        assert container.resolve(D).s.fake is False
        gate.set()
        await asyncio.wait_for(closer, WAIT)
        assert not container.is_open
        assert log[2:] == [("-Slow", False), ("-D", False), ("-S", False), ("-D", True)]

    asyncio.run(main())


def test_an_invalid_graph_left_by_an_out_of_order_end_says_so_until_the_later_one_ends() -> None:
    reg = di.Registry()
    reg.provider(_a_from_b)
    reg.provider(B)
    container = di.Container(reg)
    with container:
        first = container.override(A, A())
        first.__enter__()
        second = container.override(B, _b_from_a)
        second.__enter__()
        with pytest.raises(di.GraphError, match=r"override of A ended out of order.*innermost"):
            first.__exit__(None, None, None)
        for _ in range(3):
            with pytest.raises(di.GraphError, match=r"cycle"):
                container.resolve(A)
        second.__exit__(None, None, None)  # the registry's own graph again
        for _ in range(3):
            assert isinstance(container.resolve(A), A)
            assert isinstance(container.resolve(B), B)
