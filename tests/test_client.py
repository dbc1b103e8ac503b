"""di.ClientContext: one API client, built lazily, shared and refcounted."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import runpy
import subprocess
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio

import di
from di import ResourceOpenError

TIMEOUT = 15.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def arun(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


class AsyncClient:
    """A client with async initialize() and close(), like most API clients."""

    def __init__(self, conn: dict[str, Any], verify_ssl: bool, log: list[str]) -> None:
        self.conn = conn
        self.verify_ssl = verify_ssl
        self.log = log
        self.initialized = False
        self.closed = False
        log.append("create")

    async def initialize(self) -> None:
        await asyncio.sleep(0.01)  # slow enough for concurrent callers to pile up
        self.initialized = True
        self.log.append("initialize")

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.closed = True
        self.log.append("close")


class Factory:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.clients: list[AsyncClient] = []

    def __call__(self, conn: dict[str, Any], verify_ssl: bool) -> AsyncClient:
        client = AsyncClient(conn, verify_ssl, self.log)
        self.clients.append(client)
        return client


# -- configuration -------------------------------------------------------------


def test_conn_keys_are_normalised_case_insensitively() -> None:
    ctx = di.ClientContext(
        Factory(),
        {
            "scheme": "https",
            "HOST": "api.example",
            "pOrT": 8443,
            "api_key": "secret",
            "TIMEOUT": 5,
            "base-url": "/v1",
            "user name": "ann",
        },
    )
    assert ctx.conn == {
        "Scheme": "https",
        "Host": "api.example",
        "Port": 8443,
        "ApiKey": "secret",
        "Timeout": 5,
        "BaseUrl": "/v1",
        "Username": "ann",
    }


def test_canonical_keys_are_kept_and_unknown_keys_kept_as_given() -> None:
    ctx = di.ClientContext(Factory(), {"Path": "/graphql", "X-Tenant": "t1", "retry": 3})
    assert ctx.conn == {"Path": "/graphql", "X-Tenant": "t1", "retry": 3}


def test_every_canonical_key_round_trips() -> None:
    from di.client import CANONICAL_CONN_KEYS

    given = {key.upper(): i for i, key in enumerate(CANONICAL_CONN_KEYS)}
    ctx = di.ClientContext(Factory(), given)
    assert ctx.conn == {key: i for i, key in enumerate(CANONICAL_CONN_KEYS)}
    assert {"Scheme", "Host", "Port", "ApiKey", "Timeout", "Username", "Password"} <= set(
        CANONICAL_CONN_KEYS
    )


def test_the_same_key_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"Host twice, as 'host' and 'HOST'"):
        di.ClientContext(Factory(), {"host": "a", "HOST": "b"})


def test_no_conn_means_empty_and_input_is_not_mutated() -> None:
    assert di.ClientContext(Factory()).conn == {}
    given = {"host": "a"}
    ctx = di.ClientContext(Factory(), given)
    assert given == {"host": "a"}
    ctx.conn["Host"] = "changed"  # a copy: the context keeps its own
    assert ctx.conn == {"Host": "a"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("YeS", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("NO", False),
        (" yes ", True),
    ],
)
def test_verify_ssl_accepts_bools_and_known_strings(value: bool | str, expected: bool) -> None:
    assert di.ClientContext(Factory(), verify_ssl=value).verify_ssl is expected


@pytest.mark.parametrize("value", ["maybe", "", "on", "2", "tru", 1, 0, None, 1.0])
def test_verify_ssl_rejects_anything_else_naming_it(value: Any) -> None:
    with pytest.raises(ValueError, match="verify_ssl") as info:
        di.ClientContext(Factory(), verify_ssl=value)
    assert repr(value) in str(info.value)


def test_factory_gets_the_normalised_conn_and_verify_ssl() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory, {"host": "h", "extra": 1}, verify_ssl="no")

    async def main() -> None:
        client = await ctx.get_client()
        assert client.conn == {"Host": "h", "extra": 1}
        assert client.verify_ssl is False
        client.conn["Host"] = "mutated by the factory"
        await ctx.close()
        assert (await ctx.get_client()).conn == {"Host": "h", "extra": 1}
        await ctx.close()

    arun(main())


# -- client access -----------------------------------------------------------------


def test_client_and_interface_before_init_name_the_fix() -> None:
    ctx = di.ClientContext(Factory())
    with pytest.raises(RuntimeError, match=r"not initialised.*async with ctx.*get_client"):
        _ = ctx.client
    with pytest.raises(RuntimeError, match="not initialised"):
        _ = ctx.interface
    assert ctx.ref_count == 0 and not ctx.is_open


def test_async_with_builds_initialises_and_closes() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory, {"host": "h"})

    async def main() -> None:
        async with ctx as client:
            assert client.initialized and not client.closed
            assert ctx.client is client and ctx.interface is client
            assert ctx.ref_count == 1
            async with ctx as again:
                assert again is client and ctx.ref_count == 2
            assert ctx.ref_count == 1 and not client.closed
        assert client.closed and ctx.ref_count == 0 and not ctx.is_open
        with pytest.raises(RuntimeError):
            _ = ctx.client

    arun(main())
    assert factory.log == ["create", "initialize", "close"]


def test_get_client_is_lazy_and_uncounted() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory)
    assert factory.clients == []  # nothing is built at construction

    async def main() -> None:
        client = await ctx.get_client()
        assert client.initialized and ctx.ref_count == 0 and ctx.is_open
        assert await ctx.get_client() is client
        assert ctx.client is client
        await ctx.close()  # nothing holds it: closes now
        assert client.closed and not ctx.is_open

    arun(main())
    assert factory.log == ["create", "initialize", "close"]


def test_last_exit_closes_a_client_first_built_by_get_client() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory)

    async def main() -> None:
        client = await ctx.get_client()
        async with ctx as held:
            assert held is client
        assert client.closed

    arun(main())


@pytest.mark.timeout(20)
def test_concurrent_first_callers_get_one_fully_initialised_client() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory)

    async def first_call() -> AsyncClient:
        client = await ctx.get_client()
        assert client.initialized  # never a half-built client
        return client

    async def main() -> None:
        clients = await asyncio.gather(*(first_call() for _ in range(50)))
        assert len({id(c) for c in clients}) == 1
        await ctx.close()

    arun(main())
    assert factory.log == ["create", "initialize", "close"]


@pytest.mark.timeout(20)
def test_200_concurrent_tasks_share_one_client() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory)
    peak = 0
    all_in = asyncio.Event()

    async def use(i: int) -> AsyncClient:
        nonlocal peak
        async with ctx as client:
            peak = max(peak, ctx.ref_count)
            if peak == 200:
                all_in.set()
            assert client.initialized and not client.closed
            await all_in.wait()  # everyone holds the client at once
            await asyncio.sleep(0.001 * (i % 5))
            assert not client.closed
            return client

    async def main() -> None:
        clients = await asyncio.gather(*(use(i) for i in range(200)))
        assert len({id(c) for c in clients}) == 1

    arun(main())
    assert peak == 200
    assert factory.log == ["create", "initialize", "close"]
    assert ctx.ref_count == 0


@pytest.mark.timeout(20)
def test_trio() -> None:
    built: list[object] = []

    class TrioClient:
        async def initialize(self) -> None:
            await trio.sleep(0.01)

        async def aclose(self) -> None:
            await trio.sleep(0)
            built.remove(self)

    def factory(conn: dict[str, Any], verify_ssl: bool) -> TrioClient:
        client = TrioClient()
        built.append(client)
        return client

    ctx = di.ClientContext(factory)

    async def use() -> None:
        async with ctx as client:
            assert client in built
            await trio.sleep(0.001)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(use)
                    nursery.start_soon(ctx.get_client)
            await ctx.close()

    trio.run(main)
    assert built == []


@pytest.mark.timeout(20)
def test_contexts_in_threads_with_their_own_loops() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory)
    errors: list[BaseException] = []

    async def use() -> None:
        for _ in range(20):
            async with ctx as client:
                assert client.initialized and not client.closed
                await asyncio.sleep(0)

    def thread() -> None:
        try:
            asyncio.run(asyncio.wait_for(use(), TIMEOUT))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert ctx.ref_count == 0 and not ctx.is_open
    assert all(c.closed for c in factory.clients)


# -- sync / async variants of the factory and the client hooks -------------------


def test_sync_factory_and_sync_hooks() -> None:
    log: list[str] = []

    class SyncClient:
        def initialize(self) -> None:
            log.append("initialize")

        def close(self) -> None:
            log.append("close")

    ctx = di.ClientContext(lambda conn, verify: SyncClient())

    async def main() -> None:
        async with ctx as client:
            assert isinstance(client, SyncClient)

    arun(main())
    assert log == ["initialize", "close"]


def test_async_factory() -> None:
    factory = Factory()

    async def make(conn: dict[str, Any], verify_ssl: bool) -> AsyncClient:
        await asyncio.sleep(0)
        return factory(conn, verify_ssl)

    ctx = di.ClientContext(make)

    async def main() -> None:
        async with ctx as client:
            assert isinstance(client, AsyncClient) and client.initialized

    arun(main())
    assert factory.log == ["create", "initialize", "close"]


def test_client_without_hooks() -> None:
    ctx = di.ClientContext(lambda conn, verify: object())

    async def main() -> None:
        async with ctx as client:
            assert type(client) is object
        assert not ctx.is_open

    arun(main())


def test_aclose_is_preferred_over_close() -> None:
    log: list[str] = []

    class Both:
        async def aclose(self) -> None:
            log.append("aclose")

        def close(self) -> None:  # e.g. a deprecated sync alias
            log.append("close")

    ctx = di.ClientContext(lambda conn, verify: Both())

    async def main() -> None:
        async with ctx:
            pass

    arun(main())
    assert log == ["aclose"]


# -- failures ------------------------------------------------------------------------


def test_failed_initialize_caches_nothing_and_closes_the_half_built_client() -> None:
    log: list[str] = []
    attempts = 0

    class Flaky:
        async def initialize(self) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise ConnectionError("server unreachable")
            log.append("initialize")

        async def close(self) -> None:
            log.append("close")

    ctx = di.ClientContext(lambda conn, verify: Flaky())

    async def main() -> None:
        with pytest.raises(RuntimeError, match="server unreachable") as info:
            await ctx.get_client()
        assert isinstance(info.value, ResourceOpenError)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert log == ["close"]  # the half-built client did not leak
        assert not ctx.is_open and ctx.ref_count == 0
        with pytest.raises(RuntimeError):
            _ = ctx.client
        async with ctx as client:  # the next call builds a new one
            assert isinstance(client, Flaky)
            assert ctx.ref_count == 1

    arun(main())
    assert log == ["close", "initialize", "close"]


def test_failing_factory_leaves_nothing_behind() -> None:
    def factory(conn: dict[str, Any], verify_ssl: bool) -> object:
        raise KeyError("Host")

    ctx = di.ClientContext(factory, {"port": 1})

    async def main() -> None:
        with pytest.raises(RuntimeError, match="opening client from factory failed") as info:
            async with ctx:
                pass  # pragma: no cover
        assert isinstance(info.value.__cause__, KeyError)
        assert (ctx.ref_count, ctx.is_open) == (0, False)

    arun(main())


def test_failing_close_propagates_and_leaves_it_closed() -> None:
    class BadClose:
        async def close(self) -> None:
            raise OSError("socket already gone")

    ctx = di.ClientContext(lambda conn, verify: BadClose())

    async def main() -> None:
        with pytest.raises(OSError, match="socket already gone"):
            async with ctx:
                pass
        assert (ctx.ref_count, ctx.is_open) == (0, False)
        await ctx.get_client()
        with pytest.raises(OSError):
            await ctx.close()
        assert not ctx.is_open

    arun(main())


@pytest.mark.timeout(20)
def test_cancelled_initialize_leaves_nothing_cached() -> None:
    log: list[str] = []
    started = asyncio.Event()

    class Slow:
        async def initialize(self) -> None:
            log.append("initialize")
            started.set()
            await asyncio.sleep(3600)

        async def close(self) -> None:
            log.append("close")

    ctx = di.ClientContext(lambda conn, verify: Slow())

    async def main() -> None:
        task = asyncio.create_task(ctx.get_client())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (ctx.ref_count, ctx.is_open) == (0, False)

    arun(main())
    assert log == ["initialize", "close"]  # cleaned up, not left half-open


@pytest.mark.timeout(20)
def test_cancelled_initialize_under_trio_still_closes_the_client() -> None:
    # The cleanup runs while the cancel scope is still cancelled: unshielded,
    # the checkpoint in aclose() would raise Cancelled again and leak it.
    clients: list[Any] = []

    class HangingInit:
        def __init__(self) -> None:
            self.closes = 0
            self.hang = True

        async def initialize(self) -> None:
            if self.hang:
                await trio.sleep_forever()

        async def aclose(self) -> None:
            await trio.sleep(0)
            self.closes += 1

    def factory(conn: dict[str, Any], verify_ssl: bool) -> HangingInit:
        client = HangingInit()
        client.hang = not clients  # only the first one hangs
        clients.append(client)
        return client

    ctx = di.ClientContext(factory)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def cancel_once_initializing() -> None:
                        while not clients:
                            await trio.sleep(0)
                        await trio.sleep(0)  # let it reach sleep_forever()
                        scope.cancel()

                    nursery.start_soon(cancel_once_initializing)
                    async with ctx:
                        raise AssertionError("must not get here")  # pragma: no cover
            assert scope.cancelled_caught  # the cancellation propagated
            assert [c.closes for c in clients] == [1]
            assert (ctx.ref_count, ctx.is_open) == (0, False)
            async with ctx as client:  # nothing cached: a fresh client
                assert client is clients[1] and ctx.ref_count == 1
            assert [c.closes for c in clients] == [1, 1]

    trio.run(main)


@pytest.mark.timeout(20)
def test_cancelled_initialize_under_trio_move_on_after() -> None:
    closes = 0

    class HangingInit:
        async def initialize(self) -> None:
            await trio.sleep_forever()

        async def aclose(self) -> None:
            nonlocal closes
            await trio.sleep(0)
            closes += 1

    ctx = di.ClientContext(lambda conn, verify: HangingInit())

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            with trio.move_on_after(0.005) as scope:
                await ctx.get_client()
            assert scope.cancelled_caught
            assert closes == 1
            assert (ctx.ref_count, ctx.is_open) == (0, False)

    trio.run(main)


@pytest.mark.timeout(20)
def test_task_cancelled_again_during_initialize_cleanup_still_closes() -> None:
    # asyncio: the first cancel() is consumed by the CancelledError out of
    # initialize(); a second one arriving during the cleanup must neither
    # abort aclose() nor swallow the cancellation.
    log: list[str] = []
    initializing = asyncio.Event()
    closing = asyncio.Event()
    finish_close = asyncio.Event()
    attempts = 0

    class SlowClose:
        async def initialize(self) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                initializing.set()
                await asyncio.Event().wait()  # hangs until cancelled
            log.append("initialize")

        async def aclose(self) -> None:
            closing.set()
            await finish_close.wait()
            await asyncio.sleep(0)
            log.append("close")

    ctx = di.ClientContext(lambda conn, verify: SlowClose())

    async def main() -> None:
        task = asyncio.create_task(ctx.get_client())
        await initializing.wait()
        task.cancel()
        await closing.wait()
        task.cancel()  # cancelled again while the cleanup runs
        await asyncio.sleep(0)
        finish_close.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["close"]
        assert (ctx.ref_count, ctx.is_open) == (0, False)
        async with ctx as client:
            assert isinstance(client, SlowClose) and ctx.ref_count == 1
        assert log == ["close", "initialize", "close"]

    arun(main())


@pytest.mark.timeout(20)
def test_cancelled_during_cleanup_of_a_failed_initialize_propagates() -> None:
    # initialize() fails with an error, and the task is cancelled while the
    # client is being closed: the close still finishes and the cancellation,
    # not the ResourceOpenError, is what the caller sees.
    log: list[str] = []
    closing = asyncio.Event()
    finish_close = asyncio.Event()

    class FailsThenSlowClose:
        async def initialize(self) -> None:
            raise ConnectionError("server unreachable")

        async def aclose(self) -> None:
            closing.set()
            await finish_close.wait()
            await asyncio.sleep(0)
            log.append("close")

    ctx = di.ClientContext(lambda conn, verify: FailsThenSlowClose())

    async def main() -> None:
        task = asyncio.create_task(ctx.get_client())
        await closing.wait()
        task.cancel()
        await asyncio.sleep(0)
        finish_close.set()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        assert log == ["close"]
        # Before 3.11, awaiting a cancelled task raises a fresh CancelledError
        # whose context is the one raised inside the task: look past it.
        cause = info.value.__context__
        if sys.version_info < (3, 11) and isinstance(cause, asyncio.CancelledError):
            cause = cause.__context__
        assert isinstance(cause, ConnectionError)
        assert (ctx.ref_count, ctx.is_open) == (0, False)

    arun(main())


def test_failing_cleanup_of_a_failed_initialize_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FailsTwice:
        async def initialize(self) -> None:
            raise ConnectionError("server unreachable")

        async def aclose(self) -> None:
            raise OSError("socket already gone")

    ctx = di.ClientContext(lambda conn, verify: FailsTwice())

    async def main() -> None:
        with pytest.raises(ResourceOpenError, match="server unreachable") as info:
            await ctx.get_client()
        assert isinstance(info.value.__cause__, ConnectionError)
        assert (ctx.ref_count, ctx.is_open) == (0, False)

    with caplog.at_level(logging.WARNING, logger="di"):
        arun(main())
    records = [r for r in caplog.records if r.name == "di"]
    assert len(records) == 1 and "initialize() failed also failed" in records[0].getMessage()
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], OSError)


class NeedsItsOwnContext:
    """A client whose initialize() or close reaches for the very context that
    is building or closing it (`during`), through `reentry`."""

    def __init__(self, ctx: list[di.ClientContext[Any]], during: str, reentry: str) -> None:
        self.ctx, self.during, self.reentry = ctx, during, reentry
        self.log: list[str] = []

    async def _reenter(self) -> None:
        ctx = self.ctx[0]
        if self.reentry == "get_client":
            await ctx.get_client()
        elif self.reentry == "async with":
            async with ctx:
                raise AssertionError("entered itself")  # pragma: no cover
        else:
            await ctx.close()

    async def initialize(self) -> None:
        self.log.append("initialize")
        if self.during == "initialize":
            await self._reenter()

    async def aclose(self) -> None:
        self.log.append("aclose")
        if self.during == "aclose":
            await self._reenter()


@pytest.mark.anyio
@pytest.mark.parametrize("reentry", ["get_client", "async with", "close"])
async def test_initialize_that_needs_its_own_context_is_a_cycle(
    anyio_backend: str, reentry: str
) -> None:
    holder: list[di.ClientContext[Any]] = []
    clients: list[NeedsItsOwnContext] = []

    def make_client(conn: dict[str, Any], verify_ssl: bool) -> NeedsItsOwnContext:
        clients.append(NeedsItsOwnContext(holder, "initialize", reentry))
        return clients[-1]

    ctx = di.ClientContext(make_client)
    holder.append(ctx)
    with anyio.fail_after(TIMEOUT):
        for _ in range(2):  # the same error every time: no retry can help
            with pytest.raises(di.CircularDependencyError) as info:
                await ctx.get_client()
            assert not isinstance(info.value, ResourceOpenError)
            message = str(info.value)
            assert "client from make_client re-entered itself while opening" in message
            assert "already holding" not in message
            assert (ctx.is_open, ctx.ref_count) == (False, 0)
        with pytest.raises(di.CircularDependencyError):
            async with ctx:
                pass  # pragma: no cover
    assert (ctx.is_open, ctx.ref_count) == (False, 0)
    # Every half-built client was closed, as after any failed initialize().
    assert [c.log for c in clients] == [["initialize", "aclose"]] * 3


@pytest.mark.anyio
@pytest.mark.parametrize("reentry", ["get_client", "async with", "close"])
async def test_close_that_needs_its_own_context_is_a_cycle(
    anyio_backend: str, reentry: str
) -> None:
    holder: list[di.ClientContext[Any]] = []
    ctx = di.ClientContext(lambda conn, verify: NeedsItsOwnContext(holder, "aclose", reentry))
    holder.append(ctx)
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(di.CircularDependencyError, match="re-entered itself while closing"):
            async with ctx as client:
                pass
        # A failing close leaves it closed, as for any close error.
        assert (ctx.is_open, ctx.ref_count) == (False, 0)
        assert client.log == ["initialize", "aclose"]


# -- close ---------------------------------------------------------------------------


def test_close_while_held_warns_and_defers(caplog: pytest.LogCaptureFixture) -> None:
    factory = Factory()
    ctx = di.ClientContext(factory)

    async def main() -> None:
        async with ctx as client:
            async with ctx:
                await ctx.close()
                assert not client.closed and ctx.is_open
            assert not client.closed
        assert client.closed and not ctx.is_open

    with caplog.at_level(logging.WARNING, logger="di"):
        arun(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "di"]
    assert len(messages) == 1 and "deferred" in messages[0] and "2 reference" in messages[0]
    assert factory.log == ["create", "initialize", "close"]


def test_force_close() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory)

    async def main() -> None:
        async with ctx as client:
            await ctx.close(force=True)
            assert client.closed and not ctx.is_open and ctx.ref_count == 1
            with pytest.raises(RuntimeError, match=r"closed by close\(force=True\) while held"):
                _ = ctx.client
        assert ctx.ref_count == 0
        async with ctx as fresh:  # reopen after close
            assert fresh is not client

    arun(main())
    assert factory.log == ["create", "initialize", "close"] * 2


def test_messages_never_show_the_factory_repr() -> None:
    # A partial's repr holds its arguments: an API key would reach every
    # error message and log line that names the context.
    def make_client(conn: dict[str, Any], verify_ssl: bool, api_key: str) -> Any:
        return Factory()(conn, verify_ssl)

    ctx = di.ClientContext(functools.partial(make_client, api_key="sk-secret"))
    with pytest.raises(RuntimeError) as info:
        _ = ctx.client
    assert "sk-secret" not in str(info.value) and "sk-secret" not in repr(ctx)
    assert "partial(make_client)" in str(info.value)


def test_close_when_never_opened_does_nothing() -> None:
    factory = Factory()
    ctx = di.ClientContext(factory)
    arun(ctx.close())
    arun(ctx.close(force=True))
    assert factory.log == []


def test_two_contexts_never_share_state() -> None:
    a_factory, b_factory = Factory(), Factory()
    a = di.ClientContext(a_factory, {"host": "a"})
    b = di.ClientContext(b_factory, {"host": "b"})

    async def main() -> None:
        async with a as client_a:
            assert not b.is_open and b.ref_count == 0
            with pytest.raises(RuntimeError):
                _ = b.client
            async with b as client_b:
                assert client_a is not client_b
                assert (client_a.conn["Host"], client_b.conn["Host"]) == ("a", "b")
            assert client_b.closed and not client_a.closed
            assert a.ref_count == 1
        assert client_a.closed

    arun(main())
    assert len(a_factory.clients) == len(b_factory.clients) == 1


def test_repr() -> None:
    ctx = di.ClientContext(Factory())
    assert "closed ref_count=0" in repr(ctx)


# -- the example and the typing checks are real, running code --------------------------


@pytest.mark.timeout(40)
def test_example_shares_one_real_httpx_client() -> None:
    pytest.importorskip("httpx")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "client_context.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=35,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "client created 1 time(s), closed 1 time(s)" in proc.stdout
    assert "50 concurrent requests answered" in proc.stdout


def test_typing_check_file_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(ROOT / "tests" / "typing" / "check_lifecycle.py"), run_name="__main__")
    assert capsys.readouterr().out.strip() == "ok"


def test_a_plain_with_on_a_client_context_says_to_use_async_with() -> None:
    ctx = di.ClientContext(lambda conn, verify_ssl: object(), {})
    with pytest.raises(di.AsyncProviderError, match="use `async with`"), ctx:
        pass
