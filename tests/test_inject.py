"""di/inject.py: di.inject, di.Injected[T], di.Depends(T)."""

import gc
import importlib.util
import inspect
import sys
import textwrap
import typing
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import pytest

import di

if TYPE_CHECKING:
    from decimal import Decimal  # only for the checker: "Decimal" does not evaluate

pytestmark = pytest.mark.timeout(30)


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
        settings: Settings = di.Depends(Settings),
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
        settings: Settings = di.Depends(Settings),
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
        settings: Settings = di.Depends(Settings),
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
        settings: Settings = di.Depends(Settings),
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


# -- positional-only parameters -------------------------------------------------


def test_positional_only_parameter_is_injected_positionally() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def f(repo: di.Injected[Repo], /, x: int = 1) -> tuple[Repo, int]:
        return repo, x

    @di.inject
    def gap(
        a: int = 5,
        settings: Settings = di.Depends(Settings),
        /,
        *,
        repo: di.Injected[Repo],
    ) -> tuple[int, Settings, Repo]:
        return a, settings, repo

    mine = Repo()
    with c:
        repo, x = f()
        assert isinstance(repo, Repo) and x == 1
        assert f(x=2)[1] == 2
        assert f(mine) == (mine, 1)  # passed positionally: wins
        a, settings, repo = gap()  # the unmarked default before it is passed too
        assert a == 5 and settings is c.resolve(Settings) and isinstance(repo, Repo)
        assert gap(7)[:2] == (7, c.resolve(Settings))
        assert gap(7, my := Settings())[1] is my
    assert calls["repo"] == 5  # f twice, gap three times


def test_positional_only_name_in_var_keyword_does_not_count_as_passed() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def f(repo: di.Injected[Repo], /, **extra: Any) -> tuple[Repo, dict[str, Any]]:
        return repo, extra

    with c:
        repo, extra = f(repo="not the parameter")  # as Python binds it: into **extra
    assert isinstance(repo, Repo) and extra == {"repo": "not the parameter"}
    assert calls["repo"] == 1


def test_positional_only_required_argument_missing_is_the_call_error() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def f(a: int, repo: di.Injected[Repo], /) -> tuple[int, Repo]:
        return a, repo

    with c:
        with pytest.raises(TypeError, match="'a'"):
            f()
        assert calls["repo"] == 0
        a, repo = f(1)
    assert a == 1 and isinstance(repo, Repo)


@pytest.mark.anyio
async def test_async_positional_only_parameter() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def f(thing: di.Injected[AsyncThing], /, x: int = 1) -> tuple[AsyncThing, int]:
        log.append("body")
        return thing, x

    async with c:
        thing, x = await f(x=3)
    assert isinstance(thing, AsyncThing) and x == 3
    assert log == ["open async", "body", ("close async", None)]


# -- generator functions ----------------------------------------------------------


def test_generator_keeps_its_resources_open_while_it_runs() -> None:
    reg, calls, log = make_registry()
    c = di.Container(reg)

    @di.inject
    def numbers(n: int, tmp: di.Injected[Tmp]) -> Iterator[tuple[int, Tmp]]:
        log.append("body")
        for i in range(n):
            yield i, tmp
            log.append(i)

    assert inspect.isgeneratorfunction(numbers)
    with c, c.scope("request"):
        gen = numbers(2)
        assert log == []  # nothing resolved before the first iteration
        items = list(gen)
    assert [i for i, _ in items] == [0, 1]
    assert items[0][1] is items[1][1]  # one resolve for the whole run
    assert log == ["open tmp", "body", 0, 1, ("close tmp", None)]
    assert calls["tmp"] == 1


def test_generator_send_and_return_value_pass_through() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    def echo(tmp: di.Injected[Tmp]) -> typing.Generator[str, str, str]:
        got = yield "ready"
        got = yield f"got {got}"
        return f"done {got}"

    def outer() -> typing.Generator[str, str, str]:
        return (yield from echo())

    with c:
        gen = outer()
        assert next(gen) == "ready"
        assert log == ["open tmp"]
        assert gen.send("a") == "got a"
        with pytest.raises(StopIteration) as ei:
            gen.send("b")
    assert ei.value.value == "done b"
    assert log == ["open tmp", ("close tmp", None)]


@pytest.mark.parametrize("how", ["close", "break"])
def test_generator_closed_early_unwinds_once(how: str) -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    def numbers(tmp: di.Injected[Tmp]) -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            log.append("body finally")

    with c:
        if how == "close":
            gen = numbers()
            assert next(gen) == 1
            gen.close()
            gen.close()  # a second close is a no-op
        else:
            for _ in numbers():
                break  # the generator is dropped, and closed, here
    assert log == ["open tmp", "body finally", ("close tmp", "GeneratorExit")]


def test_generator_never_started_resolves_nothing() -> None:
    reg, calls, log = make_registry()
    c = di.Container(reg)

    @di.inject
    def numbers(tmp: di.Injected[Tmp]) -> Iterator[int]:
        yield 1

    with c:
        numbers().close()
    assert log == []
    assert calls["tmp"] == 0


def test_exception_thrown_into_generator_reaches_body_and_unwinds() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    def numbers(tmp: di.Injected[Tmp]) -> Iterator[int]:
        try:
            yield 1
        except Boom as exc:
            log.append(("body saw", str(exc)))
            yield 2  # handled: still running, its resources still open
            raise
        log.append("not reached")

    with c:
        gen = numbers()
        assert next(gen) == 1
        assert gen.throw(Boom("first")) == 2
        assert log == ["open tmp", ("body saw", "first")]
        with pytest.raises(Boom, match="first"):
            next(gen)
    assert log == ["open tmp", ("body saw", "first"), ("close tmp", "Boom")]


def test_generator_body_raising_unwinds_with_its_exception() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    def numbers(tmp: di.Injected[Tmp]) -> Iterator[int]:
        yield 1
        raise Boom("body failed")

    with c:
        gen = numbers()
        next(gen)
        with pytest.raises(Boom):
            next(gen)
    assert log == ["open tmp", ("close tmp", "Boom")]


def test_generator_injection_errors_come_at_the_first_iteration() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def numbers(repo: di.Injected[Repo]) -> Iterator[Repo]:
        yield repo

    @di.inject
    def things(thing: di.Injected[AsyncThing]) -> Iterator[AsyncThing]:
        yield thing

    gen = numbers()  # the call itself needs no container
    with pytest.raises(di.NoActiveScopeError):
        next(gen)
    mine = Repo()
    assert list(numbers(mine)) == [mine]  # all explicit: no container needed
    with c:
        with pytest.raises(di.AsyncProviderError):
            next(things())
        assert isinstance(next(numbers()), Repo)
    assert calls["repo"] == 1
    assert calls["async"] == 0


# -- async generator functions ----------------------------------------------------


@pytest.mark.anyio
async def test_async_generator_resolves_async_providers_and_keeps_them_open() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def stream(n: int, thing: di.Injected[AsyncThing]) -> AsyncIterator[int]:
        log.append("body")
        for i in range(n):
            yield i
            log.append(i)

    assert inspect.isasyncgenfunction(stream)
    with anyio.fail_after(10):
        async with c:
            agen = stream(2)
            assert log == []
            assert [i async for i in agen] == [0, 1]
    assert log == ["open async", "body", 0, 1, ("close async", None)]


@pytest.mark.anyio
async def test_async_generator_aclose_and_break_unwind_once() -> None:
    reg, calls, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def stream(thing: di.Injected[AsyncThing], tmp: di.Injected[Tmp]) -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            log.append("body finally")

    with anyio.fail_after(10):
        async with c:
            agen = stream()
            async for item in agen:
                assert item == 1
                break
            assert log[2:] == []  # still suspended, its resources open
            await agen.aclose()
            await agen.aclose()  # a second aclose is a no-op
    assert sorted(log[:2], key=str) == ["open async", "open tmp"]
    assert log[2:] == [
        "body finally",
        (log[1].replace("open", "close"), "GeneratorExit"),
        (log[0].replace("open", "close"), "GeneratorExit"),
    ]
    assert calls["async"] == calls["tmp"] == 1


@pytest.mark.anyio
async def test_async_generator_garbage_collected_unwinds_once() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def stream(thing: di.Injected[AsyncThing]) -> AsyncIterator[int]:
        yield 1
        yield 2

    with anyio.fail_after(10):
        async with c:
            agen = stream()
            assert await agen.__anext__() == 1
            del agen
            gc.collect()
            while len(log) < 2:  # the event loop's finalizer acloses it
                await anyio.sleep(0.001)
    assert log == ["open async", ("close async", "GeneratorExit")]


@pytest.mark.anyio
async def test_async_generator_athrow_and_asend() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def stream(thing: di.Injected[AsyncThing]) -> typing.AsyncGenerator[str, str]:
        got = yield "ready"
        try:
            yield f"got {got}"
        except Boom as exc:
            log.append(("body saw", str(exc)))
            yield "handled"
            raise

    with anyio.fail_after(10):
        async with c:
            agen = stream()
            assert await agen.asend(None) == "ready"  # type: ignore[arg-type]
            assert await agen.asend("a") == "got a"
            assert await agen.athrow(Boom("thrown")) == "handled"
            assert log == ["open async", ("body saw", "thrown")]
            with pytest.raises(Boom, match="thrown"):
                await agen.__anext__()
    assert log == ["open async", ("body saw", "thrown"), ("close async", "Boom")]


@pytest.mark.anyio
async def test_async_generator_body_raising_and_explicit_arguments() -> None:
    reg, calls, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def stream(thing: di.Injected[AsyncThing]) -> AsyncIterator[AsyncThing]:
        yield thing
        raise Boom()

    mine = AsyncThing()
    with anyio.fail_after(10):
        got = []
        with pytest.raises(Boom):
            async for item in stream(mine):  # all explicit: no container needed
                got.append(item)
        assert got == [mine] and log == []
        async with c:
            with pytest.raises(Boom):
                async for item in stream():
                    got.append(item)
    assert log == ["open async", ("close async", "Boom")]
    assert calls["async"] == 1


# -- annotations that cannot be evaluated at decoration ---------------------------


def test_annotation_imported_only_for_type_checking_is_not_needed() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def charge(amount: "Decimal", settings: di.Injected[Settings]) -> "Decimal":
        return amount

    @di.inject
    def pos(amount: "Decimal", repo: di.Injected[Repo], /) -> tuple[Any, Repo]:
        return amount, repo

    @di.inject
    def keyed(
        amount: "Decimal",
        settings: "Decimal" = di.Depends(Settings),  # the key comes from Depends
    ) -> Any:
        return amount, settings

    with c:
        assert charge(3) == 3
        amount, repo = pos(4)
        assert amount == 4 and isinstance(repo, Repo)
        assert keyed(5) == (5, c.resolve(Settings))
    assert calls["settings"] == 1 and calls["repo"] == 1


@pytest.mark.anyio
async def test_annotation_imported_only_for_type_checking_is_not_needed_async() -> None:
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    async def charge(amount: "Decimal", thing: di.Injected[AsyncThing]) -> Any:
        return amount, thing

    async with c:
        amount, thing = await charge(3)
    assert amount == 3 and isinstance(thing, AsyncThing)
    assert log == ["open async", ("close async", None)]


def test_module_with_type_checking_import_and_forward_reference(tmp_path: Path) -> None:
    source = tmp_path / "di_test_handlers_module.py"
    source.write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            from typing import TYPE_CHECKING

            import di

            if TYPE_CHECKING:
                from decimal import Decimal


            class Settings:
                pass


            @di.inject
            def charge(amount: Decimal, order: Order, settings: di.Injected[Settings]) -> str:
                return f"{amount} {order.id} {type(settings).__name__}"


            class Order:  # defined after the function that names it
                id = 7


            registry = di.Registry()
            registry.register(Settings, Settings, singleton=True)
            """
        )
    )
    spec = importlib.util.spec_from_file_location(source.stem, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[source.stem] = module
    try:
        spec.loader.exec_module(module)  # decorating raised NameError here
        with di.Container(module.registry):
            assert module.charge(3, module.Order()) == "3 7 Settings"
    finally:
        del sys.modules[source.stem]


def test_marked_parameter_whose_annotation_cannot_be_evaluated_fails_at_decoration() -> None:
    def as_text(x: int, repo: "di.Injected[Decimal]") -> None:
        pass

    def forward_ref(x: int, repo: di.Injected["Decimal"]) -> None:
        pass

    def not_marked(x: int, repo: "Annotated[Decimal, di.Named('x')]") -> None:
        pass

    di.inject(not_marked)  # not injected, so its annotation is not needed
    for handler in (as_text, forward_ref):
        with pytest.raises(NameError) as ei:
            di.inject(handler)
        message = str(ei.value)
        assert f"parameter 'repo' of {handler.__qualname__}" in message
        assert "name 'Decimal' is not defined" in message
        assert "TYPE_CHECKING" in message and "di.Depends" in message
        assert ei.value.name == "Decimal"
        assert isinstance(ei.value.__cause__, NameError)


def test_marked_parameter_with_depends_default_needs_no_annotation() -> None:
    reg, calls, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(repo: "di.Injected[Decimal]" = di.Depends(Repo)) -> Any:
        return repo

    with c:
        assert isinstance(handler(), Repo)
    assert calls["repo"] == 1


def test_marked_annotation_failing_otherwise_fails_at_decoration() -> None:
    def handler(repo: "di.Injected[di.NoSuchName]") -> None:  # type: ignore[name-defined]
        pass

    with pytest.raises(TypeError, match=r"parameter 'repo' of .*handler.*NoSuchName"):
        di.inject(handler)


def test_an_injected_string_hint_defaulting_to_none_is_still_injected() -> None:
    # What `from __future__ import annotations` makes of `repo: Injected[Repo] = None`:
    # 3.10's get_type_hints would read Optional[Injected[Repo]], no longer marked.
    reg, _, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(repo: "di.Injected[Repo]" = None) -> Repo:  # type: ignore[assignment]
        return repo

    with c:
        assert isinstance(handler(), Repo)


def _logged(f: Any) -> Any:
    """An ordinary decorator: a plain def that returns what ``f`` returns."""
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


@pytest.mark.anyio
async def test_plain_wraps_decorator_below_inject_on_async_def_is_refused_not_closed_early() -> (
    None
):
    # inject sees a plain function: a call that opened resources for itself
    # and got back a coroutine or generator (whose body runs later) is refused,
    # with those resources closed and nothing left running on closed ones.
    reg, _, log = make_registry()
    c = di.Container(reg)

    @di.inject
    @_logged
    async def handler(tmp: Tmp = di.Depends(Tmp)) -> None:
        raise AssertionError("the body must not run on closed resources")

    @di.inject
    @_logged
    def numbers(tmp: Tmp = di.Depends(Tmp)) -> Iterator[int]:
        raise AssertionError("the body must not run on closed resources")
        yield 0

    with anyio.fail_after(10):
        async with c:
            for call in (handler, numbers):
                with pytest.raises(TypeError, match=r"Put @di\.inject directly on"):
                    call()
                assert log == ["open tmp", ("close tmp", None)]
                log.clear()


def test_plain_wraps_decorator_running_the_coroutine_itself_still_returns_its_value() -> None:
    # A sync adapter below inject (asyncio.run with functools.wraps) stays sync.
    import asyncio
    import functools

    reg, _, log = make_registry()
    c = di.Container(reg)

    def run(f: Any) -> Any:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(f(*args, **kwargs))

        return wrapper

    @di.inject
    @run
    async def command(tmp: Tmp = di.Depends(Tmp)) -> list[Any]:
        return list(log)

    with c:
        assert command() == ["open tmp"]
    assert log == ["open tmp", ("close tmp", None)]


def test_inject_on_top_of_staticmethod_and_classmethod() -> None:
    reg, _, _ = make_registry()
    c = di.Container(reg)

    class Service:
        @di.inject  # type: ignore[misc]
        @staticmethod
        def static(repo: Repo = di.Depends(Repo)) -> Repo:
            return repo

        @di.inject  # type: ignore[misc]
        @classmethod
        def klass(cls, x: int, repo: Repo = di.Depends(Repo)) -> tuple[type, int, Repo]:
            return cls, x, repo

    class Sub(Service):
        pass

    assert isinstance(Service.__dict__["static"], staticmethod)
    assert isinstance(Service.__dict__["klass"], classmethod)
    with c:
        assert isinstance(Service.static(), Repo)
        assert isinstance(Service().static(), Repo)  # the instance is not taken as `repo`
        mine = Repo()
        assert Service().static(mine) is mine
        cls, x, repo = Service.klass(1)
        assert cls is Service and x == 1 and isinstance(repo, Repo)
        cls, x, repo = Sub().klass(2)
        assert cls is Sub and x == 2 and isinstance(repo, Repo)


@pytest.mark.anyio
async def test_task_outliving_the_container_block_gets_no_active_scope_error() -> None:
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(singleton=True)
    def pool() -> Iterator[Conn]:
        log.append("open")
        yield Conn()
        log.append("close")

    c = di.Container(reg)

    @di.inject
    async def handler(conn: Conn = di.Depends(Conn)) -> Conn:
        return conn

    ended = anyio.Event()
    outcome: dict[str, Any] = {}

    async def background() -> None:
        await ended.wait()  # the container's block has ended: it is closed
        outcome["active"] = di.container.active_container()
        try:
            await handler()
        except di.NoActiveScopeError as exc:
            outcome["error"] = str(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with c:
                tg.start_soon(background)  # inherits the container's entry
                assert di.container.active_container() is c
            assert not c.is_open
            ended.set()
    assert outcome["active"] is None
    assert "has closed" in outcome["error"] and "enter it again" in outcome["error"]
    assert log == []  # no singleton made in the closed container
    # Entered again, it serves a new block as usual.
    async with c:
        assert isinstance(await handler(), Conn)
    assert log == ["open", "close"]


def test_marked_via_alias_with_unevaluable_annotation_fails_at_decoration(
    tmp_path: Path,
) -> None:
    source = tmp_path / "di_test_alias_module.py"
    source.write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            import di
            from di import Injected as Inj


            try:

                @di.inject
                def handler(x: int, repo: Inj[Repo]) -> object:
                    return repo

            except NameError as exc:
                error = exc


            @di.inject  # not marked: skipped, no error
            def unmarked(x: int, repo: list[Repo]) -> object:
                return repo


            class Repo:  # defined after the functions that name it
                pass
            """
        )
    )
    spec = importlib.util.spec_from_file_location(source.stem, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[source.stem] = module
    try:
        spec.loader.exec_module(module)  # decorating `handler` passed silently here
        error = module.error
        assert isinstance(error, NameError) and error.name == "Repo"
        assert "parameter 'repo' of handler" in str(error)
        assert "name 'Repo' is not defined" in str(error)
    finally:
        del sys.modules[source.stem]


def test_alias_names_decide_marking_before_the_text() -> None:
    # A foreign `Injected` is not di's; an alias of di.Injected[X] is.
    import sys
    import types

    mod = types.ModuleType("alias_marking_mod")
    exec(
        "from __future__ import annotations\n"
        "import di\n"
        "class Injected:  # another library's marker\n"
        "    def __class_getitem__(cls, item): return cls\n"
        "RepoDep = di.Injected['Later']\n"
        "def foreign(x: Injected[Later]) -> None: ...\n"
        "def aliased(repo: RepoDep) -> None: ...\n",
        mod.__dict__,
    )
    sys.modules[mod.__name__] = mod
    try:
        di.inject(mod.foreign)  # skipped: not injected, so its annotation need not evaluate
        with pytest.raises(NameError, match="Later"):
            di.inject(mod.aliased)  # marked: fails at decoration, naming the name
    finally:
        del sys.modules[mod.__name__]


def test_marker_lookup_uses_identity_not_equality() -> None:
    import types

    class Odd:
        def __eq__(self, other: object) -> bool:
            raise ValueError("no comparisons")

        __hash__ = object.__hash__

    mod = types.ModuleType("odd_marking_mod")
    mod.__dict__["Checked"] = Annotated[int, Odd()]
    exec(
        "from __future__ import annotations\ndef f(x: Checked[Later]) -> None: ...\n",
        mod.__dict__,
    )
    di.inject(mod.f)  # skipped, no ValueError from the foreign metadata


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_plain_function_returning_a_task_keeps_it(anyio_backend: str) -> None:
    # A Task is running already, on what it was given: returned as it is,
    # while the call's own resources close when the call returns.
    reg, _, log = make_registry()
    c = di.Container(reg)

    async def work(n: int) -> int:
        return n + 1

    @di.inject
    def schedule(tmp: Tmp = di.Depends(Tmp)) -> Any:
        import asyncio

        return asyncio.ensure_future(work(5))

    async with c:
        task = schedule()
        assert log == ["open tmp", ("close tmp", None)]
        assert await task == 6


def test_annotated_around_injected_is_marked_when_unevaluable() -> None:
    import types

    mod = types.ModuleType("annotated_marking_mod")
    exec(
        "from __future__ import annotations\n"
        "from typing import Annotated\n"
        "import di\n"
        "def f(repo: Annotated[di.Injected[Later], 'the repo']) -> None: ...\n",
        mod.__dict__,
    )
    with pytest.raises(NameError, match="Later"):
        di.inject(mod.f)


def test_no_container_entered_error_mentions_scope_blocks_and_hold() -> None:
    reg, _, _ = make_registry()
    c = di.Container(reg)

    @di.inject
    def handler(conn: Conn = di.Depends(Conn)) -> Conn:
        return conn

    with pytest.raises(di.NoActiveScopeError, match=r"scope\.hold\(\)"):
        handler()
    assert c is not None
