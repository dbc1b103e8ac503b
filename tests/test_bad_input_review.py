"""Every public entry point given bad or misused input.

The rule checked: bad input gets a clear error that names what was wrong and
how to fix it; nothing is lost or left half-open. Most of these pinned a
defect a review found (an internal error leaking, a message without the key
or the fix, a misuse accepted); each now passes.
"""

import asyncio
import types
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

import pytest

import di

T = TypeVar("T")


class A:
    pass


class B:
    def __init__(self, a: A) -> None:
        self.a = a


class Req:
    pass


class Missing:
    pass


def _registry() -> di.Registry:
    reg = di.Registry()
    reg.provider(A)
    reg.context(Req)
    return reg


# =============================================================== registry


def test_include_of_a_non_registry_is_a_clear_type_error() -> None:
    reg = di.Registry()
    with pytest.raises(TypeError, match="Registry"):
        reg.include(5)  # type: ignore[arg-type]


def test_register_provider_with_a_non_registry_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="registry"):
        di.register_provider(A, registry="main")  # type: ignore[call-overload]


@pytest.mark.parametrize("how", ["provides", "register", "value", "context"])
def test_an_unhashable_key_is_named_at_registration(how: str) -> None:
    reg = di.Registry()

    def make_a() -> A:
        return A()

    with pytest.raises((TypeError, di.DIError)) as info:
        if how == "provides":
            reg.provider(provides=[A])(make_a)
        elif how == "register":
            reg.register([A], A)
        elif how == "value":
            reg.value([A], A())
        else:
            reg.context([A])
    text = str(info.value)
    assert "key" in text and "[A]" in text, text


def test_register_with_an_instance_as_the_interface_is_refused() -> None:
    reg = di.Registry()
    with pytest.raises((TypeError, di.DIError), match="A"):
        reg.register(A(), A)


def test_register_with_none_as_the_interface_is_refused() -> None:
    reg = di.Registry()
    try:
        reg.register(None, A)
    except (TypeError, di.DIError):
        return
    # Accepted: then it must provide what was asked for.
    assert None in reg and A not in reg


def test_register_with_an_instance_as_implementation_points_to_value() -> None:
    reg = di.Registry()
    with pytest.raises(TypeError, match=r"registry\.value\(A"):
        reg.register(A, A())


def test_a_provider_returning_none_is_told_so() -> None:
    reg = di.Registry()

    def setup() -> None:
        return None

    with pytest.raises(TypeError, match=r"None"):
        reg.provider(setup)


@pytest.mark.parametrize("hint", [T, Any], ids=["TypeVar", "Any"])
def test_a_provider_returning_a_typevar_or_any_is_refused(hint: Any) -> None:
    reg = di.Registry()

    def make():  # type: ignore[no-untyped-def]
        return A()

    make.__annotations__["return"] = hint
    with pytest.raises(TypeError, match="provides="):
        reg.provider(make)


@pytest.mark.parametrize("hint", [Any, T, None], ids=["Any", "TypeVar", "None"])
def test_a_parameter_hint_nothing_can_provide_is_not_told_to_register_it(hint: Any) -> None:
    reg = di.Registry()

    def make(x) -> A:  # type: ignore[no-untyped-def]
        return A()

    make.__annotations__["x"] = hint
    reg.provider(make)
    with pytest.raises((di.GraphError, TypeError)) as info:
        di.Container(reg)
    text = str(info.value)
    assert "'x'" in text, text
    assert "registry.register(" not in text, text


def test_registry_levels_given_as_one_string_is_refused() -> None:
    with pytest.raises((TypeError, di.ScopeError), match="levels"):
        di.Registry(levels="abc")


def test_registry_levels_not_a_sequence_names_levels() -> None:
    with pytest.raises((TypeError, di.ScopeError), match="levels"):
        di.Registry(levels=5)  # type: ignore[arg-type]


def test_include_with_other_levels_says_how_to_fix() -> None:
    outer = di.Registry()
    inner = di.Registry(levels=("app", "request"))
    with pytest.raises(di.ScopeError, match=r"levels="):
        outer.include(inner)


def test_two_named_qualifiers_on_one_key_are_refused() -> None:
    reg = di.Registry()

    def make() -> Annotated[A, di.Named("x"), di.Named("y")]:
        return A()

    with pytest.raises((TypeError, di.DIError), match="Named"):
        reg.provider(make)


def test_cm_true_on_a_class_that_is_no_context_manager_says_how_to_fix() -> None:
    reg = di.Registry()
    with pytest.raises(TypeError, match="without cm=True"):
        reg.provider(cm=True)(A)
        di.Container(reg).resolve(A)


# ============================================================== container


def test_container_given_a_non_registry_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="Registry"):
        di.Container(di.Registry)  # type: ignore[arg-type]


def test_a_non_number_shutdown_timeout_is_refused_at_construction() -> None:
    with pytest.raises((TypeError, ValueError), match="shutdown_timeout"):
        di.Container(_registry(), shutdown_timeout="5")  # type: ignore[arg-type]


@pytest.mark.parametrize("context", [[Req], [(Req, Req())], 5], ids=["list", "pairs", "int"])
def test_scope_context_that_is_no_mapping_is_named(context: Any) -> None:
    c = di.Container(_registry())
    with c, pytest.raises((TypeError, di.ScopeError), match="mapping"):
        c.scope("request", context=context)


def test_resolve_of_an_unhashable_key_is_pythons_own_type_error() -> None:
    # By decision: container.resolve and scope.resolve *are* dict.__getitem__
    # (a created singleton is served with no Python frame), so an unhashable
    # key fails in the lookup itself, with Python's message, before di runs.
    c = di.Container(_registry())
    with pytest.raises(TypeError, match="unhashable type: 'list'"):
        c.resolve([A])  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["aresolve", "override"])
def test_an_unhashable_key_is_named_at_resolve(how: str) -> None:
    c = di.Container(_registry())
    with pytest.raises((TypeError, di.DIError)) as info:
        if how == "aresolve":
            asyncio.run(c.aresolve([A]))  # type: ignore[arg-type]
        else:
            with c.override([A], A()):
                pass
    text = str(info.value)
    assert "key" in text and "[A]" in text, text


def test_resolve_of_an_instance_says_a_type_was_expected() -> None:
    c = di.Container(_registry())
    with pytest.raises((TypeError, di.DIError), match=r"instance.*resolve\(A\)"):
        c.resolve(A())  # type: ignore[arg-type]


def test_resolve_of_a_string_naming_a_registered_class_points_to_it() -> None:
    c = di.Container(_registry())
    with pytest.raises(di.ProviderNotFoundError) as info:
        c.resolve("A")
    text = str(info.value)
    assert "string" in text or "forward" in text, text


@pytest.mark.parametrize("where", ["container", "aresolve", "scope"])
def test_provider_not_found_does_not_chain_an_internal_key_error(where: str) -> None:
    c = di.Container(_registry())
    with (
        c,
        c.scope("request", context={Req: Req()}) as scope,
        pytest.raises(di.ProviderNotFoundError) as info,
    ):
        if where == "container":
            c.resolve(Missing)
        elif where == "aresolve":
            asyncio.run(c.aresolve(Missing))
        else:
            scope.resolve(Missing)
    error = info.value
    assert error.__context__ is None or error.__suppress_context__, repr(error.__context__)


# ============================================================ checkpoints


def test_a_checkpoint_exited_twice_is_told_it_was_already_left() -> None:
    c = di.Container(_registry())
    with c:
        scope = c.scope("request", context={Req: Req()})
        with scope:
            pass
        with pytest.raises(di.ScopeError, match=r"already (exited|left)"):
            scope.__exit__(None, None, None)
        assert c.current_scope is None


def test_exiting_a_never_entered_checkpoint_says_so_and_changes_nothing() -> None:
    c = di.Container(_registry())
    with c:
        scope = c.scope("request", context={Req: Req()})
        with pytest.raises(di.ScopeError, match="not been entered"):
            scope.__exit__(None, None, None)
        with scope as entered:  # nothing was entered, so nothing changed
            assert isinstance(entered.resolve(A), A)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_hold_exited_without_enter_is_a_clear_error(kind: str) -> None:
    c = di.Container(_registry())
    with c, c.scope("request", context={Req: Req()}) as scope:
        hold = scope.hold()
        with pytest.raises((di.ScopeError, RuntimeError), match="enter"):
            if kind == "sync":
                hold.__exit__(None, None, None)
            else:
                asyncio.run(hold.__aexit__(None, None, None))
        assert scope.holds == 0
    assert scope.closed


# ============================================================== overrides


def test_an_override_entered_twice_is_a_clear_error() -> None:
    c = di.Container(_registry())
    fake = A()
    swap = c.override(A, fake)
    with swap:
        pass
    with pytest.raises((di.DIError, RuntimeError), match="override"), swap:
        pass
    assert c.resolve(A) is not fake


def test_an_override_exited_without_enter_is_a_clear_error() -> None:
    c = di.Container(_registry())
    fake = A()
    swap = c.override(A, fake)
    with pytest.raises((di.DIError, RuntimeError), match="override"):
        swap.__exit__(None, None, None)
    assert c.resolve(A) is not fake


# ============================================================== injection


def test_depends_with_an_unhashable_key_is_refused_at_once() -> None:
    with pytest.raises((TypeError, di.DIError), match="Depends"):
        di.Depends([A])  # type: ignore[arg-type]


def test_a_bare_injected_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"Injected\["):

        @di.inject
        def handler(x: di.Injected) -> Any:  # type: ignore[type-arg]
            return x


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_injected_on_a_variadic_parameter_is_refused_at_decoration(kind: str) -> None:
    with pytest.raises(TypeError, match=r"\*"):
        if kind == "args":

            @di.inject
            def handler(*args: di.Injected[A]) -> Any:
                return args

        else:

            @di.inject
            def handler_kw(**kw: di.Injected[A]) -> Any:
                return kw


def test_inject_missing_provider_names_the_function_and_parameter() -> None:
    c = di.Container(_registry())

    @di.inject
    def handler(payload: int, thing: di.Injected[Missing]) -> Any:
        return thing

    with c, pytest.raises(di.ProviderNotFoundError) as info:
        handler(1)  # type: ignore[call-arg]
    text = str(info.value)
    assert "handler" in text and "'thing'" in text, text


def test_inject_async_provider_from_a_sync_function_names_it_and_says_async_def() -> None:
    reg = _registry()

    class Conn:
        pass

    @reg.provider
    async def connect() -> Conn:
        return Conn()

    c = di.Container(reg)

    @di.inject
    def handler(conn: di.Injected[Conn]) -> Any:
        return conn

    with c, pytest.raises(di.AsyncProviderError) as info:
        handler()  # type: ignore[call-arg]
    text = str(info.value)
    assert "handler" in text and "async def" in text, text


# ===================================================== RefCounted / Client


def test_refcounted_with_a_non_callable_close_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="close"):
        di.RefCounted(lambda: object(), None)  # type: ignore[call-overload]


def test_client_context_with_a_non_callable_factory_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="factory"):
        di.ClientContext("https://api.example")  # type: ignore[call-overload]


@pytest.mark.parametrize("conn", [[("host", "api")], "host=api"], ids=["pairs", "str"])
def test_client_context_conn_that_is_no_mapping_is_named(conn: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="conn"):
        di.ClientContext(lambda conn, verify: object(), conn=conn)


# ====================================== promised behaviours (plain tests)


def test_entering_a_checkpoint_twice_is_refused_and_the_first_enter_still_works() -> None:
    log: list[str] = []
    reg = _registry()

    class Session:
        pass

    @reg.provider(scope="request")
    def session() -> Iterator[Session]:
        yield Session()
        log.append("closed")

    c = di.Container(reg)
    with c:
        scope = c.scope("request", context={Req: Req()})
        with scope:
            first = scope.resolve(Session)
            with pytest.raises(di.ScopeError, match=r"already entered; make a new one"), scope:
                pass
            assert c.current_scope is scope
            assert scope.resolve(Session) is first
        assert log == ["closed"]
        assert c.current_scope is None


def test_a_bad_override_leaves_nothing_behind_and_a_good_one_then_works() -> None:
    c = di.Container(_registry())

    def needs_missing(m: Missing) -> A:
        return A()

    with c:
        before = c.resolve(A)
        with (
            pytest.raises(di.GraphError, match=r"no provider for Missing.*'m'"),
            c.override(A, needs_missing),
        ):
            pass
        with (
            pytest.raises(di.ProviderNotFoundError, match="Missing"),
            c.override(Missing, Missing()),
        ):
            pass
        assert isinstance(c.resolve(A), A) and c.resolve(A) is not before  # transient, unswapped
        fake = A()
        with c.override(A, fake):
            assert c.resolve(A) is fake
        assert c.resolve(A) is not fake


def test_unknown_scope_at_registration_names_it_and_the_levels() -> None:
    reg = di.Registry()
    with pytest.raises(di.ScopeError, match=r"unknown scope 'requests'.*app < session < request"):
        reg.provider(scope="requests")(A)
    with pytest.raises(di.ScopeError, match=r"singleton=True conflicts with scope='request'"):
        reg.register(A, A, singleton=True, scope="request")
    assert A not in reg
    reg.provider(scope="request")(A)  # a retry with the right name works
    assert reg.get(A) is not None and reg.get(A).scope == "request"  # type: ignore[union-attr]


def test_unknown_level_at_scope_entry_names_it_and_the_levels() -> None:
    c = di.Container(_registry())
    with c:
        with pytest.raises(di.ScopeError, match=r"unknown scope 'requests'; levels are app < "):
            c.scope("requests")
        with pytest.raises(
            di.ScopeError, match=r"A is not declared as a context value.*registry\.context\(A"
        ):
            c.scope("request", context={A: A()})
        assert c.current_scope is None
        with c.scope("request", context=types.MappingProxyType({Req: Req()})) as s:
            assert isinstance(s.resolve(Req), Req)


def test_a_singleton_resolved_without_entering_is_still_closed_by_close() -> None:
    log: list[str] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def make() -> Iterator[A]:
        yield A()
        log.append("closed")

    c = di.Container(reg)
    first = c.resolve(A)
    c.close()
    assert log == ["closed"] and not c.is_open
    with c:
        assert c.resolve(A) is not first
    assert log == ["closed", "closed"]


def test_a_sync_injected_call_refused_for_an_async_provider_closes_what_it_opened() -> None:
    log: list[str] = []
    reg = _registry()

    class Conn:
        pass

    @reg.provider
    def number() -> Iterator[int]:
        log.append("open")
        try:
            yield 1
        finally:
            log.append("close")

    @reg.provider
    async def connect() -> Conn:
        return Conn()

    c = di.Container(reg)

    @di.inject
    def handler(n: di.Injected[int], conn: di.Injected[Conn]) -> Any:
        return conn

    with c:
        with pytest.raises(
            di.AsyncProviderError, match=r"Conn is provided by a coroutine function"
        ):
            handler()  # type: ignore[call-arg]
        assert log == ["open", "close"]
        assert handler(1, Conn()) is not None  # explicit arguments: no provider called  # type: ignore[call-arg]


def test_refcounted_and_client_context_exit_without_enter_change_nothing() -> None:
    opened: list[int] = []

    def open_it() -> int:
        opened.append(1)
        return len(opened)

    rc: di.RefCounted[int] = di.RefCounted(open_it, lambda r: None)
    with pytest.raises(RuntimeError, match="exit without a matching enter"):
        rc.__exit__(None, None, None)
    assert rc.ref_count == 0 and not rc.is_open
    with rc as res:
        assert res == 1 and rc.ref_count == 1

    async def client_side() -> None:
        ctx = di.ClientContext(lambda conn, verify: object(), conn={"HOST": "api"}, verify_ssl="no")
        assert ctx.conn == {"Host": "api"} and ctx.verify_ssl is False
        with pytest.raises(RuntimeError, match="exit without a matching enter"):
            await ctx.__aexit__(None, None, None)
        assert ctx.ref_count == 0
        async with ctx as client:
            assert ctx.client is client and ctx.ref_count == 1
        assert not ctx.is_open

    asyncio.run(client_side())
