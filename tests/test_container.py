"""di/container.py: resolve / aresolve, lifetimes, override, refcounted lifecycle."""

import asyncio
import logging
import threading
import typing
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

import di


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Settings:
    pass


class Engine:
    pass


class Conn:
    pass


class Tmp:
    pass


class Service:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine


def counting_registry() -> tuple[di.Registry, dict[str, int]]:
    """Settings: singleton, Engine: scope="app", Conn: request-scoped, Tmp: transient."""
    reg = di.Registry()
    calls = {"settings": 0, "engine": 0, "conn": 0, "tmp": 0}

    @reg.provider(singleton=True)
    def settings() -> Settings:
        calls["settings"] += 1
        return Settings()

    @reg.provider(scope="app")
    def engine() -> Engine:
        calls["engine"] += 1
        return Engine()

    @reg.provider(scope="request")
    def conn() -> Conn:
        calls["conn"] += 1
        return Conn()

    @reg.provider()
    def tmp() -> Tmp:
        calls["tmp"] += 1
        return Tmp()

    return reg, calls


# ----------------------------------------------------------------- lifetimes


def test_singleton_identity_across_scopes() -> None:
    reg, calls = counting_registry()
    c = di.Container(reg)
    with c:
        a = c.resolve(Settings)
        with c.scope("request") as s1:
            b = s1.resolve(Settings)
        with c.scope("session") as s2, c.scope("request") as s3:
            d = s3.resolve(Settings)
            e = s2.resolve(Settings)
    assert a is b is d is e
    assert calls["settings"] == 1


def test_app_scope_is_a_singleton() -> None:
    reg, calls = counting_registry()
    c = di.Container(reg)
    with c:
        a = c.resolve(Engine)
        with c.scope("request") as s1:
            b = s1.resolve(Engine)
        with c.scope("request") as s2:
            d = s2.resolve(Engine)
    assert a is b is d
    assert calls["engine"] == 1


def test_app_scope_singleton_torn_down_at_container_close() -> None:
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(scope="app")
    def engine() -> Iterator[Engine]:
        log.append("open")
        yield Engine()
        log.append("close")

    c = di.Container(reg)
    with c:
        with c.scope("request") as s:
            s.resolve(Engine)
        assert log == ["open"]  # not tied to the request checkpoint
    assert log == ["open", "close"]


def test_transient_is_fresh_every_time() -> None:
    reg, calls = counting_registry()
    c = di.Container(reg)
    with c:
        a, b = c.resolve(Tmp), c.resolve(Tmp)
        with c.scope("request") as s:
            d, e = s.resolve(Tmp), s.resolve(Tmp)
    assert len({id(a), id(b), id(d), id(e)}) == 4
    assert calls["tmp"] == 4


def test_scoped_identity_within_checkpoint_and_fresh_across() -> None:
    reg, calls = counting_registry()
    c = di.Container(reg)
    with c:
        with c.scope("request") as s1:
            a, b = s1.resolve(Conn), s1.resolve(Conn)
            assert c.resolve(Conn) is a  # container.resolve uses the current checkpoint
        with c.scope("request") as s2:
            d = s2.resolve(Conn)
    assert a is b
    assert d is not a
    assert calls["conn"] == 2


@pytest.mark.anyio
async def test_aresolve_every_lifetime() -> None:
    reg, calls = counting_registry()

    @reg.provider(singleton=True)
    async def service(engine: Engine) -> Service:
        return Service(engine)

    c = di.Container(reg)
    async with c:
        s0 = await c.aresolve(Settings)
        svc = await c.aresolve(Service)
        assert svc.engine is await c.aresolve(Engine)
        async with c.scope("request") as s:
            assert await s.aresolve(Settings) is s0
            assert await s.aresolve(Service) is svc
            conn = await s.aresolve(Conn)
            assert await s.aresolve(Conn) is conn
            assert await c.aresolve(Conn) is conn
            assert await s.aresolve(Tmp) is not await s.aresolve(Tmp)
        async with c.scope("request") as s2:
            assert await s2.aresolve(Conn) is not conn
    assert calls == {"settings": 1, "engine": 1, "conn": 2, "tmp": 2}


def test_resolve_dependencies_share_lifetimes() -> None:
    reg, _ = counting_registry()

    class Uses:
        def __init__(self, settings: Settings, conn: Conn, tmp: Tmp) -> None:
            self.settings, self.conn, self.tmp = settings, conn, tmp

    reg.provider()(Uses)
    c = di.Container(reg)
    with c, c.scope("request") as s:
        u1, u2 = s.resolve(Uses), s.resolve(Uses)
        assert u1 is not u2
        assert u1.settings is u2.settings is s.resolve(Settings)
        assert u1.conn is u2.conn is s.resolve(Conn)
        assert u1.tmp is not u2.tmp


# ------------------------------------------------------------------- errors


def test_unknown_key_raises_provider_not_found() -> None:
    class Unknown:
        pass

    c = di.Container(di.Registry())
    with c, pytest.raises(di.ProviderNotFoundError) as ei:
        c.resolve(Unknown)
    err = ei.value
    assert isinstance(err, LookupError)
    assert isinstance(err, di.DIError)
    assert err.key is Unknown
    msg = str(err)
    assert "Unknown" in msg
    assert "register" in msg  # the fix


@pytest.mark.anyio
async def test_unknown_key_raises_provider_not_found_async() -> None:
    class Unknown:
        pass

    c = di.Container(di.Registry())
    async with c:
        with pytest.raises(di.ProviderNotFoundError):
            await c.aresolve(Unknown)
        async with c.scope("request") as s:
            with pytest.raises(LookupError):
                await s.aresolve(Unknown)


def test_sync_resolve_of_async_provider_raises_without_running_it() -> None:
    reg = di.Registry()
    ran = 0

    @reg.provider(singleton=True)
    async def engine() -> Engine:
        nonlocal ran
        ran += 1
        return Engine()

    @reg.provider()
    def service(engine: Engine) -> Service:  # sync provider on top of an async one
        return Service(engine)

    c = di.Container(reg)
    with c:
        with pytest.raises(di.AsyncProviderError) as ei:
            c.resolve(Engine)
        assert "Engine" in str(ei.value)
        assert "aresolve" in str(ei.value)  # the fix
        with pytest.raises(di.AsyncProviderError):
            c.resolve(Service)
    assert ran == 0  # never a private event loop
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_sync_resolve_of_async_generator_raises() -> None:
    reg = di.Registry()
    ran = 0

    @reg.provider(scope="request")
    async def conn() -> AsyncIterator[Conn]:
        nonlocal ran
        ran += 1
        yield Conn()

    c = di.Container(reg)
    with c, c.scope("request") as s, pytest.raises(di.AsyncProviderError):
        s.resolve(Conn)
    assert ran == 0


# ------------------------------------------------------------------ override


def test_override_value_and_factory_nest_and_restore() -> None:
    reg, calls = counting_registry()
    c = di.Container(reg)
    with c:
        original = c.resolve(Settings)  # cached before any override
        v1 = Settings()
        made: list[Settings] = []

        def factory() -> Settings:
            s = Settings()
            made.append(s)
            return s

        with c.override(Settings, v1):
            assert c.resolve(Settings) is v1
            with c.override(Settings, factory):
                a, b = c.resolve(Settings), c.resolve(Settings)
                assert made == [a, b]  # a callable is a transient factory
                assert a is not b
            assert c.resolve(Settings) is v1  # inner restored
            with c.scope("request") as s:
                assert s.resolve(Settings) is v1
        assert c.resolve(Settings) is original  # the cached singleton comes back
    assert calls["settings"] == 1


def test_override_scoped_and_transient_keys() -> None:
    reg, calls = counting_registry()
    c = di.Container(reg)
    fake_conn, fake_tmp = Conn(), Tmp()
    with c:
        with c.override(Conn, fake_conn), c.override(Tmp, fake_tmp), c.scope("request") as s:
            assert s.resolve(Conn) is fake_conn
            assert s.resolve(Tmp) is fake_tmp
        with c.scope("request") as s:
            assert s.resolve(Conn) is not fake_conn
            assert s.resolve(Tmp) is not fake_tmp
    assert calls["conn"] == 1
    assert calls["tmp"] == 1


def test_override_seen_by_a_singleton_created_during_the_override() -> None:
    reg = di.Registry()
    reg.provider(singleton=True)(Engine)
    reg.provider(singleton=True)(Service)
    c = di.Container(reg)
    fake = Engine()
    with c, c.override(Engine, fake):
        svc = c.resolve(Service)  # Service not cached yet: built during the override
        assert svc.engine is fake


def test_override_restores_on_exception() -> None:
    reg, _ = counting_registry()
    c = di.Container(reg)
    with c:
        original = c.resolve(Settings)
        with pytest.raises(ZeroDivisionError), c.override(Settings, Settings()):
            1 / 0  # noqa: B018
        assert c.resolve(Settings) is original


def test_override_unregistered_key_never_silently_ignored() -> None:
    """Overriding a key nothing provides either works for the block or is refused
    up front with ProviderNotFoundError; it never silently does nothing."""

    class Extra:
        pass

    c = di.Container(di.Registry())
    extra = Extra()
    with c:
        try:
            with c.override(Extra, extra):
                assert c.resolve(Extra) is extra
        except di.ProviderNotFoundError as e:
            assert e.key is Extra
        with pytest.raises(di.ProviderNotFoundError):
            c.resolve(Extra)


@pytest.mark.anyio
async def test_override_applies_to_aresolve() -> None:
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def engine() -> Engine:
        return Engine()

    c = di.Container(reg)
    fake = Engine()
    async with c:
        real = await c.aresolve(Engine)
        with c.override(Engine, fake):
            assert await c.aresolve(Engine) is fake
        assert await c.aresolve(Engine) is real


# ---------------------------------------------------------------- lifecycle


def lifo_registry(log: list[str]) -> di.Registry:
    reg = di.Registry()

    def make(name: str, key: type) -> None:
        def gen() -> Iterator[object]:
            log.append(f"open {name}")
            yield key()
            log.append(f"close {name}")

        reg.provider(singleton=True, provides=key)(gen)

    make("settings", Settings)
    make("engine", Engine)
    make("conn", Conn)
    return reg


def test_nested_enter_shares_one_open_state_and_last_exit_closes_lifo() -> None:
    log: list[str] = []
    c = di.Container(lifo_registry(log))
    assert c.ref_count == 0
    assert not c.is_open
    with c:
        assert c.is_open and c.ref_count == 1
        s = c.resolve(Settings)
        with c:
            assert c.ref_count == 2
            assert c.resolve(Settings) is s  # same open state
            c.resolve(Engine)
            c.resolve(Conn)
        assert c.ref_count == 1
        assert c.is_open
        assert log == ["open settings", "open engine", "open conn"]  # nothing closed yet
    assert c.ref_count == 0
    assert not c.is_open
    assert log == [
        "open settings",
        "open engine",
        "open conn",
        "close conn",
        "close engine",
        "close settings",
    ]


@pytest.mark.anyio
async def test_async_with_closes_async_singletons_lifo() -> None:
    log: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def settings() -> AsyncIterator[Settings]:
        log.append("open settings")
        yield Settings()
        log.append("close settings")

    @reg.provider(singleton=True)
    def engine(settings: Settings) -> Iterator[Engine]:
        log.append("open engine")
        yield Engine()
        log.append("close engine")

    c = di.Container(reg)
    async with c:
        async with c:
            await c.aresolve(Engine)
            assert c.ref_count == 2
        assert log == ["open settings", "open engine"]
    assert not c.is_open
    assert log == ["open settings", "open engine", "close engine", "close settings"]


@pytest.mark.timeout(20)
def test_concurrent_thread_enters_share_one_open_state() -> None:
    log: list[str] = []
    c = di.Container(lifo_registry(log))
    n = 8
    inside = threading.Barrier(n, timeout=10)
    counts: list[int] = []
    got: list[object] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with c:
                got.append(c.resolve(Settings))
                inside.wait()  # all n hold the container at once
                counts.append(c.ref_count)
                inside.wait()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == []
    assert counts == [n] * n
    assert len({id(x) for x in got}) == 1
    assert not c.is_open
    assert log == ["open settings", "close settings"]  # opened once, closed once


@pytest.mark.anyio
async def test_concurrent_task_enters_share_one_open_state() -> None:
    import anyio

    log: list[str] = []
    c = di.Container(lifo_registry(log))
    n = 6
    counts: list[int] = []
    entered = 0
    all_in, all_counted = anyio.Event(), anyio.Event()

    async def worker() -> None:
        nonlocal entered
        async with c:
            await c.aresolve(Engine)
            entered += 1
            if entered == n:
                all_in.set()
            await all_in.wait()
            counts.append(c.ref_count)
            if len(counts) == n:
                all_counted.set()
            await all_counted.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(worker)
    assert counts == [n] * n
    assert not c.is_open
    assert log == ["open engine", "close engine"]


def test_close_while_held_warns_and_defers(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    c = di.Container(lifo_registry(log))
    with c:
        c.resolve(Settings)
        with caplog.at_level(logging.WARNING, logger="di"):
            c.close()  # force=False while held
        records = [r for r in caplog.records if r.name == "di" or r.name.startswith("di.")]
        assert records, "close(force=False) while held must log a warning on the 'di' logger"
        assert any(r.levelno >= logging.WARNING for r in records)
        assert c.is_open
        assert log == ["open settings"]  # deferred
        assert c.resolve(Settings) is not None
    assert not c.is_open
    assert log == ["open settings", "close settings"]  # done by the last exit


def test_close_force_closes_now() -> None:
    log: list[str] = []
    c = di.Container(lifo_registry(log))
    with c:
        c.resolve(Settings)
        c.resolve(Engine)
        c.close(force=True)
        assert log == ["open settings", "open engine", "close engine", "close settings"]
        assert not c.is_open
    # the block that still held it leaves quietly and closes nothing twice
    assert log == ["open settings", "open engine", "close engine", "close settings"]
    assert not c.is_open


def test_close_when_not_held_closes() -> None:
    log: list[str] = []
    c = di.Container(lifo_registry(log))
    with c:
        c.resolve(Conn)
    assert log == ["open conn", "close conn"]
    c.close()  # already closed: nothing more happens
    assert log == ["open conn", "close conn"]


@pytest.mark.anyio
async def test_aclose_while_held_warns_and_defers(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    c = di.Container(lifo_registry(log))
    async with c:
        await c.aresolve(Engine)
        with caplog.at_level(logging.WARNING, logger="di"):
            await c.aclose()
        assert [r for r in caplog.records if r.name.split(".")[0] == "di"]
        assert c.is_open
        assert log == ["open engine"]
    assert log == ["open engine", "close engine"]


@pytest.mark.anyio
async def test_aclose_force_closes_now() -> None:
    log: list[str] = []
    c = di.Container(lifo_registry(log))
    async with c:
        await c.aresolve(Engine)
        await c.aclose(force=True)
        assert log == ["open engine", "close engine"]
        assert not c.is_open
    assert log == ["open engine", "close engine"]
    assert not c.is_open


def test_teardown_errors_still_close_everything() -> None:
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(singleton=True)
    def settings() -> Iterator[Settings]:
        try:
            yield Settings()  # receives engine's teardown error, like nested `with`
        finally:
            log.append("close settings")

    @reg.provider(singleton=True)
    def engine() -> Iterator[Engine]:
        yield Engine()
        log.append("close engine")
        raise RuntimeError("engine teardown failed")

    c = di.Container(reg)
    with pytest.raises(RuntimeError, match="engine teardown failed"), c:
        c.resolve(Settings)
        c.resolve(Engine)
    assert log == ["close engine", "close settings"]
    assert not c.is_open


def test_lingering_checkpoints_counts_scopes_held_past_their_block() -> None:
    reg, _ = counting_registry()
    c = di.Container(reg)
    with c:
        assert c.lingering_checkpoints() == 0
        with c.scope("session") as session:
            with c.scope("request") as request:
                assert c.lingering_checkpoints() == 0  # their blocks will tear them down
                held = request.hold()
                held.__enter__()
            assert c.lingering_checkpoints("request") == 1
            assert c.lingering_checkpoints("session") == 0  # its block is still running
            assert c.lingering_checkpoints() == 1
        # the held request keeps its session open too
        assert c.lingering_checkpoints() == 2
        assert not session.closed
        held.__exit__(None, None, None)
        assert request.closed and session.closed
        assert c.lingering_checkpoints() == 0


def test_reopened_container_never_serves_a_closed_singleton_through_a_compiled_plan() -> None:
    """Plans generated after a singleton exists refer to it directly; closing
    the container must drop those plans with the singleton, and an override
    must too."""

    class Conn:
        def __init__(self) -> None:
            self.closed = False

    class Service:
        def __init__(self, conn: Conn) -> None:
            self.conn = conn

    reg = di.Registry()

    @reg.provider(singleton=True)
    def conn() -> Iterator[Conn]:
        c = Conn()
        yield c
        c.closed = True

    reg.register(Service, Service)
    c = di.Container(reg)
    with c:
        first = c.resolve(Conn)
        for _ in range(3):  # the second resolve compiles Service's plan
            assert c.resolve(Service).conn is first
    assert first.closed
    with c:
        again = c.resolve(Service).conn
        assert again is not first and not again.closed
        assert c.resolve(Service).conn is again
        fake = Conn()
        with c.override(Conn, fake):
            assert c.resolve(Service).conn is fake
            assert c.resolve(Service).conn is fake
        assert c.resolve(Service).conn is again


def test_containers_sharing_keys_each_resolve_their_own_graph() -> None:
    """A container's root gets a miss path of its own once it generates code
    (Root._specialise): two containers over the same keys must never answer
    for each other, before or after, from the container or from a scope."""

    class Name:
        def __init__(self, text: str) -> None:
            self.text = text

    class Greeting:
        def __init__(self, name: Name) -> None:
            self.name = name

    def registry(text: str) -> di.Registry:
        reg = di.Registry()
        reg.register(Name, lambda: Name(text))
        reg.register(Greeting, Greeting)
        reg.register(Conn, Conn, scope="request")
        return reg

    one, two = di.Container(registry("one")), di.Container(registry("two"))
    for _ in range(4):  # interpreted first, generated from the second resolve on
        assert one.resolve(Greeting).name.text == "one"
        assert two.resolve(Greeting).name.text == "two"
    for c in (one, two):
        with pytest.raises(di.NoActiveScopeError):
            c.resolve(Conn)
        with c.scope("request") as request:
            assert c.resolve(Conn) is request.resolve(Conn) is c.resolve(Conn)
    with one.scope("request") as request_one, two.scope("request") as request_two:
        assert one.resolve(Conn) is request_one.resolve(Conn)
        assert two.resolve(Conn) is request_two.resolve(Conn)
        assert one.resolve(Conn) is not two.resolve(Conn)


def _logged_singleton() -> tuple[di.Registry, list[str]]:
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(singleton=True)
    def settings() -> Iterator[Settings]:
        log.append("open")
        yield Settings()
        log.append("close")

    return reg, log


def test_trio_block_ending_by_cancellation_still_closes_the_container() -> None:
    """Under trio even a free lock is a checkpoint; the last exit of a
    cancelled block must still give its reference back and close."""
    reg, log = _logged_singleton()
    c = di.Container(reg)

    async def main() -> None:
        with trio.move_on_after(0.01):
            async with c:
                c.resolve(Settings)
                await trio.sleep(5)
        assert (c.ref_count, c.is_open, log) == (0, False, ["open", "close"])
        async with c:
            c.resolve(Settings)
        assert (c.ref_count, log) == (0, ["open", "close", "open", "close"])

    trio.run(main)


def test_async_exit_cancelled_while_waiting_for_a_close_gives_its_reference_back() -> None:
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(singleton=True)
    async def settings() -> AsyncIterator[Settings]:
        log.append("open")
        yield Settings()
        await asyncio.sleep(0.2)  # a slow teardown holds the lifecycle lock
        log.append("close")

    c = di.Container(reg)

    async def main() -> None:
        async with c:
            await c.aresolve(Settings)

            async def inner() -> None:
                async with c:
                    await asyncio.sleep(0.05)  # exits while the forced close runs

            task = asyncio.create_task(inner())
            await asyncio.sleep(0.01)
            closer = asyncio.create_task(c.aclose(force=True))
            await asyncio.sleep(0.1)
            task.cancel()  # if its exit still waits for the lock, it is cancelled there
            await asyncio.gather(task, return_exceptions=True)
            await closer
            await c.aresolve(Settings)  # reopened inside the outer block
            assert c.ref_count == 1
        assert (c.ref_count, c.is_open) == (0, False)
        assert log == ["open", "close", "open", "close"]

    asyncio.run(main())


def test_exit_without_enter_is_refused() -> None:
    c = di.Container(di.Registry())
    with pytest.raises(RuntimeError, match="without a matching enter"):
        c.__exit__(None, None, None)
    with c:
        assert c.ref_count == 1
    assert (c.ref_count, c.is_open) == (0, False)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="without a matching enter"):
            await c.__aexit__(None, None, None)

    asyncio.run(main())


def test_override_never_restores_a_singleton_the_container_closed_meanwhile() -> None:
    class Pool:
        def __init__(self, settings: Settings) -> None:
            self.closed = False

    reg, _ = _logged_singleton()

    @reg.provider(singleton=True)
    def pool(settings: Settings) -> Iterator[Pool]:
        p = Pool(settings)
        yield p
        p.closed = True

    c = di.Container(reg)
    first = c.resolve(Pool)
    with c.override(Settings, Settings()):
        assert c.resolve(Pool) is not first
        c.close(force=True)
    assert first.closed
    fresh = c.resolve(Pool)
    assert fresh is not first and not fresh.closed
    c.close()
    assert fresh.closed


def test_nested_overrides_with_equal_values_restore_by_identity() -> None:
    class Mailer:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, Mailer)

        __hash__ = object.__hash__

    reg = di.Registry()
    reg.register(Mailer, Mailer)
    c = di.Container(reg)
    outer, inner = Mailer(), Mailer()
    with c.override(Mailer, outer):
        with c.override(Mailer, inner):
            assert c.resolve(Mailer) is inner
        assert c.resolve(Mailer) is outer
    after = c.resolve(Mailer)
    assert after is not outer and after is not inner


def test_forced_shutdown_tears_down_every_held_checkpoint_when_one_teardown_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Like ExitStack: every teardown runs, the singletons close last, and the
    error propagates."""
    reg, log = _logged_singleton()
    made: list[int] = []

    @reg.provider(scope="request")
    def conn(settings: Settings) -> Iterator[Conn]:
        made.append(len(made) + 1)
        i = len(made)
        try:
            yield Conn()
        finally:
            log.append(f"request {i} closed")
            if i == 1:
                raise RuntimeError("teardown 1 failed")

    c = di.Container(reg, shutdown_timeout=0.05)
    ready = threading.Barrier(3, timeout=10)
    release = threading.Event()
    first_made = threading.Event()

    def worker(first: bool) -> None:
        if not first:
            first_made.wait(10)
        with c.scope("request") as scope:
            scope.resolve(Conn)
            first_made.set()
            with scope.hold():
                ready.wait()
                release.wait(10)

    threads = [threading.Thread(target=worker, args=(i == 0,)) for i in range(2)]
    for t in threads:
        t.start()
    ready.wait()
    with (
        caplog.at_level(logging.WARNING, logger="di"),
        pytest.raises(RuntimeError, match="teardown 1 failed"),
        c,
    ):
        pass  # the last exit closes while both requests are held
    assert log == ["open", "request 1 closed", "request 2 closed", "close"]
    assert c.lingering_checkpoints() == 0
    release.set()
    for t in threads:
        t.join(10)
    assert log == ["open", "request 1 closed", "request 2 closed", "close"]


def test_aresolve_of_a_sync_transient_generates_its_plan_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aresolve runs the sync plan of an all-sync subtree: interpreted once,
    generated once, then reused by resolve and aresolve alike."""
    from di.compiler import Compiler

    generated: list[str] = []
    compile_plan = Compiler._compile

    def counting(self: Compiler, fn: Any, name: str) -> Any:
        generated.append(name)
        return compile_plan(self, fn, name)

    monkeypatch.setattr(Compiler, "_compile", counting)
    reg = di.Registry()
    reg.register(Engine, Engine)
    reg.register(Service, Service)
    c = di.Container(reg)

    async def main() -> None:
        made = [await c.aresolve(Service) for _ in range(3)]
        for _ in range(3):
            made += [c.resolve(Service), await c.aresolve(Service)]
        assert len({id(s) for s in made}) == len(made)
        assert len({id(s.engine) for s in made}) == len(made)

    asyncio.run(main())
    assert generated == ["plan"]


def test_kept_default_before_an_injected_positional_only_parameter() -> None:
    """A default kept for an unregistered type cannot make later arguments go
    by name when they are positional-only: it is passed as itself."""
    marker = Tmp()

    def make(clock: Tmp = marker, engine: Engine = None, /) -> Service:  # type: ignore[assignment]
        assert clock is marker
        return Service(engine)

    class Clocked:
        def __init__(
            self,
            tick: Tmp = marker,
            engine: Engine = None,  # type: ignore[assignment]
            /,
            *,
            tock: Tmp = marker,
        ) -> None:
            assert tick is marker and tock is marker
            self.engine = engine

    reg = di.Registry()
    reg.register(Engine, Engine)
    reg.register(Service, make)
    reg.register(Clocked, Clocked)
    c = di.Container(reg)
    for _ in range(3):  # interpreted, then generated
        assert isinstance(c.resolve(Service).engine, Engine)
        assert isinstance(c.resolve(Clocked).engine, Engine)


def test_sync_lifecycle_calls_during_an_async_close_in_the_same_loop() -> None:
    """A thread cannot wait for a close that a task of its own event loop runs:
    `with container` and close() say so (a ScopeError naming the async form),
    and a block's last sync exit leaves the closing to the close in progress."""

    class Pool:
        closes = 0

    reg = di.Registry()

    @reg.provider(singleton=True)
    async def pool() -> AsyncIterator[Pool]:
        p = Pool()
        yield p
        await asyncio.sleep(0.02)  # the close is in progress meanwhile
        p.closes += 1

    c = di.Container(reg)
    seen: list[str] = []

    async def during_close() -> None:
        await asyncio.sleep(0.005)
        with pytest.raises(di.ScopeError, match=r"async close .* `async with container`"):
            c.__enter__()
        with pytest.raises(di.ScopeError, match=r"close\(\) cannot wait here"):
            c.close()
        seen.append("refused")

    async def main() -> None:
        p = await c.aresolve(Pool)
        task = asyncio.create_task(during_close())
        await c.aclose()
        await task
        assert seen == ["refused"] and p.closes == 1 and not c.is_open
        # A sync block that a forced async close overtakes exits quietly.
        p = await c.aresolve(Pool)
        c.__enter__()
        closer = asyncio.create_task(c.aclose(force=True))
        await asyncio.sleep(0.005)
        c.__exit__(None, None, None)  # last exit, while the close runs
        await closer
        assert (p.closes, c.ref_count, c.is_open) == (1, 0, False)
        with c:  # and the container is usable again
            assert c.ref_count == 1

    asyncio.run(main())


def test_override_mid_request_applies_to_what_the_request_has_not_created_yet() -> None:
    class Db:
        pass

    class Repo:
        def __init__(self, db: Db) -> None:
            self.db = db

    reg = di.Registry()
    reg.provider(Db, scope="request")
    reg.provider(Repo, scope="request")
    c = di.Container(reg)
    fake = Db()
    with c.scope("request") as scope:
        db = scope.resolve(Db)
        with c.override(Db, fake):
            assert scope.resolve(Db) is db  # already held by this request: stays
            assert scope.resolve(Repo).db is fake  # made after the override: sees it
        assert scope.resolve(Repo).db is fake  # cached for the rest of the request
    with c.scope("request") as scope, c.override(Db, fake):
        assert scope.resolve(Db) is fake
    with c.scope("request") as scope:
        assert scope.resolve(Db) is not fake


def test_an_overridden_context_key_is_still_accepted_and_the_override_wins() -> None:
    class Request:
        pass

    class Handler:
        def __init__(self, request: Request) -> None:
            self.request = request

    reg = di.Registry()
    reg.context(Request, scope="request")
    reg.register(Handler, Handler, scope="request")
    c = di.Container(reg)
    fake, real = Request(), Request()
    with c.override(Request, fake):
        # the app under test still passes the real request in
        with c.scope("request", context={Request: real}) as scope:
            assert scope.resolve(Request) is fake
            assert scope.resolve(Handler).request is fake
        with pytest.raises(di.ScopeError, match="not 'session'"):
            c.scope("session", context={Request: real})
    with c.scope("request", context={Request: real}) as scope:
        assert scope.resolve(Handler).request is real


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_forced_shutdown_keeps_every_teardown_error_chained(mode: str) -> None:
    """Two held requests and a singleton whose teardowns all fail: the latest
    error is raised, each earlier one is the context of the next (as errors of
    successive ExitStack exits are), none is lost."""
    reg = di.Registry()

    @reg.provider(singleton=True)
    def settings() -> Iterator[Settings]:
        yield Settings()
        raise RuntimeError("singleton")

    names = iter(["request 1", "request 2"])

    @reg.provider(scope="request")
    def conn(settings: Settings) -> Iterator[Conn]:
        name = next(names)
        yield Conn()
        raise RuntimeError(name)

    c = di.Container(reg, shutdown_timeout=0.05)
    started, release = threading.Event(), threading.Event()

    def holder(scope: di.Checkpoint) -> None:
        with scope.hold():
            started.set()
            release.wait(10)

    threads: list[threading.Thread] = []

    def two_held_requests() -> None:
        for _ in range(2):
            with c.scope("request") as scope:
                scope.resolve(Conn)
                threads.append(threading.Thread(target=holder, args=(scope,)))
                threads[-1].start()
                started.wait(10)
                started.clear()

    async def async_cycle() -> None:  # enter and exit in one context
        await c.__aenter__()
        two_held_requests()
        await c.__aexit__(None, None, None)

    try:
        with pytest.raises(RuntimeError) as info:
            if mode == "sync":
                with c:
                    two_held_requests()
            else:
                asyncio.run(async_cycle())
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert di.container.active_container() is None
    chain, error = [], info.value
    while error is not None:
        chain.append(str(error))
        error = error.__context__  # type: ignore[assignment]
    assert chain == ["singleton", "request 2", "request 1"]
    assert not c.is_open and c.lingering_checkpoints() == 0


@pytest.mark.parametrize(
    "order", [(2, 1, 0), (0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 0, 1), (1, 2, 0)]
)
def test_overrides_left_in_any_order_end_where_they_started(order: tuple[int, ...]) -> None:
    """Overrides of two tasks can overlap and end out of order: whatever is
    active is served, values built under an ended override never come back,
    and once all end the original singletons are back, by identity."""

    class Mailer:
        pass

    class Service:
        def __init__(self, mailer: Mailer) -> None:
            self.mailer = mailer

    class Clock:
        pass

    reg = di.Registry()
    reg.register(Mailer, Mailer, singleton=True)
    reg.register(Service, Service, singleton=True)
    reg.register(Clock, Clock, singleton=True)
    c = di.Container(reg)
    original, clock = c.resolve(Service), c.resolve(Clock)
    values = [Mailer(), Mailer(), Clock()]
    overrides = [
        c.override(Mailer, values[0]),
        c.override(Mailer, values[1]),
        c.override(Clock, values[2]),
    ]
    for o in overrides:
        o.__enter__()
        c.resolve(Service)  # cache what each one sees
    active = [0, 1, 2]
    for i in order:
        overrides[i].__exit__(None, None, None)
        active.remove(i)
        mailers = [values[j] for j in active if j < 2]
        expected_mailer = mailers[-1] if mailers else original.mailer
        assert c.resolve(Mailer) is expected_mailer
        assert c.resolve(Service).mailer is expected_mailer
        assert c.resolve(Clock) is (values[2] if 2 in active else clock)
    assert c.resolve(Service) is original and c.resolve(Clock) is clock


def test_override_with_a_parameterised_generic_class_makes_instances_of_it() -> None:
    T = typing.TypeVar("T")

    class Engine:
        pass

    class Repo(typing.Generic[T]):
        def __init__(self, engine: Engine) -> None:
            self.engine = engine

    class FakeRepo(Repo[T]):
        pass

    reg = di.Registry()
    reg.register(Engine, Engine, singleton=True)
    reg.register(Repo[int], Repo[int])
    c = di.Container(reg)
    with c.override(Repo[int], FakeRepo[int]):
        repo = c.resolve(Repo[int])
        assert type(repo) is FakeRepo and repo.engine is c.resolve(Engine)
        assert c.resolve(Repo[int]) is not repo  # a factory, not a value
    assert type(c.resolve(Repo[int])) is Repo


def _cancel_close_registry(sleep: Any) -> tuple[di.Registry, list[str]]:
    """A sync and an async singleton and a request-scoped async resource; the
    async finalizers await ``sleep(0)`` first, so a teardown run in a cancelled
    trio scope would stop there, before logging."""
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(singleton=True)
    def settings() -> Iterator[Settings]:
        log.append("settings open")
        yield Settings()
        log.append("settings close")

    @reg.provider(singleton=True)
    async def engine(settings: Settings) -> AsyncIterator[Engine]:
        yield Engine()
        await sleep(0)
        log.append("engine close")

    @reg.provider(scope="request")
    async def conn(engine: Engine) -> AsyncIterator[Conn]:
        try:
            yield Conn()
        except BaseException as exc:  # pragma: no cover - a close throws nothing in
            log.append(f"conn got {type(exc).__name__}")
            raise
        await sleep(0)
        log.append("conn close")

    return reg, log


_CLOSED_ONCE = ["settings open", "conn close", "engine close", "settings close"]


def _forced_by_interruption(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "di" and "interrupted" in r.getMessage() and "'request'" in r.getMessage()
    ]


def test_trio_block_cancelled_while_its_last_exit_waits_for_a_holder_still_closes_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A nursery task holds a request when the container's block is cancelled
    by its cancel scope. The last exit's wait for the holder is cancelled at
    once, but the close goes on (shielded: the async finalizers' awaits are
    not cut short): the held request and the singletons are torn down once,
    the container ends closed, and the cancellation still reaches its scope."""
    caplog.set_level(logging.WARNING, logger="di")
    reg, log = _cancel_close_registry(trio.sleep)
    # Never reached: a cancelled exit must not wait out shutdown_timeout.
    c = di.Container(reg, shutdown_timeout=60)

    async def main() -> None:
        release = trio.Event()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as cancel:
                    async with c:
                        async with c.scope("request") as scope:
                            await scope.aresolve(Conn)

                            async def holder(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                                async with scope.hold():
                                    task_status.started()
                                    await release.wait()

                            await nursery.start(holder)
                        cancel.cancel()
                        await trio.sleep_forever()
                assert cancel.cancelled_caught
                assert (c.ref_count, c.is_open, scope.closed) == (0, False, True)
                assert log == _CLOSED_ONCE
                release.set()  # the holder lets go of a torn-down request: a no-op
        assert log == _CLOSED_ONCE
        assert c.held_checkpoints() == 0 and c.lingering_checkpoints() == 0

    trio.run(main)
    assert _forced_by_interruption(caplog), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("closing", ["last exit", "aclose(force=True)"])
def test_asyncio_close_cancelled_while_waiting_for_a_holder_still_closes_once(
    closing: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The task running the close is cancelled while it waits for a task that
    holds a request: CancelledError propagates out of it, and the close has
    still torn down the held request and the singletons, once each."""
    caplog.set_level(logging.WARNING, logger="di")
    reg, log = _cancel_close_registry(asyncio.sleep)
    c = di.Container(reg, shutdown_timeout=60)  # never reached

    async def main() -> None:
        held, release = asyncio.Event(), asyncio.Event()
        scopes: list[di.Checkpoint] = []

        async def holder(scope: di.Checkpoint) -> None:
            async with scope.hold():
                held.set()
                await release.wait()

        async def user() -> None:
            async with c:
                async with c.scope("request") as scope:
                    scopes.append(scope)
                    await scope.aresolve(Conn)
                    holding.append(asyncio.create_task(holder(scope)))
                    await held.wait()
                if closing == "aclose(force=True)":
                    await c.aclose(force=True)

        holding: list[asyncio.Task[None]] = []
        task = asyncio.create_task(user())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        # The close holds the lifecycle lock while it waits for the holder.
        while not (held.is_set() and c._lifecycle_lock.locked()):
            assert loop.time() < deadline and not task.done(), "the close never started waiting"
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        assert task.cancelled()  # the CancelledError propagated out of the close
        assert (c.ref_count, c.is_open, scopes[0].closed) == (0, False, True)
        assert log == _CLOSED_ONCE
        assert not holding[0].done()  # still holding: the close did not wait for it
        release.set()  # its late release of a torn-down request is a no-op
        await asyncio.wait_for(holding[0], 10)
        assert log == _CLOSED_ONCE
        assert c.held_checkpoints() == 0 and c.lingering_checkpoints() == 0

    asyncio.run(main())
    assert _forced_by_interruption(caplog), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_singleton_made_under_an_override_that_ends_meanwhile_is_not_kept() -> None:
    """D starts being made under override(Settings, fake) and finishes after the
    override ended: its caller gets it, but the container does not cache a D
    built on a provider no longer in force (the fake would outlive its override)."""

    class D:
        def __init__(self, settings: Settings) -> None:
            self.settings = settings

    started, release = threading.Event(), threading.Event()
    reg = di.Registry()
    reg.register(Settings, Settings, singleton=True)

    @reg.provider(singleton=True)
    def d(settings: Settings) -> D:
        started.set()
        release.wait(10)
        return D(settings)

    c = di.Container(reg)
    fake = Settings()
    made: list[D] = []
    with c:
        real = c.resolve(Settings)
        with c.override(Settings, fake):
            worker = threading.Thread(target=lambda: made.append(c.resolve(D)))
            worker.start()
            assert started.wait(10)  # D is being made with the fake
        release.set()
        worker.join(10)
        assert made[0].settings is fake  # what its caller asked for, under the override
        assert c.resolve(D).settings is real  # but the container made a fresh one
        assert c.resolve(D) is c.resolve(D)


@pytest.mark.parametrize("ends", ["inside the scope", "before the scope is entered"])
def test_a_context_value_supplied_under_an_override_serves_once_the_override_ends(
    ends: str,
) -> None:
    class Request:
        pass

    reg = di.Registry()
    reg.context(Request, scope="request")
    c = di.Container(reg)
    fake, real = Request(), Request()
    override = c.override(Request, fake)
    override.__enter__()
    scope = c.scope("request", context={Request: real})
    if ends == "before the scope is entered":
        override.__exit__(None, None, None)
    with scope:
        if ends == "inside the scope":
            assert scope.resolve(Request) is fake
            override.__exit__(None, None, None)
        assert scope.resolve(Request) is real


class Lifespan:
    pass


def test_an_interrupted_asyncio_close_tears_singletons_down_in_the_closing_task() -> None:
    """Teardowns may be bound to the task that opened them (anyio cancel scopes,
    asyncio.timeout): a close whose wait for a holder is cancelled finishes in
    the same task, not in a task of its own."""
    tasks: list[object] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def lifespan() -> AsyncIterator[Lifespan]:
        tasks.append(asyncio.current_task())
        yield Lifespan()
        await asyncio.sleep(0)
        tasks.append(asyncio.current_task())

    reg.register(Conn, Conn, scope="request")
    c = di.Container(reg, shutdown_timeout=60)  # never reached

    async def main() -> None:
        held, release = asyncio.Event(), asyncio.Event()

        async def holder(scope: di.Checkpoint) -> None:
            async with scope.hold():
                held.set()
                await release.wait()

        async def app() -> None:  # a lifespan: opens the singletons, and closes them
            async with c:
                await c.aresolve(Lifespan)
                async with c.scope("request") as scope:
                    holding.append(asyncio.create_task(holder(scope)))
                    await held.wait()

        holding: list[asyncio.Task[None]] = []
        task = asyncio.create_task(app())
        while not (held.is_set() and c._lifecycle_lock.locked()):
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        assert task.cancelled() and not c.is_open
        assert tasks == [task, task]
        release.set()
        await asyncio.wait_for(holding[0], 10)

    asyncio.run(main())


@pytest.mark.parametrize("how", ["sync", "async"])
def test_the_containers_last_exit_inside_one_of_its_scopes_is_refused(how: str) -> None:
    """Exits out of order are an error, never silent corruption: the container's
    last exit while a scope is still current in this task would close the
    singletons under it. Refused with nothing released; leaving the scope first
    then closing works, in LIFO order."""
    log: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def engine() -> Iterator[Engine]:
        yield Engine()
        log.append("engine closed")

    @reg.provider(scope="request")
    def session(engine: Engine) -> Iterator[Conn]:
        yield Conn()
        log.append("session closed")

    c = di.Container(reg)

    async def main() -> None:
        if how == "sync":
            c.__enter__()
        else:
            await c.__aenter__()
        scope = c.scope("request").__enter__()
        scope.resolve(Conn)
        with pytest.raises(di.ScopeError, match="exit the scope first"):
            if how == "sync":
                c.__exit__(None, None, None)
            else:
                await c.__aexit__(None, None, None)
        assert c.is_open and c.ref_count == 1 and log == []
        scope.__exit__(None, None, None)
        if how == "sync":
            c.__exit__(None, None, None)
        else:
            await c.__aexit__(None, None, None)
        assert log == ["session closed", "engine closed"] and not c.is_open

    asyncio.run(main())


class Finalizing:
    pass


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_close_interrupted_by_an_anyio_cancel_scope_still_finalizes_singletons(
    backend: str,
) -> None:
    """anyio's cancel scopes deliver their cancellation again at every await,
    on asyncio too: the rest of an interrupted close runs in a shielded anyio
    scope, so an async teardown's ordinary await is not cut short."""
    import anyio

    done: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    async def finalizing() -> AsyncIterator[Finalizing]:
        yield Finalizing()
        await anyio.sleep(0.01)  # an ordinary await in a teardown
        done.append("finalized")

    reg.register(Conn, Conn, scope="request")
    c = di.Container(reg, shutdown_timeout=60)  # never reached

    async def main() -> None:
        release, held = anyio.Event(), anyio.Event()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as cancel:
                    async with c:
                        await c.aresolve(Finalizing)
                        async with c.scope("request") as scope:

                            async def background() -> None:
                                async with scope.hold():
                                    held.set()
                                    await release.wait()

                            tg.start_soon(background)
                            await held.wait()
                        cancel.cancel()  # the last exit is cancelled as it waits
                release.set()
        assert cancel.cancelled_caught
        assert not c.is_open and done == ["finalized"]

    anyio.run(main, backend=backend)


def test_a_container_block_inside_a_scope_closes_normally() -> None:
    """The scope was current before the container's block began: the block is
    nested inside it, and its last exit closes the container as usual."""
    c = di.Container(_logged_singleton()[0])
    with c.scope("request"), c:
        c.resolve(Settings)
    assert (c.ref_count, c.is_open) == (0, False)


def test_a_task_that_inherited_a_scope_closes_the_container_it_entered() -> None:
    """The scope is current in the task only because create_task copied it in:
    it encloses the task's container block, which closes normally."""
    c = di.Container(_logged_singleton()[0])

    async def worker() -> None:
        async with c:
            await c.aresolve(Settings)

    async def main() -> None:
        async with c.scope("request"):
            await asyncio.create_task(worker())
        assert (c.ref_count, c.is_open) == (0, False)

    asyncio.run(main())
