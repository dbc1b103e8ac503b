"""Container integration of lifecycle managers (issue 3, point 3).

A singleton provider may return a `di.RefCounted` or a `di.ClientContext`.
The container enters it when it is first resolved (``resolve`` through
``__enter__``, ``aresolve`` through ``__aenter__``), hands out the manager
itself, holds exactly one reference to it, and releases that reference once,
in LIFO order with the other singletons, when the container's own last
reference exits. Only the public API (``import di``) is used.

Every wait is bounded (pytest-timeout, ``anyio.fail_after``,
``asyncio.wait_for``, ``trio.fail_after``, thread join timeouts) so a deadlock
fails instead of hanging. Providers never raise during teardown, and every
test closes its container before it asserts, so nothing with pending teardown
is left for the garbage collector.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
import trio

import di

TIMEOUT = 15.0

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- fakes ---------------------------------------------------------------------


class Journal:
    """A thread-safe record of what was opened and closed, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[str] = []

    def add(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def count(self, event: str) -> int:
        with self._lock:
            return self.events.count(event)


class Conn:
    """The resource a RefCounted opens."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Conn({self.n})"


class Api:
    """An API client with async initialize() and aclose(), like httpx."""

    def __init__(self, journal: Journal, n: int) -> None:
        self.journal = journal
        self.n = n
        self.initialized = False
        self.closes = 0

    async def initialize(self) -> None:
        await anyio.sleep(0)  # suspend, so concurrent callers pile up
        self.initialized = True
        self.journal.add("api open")

    async def aclose(self) -> None:
        await anyio.sleep(0)
        self.closes += 1
        self.journal.add("api close")


class A:
    pass


class B:
    pass


def sync_callables(
    journal: Journal, name: str = "conn"
) -> tuple[Callable[[], Conn], Callable[[Conn], None]]:
    """Sync open and close for a RefCounted."""
    opened = [0]

    def open_() -> Conn:
        time.sleep(0)  # let other threads in, as real I/O would
        opened[0] += 1
        journal.add(f"{name} open")
        return Conn(opened[0])

    def close(conn: Conn) -> None:
        journal.add(f"{name} close")

    return open_, close


def async_callables(
    journal: Journal, name: str = "conn"
) -> tuple[Callable[[], Awaitable[Conn]], Callable[[Conn], Awaitable[None]]]:
    """Async open and close for a RefCounted (any event loop library)."""
    opened = [0]

    async def open_() -> Conn:
        await anyio.sleep(0)
        await anyio.sleep(0)
        opened[0] += 1
        journal.add(f"{name} open")
        return Conn(opened[0])

    async def close(conn: Conn) -> None:
        await anyio.sleep(0)
        journal.add(f"{name} close")

    return open_, close


def sync_rc(journal: Journal, name: str = "conn") -> di.RefCounted[Conn]:
    return di.RefCounted(*sync_callables(journal, name))


def async_rc(journal: Journal, name: str = "conn") -> di.RefCounted[Conn]:
    return di.RefCounted(*async_callables(journal, name))  # type: ignore[arg-type]


def client_context(journal: Journal) -> di.ClientContext[Api]:
    made = [0]

    def factory(conn: dict[str, Any], verify_ssl: bool) -> Api:
        made[0] += 1
        journal.add("api create")
        return Api(journal, made[0])

    return di.ClientContext(factory, {"host": "example.invalid"})


def run_asyncio(fn: Callable[[], Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(fn(), TIMEOUT)

    return asyncio.run(bounded())


# -- sync resolve enters ----------------------------------------------------------


def test_sync_resolve_enters_a_sync_refcounted_and_returns_it() -> None:
    journal = Journal()
    rc = sync_rc(journal)
    calls: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        calls.append("provider")
        return rc

    c = di.Container(reg)
    with c:
        first = c.resolve(di.RefCounted[Conn])
        again = c.resolve(di.RefCounted[Conn])
        state = (first is rc, again is rc, rc.is_open, rc.ref_count, rc.resource.n)
        events_inside = list(journal.events)
    assert state == (True, True, True, 1, 1)
    assert calls == ["provider"]
    assert events_inside == ["conn open"]
    assert journal.events == ["conn open", "conn close"]
    assert not rc.is_open
    assert rc.ref_count == 0


class SpyRefCounted(di.RefCounted[Conn]):
    """Records which protocol the container used to enter it."""

    def __init__(self, journal: Journal, entered: list[str], *, sync: bool) -> None:
        callables: Any = sync_callables(journal) if sync else async_callables(journal)
        super().__init__(*callables)
        self.entered = entered

    def __enter__(self) -> Conn:
        self.entered.append("__enter__")
        return super().__enter__()

    async def __aenter__(self) -> Conn:
        self.entered.append("__aenter__")
        return await super().__aenter__()


def test_sync_resolve_enters_through___enter__() -> None:
    journal = Journal()
    entered: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        return SpyRefCounted(journal, entered, sync=True)

    c = di.Container(reg)
    with c:
        rc = c.resolve(di.RefCounted[Conn])
        state = (rc.is_open, rc.ref_count)
    assert state == (True, 1)
    assert entered == ["__enter__"]
    assert journal.events == ["conn open", "conn close"]


@pytest.mark.anyio
async def test_aresolve_enters_through___aenter__(anyio_backend: str) -> None:
    journal = Journal()
    entered: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def conn() -> di.RefCounted[Conn]:
        return SpyRefCounted(journal, entered, sync=False)

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c:
            rc = await c.aresolve(di.RefCounted[Conn])
            state = (rc.is_open, rc.ref_count)
    assert state == (True, 1)
    assert entered == ["__aenter__"]
    assert journal.events == ["conn open", "conn close"]


# -- aresolve enters ------------------------------------------------------------


@pytest.mark.anyio
async def test_aresolve_enters_an_async_refcounted(anyio_backend: str) -> None:
    journal = Journal()
    rc = async_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c:
            got = await c.aresolve(di.RefCounted[Conn])
            again = await c.aresolve(di.RefCounted[Conn])
            state = (got is rc, again is rc, rc.is_open, rc.ref_count, rc.resource.n)
            events_inside = list(journal.events)
    assert state == (True, True, True, 1, 1)
    assert events_inside == ["conn open"]
    assert journal.events == ["conn open", "conn close"]
    assert (rc.is_open, rc.ref_count) == (False, 0)


@pytest.mark.anyio
async def test_aresolve_enters_a_client_context(anyio_backend: str) -> None:
    journal = Journal()
    ctx = client_context(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def api() -> di.ClientContext[Api]:
        return ctx

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c:
            got = await c.aresolve(di.ClientContext[Api])
            client = ctx.client
            state = (got is ctx, ctx.is_open, ctx.ref_count, client.initialized, client.closes)
    assert state == (True, True, 1, True, 0)
    assert journal.events == ["api create", "api open", "api close"]
    assert client.closes == 1
    assert (ctx.is_open, ctx.ref_count) == (False, 0)


@pytest.mark.anyio
@pytest.mark.parametrize("what", ["client_context", "async_refcounted"])
async def test_aresolve_enters_a_lifecycle_from_a_plain_def_provider(
    anyio_backend: str, what: str
) -> None:
    # The provider itself is sync; what it returns needs `async with`.
    # aresolve is the async path, so it must enter it with __aenter__.
    journal = Journal()
    reg = di.Registry()
    key: Any
    if what == "client_context":
        manager: Any = client_context(journal)
        key = di.ClientContext[Api]

        @reg.provider(singleton=True)
        def api() -> di.ClientContext[Api]:
            return manager  # type: ignore[no-any-return]
    else:
        manager = async_rc(journal)
        key = di.RefCounted[Conn]

        @reg.provider(singleton=True)
        def conn() -> di.RefCounted[Conn]:
            return manager  # type: ignore[no-any-return]

    c = di.Container(reg)
    error: BaseException | None = None
    state: tuple[Any, ...] = ()
    with anyio.fail_after(TIMEOUT):
        async with c:
            try:
                got = await c.aresolve(key)
                state = (got is manager, manager.is_open, manager.ref_count)
            except di.AsyncProviderError as exc:
                error = exc
    assert error is None, f"aresolve refused to enter it: {error}"
    assert state == (True, True, 1)
    assert (manager.is_open, manager.ref_count) == (False, 0)
    assert journal.count("api close") + journal.count("conn close") == 1


# -- sync resolve of an async lifecycle: an error, nothing half-open ------------------


@pytest.mark.parametrize("open_async, close_async", [(True, True), (True, False), (False, True)])
def test_sync_resolve_of_async_refcounted_raises_and_opens_nothing(
    open_async: bool, close_async: bool
) -> None:
    journal = Journal()

    def sopen() -> Conn:
        journal.add("open")
        return Conn(1)

    async def aopen() -> Conn:
        journal.add("open")
        return Conn(1)

    def sclose(conn: Conn) -> None:
        journal.add("close")

    async def aclose(conn: Conn) -> None:
        journal.add("close")

    rc: di.RefCounted[Conn] = di.RefCounted(
        aopen if open_async else sopen, aclose if close_async else sclose
    )
    calls: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        calls.append("provider")
        return rc

    c = di.Container(reg)
    with c:
        for _ in range(2):  # the failure is cached nowhere: it fails the same way twice
            with pytest.raises(di.AsyncProviderError):
                c.resolve(di.RefCounted[Conn])
        state = (rc.is_open, rc.ref_count, list(journal.events))
    assert state == (False, 0, [])
    assert journal.events == []  # and the container's exit had nothing to release
    assert calls == ["provider", "provider"]


def test_sync_resolve_of_client_context_from_def_provider_raises_and_opens_nothing() -> None:
    journal = Journal()
    ctx = client_context(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    def api() -> di.ClientContext[Api]:
        return ctx

    c = di.Container(reg)
    with c:
        with pytest.raises(di.AsyncProviderError):
            c.resolve(di.ClientContext[Api])
        state = (ctx.is_open, ctx.ref_count, list(journal.events))
    assert state == (False, 0, [])
    assert journal.events == []


@pytest.mark.anyio
@pytest.mark.parametrize("what", ["client_context", "async_refcounted"])
async def test_failed_sync_resolve_then_aresolve_enters_exactly_once(
    anyio_backend: str, what: str
) -> None:
    # An async def provider returning a lifecycle: sync resolve must refuse
    # without calling it, and must leave no reference behind for aresolve to
    # stack on top of.
    journal = Journal()
    calls: list[str] = []
    reg = di.Registry()
    key: Any
    if what == "client_context":
        manager: Any = client_context(journal)
        key = di.ClientContext[Api]

        @reg.provider(singleton=True)
        async def api() -> di.ClientContext[Api]:
            calls.append("provider")
            return manager  # type: ignore[no-any-return]
    else:
        manager = async_rc(journal)
        key = di.RefCounted[Conn]

        @reg.provider(singleton=True)
        async def conn() -> di.RefCounted[Conn]:
            calls.append("provider")
            return manager  # type: ignore[no-any-return]

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c:
            with pytest.raises(di.AsyncProviderError):
                c.resolve(key)
            before = (list(calls), manager.is_open, manager.ref_count, list(journal.events))
            got = await c.aresolve(key)
            after = (got is manager, manager.is_open, manager.ref_count)
    assert before == ([], False, 0, [])
    assert after == (True, True, 1)
    assert calls == ["provider"]
    assert (manager.is_open, manager.ref_count) == (False, 0)
    assert journal.count("api close") + journal.count("conn close") == 1


def test_generator_provider_of_a_client_context_is_unwound_when_sync_resolve_fails() -> None:
    # The generator has started (its setup ran) when the container finds it
    # cannot enter what it yielded. Like a failed `with` block, the resolution
    # must unwind what it entered before failing, not keep it half-open (one
    # more per attempt) until the container closes.
    journal = Journal()
    reg = di.Registry()

    @reg.provider(singleton=True)
    def api() -> Iterator[di.ClientContext[Api]]:
        journal.add("gen setup")
        try:
            yield client_context(journal)
        finally:  # runs whether it is closed, or the error is thrown in
            journal.add("gen teardown")

    c = di.Container(reg)
    with c:
        for _ in range(2):
            with pytest.raises(di.AsyncProviderError):
                c.resolve(di.ClientContext[Api])
        inside = list(journal.events)
    assert journal.events.count("gen setup") == journal.events.count("gen teardown") == 2
    assert inside == ["gen setup", "gen teardown"] * 2, (
        f"the failed resolutions left {inside.count('gen setup') - inside.count('gen teardown')} "
        f"generator(s) suspended until the container closed: {inside}"
    )


# -- failed and cancelled opens cache nothing ---------------------------------------------


def test_failing_open_caches_nothing_and_the_next_resolve_retries() -> None:
    journal = Journal()
    fail = [True]

    def open_() -> Conn:
        if fail[0]:
            raise ValueError("no route to host")
        journal.add("open")
        return Conn(1)

    def close(conn: Conn) -> None:
        journal.add("close")

    rc = di.RefCounted(open_, close)
    calls: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        calls.append("provider")
        return rc

    c = di.Container(reg)
    with c:
        with pytest.raises(di.DIError) as info:
            c.resolve(di.RefCounted[Conn])
        cause = info.value.__cause__
        failed = (rc.is_open, rc.ref_count)
        fail[0] = False
        got = c.resolve(di.RefCounted[Conn])
        ok = (got is rc, rc.is_open, rc.ref_count)
    assert isinstance(cause, ValueError)
    assert failed == (False, 0)
    assert ok == (True, True, 1)
    assert calls == ["provider", "provider"]
    assert journal.events == ["open", "close"]


@pytest.mark.anyio
async def test_cancelled_open_caches_nothing_and_the_next_aresolve_retries(
    anyio_backend: str,
) -> None:
    journal = Journal()
    block = [True]
    started = anyio.Event()

    async def open_() -> Conn:
        if block[0]:
            started.set()
            await anyio.sleep_forever()
        journal.add("open")
        return Conn(1)

    async def close(conn: Conn) -> None:
        journal.add("close")

    rc = di.RefCounted(open_, close)
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c:
            async with anyio.create_task_group() as tg:
                tg.start_soon(c.aresolve, di.RefCounted[Conn])
                await started.wait()
                tg.cancel_scope.cancel()
            cancelled = (rc.is_open, rc.ref_count)
            block[0] = False
            got = await c.aresolve(di.RefCounted[Conn])
            ok = (got is rc, rc.is_open, rc.ref_count)
    assert cancelled == (False, 0)
    assert ok == (True, True, 1)
    assert journal.events == ["open", "close"]


# -- released once, at the container's own last exit ---------------------------------------


def test_nested_with_releases_only_at_the_outermost_exit() -> None:
    journal = Journal()
    rc = sync_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    with c:
        with c:
            c.resolve(di.RefCounted[Conn])
        after_inner = (rc.is_open, rc.ref_count, list(journal.events))
    assert after_inner == (True, 1, ["conn open"])
    assert journal.events == ["conn open", "conn close"]
    assert (rc.is_open, rc.ref_count) == (False, 0)


@pytest.mark.anyio
async def test_concurrent_async_with_releases_at_the_last_holder(anyio_backend: str) -> None:
    journal = Journal()
    ctx = client_context(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def api() -> di.ClientContext[Api]:
        return ctx

    c = di.Container(reg)
    resolved = anyio.Event()
    first_left = anyio.Event()
    seen: dict[str, Any] = {}

    async def first() -> None:
        async with c:
            await c.aresolve(di.ClientContext[Api])
            resolved.set()
        first_left.set()

    async def second() -> None:
        async with c:
            await resolved.wait()
            await first_left.wait()
            seen["after first left"] = (ctx.is_open, ctx.ref_count, journal.count("api close"))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            tg.start_soon(first)
    assert seen["after first left"] == (True, 1, 0)
    assert journal.events == ["api create", "api open", "api close"]
    assert (ctx.is_open, ctx.ref_count) == (False, 0)


def test_close_without_entering_releases_once() -> None:
    journal = Journal()
    rc = sync_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    c.resolve(di.RefCounted[Conn])
    c.close()
    c.close()  # closing a closed container releases nothing more
    assert journal.events == ["conn open", "conn close"]
    assert (rc.is_open, rc.ref_count) == (False, 0)


@pytest.mark.anyio
async def test_aclose_without_entering_releases_once(anyio_backend: str) -> None:
    journal = Journal()
    ctx = client_context(journal)
    rc = async_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def api() -> di.ClientContext[Api]:
        return ctx

    @reg.provider(singleton=True)
    async def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        await c.aresolve(di.ClientContext[Api])
        await c.aresolve(di.RefCounted[Conn])
        await c.aclose()
        await c.aclose()
    assert journal.events == ["api create", "api open", "conn open", "conn close", "api close"]
    assert (ctx.is_open, ctx.ref_count, rc.is_open, rc.ref_count) == (False, 0, False, 0)


def test_close_while_held_defers_to_the_last_exit(caplog: pytest.LogCaptureFixture) -> None:
    journal = Journal()
    rc = sync_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    with caplog.at_level(logging.WARNING, logger="di"), c:
        c.resolve(di.RefCounted[Conn])
        c.close()
        deferred = (rc.is_open, rc.ref_count, list(journal.events))
    assert deferred == (True, 1, ["conn open"])
    assert any("close" in r.getMessage() for r in caplog.records)
    assert journal.events == ["conn open", "conn close"]


# -- LIFO with the other singletons ---------------------------------------------------------


@pytest.mark.parametrize("resolve", ["through_dependencies", "one_by_one"])
def test_released_in_lifo_order_with_generator_singletons_sync(resolve: str) -> None:
    journal = Journal()
    rc = sync_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    def a() -> Iterator[A]:
        journal.add("A open")
        yield A()
        journal.add("A close")

    if resolve == "through_dependencies":

        @reg.provider(singleton=True)
        def conn(a: A) -> di.RefCounted[Conn]:
            return rc

        @reg.provider(singleton=True)
        def b(conn: di.RefCounted[Conn]) -> Iterator[B]:
            assert conn.is_open  # B is made after the container entered it
            journal.add("B open")
            yield B()
            journal.add("B close")
    else:

        @reg.provider(singleton=True)
        def conn_alone() -> di.RefCounted[Conn]:
            return rc

        @reg.provider(singleton=True)
        def b_alone() -> Iterator[B]:
            journal.add("B open")
            yield B()
            journal.add("B close")

    c = di.Container(reg)
    with c:
        if resolve == "through_dependencies":
            c.resolve(B)
        else:
            c.resolve(A)
            c.resolve(di.RefCounted[Conn])
            c.resolve(B)
    assert journal.events == [
        "A open",
        "conn open",
        "B open",
        "B close",
        "conn close",
        "A close",
    ]


@pytest.mark.anyio
async def test_released_in_lifo_order_with_generator_singletons_async(
    anyio_backend: str,
) -> None:
    journal = Journal()
    ctx = client_context(journal)
    rc = async_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def a() -> AsyncIterator[A]:
        journal.add("A open")
        yield A()
        await anyio.sleep(0)
        journal.add("A close")

    @reg.provider(singleton=True)
    async def api(a: A) -> di.ClientContext[Api]:
        return ctx

    @reg.provider(singleton=True)
    async def conn(api: di.ClientContext[Api]) -> di.RefCounted[Conn]:
        assert api.is_open
        return rc

    @reg.provider(singleton=True)
    async def b(conn: di.RefCounted[Conn]) -> AsyncIterator[B]:
        assert conn.is_open
        journal.add("B open")
        yield B()
        await anyio.sleep(0)
        journal.add("B close")

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c:
            await c.aresolve(B)
    assert journal.events == [
        "A open",
        "api create",
        "api open",
        "conn open",
        "B open",
        "B close",
        "conn close",
        "api close",
        "A close",
    ]


# -- concurrent first resolution enters once ---------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("what", ["client_context", "async_refcounted"])
async def test_concurrent_first_aresolve_enters_once(anyio_backend: str, what: str) -> None:
    journal = Journal()
    calls: list[str] = []
    reg = di.Registry()
    key: Any
    if what == "client_context":
        manager: Any = client_context(journal)
        key = di.ClientContext[Api]

        @reg.provider(singleton=True)
        async def api() -> di.ClientContext[Api]:
            calls.append("provider")
            await anyio.sleep(0)
            return manager  # type: ignore[no-any-return]
    else:
        manager = async_rc(journal)
        key = di.RefCounted[Conn]

        @reg.provider(singleton=True)
        async def conn() -> di.RefCounted[Conn]:
            calls.append("provider")
            await anyio.sleep(0)
            return manager  # type: ignore[no-any-return]

    c = di.Container(reg)
    got: list[Any] = []

    async def worker() -> None:
        got.append(await c.aresolve(key))

    with anyio.fail_after(TIMEOUT):
        async with c:
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(worker)
            state = (manager.is_open, manager.ref_count)
            opens = journal.count("api open") + journal.count("conn open")
    assert len(got) == 100
    assert all(g is manager for g in got)
    assert calls == ["provider"]
    assert opens == 1
    assert state == (True, 1)
    assert journal.count("api close") + journal.count("conn close") == 1
    assert (manager.is_open, manager.ref_count) == (False, 0)


def test_concurrent_first_resolve_from_16_threads_enters_once() -> None:
    journal = Journal()
    rc = sync_rc(journal)
    calls: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        calls.append("provider")
        time.sleep(0)
        return rc

    c = di.Container(reg)
    barrier = threading.Barrier(16)
    got: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(TIMEOUT)
            got.append(c.resolve(di.RefCounted[Conn]))
        except BaseException as exc:
            errors.append(exc)

    with c:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        stuck = [t for t in threads if t.is_alive()]
        state = (rc.is_open, rc.ref_count)
    assert not stuck, f"{len(stuck)} thread(s) deadlocked"
    assert errors == []
    assert len(got) == 16 and all(g is rc for g in got)
    assert calls == ["provider"]
    assert state == (True, 1)
    assert journal.events == ["conn open", "conn close"]


def test_concurrent_first_aresolve_from_several_event_loops_and_trio_enters_once() -> None:
    # Six threads run their own asyncio loop and two run trio, 20 tasks each,
    # all asking for the same async singleton at once.
    journal = Journal()
    rc = async_rc(journal)
    calls: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def conn() -> di.RefCounted[Conn]:
        calls.append("provider")
        await anyio.sleep(0)
        return rc

    c = di.Container(reg)
    barrier = threading.Barrier(8)
    got: list[Any] = []
    errors: list[BaseException] = []

    async def many() -> None:
        async def one() -> None:
            got.append(await c.aresolve(di.RefCounted[Conn]))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)

    def in_asyncio() -> None:
        try:
            barrier.wait(TIMEOUT)
            run_asyncio(many)
        except BaseException as exc:
            errors.append(exc)

    def in_trio() -> None:
        async def bounded() -> None:
            with trio.fail_after(TIMEOUT):
                await many()

        try:
            barrier.wait(TIMEOUT)
            trio.run(bounded)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=in_asyncio, daemon=True) for _ in range(6)]
    threads += [threading.Thread(target=in_trio, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    stuck = [t for t in threads if t.is_alive()]
    state = (rc.is_open, rc.ref_count)
    run_asyncio(c.aclose)
    assert not stuck, f"{len(stuck)} thread(s) deadlocked"
    assert errors == []
    assert len(got) == 160 and all(g is rc for g in got)
    assert calls == ["provider"]
    assert state == (True, 1)
    assert journal.events == ["conn open", "conn close"]


# -- shared with user code --------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("last", ["user", "container"])
async def test_shared_refcounted_stays_open_until_both_release(
    anyio_backend: str, last: str
) -> None:
    journal = Journal()
    rc = async_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    user_in = anyio.Event()
    user_may_leave = anyio.Event()
    user_left = anyio.Event()
    seen: dict[str, Any] = {}

    async def user() -> None:
        async with rc as res:
            seen["user resource"] = res
            user_in.set()
            await user_may_leave.wait()
        user_left.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            if last == "user":
                tg.start_soon(user)
                await user_in.wait()
                async with c:
                    got = await c.aresolve(di.RefCounted[Conn])
                    seen["both hold"] = (got is rc, rc.ref_count, got.resource)
                seen["container left"] = (rc.is_open, rc.ref_count, journal.count("conn close"))
                user_may_leave.set()
                await user_left.wait()
            else:
                async with c:
                    got = await c.aresolve(di.RefCounted[Conn])
                    tg.start_soon(user)
                    await user_in.wait()
                    seen["both hold"] = (got is rc, rc.ref_count, got.resource)
                    user_may_leave.set()
                    await user_left.wait()
                    seen["user left"] = (rc.is_open, rc.ref_count, journal.count("conn close"))
    assert seen["both hold"] == (True, 2, seen["user resource"])
    if last == "user":
        assert seen["container left"] == (True, 1, 0)
    else:
        assert seen["user left"] == (True, 1, 0)
    assert journal.events == ["conn open", "conn close"]
    assert (rc.is_open, rc.ref_count) == (False, 0)


def test_shared_refcounted_sync_user_outlives_the_container() -> None:
    journal = Journal()
    rc = sync_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    with rc as mine:
        with c:
            got = c.resolve(di.RefCounted[Conn])
            both = (got.resource is mine, rc.ref_count)
        after_container = (rc.is_open, rc.ref_count, list(journal.events))
    assert both == (True, 2)
    assert after_container == (True, 1, ["conn open"])
    assert journal.events == ["conn open", "conn close"]


# -- reopened after the container closes ------------------------------------------------------


@pytest.mark.parametrize("provider_returns", ["a_new_manager", "the_same_manager"])
def test_reentered_container_opens_a_fresh_resource(provider_returns: str) -> None:
    journal = Journal()
    shared = sync_rc(journal)
    calls: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        calls.append("provider")
        return sync_rc(journal) if provider_returns == "a_new_manager" else shared

    c = di.Container(reg)
    with c:
        first = c.resolve(di.RefCounted[Conn])
        first_res = first.resource
    between = (first.is_open, first.ref_count, list(journal.events))
    with c:
        second = c.resolve(di.RefCounted[Conn])
        second_state = (second.is_open, second.ref_count, second.resource is first_res)
    assert between == (False, 0, ["conn open", "conn close"])
    assert second_state == (True, 1, False)
    assert (second is first) == (provider_returns == "the_same_manager")
    assert calls == ["provider", "provider"]
    assert journal.events == ["conn open", "conn close", "conn open", "conn close"]
    assert (second.is_open, second.ref_count) == (False, 0)


def test_resolve_after_close_opens_a_fresh_resource() -> None:
    journal = Journal()
    rc = sync_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        return rc

    c = di.Container(reg)
    first = c.resolve(di.RefCounted[Conn]).resource
    c.close()
    second = c.resolve(di.RefCounted[Conn]).resource
    reopened = (rc.is_open, rc.ref_count, second is first)
    c.close()
    assert reopened == (True, 1, False)
    assert journal.events == ["conn open", "conn close", "conn open", "conn close"]


@pytest.mark.anyio
async def test_reentered_container_builds_a_fresh_client(anyio_backend: str) -> None:
    journal = Journal()
    ctx = client_context(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def api() -> di.ClientContext[Api]:
        return ctx

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c:
            first = (await c.aresolve(di.ClientContext[Api])).client
        between = (ctx.is_open, ctx.ref_count, first.closes)
        async with c:
            got = await c.aresolve(di.ClientContext[Api])
            second = got.client
            state = (got is ctx, ctx.is_open, ctx.ref_count, second is first, second.initialized)
    assert between == (False, 0, 1)
    assert state == (True, True, 1, False, True)
    assert (first.closes, second.closes) == (1, 1)
    assert journal.events == ["api create", "api open", "api close"] * 2


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["transient", "singleton"])
@pytest.mark.parametrize("dependent_first", [True, False])
async def test_aresolve_enters_an_async_refcounted_reached_as_a_dependency(
    anyio_backend: str, shape: str, dependent_first: bool
) -> None:
    """A plain `def` returning a RefCounted with an async open: under
    aresolve it is entered with `async with` whichever key is resolved first,
    by the interpreted first resolve and by the generated plans alike."""
    journal = Journal()
    rc = async_rc(journal)
    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> di.RefCounted[Conn]:
        return rc

    class Handler:
        def __init__(self, conn: di.RefCounted[Conn]) -> None:
            self.conn = conn

    reg.register(Handler, Handler, singleton=shape == "singleton")
    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c:
            if not dependent_first:
                assert await c.aresolve(di.RefCounted[Conn]) is rc
            handlers = [await c.aresolve(Handler) for _ in range(3)]
            assert all(h.conn is rc for h in handlers)
            assert (rc.is_open, rc.ref_count) == (True, 1)
    assert journal.events == ["conn open", "conn close"]


# -- a failed creation in a checkpoint a forced shutdown tore down meanwhile ----


class Entered:
    pass


class NeedsEntered:
    def __init__(self, entered: Entered) -> None:
        self.entered = entered  # pragma: no cover - its factory raises


class CreationFailed(Exception):
    pass


@pytest.mark.parametrize("shape", ["scoped", "transient, generated", "transient, first use"])
def test_failed_creation_in_a_request_torn_down_meanwhile_unwinds_what_it_entered(
    shape: str,
) -> None:
    """A thread holding a request is inside the setup of Entered (a transient
    generator) when the container's last exit gives up waiting and tears the
    request down; then NeedsEntered's factory raises. Entered was pushed onto
    the torn-down request's exit list, which nobody unwinds again: the failed
    resolve unwinds it at once and says the request closed (the factory's
    error as its context), whether the plan is generated or interpreted."""
    log: list[str] = []
    slow, in_setup, go = threading.Event(), threading.Event(), threading.Event()
    reg = di.Registry()

    @reg.provider()
    def entered() -> Iterator[Entered]:
        log.append("setup")
        if slow.is_set():
            in_setup.set()
            assert go.wait(TIMEOUT)
        yield Entered()
        log.append("teardown")

    @reg.provider(scope="request" if shape == "scoped" else None)
    def needs_entered(entered: Entered) -> NeedsEntered:
        raise CreationFailed

    c = di.Container(reg, shutdown_timeout=0.05)
    outcome: list[BaseException] = []

    def held(scope: di.Checkpoint) -> None:
        with scope.hold():
            try:
                scope.resolve(NeedsEntered)
            except BaseException as exc:
                outcome.append(exc)

    with c:
        if shape == "transient, generated":
            # The first resolve is interpreted; the next one runs generated code.
            with c.scope("request") as warm, pytest.raises(CreationFailed):
                warm.resolve(NeedsEntered)
            assert log == ["setup", "teardown"]
            log.clear()
        slow.set()
        with c.scope("request") as scope:
            worker = threading.Thread(target=held, args=(scope,), daemon=True)
            worker.start()
            assert in_setup.wait(TIMEOUT)
    # The last exit waited shutdown_timeout for the holder, then tore it down.
    assert scope.closed and not c.is_open
    go.set()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert log == ["setup", "teardown"]
    assert len(outcome) == 1 and isinstance(outcome[0], di.CheckpointClosedError), outcome
    assert isinstance(outcome[0].__context__, CreationFailed)


@pytest.mark.parametrize("shape", ["scoped", "transient"])
def test_failed_async_creation_in_a_request_torn_down_meanwhile_unwinds_what_it_entered(
    shape: str,
) -> None:
    """The aresolve twin, with an async generator: a task holding the request
    is inside Entered's setup when the container's last ``async with`` exit
    tears the request down, then NeedsEntered's factory raises."""
    log: list[str] = []
    reg = di.Registry()
    slow = False
    in_setup: asyncio.Event
    go: asyncio.Event

    @reg.provider()
    async def entered() -> AsyncIterator[Entered]:
        log.append("setup")
        if slow:
            in_setup.set()
            await go.wait()
        yield Entered()
        log.append("teardown")

    @reg.provider(scope="request" if shape == "scoped" else None)
    def needs_entered(entered: Entered) -> NeedsEntered:
        raise CreationFailed

    c = di.Container(reg, shutdown_timeout=0.05)
    outcome: list[BaseException] = []

    async def main() -> None:
        nonlocal slow, in_setup, go
        in_setup, go = asyncio.Event(), asyncio.Event()

        async def held(scope: di.Checkpoint) -> None:
            async with scope.hold():
                try:
                    await scope.aresolve(NeedsEntered)
                except BaseException as exc:
                    outcome.append(exc)

        async with c:
            # Once, so that the plan is generated and cached before the race.
            async with c.scope("request") as warm:
                with pytest.raises(CreationFailed):
                    await warm.aresolve(NeedsEntered)
            assert log == ["setup", "teardown"]
            log.clear()
            slow = True
            async with c.scope("request") as scope:
                worker = asyncio.create_task(held(scope))
                await asyncio.wait_for(in_setup.wait(), TIMEOUT)
        assert scope.closed and not c.is_open
        go.set()
        await asyncio.wait_for(worker, TIMEOUT)

    asyncio.run(main())
    assert log == ["setup", "teardown"]
    assert len(outcome) == 1 and isinstance(outcome[0], di.CheckpointClosedError), outcome
    assert isinstance(outcome[0].__context__, CreationFailed)


@pytest.mark.parametrize("shape", ["scoped", "transient, generated", "transient, first use"])
def test_generator_set_up_in_a_request_torn_down_meanwhile_is_unwound_and_refused(
    shape: str,
) -> None:
    """The generator provider resolved is itself in its setup when the
    container's last exit tears the held request down. Its setup then
    finishes: the resolve finalizes it at once and says the request closed,
    and nothing is stored or left registered."""
    log: list[str] = []
    slow, in_setup, go = threading.Event(), threading.Event(), threading.Event()
    reg = di.Registry()

    @reg.provider(scope="request" if shape == "scoped" else None)
    def entered() -> Iterator[Entered]:
        log.append("setup")
        if slow.is_set():
            in_setup.set()
            assert go.wait(TIMEOUT)
        yield Entered()
        log.append("teardown")

    c = di.Container(reg, shutdown_timeout=0.05)
    outcome: list[object] = []

    def held(scope: di.Checkpoint) -> None:
        with scope.hold():
            try:
                outcome.append(scope.resolve(Entered))
            except BaseException as exc:
                outcome.append(exc)

    with c:
        if shape != "transient, first use":
            with c.scope("request") as warm:  # the next resolve runs generated code
                warm.resolve(Entered)
                if shape != "scoped":
                    warm.resolve(Entered)
            twice = shape != "scoped"
            assert log == (
                ["setup", "setup", "teardown", "teardown"] if twice else ["setup", "teardown"]
            )
            log.clear()
        slow.set()
        with c.scope("request") as scope:
            worker = threading.Thread(target=held, args=(scope,), daemon=True)
            worker.start()
            assert in_setup.wait(TIMEOUT)
    assert scope.closed and not c.is_open
    go.set()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert log == ["setup", "teardown"]
    assert [type(o) for o in outcome] == [di.CheckpointClosedError], outcome
    assert Entered not in dict.keys(scope)


@pytest.mark.parametrize("shape", ["scoped", "transient"])
def test_async_generator_set_up_in_a_request_torn_down_meanwhile_is_unwound_and_refused(
    shape: str,
) -> None:
    """The aresolve twin, with an async generator provider."""
    log: list[str] = []
    reg = di.Registry()
    slow = False
    in_setup: asyncio.Event
    go: asyncio.Event

    @reg.provider(scope="request" if shape == "scoped" else None)
    async def entered() -> AsyncIterator[Entered]:
        log.append("setup")
        if slow:
            in_setup.set()
            await go.wait()
        yield Entered()
        log.append("teardown")

    c = di.Container(reg, shutdown_timeout=0.05)
    outcome: list[object] = []

    async def main() -> None:
        nonlocal slow, in_setup, go
        in_setup, go = asyncio.Event(), asyncio.Event()

        async def held(scope: di.Checkpoint) -> None:
            async with scope.hold():
                try:
                    outcome.append(await scope.aresolve(Entered))
                except BaseException as exc:
                    outcome.append(exc)

        async with c:
            async with c.scope("request") as warm:
                await warm.aresolve(Entered)
            assert log == ["setup", "teardown"]
            log.clear()
            slow = True
            async with c.scope("request") as scope:
                worker = asyncio.create_task(held(scope))
                await asyncio.wait_for(in_setup.wait(), TIMEOUT)
        assert scope.closed and not c.is_open
        go.set()
        await asyncio.wait_for(worker, TIMEOUT)
        assert Entered not in dict.keys(scope)

    asyncio.run(main())
    assert log == ["setup", "teardown"]
    assert [type(o) for o in outcome] == [di.CheckpointClosedError], outcome


# -- closes: what a teardown makes, holders that enter, scopes of the caller ----


class ClosePool:
    """A singleton other resources use."""

    closed = False


class CloseLate:
    """A singleton first made while the container closes."""


class CloseSession:
    pass


class CloseReq:
    def __init__(self, pool: ClosePool) -> None:
        self.pool = pool


class CloseAsyncReq:
    pass


def _closing_registry(log: list[str]) -> di.Registry:
    """ClosePool (singleton), CloseSession (session), CloseReq (request,
    needs ClosePool): generators that record their teardown, and whether the
    pool was already closed when a request's teardown ran."""
    reg = di.Registry()

    @reg.provider(singleton=True)
    def pool() -> Iterator[ClosePool]:
        made = ClosePool()
        log.append("pool open")
        try:
            yield made
        finally:  # also when a later teardown's error is thrown in
            made.closed = True
            log.append("pool close")

    @reg.provider(scope="session")
    def session() -> Iterator[CloseSession]:
        yield CloseSession()
        log.append("session close")

    @reg.provider(scope="request")
    def req(pool: ClosePool) -> Iterator[CloseReq]:
        yield CloseReq(pool)
        log.append("req close, pool already closed" if pool.closed else "req close")

    return reg


class _OnCloseWaiting(logging.Handler):
    """Calls ``then`` once a close of a container starts waiting for held
    checkpoints (the ``di`` logger's DEBUG record); a context manager that
    installs itself on that logger."""

    def __init__(self, then: Callable[[], object]) -> None:
        super().__init__(logging.DEBUG)
        self.then = then

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("shutdown: waiting"):
            self.then()

    def __enter__(self) -> None:
        logger = logging.getLogger("di")
        self.saved = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("di")
        logger.removeHandler(self)
        logger.setLevel(self.saved)


def _forced_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "tearing it down" in r.getMessage()]


def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    # Another test module turns the di logger down for the whole session.
    caplog.set_level(logging.WARNING, logger="di")


# A singleton first made by another singleton's teardown during the close.


@pytest.mark.parametrize("closer", ["last exit", "close()"])
def test_a_singleton_a_teardown_makes_during_the_close_is_closed_by_that_close(
    closer: str,
) -> None:
    """Like ExitStack, whose callbacks pushed while it unwinds run too: CloseLate,
    first resolved by A's teardown, is closed by the same close, right after A
    (LIFO: it was made after ClosePool), and a reopened container makes a fresh
    one while none is open."""
    log: list[str] = []
    reg = _closing_registry(log)

    @reg.provider(singleton=True)
    def late() -> Iterator[CloseLate]:
        log.append("late open")
        yield CloseLate()
        log.append("late close")

    @reg.provider(singleton=True)
    def a() -> Iterator[A]:
        log.append("a open")
        yield A()
        log.append("a close")
        made.append(c.resolve(CloseLate))  # a flush, a final report...

    c = di.Container(reg)
    made: list[CloseLate] = []
    if closer == "last exit":
        with c:
            c.resolve(ClosePool)
            c.resolve(A)
    else:
        c.resolve(ClosePool)
        c.resolve(A)
        c.close()
    assert log == ["pool open", "a open", "a close", "late open", "late close", "pool close"]
    assert not c.is_open
    log.clear()
    with c:
        again = c.resolve(CloseLate)
        assert again is not made[0] and log == ["late open"]
    assert log == ["late open", "late close"]


@pytest.mark.anyio
@pytest.mark.parametrize("closer", ["last exit", "aclose()"])
async def test_a_singleton_an_async_teardown_makes_during_the_close_is_closed_by_it(
    anyio_backend: str, closer: str
) -> None:
    """The async close unwinds the same way: an async generator singleton made
    by an async teardown (with awaits on both sides) is closed by that close."""
    log: list[str] = []
    reg = _closing_registry(log)

    @reg.provider(singleton=True)
    async def late() -> AsyncIterator[CloseLate]:
        await anyio.sleep(0)
        log.append("late open")
        yield CloseLate()
        await anyio.sleep(0)
        log.append("late close")

    @reg.provider(singleton=True)
    async def a() -> AsyncIterator[A]:
        log.append("a open")
        yield A()
        await anyio.sleep(0)
        log.append("a close")
        await c.aresolve(CloseLate)

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        if closer == "last exit":
            async with c:
                await c.aresolve(ClosePool)
                await c.aresolve(A)
        else:
            await c.aresolve(ClosePool)
            await c.aresolve(A)
            await c.aclose()
        assert log == ["pool open", "a open", "a close", "late open", "late close", "pool close"]
        assert not c.is_open
        log.clear()
        async with c:
            await c.aresolve(CloseLate)
        assert log == ["late open", "late close"]


def test_a_singleton_another_thread_makes_during_the_close_is_closed_by_it() -> None:
    """A thread that makes a singleton while the close unwinds the root (here:
    while A's teardown runs) hands it to the list being unwound, so the close
    tears it down as well: nothing is left registered on a closed container."""
    log: list[str] = []
    go, made = threading.Event(), threading.Event()
    reg = _closing_registry(log)

    @reg.provider(singleton=True)
    def late() -> Iterator[CloseLate]:
        log.append("late open")
        yield CloseLate()
        log.append("late close")

    @reg.provider(singleton=True)
    def a() -> Iterator[A]:
        yield A()
        go.set()
        assert made.wait(TIMEOUT)  # the other thread's singleton is handed over
        log.append("a close")

    c = di.Container(reg)
    got: list[object] = []

    def other() -> None:
        assert go.wait(TIMEOUT)
        try:
            got.append(c.resolve(CloseLate))
        finally:
            made.set()

    worker = threading.Thread(target=other, daemon=True)
    worker.start()
    with c:
        c.resolve(ClosePool)
        c.resolve(A)
    worker.join(TIMEOUT)
    assert not worker.is_alive() and isinstance(got[0], CloseLate)
    assert log == ["pool open", "late open", "a close", "late close", "pool close"]
    assert not c.is_open
    log.clear()
    with c:
        assert c.resolve(CloseLate) is not got[0]
    assert log == ["late open", "late close"]


# Work that holds a checkpoint and enters the container while a close waits for it.


@pytest.mark.parametrize("closer", ["last exit", "close()"])
def test_a_holder_thread_entering_the_container_while_the_close_waits_does_not_deadlock(
    closer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The close waits for the held request; the holder enters the container
    meanwhile, resolves, leaves: neither waits for the other until
    shutdown_timeout, nothing is forced, the holder's request is intact, and
    the shutdown order stays: the held request first, then the singletons."""
    _capture_warnings(caplog)
    log: list[str] = []
    c = di.Container(_closing_registry(log), shutdown_timeout=TIMEOUT)
    waiting, holding = threading.Event(), threading.Event()
    outcome: list[object] = []

    def work(scope: di.Checkpoint) -> None:
        with scope.hold():
            holding.set()
            assert waiting.wait(TIMEOUT)
            with c:
                try:
                    outcome.append(scope.resolve(CloseReq))
                except BaseException as exc:
                    outcome.append(exc)

    with _OnCloseWaiting(waiting.set):
        if closer == "last exit":
            with c, c.scope("request") as scope:
                worker = threading.Thread(target=work, args=(scope,), daemon=True)
                worker.start()
                assert holding.wait(TIMEOUT)
        else:
            with c.scope("request") as scope:
                worker = threading.Thread(target=work, args=(scope,), daemon=True)
                worker.start()
                assert holding.wait(TIMEOUT)
            c.close()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert isinstance(outcome[0], CloseReq), outcome
    assert log == ["pool open", "req close", "pool close"]
    assert not c.is_open and scope.closed and c.ref_count == 0
    assert not _forced_warnings(caplog)


def test_a_close_defers_to_a_block_that_entered_the_container_while_it_waited() -> None:
    """A block that enters while the close waits for a holder holds the
    container: when the wait ends the close leaves it open (nothing torn
    down but the request its holder left), and that block's last exit
    closes it."""
    log: list[str] = []
    c = di.Container(_closing_registry(log), shutdown_timeout=TIMEOUT)
    waiting, holding, release, leave = (threading.Event() for _ in range(4))

    def holder(scope: di.Checkpoint) -> None:
        with scope.hold():
            holding.set()
            assert release.wait(TIMEOUT)

    def user() -> None:
        assert waiting.wait(TIMEOUT)
        with c:
            c.resolve(ClosePool)
            release.set()  # the holder lets go: the close is done waiting
            assert leave.wait(TIMEOUT)

    users = threading.Thread(target=user, daemon=True)
    users.start()
    with _OnCloseWaiting(waiting.set), c, c.scope("request") as scope:
        scope.resolve(CloseReq)
        holders = threading.Thread(target=holder, args=(scope,), daemon=True)
        holders.start()
        assert holding.wait(TIMEOUT)
    holders.join(TIMEOUT)
    assert not holders.is_alive() and scope.closed
    assert c.is_open and c.ref_count == 1 and log == ["pool open", "req close"]
    leave.set()
    users.join(TIMEOUT)
    assert not users.is_alive()
    assert log == ["pool open", "req close", "pool close"] and not c.is_open


@pytest.mark.anyio
@pytest.mark.parametrize("closer", ["last exit", "aclose()"])
async def test_a_holder_task_entering_the_container_while_the_close_waits_does_not_deadlock(
    anyio_backend: str, closer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The task twin (asyncio and trio, a nursery task holding the request):
    the holder's `async with container` gets in while the close waits, and the
    close finishes once the holder lets go, in the documented order."""
    _capture_warnings(caplog)
    log: list[str] = []
    c = di.Container(_closing_registry(log), shutdown_timeout=TIMEOUT)
    waiting = anyio.Event()
    outcome: list[object] = []

    async def work(scope: di.Checkpoint, *, task_status: Any) -> None:
        async with scope.hold():
            task_status.started()
            await waiting.wait()
            async with c:
                try:
                    outcome.append(await scope.aresolve(CloseReq))
                except BaseException as exc:
                    outcome.append(exc)

    with anyio.fail_after(TIMEOUT), _OnCloseWaiting(waiting.set):
        async with anyio.create_task_group() as tg:
            if closer == "last exit":
                async with c, c.scope("request") as scope:
                    await tg.start(work, scope)
            else:
                async with c.scope("request") as scope:
                    await tg.start(work, scope)
                await c.aclose()
            closed = (c.is_open, scope.closed)
    assert closed == (False, True)
    assert isinstance(outcome[0], CloseReq), outcome
    assert log == ["pool open", "req close", "pool close"]
    assert not _forced_warnings(caplog)


def test_a_spawned_task_entering_the_container_while_the_close_waits_does_not_deadlock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """spawn(): the spawned task holds the request and enters the container."""
    _capture_warnings(caplog)
    log: list[str] = []
    c = di.Container(_closing_registry(log), shutdown_timeout=TIMEOUT)
    outcome: list[object] = []

    async def main() -> None:
        waiting = asyncio.Event()

        async def work(scope: di.Checkpoint) -> None:
            await waiting.wait()
            async with c:
                outcome.append(await scope.aresolve(CloseReq))

        with _OnCloseWaiting(waiting.set):
            async with c, c.scope("request") as scope:
                task = scope.spawn(work(scope))
            assert task.done() and not c.is_open and scope.closed
        await task

    run_asyncio(main)
    assert isinstance(outcome[0], CloseReq)
    assert log == ["pool open", "req close", "pool close"]
    assert not _forced_warnings(caplog)


# close() inside one of the container's own scopes.


@pytest.mark.parametrize("inside", ["the scope's block", "a hold() in a thread"])
def test_close_inside_its_own_scope_is_refused_and_closes_nothing(inside: str) -> None:
    """The request uses the pool: closing the singletons under it would tear
    them down before it (and make them again on its next resolve). Refused,
    as the container's last exit there is; once the scope is left, close()
    works, in LIFO order."""
    log: list[str] = []
    c = di.Container(_closing_registry(log))
    errors: list[BaseException] = []

    def close_here() -> None:
        try:
            c.close()
        except di.ScopeError as exc:
            errors.append(exc)

    def held(scope: di.Checkpoint) -> None:
        with scope.hold():
            close_here()

    with c.scope("request") as scope:
        req = scope.resolve(CloseReq)
        if inside == "a hold() in a thread":
            worker = threading.Thread(target=held, args=(scope,), daemon=True)
            worker.start()
            worker.join(TIMEOUT)
            assert not worker.is_alive()
        else:
            close_here()
        assert scope.resolve(ClosePool) is req.pool and not req.pool.closed
    assert len(errors) == 1 and "leave the scope" in str(errors[0]), errors
    assert log == ["pool open", "req close"]
    c.close()
    assert log == ["pool open", "req close", "pool close"] and not c.is_open


@pytest.mark.anyio
async def test_aclose_inside_its_own_scope_is_refused_and_closes_nothing(
    anyio_backend: str,
) -> None:
    log: list[str] = []
    c = di.Container(_closing_registry(log))
    with anyio.fail_after(TIMEOUT):
        async with c.scope("request") as scope:
            req = await scope.aresolve(CloseReq)
            with pytest.raises(di.ScopeError, match=r"aclose\(\) was called while .*leave the"):
                await c.aclose()
            assert await scope.aresolve(ClosePool) is req.pool and not req.pool.closed
        await c.aclose()
    assert log == ["pool open", "req close", "pool close"] and not c.is_open


@pytest.mark.parametrize("inside", ["nested scopes", "a hold()"])
def test_a_forced_close_inside_its_own_scopes_tears_them_down_before_the_singletons(
    inside: str, caplog: pytest.LogCaptureFixture
) -> None:
    """DESIGN.md: held checkpoints are torn down, and only then singletons. The
    caller's own scopes cannot be waited for (it is inside them), so a forced
    close tears them down first, deepest first, with a warning; the blocks
    still running in them then find them closed and leave quietly."""
    _capture_warnings(caplog)
    log: list[str] = []
    c = di.Container(_closing_registry(log))
    with c, c.scope("session") as session:
        session.resolve(CloseSession)
        with c.scope("request") as scope:
            if inside == "a hold()":
                with scope.hold():
                    scope.resolve(CloseReq)
                    c.close(force=True)
            else:
                scope.resolve(CloseReq)
                c.close(force=True)
            assert scope.closed and session.closed and not c.is_open
            with pytest.raises(di.CheckpointClosedError):
                scope.resolve(CloseReq)
    assert log == ["pool open", "req close", "session close", "pool close"]
    forced = [
        r.getMessage() for r in caplog.records if "close(force=True) was called" in r.getMessage()
    ]
    assert len(forced) == 2, forced
    with c:  # usable again
        assert not c.resolve(ClosePool).closed
    assert log[-2:] == ["pool open", "pool close"]


@pytest.mark.anyio
async def test_a_forced_aclose_inside_its_own_scope_tears_it_down_before_the_singletons(
    anyio_backend: str,
) -> None:
    log: list[str] = []
    reg = _closing_registry(log)

    @reg.provider(scope="request")
    async def res(pool: ClosePool) -> AsyncIterator[CloseAsyncReq]:
        yield CloseAsyncReq()
        await anyio.sleep(0)
        log.append("async req close, pool already closed" if pool.closed else "async req close")

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT):
        async with c, c.scope("request") as scope:
            await scope.aresolve(CloseAsyncReq)
            await c.aclose(force=True)
            assert scope.closed and not c.is_open
    assert log == ["pool open", "async req close", "pool close"]


# A teardown that enters or closes the container during that container's own close.


def _close_in_a_worker(c: di.Container, closer: str, timeout: float) -> list[BaseException]:
    """Open ClosePool and A, then close ``c`` by its last exit or close(), in a
    thread; what the close raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if closer == "last exit":
                with c:
                    c.resolve(ClosePool)
                    c.resolve(A)
            else:
                c.resolve(ClosePool)
                c.resolve(A)
                c.close()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive()
    return errors


@pytest.mark.parametrize("closer", ["last exit", "close()"])
@pytest.mark.parametrize("call", ["close()", "with container"])
def test_entering_or_closing_from_a_teardown_of_the_sync_close_says_so(
    closer: str, call: str
) -> None:
    """In a plain thread (no event loop anywhere): a clear ScopeError naming
    this thread's own close, not an async close in an event loop; the close
    still runs every teardown and leaves the container closed."""
    log: list[str] = []
    reg = _closing_registry(log)

    @reg.provider(singleton=True)
    def a() -> Iterator[A]:
        yield A()
        log.append("a close")
        if call == "close()":
            c.close()
        else:
            with c:
                pass  # pragma: no cover - refused

    c = di.Container(reg)
    errors = _close_in_a_worker(c, closer, TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], di.ScopeError), errors
    message = str(errors[0])
    assert "own close is running (in this same thread)" in message, message
    assert "event loop" not in message
    assert log == ["pool open", "a close", "pool close"] and not c.is_open


@pytest.mark.anyio
@pytest.mark.parametrize("closer", ["last exit", "aclose()"])
@pytest.mark.parametrize(
    "call", ["await aclose()", "async with container", "close() from a sync teardown"]
)
async def test_entering_or_closing_from_a_teardown_of_the_async_close_says_so(
    anyio_backend: str, closer: str, call: str
) -> None:
    """Under asyncio and trio: a ScopeError naming this task's own close, not
    aiologic's bare RuntimeError; the close still finishes."""
    log: list[str] = []
    reg = _closing_registry(log)

    if call == "close() from a sync teardown":

        @reg.provider(singleton=True)
        def a() -> Iterator[A]:
            yield A()
            log.append("a close")
            c.close()

    else:

        @reg.provider(singleton=True)
        async def a() -> AsyncIterator[A]:
            yield A()
            await anyio.sleep(0)
            log.append("a close")
            if call == "await aclose()":
                await c.aclose()
            else:
                async with c:
                    pass  # pragma: no cover - refused

    c = di.Container(reg)
    with anyio.fail_after(TIMEOUT), pytest.raises(di.ScopeError) as info:
        if closer == "last exit":
            async with c:
                await c.aresolve(ClosePool)
                await c.aresolve(A)
        else:
            await c.aresolve(ClosePool)
            await c.aresolve(A)
            await c.aclose()
    assert "own close is running (in this same task)" in str(info.value), info.value
    assert log == ["pool open", "a close", "pool close"] and not c.is_open


# An async singleton another thread's event loop makes while a sync close runs.


class HandoverSync:
    pass


class HandoverAsync:
    pass


class HandoverReq:
    pass


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.parametrize("when", ["while it unwinds the singletons", "just before that unwind"])
def test_an_async_singleton_made_in_another_thread_during_a_sync_close_is_never_dropped(
    when: str, loop: str
) -> None:
    """A sync close() cannot await an async generator's cleanup. One that
    another thread's `aresolve` makes while the close unwinds the singletons
    (here: while HandoverSync's teardown runs) is refused: that aresolve gets
    a CheckpointClosedError, the async cleanup of what it made runs there, and
    the close completes. One handed over just before that unwind (here: while
    the forced close tears down the caller's own request scope) makes the
    close raise AsyncProviderError and leaves the singletons open for
    `await container.aclose()`. Never an internal error, never an async exit
    popped by the sync unwind and dropped."""
    log: list[str] = []
    reached, made, go_on = threading.Event(), threading.Event(), threading.Event()
    during = when == "while it unwinds the singletons"
    reg = di.Registry()

    def hand_over() -> None:
        reached.set()
        assert made.wait(TIMEOUT)  # the other thread's aresolve is done

    @reg.provider(singleton=True)
    def sync_res() -> Iterator[HandoverSync]:
        log.append("sync open")
        yield HandoverSync()
        if during:
            hand_over()
        log.append("sync close")

    @reg.provider(scope="request")
    def req() -> Iterator[HandoverReq]:
        yield HandoverReq()
        if not during:
            hand_over()
        log.append("req close")

    @reg.provider(singleton=True)
    async def async_res() -> AsyncIterator[HandoverAsync]:
        log.append("async open")
        try:
            yield HandoverAsync()
        finally:
            await anyio.sleep(0)
            log.append("async close")

    c = di.Container(reg)
    got: list[object] = []
    later: list[BaseException] = []

    async def in_loop() -> None:
        with anyio.fail_after(TIMEOUT):
            try:
                got.append(await c.aresolve(HandoverAsync))
            except BaseException as exc:
                got.append(exc)
            made.set()
            # This loop lives on (a server's): its async generators are not
            # finalised by the loop's shutdown behind the container's back.
            assert await anyio.to_thread.run_sync(go_on.wait, TIMEOUT)
            if not during:
                try:
                    await c.aclose()
                except BaseException as exc:
                    later.append(exc)

    def other() -> None:
        assert reached.wait(TIMEOUT)
        anyio.run(in_loop, backend=loop)

    worker = threading.Thread(target=other, daemon=True)
    worker.start()
    error: BaseException | None = None
    first = c.resolve(HandoverSync)
    try:
        if during:
            c.close()
        else:
            with c.scope("request") as scope:
                scope.resolve(HandoverReq)
                c.close(force=True)
    except BaseException as exc:
        error = exc
    at_close = list(log)
    # Left open (the close raised before unwinding): still the same singleton.
    left_open = not during and c.resolve(HandoverSync) is first
    go_on.set()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    if during:
        assert error is None, repr(error)
        assert len(got) == 1 and isinstance(got[0], di.CheckpointClosedError), got
        assert at_close == ["sync open", "async open", "async close", "sync close"]
        assert log == at_close
    else:
        assert isinstance(error, di.AsyncProviderError), repr(error)
        assert "aclose()" in str(error)
        assert len(got) == 1 and isinstance(got[0], HandoverAsync), got
        assert at_close == ["sync open", "async open", "req close"] and left_open
        assert later == []  # the aclose() in the other thread's loop closes them, LIFO
        assert log == [*at_close, "async close", "sync close"]


# A forced close whose teardown waits for a worker leaving its block.


def test_a_forced_close_whose_teardown_joins_a_worker_leaving_its_with_block_finishes() -> None:
    """A worker thread is inside `with container`; a forced close tears the
    singletons down under it, and the pool's teardown stops the worker and
    joins it (a worker pool). The worker's exit drops the last reference
    while the close tears down: it leaves the closing to that close and
    returns at once, rather than waiting for the close, which waits for it."""
    log: list[str] = []
    inside, stop = threading.Event(), threading.Event()
    workers: list[threading.Thread] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def pool() -> Iterator[ClosePool]:
        yield ClosePool()
        stop.set()
        for w in workers:
            w.join(TIMEOUT)
            log.append("worker still running" if w.is_alive() else "worker joined")
        log.append("pool close")

    c = di.Container(reg)

    def work() -> None:
        with c:
            c.resolve(ClosePool)
            inside.set()
            assert stop.wait(TIMEOUT)
        log.append("worker left")

    c.resolve(ClosePool)
    workers.append(threading.Thread(target=work, daemon=True))
    workers[0].start()
    assert inside.wait(TIMEOUT)
    closing = threading.Thread(target=c.close, kwargs={"force": True}, daemon=True)
    closing.start()
    closing.join(2 * TIMEOUT)  # the teardown's own join is bounded by TIMEOUT
    assert not closing.is_alive()
    workers[0].join(TIMEOUT)
    assert not workers[0].is_alive()
    assert log == ["worker left", "worker joined", "pool close"]
    assert not c.is_open and c.ref_count == 0


@pytest.mark.anyio
async def test_a_forced_aclose_whose_teardown_awaits_a_task_leaving_its_async_with_finishes(
    anyio_backend: str,
) -> None:
    """The task twin, under asyncio and trio: aclose(force=True) while a task
    is inside `async with container`, and the pool's async teardown stops that
    task and waits for it. The task's `async with` exit returns at once while
    the close tears down."""
    log: list[str] = []
    inside, stop, left = anyio.Event(), anyio.Event(), anyio.Event()
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def pool() -> AsyncIterator[ClosePool]:
        yield ClosePool()
        stop.set()
        with anyio.move_on_after(TIMEOUT):
            await left.wait()
        log.append("worker left" if left.is_set() else "worker still inside")
        log.append("pool close")

    c = di.Container(reg)

    async def work() -> None:
        async with c:
            await c.aresolve(ClosePool)
            inside.set()
            await stop.wait()
        left.set()

    with anyio.fail_after(2 * TIMEOUT):
        await c.aresolve(ClosePool)
        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await inside.wait()
            await c.aclose(force=True)
    assert log == ["worker left", "pool close"]
    assert not c.is_open and c.ref_count == 0


# An event loop that a teardown of the sync close runs enters or closes the container.


@pytest.mark.parametrize("runner", ["asyncio", "trio"])
@pytest.mark.parametrize("closer", ["last exit", "close()"])
@pytest.mark.parametrize("call", ["async with container", "await aclose()"])
def test_entering_or_closing_from_an_event_loop_a_teardown_of_the_sync_close_runs_says_so(
    runner: str, closer: str, call: str
) -> None:
    """A sync teardown that flushes through a short event loop of its own
    (`asyncio.run`, `trio.run`) whose code does `async with container` or
    `await container.aclose()`: this thread's own close holds the container,
    so waiting for it would hang. A ScopeError names that close; the close
    still runs every teardown and leaves the container closed."""
    log: list[str] = []
    reg = _closing_registry(log)
    outcome: list[BaseException] = []

    @reg.provider(singleton=True)
    def a() -> Iterator[A]:
        yield A()
        log.append("a close")

        async def flush() -> None:
            with anyio.fail_after(TIMEOUT):
                if call == "await aclose()":
                    await c.aclose()
                else:
                    async with c:
                        pass  # pragma: no cover - refused

        try:
            anyio.run(flush, backend=runner)
        except BaseException as exc:
            outcome.append(exc)

    c = di.Container(reg)
    # the teardown's own wait is bounded by TIMEOUT
    errors = _close_in_a_worker(c, closer, 2 * TIMEOUT)
    assert errors == []
    assert len(outcome) == 1 and isinstance(outcome[0], di.ScopeError), outcome
    message = str(outcome[0])
    assert "own close is running (in this same thread)" in message, message
    assert log == ["pool open", "a close", "pool close"] and not c.is_open


class _Older:
    pass


class _Newer:
    closed = False


def test_a_singleton_torn_down_by_the_close_is_not_served_by_a_later_teardown() -> None:
    # B is newer: the close tears it down first, then A's teardown resolves B.
    A, B = _Older, _Newer
    reg = di.Registry()
    seen: list[_Newer] = []

    @reg.provider(singleton=True)
    def a() -> Iterator[_Older]:
        yield A()
        seen.append(c.resolve(B))

    @reg.provider(singleton=True)
    def b() -> Iterator[_Newer]:
        made = B()
        yield made
        made.closed = True

    c = di.Container(reg)
    with c:
        c.resolve(A)
        first = c.resolve(B)
    assert first.closed
    # a fresh B, made during the close and closed by it (it is the newest)
    assert len(seen) == 1 and seen[0] is not first and seen[0].closed
    assert not c.is_open


def test_a_singleton_torn_down_by_the_close_is_not_served_to_another_thread() -> None:
    A, B = _Older, _Newer
    reg = di.Registry()
    in_a_teardown, checked = threading.Event(), threading.Event()

    @reg.provider(singleton=True)
    def a() -> Iterator[_Older]:
        yield A()
        in_a_teardown.set()
        assert checked.wait(10)

    @reg.provider(singleton=True)
    def b() -> Iterator[_Newer]:
        made = B()
        yield made
        made.closed = True

    c = di.Container(reg)
    got: list[object] = []

    def other() -> None:
        assert in_a_teardown.wait(10)
        try:
            got.append(c.resolve(B))
        except di.DIError as exc:  # a closed container may refuse: never serve the old one
            got.append(exc)
        checked.set()

    thread = threading.Thread(target=other)
    thread.start()
    with c:
        c.resolve(A)
        first = c.resolve(B)
    thread.join(10)
    assert len(got) == 1 and got[0] is not first
    assert not isinstance(got[0], B) or got[0].closed  # closed by this close, if made


class _Third:
    closed = False


def test_a_singleton_made_during_the_close_is_not_served_once_that_close_closed_it() -> None:
    # C's teardown (first) makes N; the close closes N next (newest); A's
    # teardown (last) resolves N again and must not get the closed one.
    reg = di.Registry()
    got: list[_Third] = []

    @reg.provider(singleton=True)
    def older() -> Iterator[_Older]:
        yield _Older()
        got.append(c.resolve(_Third))

    @reg.provider(singleton=True)
    def newer() -> Iterator[_Newer]:
        yield _Newer()
        got.append(c.resolve(_Third))

    @reg.provider(singleton=True)
    def third() -> Iterator[_Third]:
        made = _Third()
        yield made
        made.closed = True

    c = di.Container(reg)
    with c:
        c.resolve(_Older)
        c.resolve(_Newer)
    assert len(got) == 2 and got[0] is not got[1]
    assert not any(t is got[0] for t in got[1:])  # the closed one was not served again
    assert all(t.closed for t in got)  # each closed by this close


def test_an_override_ending_during_the_close_does_not_bring_back_a_torn_down_singleton() -> None:
    reg = di.Registry()
    end_override, override_ended = threading.Event(), threading.Event()
    got: list[_Newer] = []

    @reg.provider(singleton=True)
    def older() -> Iterator[_Older]:  # made first: torn down last
        yield _Older()
        end_override.set()
        assert override_ended.wait(10)
        got.append(c.resolve(_Newer))

    @reg.provider(singleton=True)
    def newer() -> Iterator[_Newer]:
        made = _Newer()
        yield made
        made.closed = True

    c = di.Container(reg)
    entered = threading.Event()

    def overriding() -> None:
        with c.override(_Newer, _Newer()):  # sets the cached one aside until it ends
            entered.set()
            end_override.wait(10)
        override_ended.set()

    thread = threading.Thread(target=overriding)
    with c:
        c.resolve(_Older)
        real = c.resolve(_Newer)
        thread.start()
        assert entered.wait(10)
    thread.join(10)
    assert real.closed
    assert len(got) == 1 and got[0] is not real


class _Pool:
    pass


class _UsesPool:
    def __init__(self, pool: di.RefCounted[_Pool]) -> None:
        self.pool = pool


def test_sync_resolve_of_an_async_refcounted_singleton_says_to_use_aresolve() -> None:
    reg = di.Registry()

    async def open_pool() -> _Pool:
        return _Pool()

    async def close_pool(pool: _Pool) -> None:
        pass

    @reg.provider(singleton=True)
    def pool() -> di.RefCounted[_Pool]:
        return di.RefCounted(open_pool, close_pool)

    reg.provider(_UsesPool)
    c = di.Container(reg)
    with c, pytest.raises(di.AsyncProviderError, match=r"await container\.aresolve"):
        c.resolve(_UsesPool)


class _AsyncSession:
    pass


class _NeedsSession:
    def __init__(self, session: _AsyncSession) -> None:
        self.session = session


class _Handler:
    def __init__(self, needs: _NeedsSession) -> None:
        self.needs = needs


def test_sync_resolve_names_the_async_provider_deep_in_the_graph() -> None:
    reg = di.Registry()

    @reg.provider(scope="request")
    async def session() -> AsyncIterator[_AsyncSession]:
        yield _AsyncSession()

    reg.provider(_NeedsSession)
    reg.provider(_Handler)
    c = di.Container(reg)
    with c, c.scope("request") as scope, pytest.raises(di.AsyncProviderError) as info:
        scope.resolve(_Handler)
    assert "_Handler -> " in str(info.value) and "_AsyncSession (an async generator" in str(
        info.value
    )
