"""di/inject.py: di.inject, di.Injected[T], di.Depends(T)."""

import inspect
import typing
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest

import di


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Settings:
    pass


class Repo:
    pass


class Conn:
    pass


class Tmp:
    pass


class AsyncThing:
    pass


class Boom(Exception):
    pass


def make_registry() -> tuple[di.Registry, dict[str, int], list[Any]]:
    reg = di.Registry()
    calls = {"settings": 0, "repo": 0, "conn": 0, "tmp": 0, "async": 0}
    log: list[Any] = []

    @reg.provider(singleton=True)
    def settings() -> Settings:
        calls["settings"] += 1
        return Settings()

    @reg.provider()
    def repo() -> Repo:
        calls["repo"] += 1
        return Repo()

    @reg.provider(scope="request")
    def conn() -> Conn:
        calls["conn"] += 1
        return Conn()

    @reg.provider()
    def tmp() -> Iterator[Tmp]:
        calls["tmp"] += 1
        log.append("open tmp")
        try:
            yield Tmp()
        except BaseException as e:
            log.append(("close tmp", type(e).__name__))
            raise
        log.append(("close tmp", None))

    @reg.provider()
    async def async_thing() -> AsyncIterator[AsyncThing]:
        calls["async"] += 1
        log.append("open async")
        try:
            yield AsyncThing()
        except BaseException as e:
            log.append(("close async", type(e).__name__))
            raise
        log.append(("close async", None))

    return reg, calls, log


def test_injected_is_annotated() -> None:
    hint = di.Injected[Repo]
    assert typing.get_origin(hint) is Annotated
    assert typing.get_args(hint)[0] is Repo


def test_sync_injected_and_depends() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(
        x: int,
        repo: di.Injected[Repo],
        settings: Settings = di.Depends(Settings),  # noqa: B008
    ) -> tuple[int, Repo, Settings]:
        return x, repo, settings

    with c:
        x, repo, settings = handler(7)
        assert x == 7
        assert isinstance(repo, Repo)
        assert settings is c.resolve(Settings)
        _, repo2, _ = handler(8)
        assert repo2 is not repo  # transient: resolved per call
    assert calls["repo"] == 2


@pytest.mark.anyio
async def test_async_injected_and_depends() -> None:
    reg, calls, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def handler(
        x: int,
        thing: di.Injected[AsyncThing],
        settings: Settings = di.Depends(Settings),  # noqa: B008,
    ) -> tuple[int, AsyncThing, Settings]:
        return x, thing, settings

    async with c:
        x, thing, settings = await handler(1)
        assert isinstance(thing, AsyncThing)
        assert settings is await c.aresolve(Settings)
    assert x == 1
    assert calls["async"] == 1
    assert log == ["open async", ("close async", None)]


def test_explicit_arguments_win_and_provider_is_not_called() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(
        repo: di.Injected[Repo],
        settings: Settings = di.Depends(Settings),  # noqa: B008
    ) -> Any:
        return repo, settings

    mine, my_settings = Repo(), Settings()
    with c:
        assert handler(mine, my_settings) == (mine, my_settings)  # positional
        assert handler(repo=mine, settings=my_settings) == (mine, my_settings)  # keyword
        r, s = handler(settings=my_settings)  # only repo is injected
        assert s is my_settings and isinstance(r, Repo) and r is not mine
    assert calls["settings"] == 0
    assert calls["repo"] == 1


@pytest.mark.anyio
async def test_explicit_arguments_win_async() -> None:
    reg, calls, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def handler(thing: di.Injected[AsyncThing]) -> AsyncThing:
        return thing

    mine = AsyncThing()
    async with c:
        assert await handler(mine) is mine
        assert await handler(thing=mine) is mine
    assert calls["async"] == 0
    assert log == []


def test_functools_wraps_preserved() -> None:
    def handler(x: int, repo: di.Injected[Repo]) -> int:
        """Handle things."""
        return x

    async def ahandler(x: int, repo: di.Injected[Repo]) -> int:
        """Handle things asynchronously."""
        return x

    wrapped = di.inject(handler)
    awrapped = di.inject(ahandler)
    assert wrapped.__name__ == "handler"
    assert wrapped.__qualname__ == handler.__qualname__
    assert wrapped.__doc__ == "Handle things."
    assert wrapped.__wrapped__ is handler  # type: ignore[attr-defined]
    assert awrapped.__name__ == "ahandler"
    assert awrapped.__wrapped__ is ahandler  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(awrapped)
    assert not inspect.iscoroutinefunction(wrapped)


def test_signature_read_once_at_decoration(monkeypatch: pytest.MonkeyPatch) -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    def handler(x: int, repo: di.Injected[Repo]) -> tuple[int, Repo]:
        return x, repo

    wrapped = di.inject(handler)

    # after decoration, re-reading the signature would now find nothing to inject
    handler.__annotations__.clear()

    def forbidden(*a: object, **k: object) -> Any:
        raise AssertionError("signature inspected at call time")

    monkeypatch.setattr(inspect, "signature", forbidden)
    monkeypatch.setattr(typing, "get_type_hints", forbidden)
    with c:
        x, repo = wrapped(3)
        x2, repo2 = wrapped(4)
    assert (x, x2) == (3, 4)
    assert isinstance(repo, Repo) and isinstance(repo2, Repo)
    assert calls["repo"] == 2


def test_sync_function_needing_async_provider_raises() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)
    ran = False

    @di.inject
    def handler(thing: di.Injected[AsyncThing]) -> None:
        nonlocal ran
        ran = True

    with c:
        with pytest.raises(di.AsyncProviderError) as ei:
            handler()
        assert "AsyncThing" in str(ei.value)
    assert not ran
    assert calls["async"] == 0  # never a private event loop


def test_no_container_entered_raises_no_active_scope() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(repo: di.Injected[Repo]) -> Repo:
        return repo

    with pytest.raises(di.NoActiveScopeError):
        handler()
    with c:
        assert isinstance(handler(), Repo)
    with pytest.raises(di.NoActiveScopeError):  # left again
        handler()
    assert calls["repo"] == 1


def test_all_arguments_explicit_needs_no_container() -> None:
    @di.inject
    def handler(
        repo: di.Injected[Repo],
        settings: Settings = di.Depends(Settings),  # noqa: B008
    ) -> Any:
        return repo, settings

    mine, my_settings = Repo(), Settings()
    assert handler(mine, my_settings) == (mine, my_settings)


@pytest.mark.anyio
async def test_no_container_entered_raises_no_active_scope_async() -> None:
    @di.inject
    async def handler(repo: di.Injected[Repo]) -> Repo:
        return repo

    with pytest.raises(di.NoActiveScopeError):
        await handler()


def test_per_call_resources_closed_when_call_returns() -> None:
    reg, calls, log = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(tmp: di.Injected[Tmp]) -> Tmp:
        log.append("body")
        return tmp

    with c:
        with c.scope("request"):
            handler()
            assert log == ["open tmp", "body", ("close tmp", None)]  # closed on return
        handler()  # at the app root too
        assert log[3:] == ["open tmp", "body", ("close tmp", None)]
    assert calls["tmp"] == 2


def test_per_call_resources_closed_when_call_raises() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(tmp: di.Injected[Tmp]) -> None:
        log.append("body")
        raise Boom("handler failed")

    with c, c.scope("request"):
        with pytest.raises(Boom):
            handler()
        # like a `with` block: the generator saw the exception that ended the call
        assert log == ["open tmp", "body", ("close tmp", "Boom")]


@pytest.mark.anyio
async def test_async_per_call_resources_closed_on_return_and_raise() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def ok(thing: di.Injected[AsyncThing], tmp: di.Injected[Tmp]) -> None:
        log.append("body")

    @di.inject
    async def failing(thing: di.Injected[AsyncThing]) -> None:
        log.append("body")
        raise Boom()

    async with c, c.scope("request"):
        await ok()
        assert sorted(log[0:2]) == ["open async", "open tmp"]
        assert log[2] == "body"
        closed = [e for e in log[3:] if isinstance(e, tuple)]
        assert closed == [(o.replace("open", "close"), None) for o in reversed(log[0:2])]  # LIFO
        log.clear()
        with pytest.raises(Boom):
            await failing()
        assert log == ["open async", "body", ("close async", "Boom")]


def test_uses_the_current_checkpoint() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(conn: di.Injected[Conn]) -> Conn:
        return conn

    with c:
        with c.scope("request") as s:
            a, b = handler(), handler()
            assert a is b is s.resolve(Conn)
            with c.scope("action"):
                assert handler() is a  # reaches the parent's instance
        with c.scope("request") as s2:
            assert handler() is s2.resolve(Conn)
            assert handler() is not a
        with pytest.raises(di.NoActiveScopeError):
            handler()  # request-scoped at the app root
    assert calls["conn"] == 2


@pytest.mark.anyio
async def test_async_uses_the_current_checkpoint() -> None:
    reg, _, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    async def handler(conn: di.Injected[Conn]) -> Conn:
        return conn

    async with c, c.scope("request") as s:
        assert await handler() is await s.aresolve(Conn)


def test_overrides_apply_to_injection() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(repo: di.Injected[Repo]) -> Repo:
        return repo

    fake = Repo()
    with c:
        with c.override(Repo, fake):
            assert handler() is fake
        assert handler() is not fake
    assert calls["repo"] == 1
