"""Review of the key validation added in c8c6611 (key_problem / checked_key /
shown_key, the return-annotation checks, cm=True, levels=, shutdown_timeout=,
context=, inject's Injected checks and `_explain`).

The tests under "defects" pinned what that review found (legitimate input
refused, misuse still accepted, a message that was wrong or leaked a value);
all are fixed. The others pin legitimate forms verified to work on 3.10 and
3.11.
"""

import abc
import asyncio
import collections
import contextlib
import dataclasses
import enum
import fractions
import sys
import traceback
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    NamedTuple,
    NewType,
    Optional,
    Protocol,
    TypeVar,
)

import pytest
import typing_extensions as te

import di

T = TypeVar("T")


class Foo:
    pass


class Missing:
    pass


class Engine:
    pass


class Svc:
    pass


class Repo(Generic[T]):
    pass


class SupportsFoo(Protocol):
    def foo(self) -> int: ...


class Base(abc.ABC):
    @abc.abstractmethod
    def run(self) -> None: ...


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Settings:
    debug: bool = False


class Point(NamedTuple):
    x: int = 0


class Meta(type):
    pass


class WithMeta(metaclass=Meta):
    pass


@dataclasses.dataclass
class Doc:
    """Plain (eq=True, not frozen) dataclass metadata: unhashable, as most
    user-written Annotated metadata is."""

    text: str


UserId = NewType("UserId", int)
IntList = te.TypeAliasType("IntList", list[int])


def _resolve(reg: di.Registry, key: Any) -> Any:
    c = di.Container(reg)

    async def main() -> Any:
        async with c, c.scope("request") as scope:
            return await scope.aresolve(key)

    return asyncio.run(main())


# ================================================== legitimate keys (pass)

LEGIT_KEYS: list[Any] = [
    UserId,
    te.NewType("TeUserId", int),
    SupportsFoo,
    Base,
    list[int],
    typing.List[int],  # noqa: UP006
    Callable[[int], str],
    typing.Callable[[int], str],
    dict[str, Any],
    Optional[Foo],  # noqa: UP045
    typing.Union[Foo, int],  # noqa: UP007
    Foo | None,
    Literal["a"],
    IntList,
    Annotated[Foo, di.Named("n")],
    Annotated[Foo, "doc"],
    Repo[int],
    Color,
    Settings,
    Point,
    WithMeta,
    type[Foo],
    te.Self,
]


@pytest.mark.parametrize("key", LEGIT_KEYS, ids=repr)
def test_type_forms_register_and_resolve_by_every_entry_point(key: Any) -> None:
    value = object()
    for how in ("value", "provides", "register", "context", "depends", "injected"):
        reg = di.Registry()
        if how == "value":
            reg.value(key, value)
        elif how == "provides":
            reg.provider(provides=key)(lambda: value)
        elif how == "register":
            reg.register(key, lambda: value)
        elif how == "context":
            reg.context(key)
        else:
            reg.value(key, value)
        c = di.Container(reg)
        with c:
            if how == "context":
                if typing.get_origin(key) is Annotated and not any(
                    isinstance(m, di.Named) for m in key.__metadata__
                ):
                    continue  # context={Annotated[Foo, "doc"]: v}: a separate, older matter
                with c.scope("request", context={key: value}) as scope:
                    assert scope.resolve(key) is value, how
            elif how == "depends":

                @di.inject
                def by_default(x: Any = di.Depends(key)) -> Any:
                    return x

                assert by_default() is value
            elif how == "injected":

                @di.inject
                def by_marker(x: di.Injected[key]) -> Any:
                    return x

                assert by_marker() is value  # type: ignore[call-arg]
            else:
                assert c.resolve(key) is value, how


def test_return_annotations_of_generators_and_optionals_give_their_keys() -> None:
    def gen() -> Iterator[Foo]:
        yield Foo()

    async def agen() -> AsyncIterator[Engine]:
        yield Engine()

    def maybe() -> Optional[Svc]:  # noqa: UP045
        return None

    def pipe() -> UserId | None:
        return None

    def teardown_only() -> Iterator[None]:
        yield None

    def forward() -> "Repo[int]":
        return Repo()

    reg = di.Registry()
    reg.provider(scope="request")(gen)
    reg.provider(scope="request")(agen)
    reg.provider(maybe)
    reg.provider(pipe)
    reg.provider(provides=Settings, scope="request")(teardown_only)
    reg.provider(forward)
    assert isinstance(_resolve(reg, Foo), Foo)
    assert isinstance(_resolve(reg, Engine), Engine)
    assert _resolve(reg, Optional[Svc]) is None  # noqa: UP045
    assert _resolve(reg, UserId | None) is None
    assert _resolve(reg, Settings) is None
    assert isinstance(_resolve(reg, Repo[int]), Repo)


def test_cm_true_accepts_enter_from_a_base_and_aenter_only() -> None:
    entered = []

    class CMBase:
        def __enter__(self) -> Any:
            entered.append(type(self).__name__)
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    class FromBase(CMBase):
        pass

    class AsyncOnly:
        async def __aenter__(self) -> Any:
            entered.append("AsyncOnly")
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

    class Stack(contextlib.ExitStack):
        pass

    reg = di.Registry()
    for cls in (FromBase, AsyncOnly, Stack):
        reg.provider(cm=True, scope="request")(cls)
    assert isinstance(_resolve(reg, FromBase), FromBase)
    assert isinstance(_resolve(reg, AsyncOnly), AsyncOnly)
    assert isinstance(_resolve(reg, Stack), Stack)
    assert entered == ["FromBase", "AsyncOnly"]


class _ReadOnly(Mapping[Any, Any]):
    def __init__(self, data: dict[Any, Any]) -> None:
        self._data = data

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class _DictSub(dict):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize(
    "make",
    [types.MappingProxyType, _ReadOnly, _DictSub, collections.ChainMap, collections.OrderedDict],
    ids=lambda m: m.__name__,
)
def test_scope_context_takes_any_mapping(make: Any) -> None:
    reg = di.Registry()
    reg.context(Foo)
    c = di.Container(reg)
    foo = Foo()
    with c, c.scope("request", context=make({Foo: foo})) as scope:
        assert scope.resolve(Foo) is foo
    with c, c.scope("request", context={}), pytest.raises(di.ScopeError, match="not supplied"):
        c.resolve(Foo)


@pytest.mark.parametrize("timeout", [0, 0.5, float("inf"), 3])
def test_shutdown_timeout_takes_ints_floats_zero_and_inf(timeout: Any) -> None:
    c = di.Container(di.Registry(), shutdown_timeout=timeout)
    with c:
        pass
    assert c.shutdown_timeout == timeout


def test_registry_levels_take_any_iterable_of_names() -> None:
    want = ("app", "request")
    assert di.Registry(levels=list(want)).levels == want
    assert di.Registry(levels=iter(want)).levels == want  # type: ignore[arg-type]
    assert di.Registry(levels=(n for n in want)).levels == want  # type: ignore[arg-type]
    assert di.Registry(levels=[di.Scope.APP, di.Scope.REQUEST]).levels == want
    assert di.Registry(levels=di.Scope).levels == di.Scope.ORDER  # type: ignore[arg-type]
    assert di.Registry(levels=di.Scope.ORDER).levels == di.Scope.ORDER


def test_inject_rewrites_only_the_miss_of_its_own_parameter() -> None:
    """A miss of the parameter's key names the parameter (keyword-only and
    Depends alike); a ProviderNotFoundError / AsyncProviderError raised by the
    body, or by a factory resolving some other key, is left as it is."""
    reg = di.Registry()
    holder: list[di.Container] = []

    @reg.provider
    def svc() -> Svc:
        holder[0].resolve(Missing)  # a service locator inside a factory
        return Svc()

    reg.value(Foo, Foo())
    c = di.Container(reg)
    holder.append(c)

    @di.inject
    def kwonly(*, m: di.Injected[Missing]) -> Any:
        return m

    @di.inject
    def depends(m: Any = di.Depends(Missing)) -> Any:
        return m

    @di.inject
    def deep(s: di.Injected[Svc]) -> Any:
        return s

    @di.inject
    def body(f: di.Injected[Foo]) -> Any:
        raise di.ProviderNotFoundError(Foo)

    @di.inject
    def body_async(f: di.Injected[Foo]) -> Any:
        raise di.AsyncProviderError("from the body")

    @di.inject
    def gen(f: di.Injected[Foo]) -> Iterator[int]:
        yield 1
        raise di.ProviderNotFoundError(Foo)

    @di.inject
    async def agen(f: di.Injected[Foo]) -> AsyncIterator[int]:
        yield 1
        raise di.AsyncProviderError("from the async body")

    with c:
        for fn in (kwonly, depends):
            with pytest.raises(di.ProviderNotFoundError, match=rf"'m' of \S*{fn.__name__}"):
                fn()  # type: ignore[call-arg]
        with pytest.raises(di.ProviderNotFoundError) as info:
            deep()  # type: ignore[call-arg]
        assert info.value.key is Missing and "parameter" not in str(info.value)
        with pytest.raises(di.ProviderNotFoundError) as info:
            body()  # type: ignore[call-arg]
        assert "parameter" not in str(info.value)
        with pytest.raises(di.AsyncProviderError, match=r"^from the body$"):
            body_async()  # type: ignore[call-arg]
        with pytest.raises(di.ProviderNotFoundError) as info:
            list(gen())  # type: ignore[call-arg]
        assert "parameter" not in str(info.value)

    async def run_agen() -> None:
        async with c:
            async for _ in agen():  # type: ignore[call-arg]
                pass

    with pytest.raises(di.AsyncProviderError, match=r"^from the async body$"):
        asyncio.run(run_agen())


# ================================================================ defects


@pytest.mark.parametrize(
    "how", ["value", "provides", "register", "context", "depends", "return annotation"]
)
def test_annotated_with_unhashable_metadata_is_still_a_key(how: str) -> None:
    key = Annotated[Foo, Doc("the foo")]
    reg = di.Registry()
    foo = Foo()
    if how == "value":
        reg.value(key, foo)
    elif how == "provides":
        reg.provider(provides=key)(lambda: foo)
    elif how == "register":
        reg.register(key, lambda: foo)
    elif how == "context":
        reg.context(key)
    elif how == "depends":
        reg.value(Foo, foo)
        di.Depends(key)
    else:

        def make() -> Annotated[Foo, Doc("the foo")]:
            return foo

        reg.provider(make)
    if how != "context":
        assert _resolve(reg, Foo) is foo


def test_annotated_any_with_plain_metadata_is_refused_like_any() -> None:
    with pytest.raises(TypeError, match="Any"):
        di.Registry().value(Annotated[Any, "doc"], 1)


@pytest.mark.parametrize("kind", ["coroutine", "async generator"])
def test_async_injected_function_is_not_told_to_become_async(kind: str) -> None:
    reg = di.Registry()
    holder: list[di.Container] = []

    @reg.provider(singleton=True)
    async def engine() -> Engine:
        return Engine()

    @reg.provider
    def svc() -> Svc:
        holder[0].resolve(Engine)  # a sync factory doing a sync resolve of an async provider
        return Svc()

    c = di.Container(reg)
    holder.append(c)

    @di.inject
    async def handler(s: di.Injected[Svc]) -> Any:
        return s

    @di.inject
    async def stream(s: di.Injected[Svc]) -> AsyncIterator[Any]:
        yield s

    async def main() -> None:
        async with c:
            if kind == "coroutine":
                await handler()  # type: ignore[call-arg]
            else:
                async for _ in stream():  # type: ignore[call-arg]
                    pass

    with pytest.raises(di.AsyncProviderError) as info:
        asyncio.run(main())
    text = str(info.value)
    assert "an `async def`" not in text and "plain (sync) function" not in text, text


def test_rewritten_inject_error_keeps_the_factory_frame_in_its_traceback() -> None:
    reg = di.Registry()
    holder: list[di.Container] = []

    @reg.provider(singleton=True)
    async def engine() -> Engine:
        return Engine()

    @reg.provider
    def svc() -> Svc:
        holder[0].resolve(Engine)  # THE-FAILING-LINE
        return Svc()

    c = di.Container(reg)
    holder.append(c)

    @di.inject
    def handler(s: di.Injected[Svc]) -> Any:
        return s

    with c, pytest.raises(di.AsyncProviderError) as info:
        handler()  # type: ignore[call-arg]
    shown = "".join(traceback.format_exception(info.type, info.value, info.tb))
    assert "THE-FAILING-LINE" in shown, shown


def test_inject_names_a_positional_only_parameter_by_name() -> None:
    c = di.Container(di.Registry())

    @di.inject
    def handler(repo: di.Injected[Missing], /) -> Any:
        return repo

    with c, pytest.raises(di.ProviderNotFoundError) as info:
        handler()  # type: ignore[call-arg]
    assert "'repo'" in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "value",
    [{"password": "hunter2"}, types.SimpleNamespace(password="hunter2")],
    ids=["dict", "SimpleNamespace"],
)
def test_a_value_given_as_a_key_is_not_printed(value: Any) -> None:
    with pytest.raises(TypeError) as info:
        di.Registry().value(value, object())
    assert "hunter2" not in str(info.value), str(info.value)


def test_cm_true_on_a_class_whose_metaclass_has_enter_is_refused() -> None:
    class CMMeta(type):
        def __enter__(cls) -> Any:
            return cls

        def __exit__(cls, *exc: object) -> None:
            return None

    class NotACM(metaclass=CMMeta):
        pass

    with pytest.raises(TypeError, match="cm=True"):
        di.Registry().provider(cm=True)(NotACM)


def test_cm_true_on_a_parameterised_generic_that_is_no_cm_is_refused() -> None:
    class Plain(Generic[T]):
        pass

    with pytest.raises(TypeError, match="cm=True"):
        di.Registry().register(Plain[int], Plain[int], cm=True, scope="request")


def test_two_named_on_a_factory_parameter_names_the_factory_and_parameter() -> None:
    reg = di.Registry()
    with pytest.raises(TypeError) as info:

        @reg.provider
        def make(engine: Annotated[Engine, di.Named("a"), di.Named("b")]) -> Svc:
            return Svc()

    text = str(info.value)
    assert "make" in text and "engine" in text, text


def test_shutdown_timeout_takes_a_fraction() -> None:
    c = di.Container(di.Registry(), shutdown_timeout=fractions.Fraction(1, 2))  # type: ignore[arg-type]
    assert c.shutdown_timeout == 0.5


def test_negative_shutdown_timeout_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="shutdown_timeout"):
        di.Container(di.Registry(), shutdown_timeout=-1)


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="typing_extensions.Any is typing.Any")
def test_typing_extensions_any_is_refused_on_3_10_too() -> None:
    with pytest.raises(TypeError, match="Any"):
        di.Registry().value(te.Any, 1)
