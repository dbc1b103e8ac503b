"""di/registry.py: declaring providers (through the public API only).

Every test builds its own ``di.Registry()``; the few that exercise
``di.register_provider`` without ``registry=`` register classes defined inside
the test, so nothing leaks into ``di.default_registry`` that another test
could trip over.
"""

import collections
import contextlib
import dataclasses
import functools
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Generic,
    NamedTuple,
    Optional,
    ParamSpec,
    Protocol,
    TypeVar,
)

import pytest

import di


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def here() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


def make_module(name: str, source: str) -> types.ModuleType:
    """A module of its own (its own globals) running ``source``."""
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


class Engine:
    def __init__(self, url: str = "sqlite://") -> None:
        self.url = url


class Repo:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine


class Handler:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo


class Conn:
    def __init__(self) -> None:
        self.closed = False


# --------------------------------------------------------------------- kinds


def test_plain_function_provider_keyed_by_return_annotation() -> None:
    reg = di.Registry()

    @reg.provider()
    def make_engine() -> Engine:
        return Engine("postgres://")

    c = di.Container(reg)
    with c:
        engine = c.resolve(Engine)
    assert isinstance(engine, Engine)
    assert engine.url == "postgres://"


def test_bare_decorator_and_decorated_function_still_usable() -> None:
    reg = di.Registry()

    @reg.provider
    def make_engine() -> Engine:
        return Engine("bare://")

    # the decorator hands back something that still behaves like the function
    assert make_engine().url == "bare://"
    c = di.Container(reg)
    with c:
        assert c.resolve(Engine).url == "bare://"


def test_dependencies_come_from_parameter_hints() -> None:
    reg = di.Registry()
    seen: list[Engine] = []

    @reg.provider(singleton=True)
    def make_engine() -> Engine:
        return Engine("a://")

    @reg.provider()
    def make_repo(engine: Engine) -> Repo:
        seen.append(engine)
        return Repo(engine)

    c = di.Container(reg)
    with c:
        repo = c.resolve(Repo)
        assert repo.engine is c.resolve(Engine)
    assert seen == [repo.engine]


@pytest.mark.anyio
async def test_coroutine_function_provider() -> None:
    import anyio

    reg = di.Registry()
    calls = 0

    @reg.provider(singleton=True)
    async def make_engine() -> Engine:
        nonlocal calls
        calls += 1
        await anyio.sleep(0)
        return Engine("async://")

    @reg.provider()
    def make_repo(engine: Engine) -> Repo:  # a sync provider fed by an async one
        return Repo(engine)

    c = di.Container(reg)
    async with c:
        engine = await c.aresolve(Engine)
        repo = await c.aresolve(Repo)
    assert engine.url == "async://"
    assert repo.engine is engine
    assert calls == 1


def test_generator_provider_yields_instance_and_tears_down_at_scope_exit() -> None:
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(scope="request")
    def conn() -> Iterator[Conn]:
        c = Conn()
        log.append("open")
        yield c
        c.closed = True
        log.append("close")

    c = di.Container(reg)
    with c:
        with c.scope("request") as s:
            got = s.resolve(Conn)
            assert isinstance(got, Conn)
            assert log == ["open"]
            assert not got.closed
        assert got.closed
        assert log == ["open", "close"]


@pytest.mark.anyio
async def test_async_generator_provider_yields_instance_and_tears_down() -> None:
    import anyio

    reg = di.Registry()
    log: list[str] = []

    @reg.provider(scope="request")
    async def conn() -> AsyncIterator[Conn]:
        c = Conn()
        await anyio.sleep(0)
        log.append("open")
        yield c
        await anyio.sleep(0)
        c.closed = True
        log.append("close")

    c = di.Container(reg)
    async with c:
        async with c.scope("request") as s:
            got = await s.aresolve(Conn)
            assert isinstance(got, Conn)
            assert log == ["open"]
        assert got.closed
        assert log == ["open", "close"]


def test_class_provider_autowired_from_init_hints() -> None:
    reg = di.Registry()
    reg.value(Engine, Engine("v://"))
    reg.provider()(Repo)
    reg.provider(scope="request")(Handler)

    c = di.Container(reg)
    with c, c.scope("request") as s:
        h = s.resolve(Handler)
        assert isinstance(h, Handler)
        assert isinstance(h.repo, Repo)
        assert h.repo.engine.url == "v://"
        assert s.resolve(Handler) is h  # scoped


def test_class_provider_init_default_kept_when_unresolvable() -> None:
    reg = di.Registry()
    reg.provider()(Engine)  # __init__(self, url: str = "sqlite://"): str is not registered
    c = di.Container(reg)
    with c:
        assert c.resolve(Engine).url == "sqlite://"


def test_cm_true_sync_context_manager_entered_and_exited() -> None:
    reg = di.Registry()
    log: list[object] = []
    conn_obj = Conn()

    class ConnCM:
        def __enter__(self) -> Conn:
            log.append("enter")
            return conn_obj

        def __exit__(self, et: object, ev: object, tb: object) -> None:
            log.append(("exit", et))
            conn_obj.closed = True

    @reg.provider(scope="request", cm=True, provides=Conn)
    def conn() -> ConnCM:
        return ConnCM()

    c = di.Container(reg)
    with c:
        with c.scope("request") as s:
            got = s.resolve(Conn)
            assert got is conn_obj  # the value __enter__ returned, not the manager
            assert s.resolve(Conn) is got
            assert log == ["enter"]
        assert log == ["enter", ("exit", None)]
        assert conn_obj.closed


def test_cm_true_with_contextlib_contextmanager() -> None:
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(scope="request", cm=True, provides=Conn)
    @contextlib.contextmanager
    def conn() -> Iterator[Conn]:
        log.append("enter")
        yield Conn()
        log.append("exit")

    c = di.Container(reg)
    with c:
        with c.scope("request") as s:
            assert isinstance(s.resolve(Conn), Conn)
            assert log == ["enter"]
        assert log == ["enter", "exit"]


@pytest.mark.anyio
async def test_cm_true_async_context_manager_entered_and_exited() -> None:
    reg = di.Registry()
    log: list[object] = []
    conn_obj = Conn()

    class AsyncConnCM:
        async def __aenter__(self) -> Conn:
            log.append("aenter")
            return conn_obj

        async def __aexit__(self, et: object, ev: object, tb: object) -> None:
            log.append(("aexit", et))

    @reg.provider(scope="request", cm=True, provides=Conn)
    def conn() -> AsyncConnCM:
        return AsyncConnCM()

    c = di.Container(reg)
    async with c:
        async with c.scope("request") as s:
            assert await s.aresolve(Conn) is conn_obj
            assert log == ["aenter"]
        assert log == ["aenter", ("aexit", None)]


@pytest.mark.anyio
async def test_cm_true_unannotated_async_manager_works_or_fails_clearly() -> None:
    """An unannotated cm=True factory cannot say up front whether its manager is
    async; aresolve must then either enter it with __aenter__/__aexit__ or refuse
    with a di error that says how to fix it -- never an AttributeError."""
    reg = di.Registry()
    log: list[str] = []

    class AsyncConnCM:
        async def __aenter__(self) -> Conn:
            log.append("aenter")
            return Conn()

        async def __aexit__(self, *exc: object) -> None:
            log.append("aexit")

    reg.provider(scope="request", cm=True, provides=Conn)(lambda: AsyncConnCM())
    c = di.Container(reg)
    async with c:
        try:
            async with c.scope("request") as s:
                assert isinstance(await s.aresolve(Conn), Conn)
        except di.DIError as e:
            assert "Conn" in str(e)
            assert log == []
        else:
            assert log == ["aenter", "aexit"]


@pytest.mark.anyio
async def test_cm_true_with_asynccontextmanager() -> None:
    reg = di.Registry()
    log: list[str] = []

    @reg.provider(scope="request", cm=True, provides=Conn)
    @contextlib.asynccontextmanager
    async def conn() -> AsyncIterator[Conn]:
        log.append("enter")
        yield Conn()
        log.append("exit")

    c = di.Container(reg)
    async with c:
        async with c.scope("request") as s:
            assert isinstance(await s.aresolve(Conn), Conn)
        assert log == ["enter", "exit"]


def test_cm_true_key_taken_from_context_manager_annotation() -> None:
    """Without provides=, a cm=True provider annotated ``-> AbstractContextManager[Conn]``
    provides Conn (what the manager's __enter__ gives), not the manager type."""
    reg = di.Registry()

    class ConnCM:
        def __enter__(self) -> Conn:
            return Conn()

        def __exit__(self, *exc: object) -> None:
            return None

    @reg.provider(scope="request", cm=True)
    def conn() -> contextlib.AbstractContextManager[Conn]:
        return ConnCM()

    c = di.Container(reg)
    with c, c.scope("request") as s:
        assert isinstance(s.resolve(Conn), Conn)


# ------------------------------------------------------------------ provides=


def test_provides_overrides_return_annotation() -> None:
    class Base:
        pass

    class Impl(Base):
        pass

    reg = di.Registry()

    @reg.provider(provides=Base)
    def make() -> Impl:
        return Impl()

    c = di.Container(reg)
    with c:
        assert type(c.resolve(Base)) is Impl
        # the provider is keyed by `provides`, not by the annotation as well
        with pytest.raises(di.ProviderNotFoundError):
            c.resolve(Impl)


def test_provides_allows_unannotated_factory() -> None:
    reg = di.Registry()
    reg.provider(provides=Engine)(lambda: Engine("lambda://"))
    c = di.Container(reg)
    with c:
        assert c.resolve(Engine).url == "lambda://"


# ----------------------------------------------------------------- qualifiers


def test_named_qualifier_is_its_own_key() -> None:
    reg = di.Registry()
    primary = Engine("primary://")
    replica = Engine("replica://")
    reg.value(Engine, primary)
    reg.value(Annotated[Engine, di.Named("replica")], replica)

    class TwoEngines:
        def __init__(self, a: Engine, b: Annotated[Engine, di.Named("replica")]) -> None:
            self.a = a
            self.b = b

    @reg.provider()
    def make(a: Engine, b: Annotated[Engine, di.Named("replica")]) -> tuple[Engine, Engine]:
        return (a, b)

    reg.provider()(TwoEngines)

    c = di.Container(reg)
    with c:
        assert c.resolve(Engine) is primary
        assert c.resolve(Annotated[Engine, di.Named("replica")]) is replica
        assert c.resolve(tuple[Engine, Engine]) == (primary, replica)
        two = c.resolve(TwoEngines)
        assert two.a is primary and two.b is replica


def test_named_provider_via_return_annotation_and_provides() -> None:
    reg = di.Registry()

    @reg.provider(singleton=True)
    def replica() -> Annotated[Engine, di.Named("replica")]:
        return Engine("replica://")

    @reg.provider(singleton=True, provides=Annotated[Engine, di.Named("audit")])
    def audit() -> Engine:
        return Engine("audit://")

    c = di.Container(reg)
    with c:
        assert c.resolve(Annotated[Engine, di.Named("replica")]).url == "replica://"
        assert c.resolve(Annotated[Engine, di.Named("audit")]).url == "audit://"
        with pytest.raises(di.ProviderNotFoundError):
            c.resolve(Engine)  # no unnamed Engine was registered


def test_named_equality() -> None:
    assert di.Named("x") == di.Named("x")
    assert hash(di.Named("x")) == hash(di.Named("x"))
    assert di.Named("x") != di.Named("y")
    assert Annotated[Engine, di.Named("x")] == Annotated[Engine, di.Named("x")]


def test_named_and_unnamed_do_not_collide() -> None:
    reg = di.Registry()
    reg.value(Engine, Engine("a://"))
    reg.value(Annotated[Engine, di.Named("b")], Engine("b://"))  # no DuplicateProviderError
    with pytest.raises(di.DuplicateProviderError):
        reg.value(Annotated[Engine, di.Named("b")], Engine("b2://"))


# ------------------------------------------------------------------ defaults


def test_defaults_kept_for_unresolvable_params_and_used_for_resolvable() -> None:
    class Unregistered:
        pass

    class Thing:
        def __init__(self, **kw: object) -> None:
            self.kw = kw

    sentinel_engine = Engine("default://")
    reg = di.Registry()
    reg.value(Engine, Engine("registered://"))

    @reg.provider()
    def make(
        engine: Engine = sentinel_engine,  # resolvable: the registered one is used
        timeout: int = 5,  # int is not registered: default kept
        extra: Unregistered | None = None,  # not registered: default kept
        flag=True,  # unannotated: default kept
    ) -> Thing:
        return Thing(engine=engine, timeout=timeout, extra=extra, flag=flag)

    c = di.Container(reg)  # no GraphError for the defaulted parameters
    with c:
        thing = c.resolve(Thing)
    assert thing.kw["engine"].url == "registered://"  # type: ignore[attr-defined]
    assert thing.kw["timeout"] == 5
    assert thing.kw["extra"] is None
    assert thing.kw["flag"] is True


# ----------------------------------------------------- register / value / ...


def test_register_interface_to_class_autowired() -> None:
    class AbstractRepo:
        pass

    class SqlRepo(AbstractRepo):
        def __init__(self, engine: Engine) -> None:
            self.engine = engine

    reg = di.Registry()
    reg.value(Engine, Engine("sql://"))
    reg.register(AbstractRepo, SqlRepo, scope="request")

    c = di.Container(reg)
    with c:
        with c.scope("request") as s:
            repo = s.resolve(AbstractRepo)
            assert type(repo) is SqlRepo
            assert repo.engine.url == "sql://"  # type: ignore[attr-defined]
            assert s.resolve(AbstractRepo) is repo
        with c.scope("request") as s2:
            assert s2.resolve(AbstractRepo) is not repo


def test_register_interface_to_callable_singleton() -> None:
    class AbstractRepo:
        pass

    class SqlRepo(AbstractRepo):
        def __init__(self, engine: Engine) -> None:
            self.engine = engine

    calls = 0

    def make_repo(engine: Engine) -> SqlRepo:
        nonlocal calls
        calls += 1
        return SqlRepo(engine)

    reg = di.Registry()
    reg.value(Engine, Engine())
    reg.register(AbstractRepo, make_repo, singleton=True)
    c = di.Container(reg)
    with c:
        a = c.resolve(AbstractRepo)
        assert c.resolve(AbstractRepo) is a
    assert type(a) is SqlRepo
    assert calls == 1


def test_value_is_the_same_instance_everywhere_and_never_torn_down() -> None:
    class Config:
        pass

    log: list[str] = []

    class ManagedValue:
        def __enter__(self) -> "ManagedValue":
            log.append("enter")
            return self

        def __exit__(self, *exc: object) -> None:
            log.append("exit")

    cfg = Config()
    managed = ManagedValue()
    reg = di.Registry()
    reg.value(Config, cfg)
    reg.value(ManagedValue, managed)
    c = di.Container(reg)
    with c:
        assert c.resolve(Config) is cfg
        with c.scope("request") as s:
            assert s.resolve(Config) is cfg
            assert s.resolve(ManagedValue) is managed
    assert log == []  # a value is handed out as is: di neither enters nor exits it


def test_context_value_feeds_providers() -> None:
    class Request:
        pass

    reg = di.Registry()
    reg.context(Request, scope="request")

    @reg.provider(scope="request")
    def handler(req: Request) -> tuple[Request]:
        return (req,)

    c = di.Container(reg)
    with c:
        r1, r2 = Request(), Request()
        with c.scope("request", context={Request: r1}) as s:
            assert s.resolve(Request) is r1
            assert s.resolve(tuple[Request]) == (r1,)
        with c.scope("request", context={Request: r2}) as s:
            assert s.resolve(tuple[Request]) == (r2,)


def test_include_composes_registries() -> None:
    db = di.Registry()

    @db.provider(singleton=True)
    def engine() -> Engine:
        return Engine("inc://")

    repos = di.Registry()
    repos.provider()(Repo)

    app = di.Registry()
    app.include(db)
    app.include(repos)
    app.provider()(Handler)

    c = di.Container(app)
    with c:
        h = c.resolve(Handler)
    assert h.repo.engine.url == "inc://"


def test_include_duplicate_is_an_error() -> None:
    a = di.Registry()
    a.value(Engine, Engine("a://"))
    b = di.Registry()
    b.value(Engine, Engine("b://"))
    with pytest.raises(di.DuplicateProviderError) as ei:
        a.include(b)
    assert "Engine" in str(ei.value)


def test_include_of_one_registration_by_two_paths() -> None:
    """``app`` includes ``a`` and ``b``, which both included ``common``: the very
    same registration arriving twice is one, not a duplicate."""

    class A:
        pass

    class B:
        pass

    common = di.Registry()
    common.register(Engine, Engine, singleton=True)

    @common.provider()
    def repo(engine: Engine) -> Repo:
        return Repo(engine)

    a = di.Registry()
    a.include(common)
    a.register(A, A)
    b = di.Registry()
    b.include(common)
    b.register(B, B)
    app = di.Registry()
    app.include(a)
    app.include(b)
    assert len(app) == 4
    assert app.get(Engine) is common.get(Engine)
    # an equal Provider (one function registered in two registries) is one too
    other = di.Registry()
    other.provider()(repo)
    app.include(other)
    c = di.Container(app)
    with c:
        assert c.resolve(Repo).engine is c.resolve(Engine)


def test_include_of_two_registrations_of_one_key_by_two_paths_is_an_error() -> None:
    a = di.Registry()
    a.register(Engine, Engine, singleton=True)
    b = di.Registry()
    b.register(Engine, Engine, singleton=True)  # the same wiring, another registration

    @a.provider()
    def repo_a(engine: Engine) -> Repo:
        return Repo(engine)

    @b.provider()
    def repo_b(engine: Engine) -> Repo:
        return Repo(engine)

    app = di.Registry()
    app.include(a)
    with pytest.raises(di.DuplicateProviderError, match="Engine is registered twice"):
        app.include(b)
    app = di.Registry()
    app.include(a)
    b2 = di.Registry()
    b2.provider()(repo_b)
    with pytest.raises(di.DuplicateProviderError, match="Repo is registered twice"):
        app.include(b2)


# --------------------------------------------------------- register_provider


def test_register_provider_with_registry_argument() -> None:
    reg = di.Registry()
    calls = 0

    @di.register_provider(singleton=True, registry=reg)
    def engine() -> Engine:
        nonlocal calls
        calls += 1
        return Engine("rp://")

    c = di.Container(reg)
    with c:
        assert c.resolve(Engine) is c.resolve(Engine)
        assert c.resolve(Engine).url == "rp://"
    assert calls == 1


def test_register_provider_defaults_to_default_registry() -> None:
    class OnlyInDefaultRegistry:  # unique to this test: nothing else can clash with it
        pass

    @di.register_provider(singleton=True)
    def make() -> OnlyInDefaultRegistry:
        return OnlyInDefaultRegistry()

    assert isinstance(di.default_registry, di.Registry)
    c = di.Container()  # registry=None -> di.default_registry
    with c:
        got = c.resolve(OnlyInDefaultRegistry)
        assert isinstance(got, OnlyInDefaultRegistry)
        assert c.resolve(OnlyInDefaultRegistry) is got
    c2 = di.Container(di.default_registry)
    with c2:
        assert isinstance(c2.resolve(OnlyInDefaultRegistry), OnlyInDefaultRegistry)
    # and it did not land in an unrelated registry
    other = di.Container(di.Registry())
    with other, pytest.raises(di.ProviderNotFoundError):
        other.resolve(OnlyInDefaultRegistry)


def test_register_provider_scope_and_transient() -> None:
    reg = di.Registry()

    class Scoped:
        pass

    class Transient:
        pass

    di.register_provider(scope="request", registry=reg)(Scoped)
    di.register_provider(registry=reg)(Transient)
    c = di.Container(reg)
    with c, c.scope("request") as s:
        assert s.resolve(Scoped) is s.resolve(Scoped)
        assert s.resolve(Transient) is not s.resolve(Transient)


# ----------------------------------------------------------------- duplicates


def test_duplicate_registration_names_both_places() -> None:
    reg = di.Registry()

    first = here() + 1

    @reg.provider()
    def engine_one() -> Engine:
        return Engine("one://")

    second = here() + 1
    with pytest.raises(di.DuplicateProviderError) as ei:

        @reg.provider()
        def engine_two() -> Engine:
            return Engine("two://")

    msg = str(ei.value)
    assert "Engine" in msg
    # a place is file:line; for a decorated function either the decorator line or
    # the def line is an acceptable "place" (3.11 calls the decorator on its own
    # line, 3.10 on the def line)
    assert f"test_registry.py:{first + 1}" in msg or f"test_registry.py:{first + 2}" in msg, msg
    assert f"test_registry.py:{second + 2}" in msg or f"test_registry.py:{second + 3}" in msg, msg
    assert "override=True" in msg  # the fix


def test_duplicate_value_names_both_call_sites() -> None:
    reg = di.Registry()
    first = here() + 1
    reg.value(Engine, Engine("one://"))
    with pytest.raises(di.DuplicateProviderError) as ei:
        second = here() + 1
        reg.value(Engine, Engine("two://"))
    msg = str(ei.value)
    assert f"test_registry.py:{first}" in msg, msg
    assert f"test_registry.py:{second}" in msg, msg


def test_duplicate_across_registration_kinds() -> None:
    reg = di.Registry()
    reg.provider()(Engine)
    with pytest.raises(di.DuplicateProviderError):
        reg.value(Engine, Engine())
    with pytest.raises(di.DuplicateProviderError):
        reg.register(Engine, Engine)
    with pytest.raises(di.DuplicateProviderError):
        di.register_provider(registry=reg, provides=Engine)(lambda: Engine())
    with pytest.raises(di.DuplicateProviderError):
        reg.context(Engine, scope="request")


def test_duplicate_error_is_di_error() -> None:
    assert issubclass(di.DuplicateProviderError, di.DIError)


def test_override_true_replaces() -> None:
    reg = di.Registry()

    @reg.provider()
    def engine_one() -> Engine:
        return Engine("one://")

    @reg.provider(override=True)
    def engine_two() -> Engine:
        return Engine("two://")

    reg.value(Repo, Repo(Engine("x")))
    replacement = Repo(Engine("y"))
    reg.value(Repo, replacement, override=True)

    class AbstractThing:
        pass

    class ThingA(AbstractThing):
        pass

    class ThingB(AbstractThing):
        pass

    reg.register(AbstractThing, ThingA)
    reg.register(AbstractThing, ThingB, override=True)

    c = di.Container(reg)
    with c:
        assert c.resolve(Engine).url == "two://"
        assert c.resolve(Repo) is replacement
        assert type(c.resolve(AbstractThing)) is ThingB


def test_keys_are_types_never_function_names() -> None:
    reg = di.Registry()

    def register_engine() -> None:
        @reg.provider()
        def make() -> Engine:
            return Engine("e://")

    def register_conn() -> None:
        @reg.provider()
        def make() -> Conn:  # same function name, different type: not a duplicate
            return Conn()

    register_engine()
    register_conn()
    c = di.Container(reg)
    with c:
        assert c.resolve(Engine).url == "e://"
        assert isinstance(c.resolve(Conn), Conn)
        with pytest.raises(di.ProviderNotFoundError):
            c.resolve("make")  # type: ignore[arg-type]


def test_provider_record_is_public() -> None:
    assert isinstance(di.Provider, type)


# ------------------------------------------------- decorated factories, methods
#
# A decorator's wrapper takes (*args, **kwargs): what a provider needs is read
# from the function it wraps (``__wrapped__``), unless the wrapper sets its own
# ``__signature__``; the wrapper is still what is called.


def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
    calls: list[object] = []

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return fn(*args, **kwargs)

    wrapper.calls = calls  # type: ignore[attr-defined]
    return wrapper


def test_cm_true_over_contextmanager_gets_its_dependencies() -> None:
    reg = di.Registry()
    reg.register(Engine, Engine, singleton=True)
    log: list[str] = []

    @reg.provider(scope="request", cm=True)
    @contextlib.contextmanager
    def repo(engine: Engine) -> Iterator[Repo]:
        log.append("enter")
        yield Repo(engine)
        log.append("exit")

    @reg.provider(scope="request", cm=True)
    @contextlib.asynccontextmanager
    async def conn(engine: Engine) -> AsyncIterator[Conn]:
        yield Conn()

    provider = reg.get(Repo)
    assert provider is not None
    assert not provider.is_async
    assert provider.factory is repo  # the decorated object is what is called
    assert [(d.name, d.key) for d in provider.dependencies] == [("engine", Engine)]
    assert "test_registry.py:" in provider.source  # the function, not contextlib
    aprovider = reg.get(Conn)
    assert aprovider is not None and aprovider.is_async
    assert [(d.name, d.key) for d in aprovider.dependencies] == [("engine", Engine)]
    assert Iterator[Repo] not in reg and AsyncIterator[Conn] not in reg
    c = di.Container(reg)
    with c:
        with c.scope("request") as s:
            assert s.resolve(Repo).engine is c.resolve(Engine)
            assert log == ["enter"]
        assert log == ["enter", "exit"]


def test_functools_wraps_provider_gets_its_dependencies() -> None:
    reg = di.Registry()
    reg.register(Engine, Engine, singleton=True)

    @reg.provider
    @logged
    def repo(engine: Engine, label: str = "x") -> Repo:
        return Repo(engine)

    provider = reg.get(Repo)
    assert provider is not None
    assert [(d.name, d.key, d.has_default) for d in provider.dependencies] == [
        ("engine", Engine, False),
        ("label", str, True),
    ]
    c = di.Container(reg)
    with c:
        assert c.resolve(Repo).engine is c.resolve(Engine)
    assert len(repo.calls) == 1  # type: ignore[attr-defined]  # the wrapper ran


def test_bound_method_provider() -> None:
    class Module:
        def __init__(self, url: str) -> None:
            self.url = url

        def engine(self) -> Engine:
            return Engine(self.url)

        @logged
        def repo(self, engine: Engine) -> Repo:
            return Repo(engine)

    module = Module("m://")
    reg = di.Registry()
    reg.provider(singleton=True)(module.engine)
    reg.provider(module.repo)
    provider = reg.get(Repo)
    assert provider is not None
    assert [d.name for d in provider.dependencies] == ["engine"]
    c = di.Container(reg)
    with c:
        assert c.resolve(Repo).engine is c.resolve(Engine)
        assert c.resolve(Engine).url == "m://"


def test_classmethod_provider() -> None:
    class Factory:
        prefix = "cls://"

        @classmethod
        def engine(cls) -> Engine:
            return Engine(cls.prefix)

        @classmethod
        def repo(cls, engine: Engine) -> Repo:
            return Repo(engine)

    reg = di.Registry()
    reg.provider(singleton=True)(Factory.engine)
    reg.register(Repo, Factory.repo)
    provider = reg.get(Repo)
    assert provider is not None
    assert [d.name for d in provider.dependencies] == ["engine"]
    c = di.Container(reg)
    with c:
        assert c.resolve(Repo).engine is c.resolve(Engine)
        assert c.resolve(Engine).url == "cls://"


class AsyncMakesEngine:
    """A callable instance whose ``__call__`` is a coroutine function."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, url: str = "acall://") -> Engine:
        self.calls += 1
        return Engine(url)


def test_callable_instance_with_async_call_is_refused_from_sync_code() -> None:
    make = AsyncMakesEngine()
    reg = di.Registry()
    reg.provider(singleton=True)(make)
    provider = reg.get(Engine)
    assert provider is not None and provider.is_async
    with pytest.raises(di.GraphError, match="Engine is provided by a coroutine function"):
        di.Container(reg, sync=True)  # type: ignore[call-arg]
    c = di.Container(reg)
    with c, pytest.raises(di.AsyncProviderError):
        c.resolve(Engine)
    assert make.calls == 0  # never called, so no coroutine left un-awaited


@pytest.mark.anyio
async def test_callable_instance_with_async_call_is_awaited() -> None:
    make = AsyncMakesEngine()
    reg = di.Registry()
    reg.provider(singleton=True)(make)
    reg.provider(Repo)
    c = di.Container(reg)
    async with c:
        engine = await c.aresolve(Engine)
        repo = await c.aresolve(Repo)
    assert isinstance(engine, Engine) and engine.url == "acall://"
    assert repo.engine is engine
    assert make.calls == 1


def test_callable_instance_with_generator_call_tears_down_at_scope_exit() -> None:
    log: list[str] = []

    class OpenConn:
        def __call__(self) -> Iterator[Conn]:
            conn = Conn()
            log.append("open")
            yield conn
            conn.closed = True
            log.append("close")

    reg = di.Registry()
    reg.provider(scope="request")(OpenConn())
    provider = reg.get(Conn)  # keyed by what it yields, not Iterator[Conn]
    assert provider is not None and not provider.is_async
    c = di.Container(reg, sync=True)  # type: ignore[call-arg]
    with c:
        with c.scope("request") as s:
            got = s.resolve(Conn)
            assert isinstance(got, Conn) and not got.closed
            assert log == ["open"]
        assert got.closed
        assert log == ["open", "close"]


@pytest.mark.anyio
async def test_callable_instance_with_async_generator_call_tears_down() -> None:
    import anyio

    log: list[str] = []

    class OpenConn:
        async def __call__(self) -> AsyncIterator[Conn]:
            conn = Conn()
            await anyio.sleep(0)
            log.append("open")
            yield conn
            conn.closed = True
            log.append("close")

    reg = di.Registry()
    reg.provider(scope="request")(OpenConn())
    provider = reg.get(Conn)
    assert provider is not None and provider.is_async
    c = di.Container(reg)
    async with c:
        async with c.scope("request") as s:
            got = await s.aresolve(Conn)
            assert isinstance(got, Conn) and not got.closed
            assert log == ["open"]
        assert got.closed
        assert log == ["open", "close"]
        async with c.scope("request") as s:
            with pytest.raises(di.AsyncProviderError):
                s.resolve(Conn)  # not created yet: sync code cannot make it
    assert log == ["open", "close"]
    with pytest.raises(di.GraphError, match="Conn is provided by an async generator"):
        di.Container(reg, sync=True)  # type: ignore[call-arg]


@pytest.mark.anyio
async def test_partial_of_an_async_callable_is_awaited() -> None:
    async def make_engine(url: str) -> Engine:
        return Engine(url)

    reg = di.Registry()
    reg.provider(singleton=True)(functools.partial(make_engine, "partial://"))
    # a partial of a callable instance is as async as the instance's __call__
    reg.register(Repo, functools.partial(AsyncMakesEngine(), "inner://"))
    reg.provider(provides=Handler)(functools.partial(functools.partial(AsyncMakesEngine())))
    for key in (Engine, Repo, Handler):
        provider = reg.get(key)
        assert provider is not None and provider.is_async, key
    c = di.Container(reg)
    async with c:
        assert (await c.aresolve(Engine)).url == "partial://"
        inner = await c.aresolve(Repo)
        assert isinstance(inner, Engine) and inner.url == "inner://"
        assert isinstance(await c.aresolve(Handler), Engine)
    with pytest.raises(di.GraphError):
        di.Container(reg, sync=True)  # type: ignore[call-arg]


def test_class_with_a_decorated_init_is_autowired_from_the_wrapped_one() -> None:
    class Service:
        @logged
        def __init__(self, repo: Repo) -> None:
            self.repo = repo

    class Tuned:
        @logged
        def __init__(self, engine: Engine, *, retries: int = 3) -> None:
            self.engine, self.retries = engine, retries

    reg = di.Registry()
    reg.register(Engine, Engine, singleton=True)
    reg.provider(Repo)
    reg.provider(Service)
    reg.register(Tuned, Tuned)
    for cls, names in [(Service, ["repo"]), (Tuned, ["engine", "retries"])]:
        provider = reg.get(cls)
        assert provider is not None and provider.factory is cls
        assert [d.name for d in provider.dependencies] == names
    c = di.Container(reg)
    with c:
        assert c.resolve(Service).repo.engine is c.resolve(Engine)
        assert c.resolve(Tuned).retries == 3


def test_a_wrapper_that_sets_its_signature_is_read_by_it() -> None:
    """A decorator that supplies one argument itself says so with
    ``__signature__``; that signature wins over the wrapped function's."""

    def with_engine(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = Engine("own://")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(own, *args, **kwargs)

        signature = inspect.signature(fn)
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=list(signature.parameters.values())[1:]
        )
        return wrapper

    reg = di.Registry()
    reg.value(Conn, Conn())

    @reg.provider
    @with_engine
    def repo(engine: Engine, conn: "Conn") -> Repo:  # a string in the signature too
        made = Repo(engine)
        made.conn = conn  # type: ignore[attr-defined]
        return made

    provider = reg.get(Repo)
    assert provider is not None
    assert [(d.name, d.key) for d in provider.dependencies] == [("conn", Conn)]
    c = di.Container(reg)
    with c:
        made = c.resolve(Repo)
        assert made.engine.url == "own://"
        assert made.conn is c.resolve(Conn)  # type: ignore[attr-defined]


# ----------------------------------------------------- __init__ shapes
#
# A plain __init__ (positional parameters annotated with plain classes, no
# defaults) is read by a fast loop; every other shape goes the general way.
# Both must give the same wiring.


class Url:
    def __init__(self) -> None:
        self.value = "u://"


class Meta(type):
    pass


class WithMeta(metaclass=Meta):
    def __init__(self, url: Url) -> None:
        self.args = (url,)


class Plain:
    def __init__(self, url: Url, engine: Engine) -> None:
        self.args = (url, engine)


class Forward:
    def __init__(self, url: "Url", engine: "Engine") -> None:
        self.args = (url, engine)


class KeywordOnly:
    def __init__(self, url: Url, *, engine: Engine) -> None:
        self.args = (url, engine)


class Defaulted:
    def __init__(self, url: Url, engine: Engine | None = None, label: str = "x") -> None:
        self.args = (url, engine, label)


class Varargs:
    def __init__(self, url: Url, *rest: object, **extra: object) -> None:
        self.args = (url, rest, extra)


class NamedHint:
    def __init__(self, url: Annotated[Url, di.Named("alt")], engine: Engine) -> None:
        self.args = (url, engine)


class NestedForward:
    """Forward references inside hints, not only as whole strings."""

    def __init__(self, url: Annotated["Url", di.Named("alt")], engines: list["Engine"]) -> None:
        self.args = (url, engines)


class NoInit:
    args = ()


class InheritsInit(Plain):
    pass


# No __init__ of their own (object.__init__): the arguments go to __new__.


class TupleFields(NamedTuple):
    url: Url
    engine: "Engine"  # NamedTuple keeps a string annotation as a ForwardRef
    label: str = "x"

    @property
    def args(self) -> tuple[object, ...]:
        return tuple(self)


class TupleSub(TupleFields):  # inherits the generated __new__
    pass


class NewOnly:
    args: tuple[object, ...]

    def __new__(cls, url: Annotated[Url, di.Named("alt")], /, *, engine: "Engine") -> "NewOnly":
        made = super().__new__(cls)
        made.args = (url, engine)
        return made


class NewAndInit:
    """Python passes the arguments to both; __init__ is the one read."""

    def __new__(cls, engine: Engine, *rest: object) -> "NewAndInit":
        return super().__new__(cls)

    def __init__(self, url: Url) -> None:
        self.args = (url,)


SHAPES = [
    Plain,
    Forward,
    KeywordOnly,
    Defaulted,
    Varargs,
    NamedHint,
    NestedForward,
    NoInit,
    InheritsInit,
    WithMeta,
    TupleFields,
    TupleSub,
    NewOnly,
    NewAndInit,
]


@pytest.mark.parametrize("cls", SHAPES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("how", ["bare", "scoped", "register"])
def test_init_shapes_are_wired_alike(cls: type, how: str) -> None:
    reg = di.Registry()
    url, alt, engine = Url(), Url(), Engine("e://")
    reg.value(Url, url)
    reg.value(Annotated[Url, di.Named("alt")], alt)
    reg.value(Engine, engine)
    engines = [engine]
    reg.value(list[Engine], engines)
    if how == "bare":
        reg.provider(cls)
    elif how == "scoped":
        reg.provider(scope="request")(cls)
    else:
        reg.register(cls, cls)
    expected = {
        Plain: (url, engine),
        Forward: (url, engine),
        KeywordOnly: (url, engine),
        Defaulted: (url, None, "x"),  # Engine | None is not a registered key: default kept
        Varargs: (url, (), {}),
        NamedHint: (alt, engine),
        NestedForward: (alt, engines),
        NoInit: (),
        InheritsInit: (url, engine),
        WithMeta: (url,),
        TupleFields: (url, engine, "x"),  # str is not a registered key: default kept
        TupleSub: (url, engine, "x"),
        NewOnly: (alt, engine),
        NewAndInit: (url,),
    }[cls]
    c = di.Container(reg)
    with c, c.scope("request") as scope:
        made = scope.resolve(cls)
        assert type(made) is cls
        assert made.args == expected
    provider = reg.get(cls)
    assert provider is not None and provider.factory is cls
    assert all(type(d.name) is str for d in provider.dependencies)


def test_init_parameter_without_hint_is_an_error_naming_it() -> None:
    class Loose:
        def __init__(self, url: Url, thing) -> None:  # type: ignore[no-untyped-def]
            pass

    reg = di.Registry()
    with pytest.raises(
        TypeError, match=r"parameter 'thing' of .*Loose.__init__.* has no type hint"
    ):
        reg.provider(Loose)


def test_named_tuple_gets_its_fields_injected_and_keeps_defaults() -> None:
    class Settings:
        pass

    class Config(NamedTuple):
        settings: Settings
        retries: int = 3

    reg = di.Registry()
    reg.provider(singleton=True)(Settings)
    line = here() + 1
    reg.provider(Config)
    provider = reg.get(Config)
    assert provider is not None
    assert [(d.name, d.key, d.has_default) for d in provider.dependencies] == [
        ("settings", Settings, False),
        ("retries", int, True),
    ]
    # the generated __new__ has no file of its own: the registration is the place
    assert provider.source.endswith(f"test_registry.py:{line}"), provider.source
    c = di.Container(reg)
    with c:
        config = c.resolve(Config)
        assert config == (c.resolve(Settings), 3)
        assert c.resolve(Config) is not config  # transient


def test_class_with_only_a_custom_new_is_autowired_from_it() -> None:
    class Token:
        def __new__(cls, engine: Engine, ttl: int = 60, *, url: Url):  # type: ignore[no-untyped-def]
            made = super().__new__(cls)
            made.parts = (engine, ttl, url)  # type: ignore[attr-defined]
            return made

    reg = di.Registry()
    engine, url = Engine("e://"), Url()
    reg.value(Engine, engine)
    reg.value(Url, url)
    reg.provider(Token)
    provider = reg.get(Token)
    assert provider is not None
    assert [(d.name, d.keyword_only) for d in provider.dependencies] == [
        ("engine", False),
        ("ttl", False),
        ("url", True),
    ]
    # like an __init__, a written __new__ is its own place
    assert "test_registry.py:" in provider.source
    c = di.Container(reg)
    with c:
        assert c.resolve(Token).parts == (engine, 60, url)  # type: ignore[attr-defined]


def test_new_parameter_without_hint_is_an_error_naming_it() -> None:
    class Loose:
        def __new__(cls, url: Url, thing):  # type: ignore[no-untyped-def]
            return super().__new__(cls)

    reg = di.Registry()
    with pytest.raises(TypeError, match=r"parameter 'thing' of .*Loose.__new__.* has no type hint"):
        reg.provider(Loose)
    point = collections.namedtuple("point", ["x", "y"])
    with pytest.raises(TypeError, match=r"parameter 'x' of 'point.__new__' has no type hint"):
        reg.provider(point)
    assert Loose not in reg and point not in reg


def test_class_with_init_and_new_is_read_from_init() -> None:
    reg = di.Registry()
    reg.provider(NewAndInit)
    provider = reg.get(NewAndInit)
    assert provider is not None
    assert [(d.name, d.key) for d in provider.dependencies] == [("url", Url)]


def test_context_at_the_container_level_is_refused() -> None:
    """Nothing could supply it: container.scope() never enters the first level."""

    class Tenant:
        pass

    reg = di.Registry()
    with pytest.raises(di.ScopeError, match=r"cannot live at 'app'.*one of 'session'"):
        reg.context(Tenant, scope="app")
    assert Tenant not in reg


def test_context_scope_defaults_to_request() -> None:
    class Request:
        pass

    reg = di.Registry()
    provider = reg.context(Request)  # as docs/api.md has it: scope="request" by default
    assert provider.scope == "request"
    c = di.Container(reg)
    req = Request()
    with c, c.scope("request", context={Request: req}) as s:
        assert s.resolve(Request) is req


def test_context_without_a_request_level_must_name_its_scope() -> None:
    """No silent pick of another level: the error names the ones there are."""

    class Tenant:
        pass

    reg = di.Registry(levels=("app", "tenant", "job"))
    with pytest.raises(
        di.ScopeError, match=r"Tenant needs scope=.*app < tenant < job.*one of 'tenant', 'job'"
    ):
        reg.context(Tenant)
    assert Tenant not in reg
    assert reg.context(Tenant, scope="tenant").scope == "tenant"


# ------------------------------------------------ parameterised generic classes
#
# ``Store[int]`` is a typing alias, not a class: it is wired from ``Store``
# (its __init__), keyed by the alias, and called as the alias, which sets
# ``__orig_class__`` on the instance as Python does.

T = TypeVar("T")
U = TypeVar("U")


class Store(Generic[T]):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine


def test_parameterised_generic_class_is_autowired() -> None:
    reg = di.Registry()
    reg.register(Engine, Engine, singleton=True)
    reg.register(Store[int], Store[int])
    c = di.Container(reg)
    with c:
        store = c.resolve(Store[int])
        assert type(store) is Store
        assert store.engine is c.resolve(Engine)


def test_parameterised_generic_class_provides_its_alias() -> None:
    reg = di.Registry()
    engine = Engine("g://")
    reg.value(Engine, engine)
    reg.provider(Store[int])
    provider = reg.get(Store[int])
    assert provider is not None
    assert provider.provides == Store[int] and provider.factory == Store[int]
    assert [(d.name, d.key) for d in provider.dependencies] == [("engine", Engine)]
    assert Store not in reg and Store[str] not in reg
    c = di.Container(reg)
    with c:
        assert c.resolve(Store[int]).engine is engine


def test_two_aliases_of_one_class_are_separate_keys() -> None:
    reg = di.Registry()
    reg.value(Engine, Engine())
    reg.provider(singleton=True)(Store[int])
    reg.register(Store[str], Store[str], singleton=True)
    c = di.Container(reg)
    with c:
        ints, strs = c.resolve(Store[int]), c.resolve(Store[str])
        assert ints is not strs  # type: ignore[comparison-overlap]
        assert c.resolve(Store[int]) is ints and c.resolve(Store[str]) is strs
    assert ints.__orig_class__ == Store[int]  # type: ignore[attr-defined]
    assert strs.__orig_class__ == Store[str]  # type: ignore[attr-defined]


def test_parameterised_generic_class_under_a_named_key() -> None:
    key = Annotated[Store[int], di.Named("x")]
    reg = di.Registry()
    reg.value(Engine, Engine())
    reg.register(key, Store[int], scope="request")
    assert Store[int] not in reg

    @reg.provider(scope="request")
    def pair(store: Annotated[Store[int], di.Named("x")]) -> tuple[Store[int]]:
        return (store,)

    c = di.Container(reg)
    with c, c.scope("request") as s:
        store = s.resolve(key)
        assert type(store) is Store
        assert store.__orig_class__ == Store[int]  # type: ignore[attr-defined]
        assert s.resolve(tuple[Store[int]]) == (store,)


class Box(Generic[T]):
    def __init__(self, item: T, items: list[T], named: Annotated[T, di.Named("x")]) -> None:
        self.args = (item, items, named)


def test_type_variables_are_bound_to_the_alias_arguments() -> None:
    reg = di.Registry()
    reg.value(int, 1)
    reg.value(list[int], [2])
    reg.value(Annotated[int, di.Named("x")], 3)
    reg.value(str, "a")
    reg.provider(Box[int])
    provider = reg.get(Box[int])
    assert provider is not None
    assert [d.key for d in provider.dependencies] == [
        int,
        list[int],
        Annotated[int, di.Named("x")],
    ]
    c = di.Container(reg)
    with c:
        assert c.resolve(Box[int]).args == (1, [2], 3)


def test_a_type_variable_left_free_is_an_error_naming_it() -> None:
    reg = di.Registry()
    with pytest.raises(
        TypeError, match=r"parameter 'item' of 'Box.__init__' is annotated with ~T, .*~U is left"
    ):
        reg.provider(Box[U])  # type: ignore[valid-type]

    class Sub(Box[list[T]]):  # Box.__init__'s T is Sub's list[T]
        pass

    # Sub, not parameterised, leaves its T free in the inherited Box.__init__
    with pytest.raises(
        TypeError,
        match=r"parameter 'item' of 'Box.__init__' is annotated with ~T, which \S*Sub does "
        r"not bind .*~T is left free.*like Sub\[int\], or `class IntSub\(Sub\[int\]\)`",
    ):
        reg.provider(Sub)
    with pytest.raises(TypeError, match=r"which Box does not bind"):
        reg.provider(Box)
    assert len(reg) == 0

    class Maybe(Generic[T]):
        def __init__(self, item: T | None = None) -> None:
            self.item = item

    reg.provider(Maybe[U])  # type: ignore[valid-type]  # free, but with a default: kept
    assert list(reg) == [reg.get(Maybe[U])]  # type: ignore[valid-type]
    c = di.Container(reg)
    with c:
        assert c.resolve(Maybe[U]).item is None  # type: ignore[valid-type]


P = ParamSpec("P")


class Handled(Generic[T, P]):
    def __init__(self, value: T) -> None:
        self.value = value


def test_type_variables_are_bound_beside_a_param_spec() -> None:
    class IntHandled(Handled[int, [str]]):
        pass

    reg = di.Registry()
    reg.value(int, 7)
    reg.provider(IntHandled)
    reg.provider(Handled[int, [str]])
    for key in (IntHandled, Handled[int, [str]]):
        assert [d.key for d in reg.get(key).dependencies] == [int]  # type: ignore[union-attr]
    c = di.Container(reg)
    with c:
        assert c.resolve(IntHandled).value == 7
        assert c.resolve(Handled[int, [str]]).value == 7
    # the suggested alias gives the ParamSpec an argument list
    with pytest.raises(
        TypeError,
        match=r"~T is left free.*like Handled\[int, \[int\]\], or "
        r"`class IntHandled\(Handled\[int, \[int\]\]\)`",
    ):
        reg.provider(Handled)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TypeVarTuple is new in 3.11")
def test_type_variables_are_bound_around_a_type_var_tuple() -> None:
    Ts = typing.TypeVarTuple("Ts")  # type: ignore[attr-defined,unused-ignore]

    class Row(Generic[T, typing.Unpack[Ts], U]):  # type: ignore[attr-defined,misc,unused-ignore]
        def __init__(self, first: T, last: U) -> None:
            self.args = (first, last)

    class IntRow(Row[int, bytes]):  # type: ignore[misc,unused-ignore]  # Ts takes nothing
        pass

    reg = di.Registry()
    reg.value(int, 1)
    reg.value(bytes, b"2")
    reg.provider(Row[int, str, float, bytes])
    reg.provider(IntRow)
    assert [d.key for d in reg.get(Row[int, str, float, bytes]).dependencies] == [int, bytes]  # type: ignore[union-attr]
    c = di.Container(reg)
    with c:
        assert c.resolve(Row[int, str, float, bytes]).args == (1, b"2")
        assert c.resolve(IntRow).args == (1, b"2")


E = TypeVar("E", bound=Engine)
S = TypeVar("S", bound="Engine")


def test_a_type_variable_left_free_suggests_arguments_that_fit() -> None:
    class Fleet(Generic[E]):
        def __init__(self, engine: E) -> None:
            self.engine = engine

    class Garage(Generic[S]):  # a bound that is no class: no alias is suggested
        def __init__(self, engine: S) -> None:
            self.engine = engine

    reg = di.Registry()
    with pytest.raises(
        TypeError, match=r"like Fleet\[Engine\], or `class EngineFleet\(Fleet\[Engine\]\)`"
    ):
        reg.provider(Fleet)
    with pytest.raises(TypeError) as info:
        reg.provider(Garage)
    assert "~S is left free), so di cannot tell what to inject; annotate" in str(info.value)
    assert "like" not in str(info.value)


# -- the same on every supported Python --------------------------------------
# Before 3.11 a parameterised class (``list[int]``, ``Crate[int]``: a
# types.GenericAlias) passes ``isinstance(alias, type)``, and 3.10's
# typing.get_type_hints wraps the hint of a parameter defaulting to None in
# Optional. di reads both as 3.11 does; run under 3.10, these check that.


class Crate(Generic[T]):
    def __init__(self, items: list[T]) -> None:
        self.items = items


class FakeCrate(Crate[T]):
    def __init__(self, items: list[T]) -> None:
        super().__init__(items)


def test_a_generic_alias_is_wired_as_an_alias_not_as_a_class() -> None:
    reg = di.Registry()
    reg.value(list[int], [1])
    made = reg.register(Crate[int], Crate[int])
    assert made.factory == Crate[int]
    assert [d.key for d in made.dependencies] == [list[int]]  # T bound to int
    c = di.Container(reg)
    with c:
        crate = c.resolve(Crate[int])
        assert type(crate) is Crate and crate.items == [1]
        assert crate.__orig_class__ == Crate[int]  # type: ignore[attr-defined]
        with pytest.raises(di.ProviderNotFoundError, match=r"dict\[str, int\]"):
            c.resolve(dict[str, int])
        with c.override(Crate[int], FakeCrate[int]):  # a generic alias is a factory
            fake = c.resolve(Crate[int])
            assert type(fake) is FakeCrate and fake.items == [1]
        with c.override(list[int], [2]):  # anything else is the value
            assert c.resolve(Crate[int]).items == [2]


def test_a_missing_generic_alias_is_named_as_written() -> None:
    reg = di.Registry()
    reg.register(Crate[int], Crate[int])
    with pytest.raises(
        di.GraphError, match=r"no provider for list\[int\] \(needed by Crate\[int\] "
    ):
        di.Container(reg)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (list[int], "list[int]"),
        (dict[str, list[int]], "dict[str, list[int]]"),
        (Crate[int], "Crate[int]"),
        (type[Engine], "type[Engine]"),
        (tuple[()], "tuple[()]"),
        (collections.abc.Callable[[Engine], list[int]], "Callable[[Engine], list[int]]"),
        (Annotated[list[int], di.Named("xs")], "Annotated[list[int], Named('xs')]"),
        (list[int] | None, "list[int] | None"),
        (list, "list"),
        (Crate, "Crate"),
        (WithMeta, "WithMeta"),
        (type(None), "NoneType"),
    ],
)
def test_describe_key_renders_generic_aliases_as_written(key: Any, text: str) -> None:
    from di.errors import describe_key

    assert describe_key(key) == text


class TakesCallables:
    def __init__(
        self,
        make: Callable[["Engine"], Handler],
        later: Callable[..., "Engine"],
        now: Callable[[], "Engine"],
        makers: list[Callable[["Engine", Repo], "Handler"]],
    ) -> None:
        self.args = (make, later, now, makers)


def test_strings_inside_a_callable_hint_are_evaluated() -> None:
    # 3.10 leaves a string inside collections.abc.Callable's argument list as it is.
    make, later, now = (lambda e: Handler(Repo(e))), Engine, Engine
    makers = [lambda e, r: Handler(r)]
    reg = di.Registry()
    reg.value(Callable[[Engine], Handler], make)
    reg.value(Callable[..., Engine], later)
    reg.value(Callable[[], Engine], now)
    reg.value(list[Callable[[Engine, Repo], Handler]], makers)
    reg.provider(TakesCallables)
    assert [d.key for d in reg.get(TakesCallables).dependencies] == [  # type: ignore[union-attr]
        Callable[[Engine], Handler],
        Callable[..., Engine],
        Callable[[], Engine],
        list[Callable[[Engine, Repo], Handler]],
    ]
    c = di.Container(reg)
    with c:
        assert c.resolve(TakesCallables).args == (make, later, now, makers)


def needs_engine_or_none(engine: "Engine" = None) -> Repo:  # type: ignore[assignment]
    return Repo(engine)


class TakesEngineOrNone:
    def __init__(self, engine: "Engine" = None) -> None:  # type: ignore[assignment]
        self.engine = engine


def test_a_string_hint_defaulting_to_none_keeps_its_key() -> None:
    # 3.10's get_type_hints would make these Optional[Engine], which nothing provides.
    reg = di.Registry()
    reg.value(Engine, Engine("pg://"))
    assert [d.key for d in reg.register(Repo, needs_engine_or_none).dependencies] == [Engine]
    made = reg.provider(TakesEngineOrNone)
    assert [d.key for d in reg.get(made).dependencies] == [Engine]  # type: ignore[union-attr]
    c = di.Container(reg)
    with c:
        assert c.resolve(Repo).engine.url == "pg://"
        assert c.resolve(TakesEngineOrNone).engine.url == "pg://"


# ------------------------------------------------- forward references in hints
#
# A forward reference nested in a hint is evaluated like a whole-string one:
# the factory is read by typing.get_type_hints, in its module's globals.


def test_a_forward_reference_nested_in_a_hint_is_evaluated() -> None:
    reg = di.Registry()
    replica = Engine("replica://")
    reg.value(Annotated[Engine, di.Named("replica")], replica)
    reg.value(Optional[Engine], replica)  # noqa: UP045

    @reg.provider
    def repo(engine: Annotated["Engine", di.Named("replica")]) -> Repo:
        return Repo(engine)

    @reg.provider
    def maybe(engine: Optional["Engine"]) -> Conn:
        return Conn()

    @reg.provider
    def engines() -> list["Engine"]:
        return [replica]

    @reg.provider
    def count(found: list[Engine]) -> int:
        return len(found)

    class Service:
        def __init__(self, engine: Annotated["Engine", di.Named("replica")], n: int) -> None:
            self.args = (engine, n)

    reg.provider(Service)
    assert [d.key for d in reg.get(Repo).dependencies] == [  # type: ignore[union-attr]
        Annotated[Engine, di.Named("replica")]
    ]
    assert [d.key for d in reg.get(Conn).dependencies] == [Optional[Engine]]  # type: ignore[union-attr]  # noqa: UP045
    assert list[Engine] in reg
    c = di.Container(reg)
    with c:
        assert c.resolve(Repo).engine is replica
        assert isinstance(c.resolve(Conn), Conn)
        assert c.resolve(int) == 1
        assert c.resolve(Service).args == (replica, 1)


FORWARD_MODULE = """
    from typing import Annotated, Optional

    import di


    class Engine:
        pass


    class Service:
        def __init__(self, engine: Optional["Engine"]) -> None:
            self.engine = engine


    def service(engine: Annotated["Engine", di.Named("cross-module")]) -> Service:
        return Service(engine)
"""


def test_a_nested_forward_reference_is_evaluated_in_its_own_module() -> None:
    # typing makes Optional["Engine"] (and Annotated["Engine", ...]) written in two
    # modules one object, holding one ForwardRef: each module still means its own Engine.
    for name in ("di_test_forward_one", "di_test_forward_two"):
        module = make_module(name, FORWARD_MODULE)
        named = Annotated[module.Engine, di.Named("cross-module")]
        reg = di.Registry()
        reg.provider(module.service)
        reg.register(Annotated[module.Service, di.Named("class")], module.Service)
        assert [d.key for d in reg.get(module.Service).dependencies] == [named]  # type: ignore[union-attr]
        by_class = reg.get(Annotated[module.Service, di.Named("class")])
        assert [d.key for d in by_class.dependencies] == [Optional[module.Engine]]  # type: ignore[union-attr]  # noqa: UP045
        engine = module.Engine()
        reg.value(named, engine)
        reg.value(Optional[module.Engine], engine)  # noqa: UP045
        c = di.Container(reg)
        with c:
            assert c.resolve(module.Service).engine is engine
            assert c.resolve(Annotated[module.Service, di.Named("class")]).engine is engine


def test_an_annotation_undefined_at_registration_is_a_di_error_naming_it() -> None:
    if TYPE_CHECKING:
        from decimal import Decimal  # only for type checkers: not there at run time

    def repo(engine: "DefinedLater") -> Repo:  # type: ignore[name-defined]  # noqa: F821
        return Repo(engine)

    class Priced:
        def __init__(self, price: "Decimal", engine: Engine) -> None:
            self.price = price

    reg = di.Registry()
    with pytest.raises(di.DIError) as info:
        reg.provider(repo)
    error = info.value
    assert isinstance(error, NameError) and error.name == "DefinedLater"
    message = str(error)
    assert "parameter 'engine' of " in message and ".repo" in message
    assert "name 'DefinedLater' is not defined" in message
    assert "TYPE_CHECKING" in message and "before registering" in message  # the fix
    assert error.__cause__ is None and error.__suppress_context__
    with pytest.raises(NameError, match=r"'Decimal' of parameter 'price' of .*Priced.__init__"):
        reg.register(Priced, Priced)
    assert len(reg) == 0


def make_later() -> "DefinedLater":  # type: ignore[name-defined]  # noqa: F821
    return Engine("later://")


def test_an_undefined_return_annotation_is_an_error_unless_provides_is_given() -> None:
    reg = di.Registry()
    with pytest.raises(
        di.errors.UnresolvableAnnotationError,
        match=r"return annotation 'DefinedLater' of make_later: .*pass provides=",
    ):
        reg.provider(make_later)
    reg.provider(provides=Engine)(make_later)
    c = di.Container(reg)
    with c:
        assert c.resolve(Engine).url == "later://"


def test_cm_true_with_provides_needs_no_return_annotation() -> None:
    def conn() -> "NotImportedManager[Conn]":  # type: ignore[name-defined]  # noqa: F821
        return contextlib.nullcontext(Conn())

    reg = di.Registry()
    with pytest.raises(
        di.errors.UnresolvableAnnotationError,
        match=r"return annotation 'NotImportedManager\[Conn\]' of .*conn: .*pass provides=",
    ):
        reg.provider(scope="request", cm=True)(conn)
    reg.provider(scope="request", cm=True, provides=Conn)(conn)  # read as unannotated
    c = di.Container(reg)
    with c, c.scope("request") as s:
        assert isinstance(s.resolve(Conn), Conn)


# ------------------------------------------------------ which __init__ is read


def test_a_protocol_listed_before_the_base_is_wired_from_the_base_init() -> None:
    class RepoProtocol(Protocol):
        def get(self) -> int: ...

    class BaseRepo:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine

    # typing gives SqlRepo a placeholder __init__(self, *args, **kwargs) that
    # calls BaseRepo.__init__: that is the one read
    class SqlRepo(RepoProtocol, BaseRepo):
        def get(self) -> int:
            return 1

    class OnlyProtocol(RepoProtocol):  # no __init__ but object's anywhere
        def get(self) -> int:
            return 2

    reg = di.Registry()
    engine = Engine()
    reg.value(Engine, engine)
    reg.register(RepoProtocol, SqlRepo)
    reg.provider(OnlyProtocol)
    provider = reg.get(RepoProtocol)
    assert provider is not None
    assert [(d.name, d.key) for d in provider.dependencies] == [("engine", Engine)]
    assert reg.get(OnlyProtocol).dependencies == ()  # type: ignore[union-attr]
    c = di.Container(reg)
    with c:
        repo = c.resolve(RepoProtocol)
        assert type(repo) is SqlRepo and repo.engine is engine
        assert c.resolve(OnlyProtocol).get() == 2


def test_a_subclass_of_a_parameterised_generic_binds_the_inherited_init() -> None:
    class Holder(Generic[T]):
        def __init__(self, item: T, items: list[T]) -> None:
            self.args = (item, items)

    class IntHolder(Holder[int]):
        pass

    class Listed(Holder[list[U]], Generic[U]):  # Holder's T is list[U]
        pass

    class StrListed(Listed[str]):
        pass

    reg = di.Registry()
    reg.value(int, 5)
    reg.value(list[int], [6])
    reg.value(list[str], ["a"])
    reg.value(list[list[str]], [["b"]])
    reg.provider(IntHolder)
    reg.provider(StrListed)
    reg.provider(Listed[str])
    assert [d.key for d in reg.get(IntHolder).dependencies] == [int, list[int]]  # type: ignore[union-attr]
    assert [d.key for d in reg.get(StrListed).dependencies] == [list[str], list[list[str]]]  # type: ignore[union-attr]
    c = di.Container(reg)
    with c:
        assert c.resolve(IntHolder).args == (5, [6])
        assert c.resolve(StrListed).args == (["a"], [["b"]])
        assert c.resolve(Listed[str]).args == (["a"], [["b"]])
    # a type variable nothing binds is refused at registration, never keyed by ~T
    with pytest.raises(TypeError, match=r"which \S*Listed does not bind .*~U is left free"):
        reg.provider(Listed)


def test_a_protocol_subclass_is_wired_alike_after_its_first_instance() -> None:
    class RepoProtocol(Protocol):
        def get(self) -> object: ...

    class BaseRepo(Generic[T]):
        def __init__(self, dep: T) -> None:
            self.dep = dep

    # typing's placeholder __init__, called once, puts BaseRepo.__init__ into
    # SqlRepo's own __dict__: still BaseRepo's function, with BaseRepo's T
    class SqlRepo(RepoProtocol, BaseRepo[Engine]):
        def get(self) -> object:
            return self.dep

    class Aliased(BaseRepo[Url]):
        __init__ = BaseRepo.__init__  # the same, written by hand

    engine, url = Engine(), Url()
    for _ in range(2):  # a registry (a container) per test: the class is read again
        reg = di.Registry()
        reg.value(Engine, engine)
        reg.register(RepoProtocol, SqlRepo)
        assert [d.key for d in reg.get(RepoProtocol).dependencies] == [Engine]  # type: ignore[union-attr]
        c = di.Container(reg)
        with c:
            assert c.resolve(RepoProtocol).dep is engine  # type: ignore[attr-defined]
    reg = di.Registry()
    reg.value(Url, url)
    reg.provider(Aliased)
    assert [d.key for d in reg.get(Aliased).dependencies] == [Url]  # type: ignore[union-attr]
    c = di.Container(reg)
    with c:
        assert c.resolve(Aliased).dep is url


def test_a_generic_dataclass_subclass_with_fields_of_its_own_binds_the_inherited_ones() -> None:
    @dataclasses.dataclass
    class DBox(Generic[T]):
        item: T

    # dataclasses writes each subclass an __init__ of its own, ``item: T`` (DBox's T) included
    @dataclasses.dataclass
    class DSub(DBox[int]):
        label: str = "x"

    @dataclasses.dataclass
    class DRe(DBox[U]):
        label: str = "x"

    @dataclasses.dataclass
    class Pair(DBox[int], Generic[T]):  # item is DBox's T (int); extra is Pair's own T
        extra: T

    reg = di.Registry()
    reg.value(int, 42)
    reg.value(bytes, b"b")
    reg.provider(DSub)
    reg.provider(DRe[int])
    reg.provider(Pair[bytes])
    assert [d.key for d in reg.get(DSub).dependencies] == [int, str]  # type: ignore[union-attr]
    assert [d.key for d in reg.get(DRe[int]).dependencies] == [int, str]  # type: ignore[union-attr]
    assert [d.key for d in reg.get(Pair[bytes]).dependencies] == [int, bytes]  # type: ignore[union-attr]
    c = di.Container(reg)
    with c:
        assert c.resolve(DSub) == DSub(42)
        assert c.resolve(DRe[int]) == DRe(42)
        assert c.resolve(Pair[bytes]) == Pair(42, b"b")
    with pytest.raises(TypeError, match=r"parameter 'item' of '\S*DRe.__init__' .*~U is left free"):
        reg.provider(DRe)


# -------------------------------------------------------------------- cm=True


def test_cm_true_refuses_a_factory_whose_call_is_no_context_manager() -> None:
    reg = di.Registry()

    async def conn() -> contextlib.AbstractAsyncContextManager[Conn]:
        return contextlib.nullcontext(Conn())

    with pytest.raises(
        TypeError,
        match=r"'.*conn' is a coroutine function .*cm=True.*plain def that returns the .*"
        r"async generator",
    ):
        reg.provider(cm=True, scope="request")(conn)

    def gen() -> Iterator[Conn]:
        yield Conn()

    async def agen() -> AsyncIterator[Conn]:
        yield Conn()

    with pytest.raises(TypeError, match=r"is a generator, .*without cm=True.*contextmanager"):
        reg.provider(cm=True)(gen)
    with pytest.raises(TypeError, match=r"is an async generator, .*asynccontextmanager"):
        reg.register(Conn, agen, cm=True)
    assert len(reg) == 0
    # the same functions, decorated, return context managers: accepted
    reg.provider(cm=True)(contextlib.contextmanager(gen))
    reg.register(Annotated[Conn, di.Named("a")], contextlib.asynccontextmanager(agen), cm=True)
    assert len(reg) == 2


# --------------------------------------------------------- functools.partial


def test_arguments_bound_by_partial_are_not_dependencies() -> None:
    def make_repo(engine: Engine) -> Repo:
        return Repo(engine)

    primary, replica = Engine("primary://"), Engine("replica://")
    reg = di.Registry()
    reg.value(Engine, primary)
    reg.provider(functools.partial(make_repo, engine=replica))
    assert reg.get(Repo).dependencies == ()  # type: ignore[union-attr]

    def make_handler(engine: Engine, repo: Repo) -> Handler:
        return Handler(Repo(engine))

    bound = functools.partial(make_handler, replica)  # positionally: inspect drops it
    nested = functools.partial(functools.partial(make_handler, engine=replica))
    reg.provider(bound)
    reg.register(Annotated[Handler, di.Named("nested")], nested)
    assert [d.name for d in reg.get(Handler).dependencies] == ["repo"]  # type: ignore[union-attr]
    assert [d.name for d in reg.get(Annotated[Handler, di.Named("nested")]).dependencies] == [  # type: ignore[union-attr]
        "repo"
    ]
    c = di.Container(reg)
    with c:
        assert c.resolve(Repo).engine is replica  # the bound argument wins
        assert c.resolve(Handler).repo.engine is replica
        assert c.resolve(Annotated[Handler, di.Named("nested")]).repo.engine is replica


PARTIAL_MODULE = """
    class Db:
        pass


    class Engine:
        def __init__(self, db: "Db", url: str = "sqlite://") -> None:
            self.db, self.url = db, url
"""


def test_a_partial_of_a_class_reads_string_annotations_where_its_init_was_written() -> None:
    module = make_module("di_test_partial", PARTIAL_MODULE)  # Db is not defined here
    reg = di.Registry()
    reg.provider(singleton=True)(module.Db)
    reg.provider(provides=module.Engine)(functools.partial(module.Engine, url="pg://"))
    assert [(d.name, d.key) for d in reg.get(module.Engine).dependencies] == [  # type: ignore[union-attr]
        ("db", module.Db)
    ]
    # a NamedTuple's __new__, which collections.namedtuple wrote outside any module
    url, engine = Url(), Engine("e://")
    reg.value(Url, url)
    reg.value(Engine, engine)
    reg.register(TupleFields, functools.partial(TupleFields, label="y"))
    reg.register(Forward, functools.partial(Forward, url))
    assert [d.key for d in reg.get(TupleFields).dependencies] == [Url, Engine]  # type: ignore[union-attr]
    c = di.Container(reg)
    with c:
        made = c.resolve(module.Engine)
        assert made.db is c.resolve(module.Db) and made.url == "pg://"
        assert c.resolve(TupleFields).args == (url, engine, "y")
        assert c.resolve(Forward).args == (url, engine)


# ------------------------------------------------- where a duplicate was made


def test_duplicate_class_registration_names_both_registrations() -> None:
    class Svc:
        def __init__(self, n: int = 1) -> None:  # the definition: not what is named
            self.n = n

    reg = di.Registry()
    first = here() + 1
    reg.provider(Svc)
    second = here() + 2
    with pytest.raises(di.DuplicateProviderError) as info:
        reg.provider(Svc, scope="request")
    message = str(info.value)
    definition = Svc.__init__.__code__.co_firstlineno
    assert f"first at {__file__}:{first}, again at {__file__}:{second};" in message, message
    assert f":{definition}" not in message
    with pytest.raises(di.DuplicateProviderError, match=rf"first at \S+:{first}, again at"):
        reg.provider(Svc)  # the fast path's own duplicate
    third = here() + 1
    reg.provider(Svc, override=True)  # the last registration is the one named
    fourth = here() + 2
    with pytest.raises(di.DuplicateProviderError, match=rf":{third}, again at \S+:{fourth};"):
        reg.value(Svc, Svc())


def test_duplicate_through_include_names_both_registrations() -> None:
    class Svc:
        def __init__(self) -> None:
            pass

    a, b = di.Registry(), di.Registry()
    first = here() + 1
    a.provider(Svc)
    second = here() + 1
    b.add(di.Registry().register(Svc, Svc))  # a Provider register() made on this line
    app = di.Registry()
    app.include(a)
    again = di.Registry()
    again.provider(Svc)
    app.include(again)  # one class registered by provider() in two registries is one
    assert app.get(Svc) is a.get(Svc)
    with pytest.raises(
        di.DuplicateProviderError, match=rf"first at \S+:{first}, again at \S+:{second};"
    ):
        app.include(b)


# ------------------------------------------------- review fixes (registry, 4)


def test_a_subclass_own_type_variable_is_not_bound_by_a_base_that_reuses_it() -> None:
    class Base(Generic[T]):
        def __init__(self, a: T) -> None:
            self.a = a

    class Sub(Base[int], Generic[T]):  # Sub's own T is the same TypeVar, left free
        def __init__(self, a: int, b: T) -> None:
            self.b = b

    with pytest.raises(TypeError, match=r"parameter 'b' of '\S*Sub.__init__'.*left free"):
        di.Registry().register(Sub, Sub)
    assert [d.key for d in di.Registry().register(Sub[str], Sub[str]).dependencies] == [int, str]


def test_a_dataclass_handwritten_init_from_string_code_binds_its_own_type_variables() -> None:
    source = """
        from dataclasses import dataclass
        from typing import Generic, TypeVar
        T = TypeVar("T")

        @dataclass
        class Base(Generic[T]):
            item: T

        @dataclass
        class Sub(Base[int], Generic[T]):
            def __init__(self, item: T) -> None:  # hand-written: dataclass keeps it
                self.item = item
    """
    namespace: dict[str, Any] = {"__name__": "generated_dc"}
    # "<string>", as `python -c` and exec(str) give, and as dataclasses' own code says
    exec(compile(textwrap.dedent(source), "<string>", "exec"), namespace)
    sub = namespace["Sub"]
    provider = di.Registry().register(sub[str], sub[str])
    assert [d.key for d in provider.dependencies] == [str]


@pytest.mark.anyio
async def test_cm_true_with_provides_reads_async_from_an_unresolvable_return_annotation() -> None:
    @contextlib.asynccontextmanager
    async def _open() -> AsyncIterator[Conn]:
        yield Conn()

    def conn() -> "contextlib.AbstractAsyncContextManager[Pool]":  # type: ignore[name-defined]  # noqa: F821
        return _open()

    def pool() -> "NotImportedAsyncManager[Conn]":  # type: ignore[name-defined]  # noqa: F821
        return _open()

    for factory in (conn, pool):
        reg = di.Registry()
        reg.provider(provides=Conn, cm=True, singleton=True)(factory)
        async with di.Container(reg) as c:
            assert isinstance(await c.aresolve(Conn), Conn)


def test_a_dataclass_initvar_parameter_is_keyed_by_its_type() -> None:
    @dataclasses.dataclass
    class WithEngine:
        engine: dataclasses.InitVar[Engine]

        def __post_init__(self, engine: Engine) -> None:
            self.url = engine.url

    @dataclasses.dataclass
    class WithT(Generic[T]):
        x: dataclasses.InitVar[T]

        def __post_init__(self, x: T) -> None:
            self.y = x

    reg = di.Registry()
    reg.register(Engine, Engine)
    reg.register(WithEngine, WithEngine)
    assert [d.key for d in reg.get(WithEngine).dependencies] == [Engine]
    assert [d.key for d in di.Registry().register(WithT[int], WithT[int]).dependencies] == [int]
    with di.Container(reg) as c:
        assert c.resolve(WithEngine).url == "sqlite://"


def test_inherited_dataclass_fields_are_evaluated_in_their_declaring_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def module(name: str, source: str) -> types.ModuleType:
        made = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, made)  # dataclasses read it from there
        exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), made.__dict__)
        return made

    base = module(
        "di_fa_base",
        """
        from __future__ import annotations
        from dataclasses import dataclass
        from typing import Generic, TypeVar
        class Engine: pass
        T = TypeVar("T")
        @dataclass
        class Base:
            engine: Engine
        @dataclass
        class GBase(Generic[T]):
            item: T
        """,
    )
    for name, other in (("di_fa_sub", "class Engine: pass"), ("di_fa_sub2", "")):
        sub = module(
            name,
            f"""
            from __future__ import annotations
            from dataclasses import dataclass
            from di_fa_base import Base, GBase
            {other}
            @dataclass
            class Sub(Base):
                extra: int
            @dataclass
            class GSub(GBase[int]):
                extra: str
            """,
        )
        keys = {d.name: d.key for d in di.Registry().register(sub.Sub, sub.Sub).dependencies}
        assert keys == {"engine": base.Engine, "extra": int}
        generic = di.Registry().register(sub.GSub, sub.GSub).dependencies
        assert {d.name: d.key for d in generic} == {"item": int, "extra": str}


def test_a_partial_of_a_generic_alias_is_wired_like_the_alias_less_what_it_binds() -> None:
    class G(Generic[T]):
        def __init__(self, x: T, e: "Engine", n: int = 0, *, k: str = "") -> None:
            self.x, self.e, self.n, self.k = x, e, n, k

    reg = di.Registry()
    reg.value(int, 1)
    reg.provider(Engine)
    made = reg.register(G, functools.partial(G[int]))
    assert [(d.name, d.key) for d in made.dependencies] == [
        ("x", int),
        ("e", Engine),
        ("n", int),
        ("k", str),
    ]
    bound = di.Registry().register(G, functools.partial(functools.partial(G[int], 5), k="z"))
    assert [d.name for d in bound.dependencies] == ["e", "n"]
    with di.Container(reg) as c:
        got = c.resolve(G)
        assert (got.x, type(got.e), got.n) == (1, Engine, 1)


def test_strings_nested_in_an_evaluated_string_annotation_are_evaluated() -> None:
    module = make_module(
        "di_nested_strings",
        """
        from __future__ import annotations
        import collections.abc as cabc
        class X: ...
        def f(a: list["X"], b: cabc.Callable[["X"], int], c: cabc.Callable[..., "X"]) -> int:
            return 0
        def g(a: "list['X']") -> int:
            return 0
        """,
    )
    X = module.X
    keys = {d.name: d.key for d in di.Registry().register(int, module.f).dependencies}
    assert keys == {
        "a": list[X],
        "b": collections.abc.Callable[[X], int],
        "c": collections.abc.Callable[..., X],
    }
    assert [d.key for d in di.Registry().register(int, module.g).dependencies] == [list[X]]


def test_an_inherited_attrs_field_binds_type_variables_in_its_declaring_class() -> None:
    attrs = pytest.importorskip("attrs")

    @attrs.define
    class A(Generic[T]):
        _a: T

    @attrs.define
    class B(A[int], Generic[T]):
        b: T

    deps = di.Registry().register(B[str], B[str]).dependencies
    assert {d.name: d.key for d in deps} == {"a": int, "b": str}
    with pytest.raises(TypeError, match="left free"):
        di.Registry().register(B, B)


def test_an_annotation_raising_attribute_error_is_unresolvable() -> None:
    module = make_module(
        "di_test_attr_error",
        """
        import contextlib
        import xml

        class Pool:
            pass

        def pool() -> "contextlib.AbstractAsyncContextManager[xml.nosuchmodule.Doc]":
            return contextlib.nullcontext(Pool())

        def needs(doc: "xml.nosuchmodule.Doc") -> int:
            return 0
        """,
    )
    provider = di.Registry().register(module.Pool, module.pool, cm=True)
    assert provider.kind.name == "ASYNC_CM"
    with pytest.raises(di.UnresolvableAnnotationError, match="nosuchmodule"):
        di.Registry().register(int, module.needs)


def test_a_partial_of_a_generic_alias_binding_by_keyword_makes_the_rest_keyword_only() -> None:
    class KwRepo(Generic[T]):
        def __init__(self, url: str, engine: Engine, item: T) -> None:
            self.url, self.engine, self.item = url, engine, item

    registry = di.Registry()
    registry.register(Engine, Engine)
    registry.value(int, 7)
    provider = registry.register(KwRepo[int], functools.partial(KwRepo[int], url="db://x"))
    assert [(d.name, d.keyword_only) for d in provider.dependencies] == [
        ("engine", True),
        ("item", True),
    ]
    repo = di.Container(registry).resolve(KwRepo[int])
    assert (repo.url, repo.item) == ("db://x", 7)


def test_a_parameter_a_partial_of_a_generic_alias_binds_is_not_left_free() -> None:
    class Cache(Generic[T]):
        def __init__(self, engine: Engine, loader: Callable[[], U], item: T) -> None:
            pass

    class Later(Generic[T]):
        def __init__(self, missing: "NoSuchName", item: T) -> None:  # type: ignore[name-defined]  # noqa: F821
            pass

    registry = di.Registry()
    provider = registry.register(Cache[int], functools.partial(Cache[int], loader=lambda: 0))
    assert {d.name: d.key for d in provider.dependencies} == {"engine": Engine, "item": int}
    provider = registry.register(Later[int], functools.partial(Later[int], None))
    assert [(d.name, d.key) for d in provider.dependencies] == [("item", int)]


def dataclass_module(monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> types.ModuleType:
    """`make_module`, in ``sys.modules`` (which `dataclasses` reads) for the test."""
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


def test_strings_inside_an_initvar_are_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    module = dataclass_module(
        monkeypatch,
        "di_test_initvar_strings",
        """
        from dataclasses import dataclass, InitVar

        class Engine:
            pass

        @dataclass
        class Svc:
            engine: InitVar["Engine"]
            engines: InitVar[list["Engine"]]

            def __post_init__(self, engine, engines):
                pass
        """,
    )
    deps = di.Registry().register(module.Svc, module.Svc).dependencies
    assert [d.key for d in deps] == [module.Engine, list[module.Engine]]


def test_an_initvar_under_future_annotations_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    module = dataclass_module(
        monkeypatch,
        "di_test_initvar_future",
        """
        from __future__ import annotations
        from dataclasses import dataclass, InitVar

        class Engine:
            pass

        @dataclass
        class Svc:
            name: str
            engine: InitVar[Engine]

            def __post_init__(self, engine):
                self.e = engine
        """,
    )
    deps = di.Registry().register(module.Svc, module.Svc).dependencies
    assert [d.key for d in deps] == [str, module.Engine]


def test_a_partial_of_a_dataclass_reads_inherited_fields_in_their_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = dataclass_module(
        monkeypatch,
        "di_test_partial_dc_base",
        """
        from __future__ import annotations
        from dataclasses import dataclass

        class Engine:
            pass

        @dataclass
        class Base:
            engine: Engine
        """,
    )
    sub = dataclass_module(
        monkeypatch,
        "di_test_partial_dc_sub",
        """
        from __future__ import annotations
        from dataclasses import dataclass
        from di_test_partial_dc_base import Base

        class Engine:  # another Engine
            pass

        @dataclass
        class Sub(Base):
            name: str
        """,
    )
    assert [d.key for d in di.Registry().register(sub.Sub, sub.Sub).dependencies] == [
        base.Engine,
        str,
    ]
    provider = di.Registry().register(sub.Sub, functools.partial(sub.Sub, name="x"))
    assert [d.key for d in provider.dependencies] == [base.Engine]


# -- a randomized differential test of the wiring --------------------------------
#
# Random modules of classes and functions, written as source text and exec'd
# (strings, forward references to classes defined further down, with and
# without `from __future__ import annotations`), each factory registered
# once every class exists; what di reads is compared with a reference built
# from `inspect.signature` and `typing.get_type_hints(include_extras=True)`.

_FUZZ_SEED = 20240611
_FUZZ_MODULES = 60  # five factories each: about 300 cases

_FUZZ_PRELUDE = """\
import dataclasses
import functools
from typing import Annotated, Generic, NamedTuple, Optional, Protocol, TypeVar

import di

T = TypeVar("T")
SENTINEL = object()


class E0:
    pass


class E1:
    pass


class Mixin:
    pass


class Proto(Protocol):
    pass


def wrap(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper
"""

_FUZZ_EPILOGUE = """
class L0:  # defined after every factory: forward references only
    pass


class L1:
    pass
"""


class _FuzzModule:
    """Source text for one random module, and what to register from it."""

    def __init__(self, rng: Any, future: bool) -> None:
        self.rng = rng
        self.future = future
        self.body: list[str] = []
        # (kind, name, extra): what to register once the module has run
        self.cases: list[tuple[str, str, Any]] = []
        self.inits: list[str] = []  # classes with an own __init__ (bases)
        self.generics: list[str] = []
        self.dataclasses: list[str] = []

    def hint(self, allow_t: bool = False) -> str:
        rng = self.rng
        name = rng.choice(["E0", "E1", "L0", "L1", "int", "str"] + ["T", "T"] * allow_t)
        late = name.startswith("L")
        # Without the future import a late name must be a string somewhere:
        # the name alone ("inner") or the whole hint ("whole").
        mode = "bare" if self.future else rng.choice(["bare", "inner", "whole"])
        if mode == "bare" and late:
            mode = rng.choice(["inner", "whole"])
        inner = f'"{name}"' if mode == "inner" else name
        form = rng.randrange(8)
        if form == 1:
            text = f"Optional[{inner}]"
        elif form == 2:  # `"L0" | None` is no expression: quote it whole
            text = f"{name} | None"
            mode = "whole" if mode == "inner" else mode
        elif form == 3:
            text = f"Annotated[{inner}, di.Named({rng.choice('ab')!r})]"
        elif form == 4:
            text = f"Annotated[{inner}, 'meta']"  # not a Named: dropped from the key
        elif form == 5:
            text = f"list[{inner}]"
        elif form == 6:
            text = f"Annotated[Optional[{inner}], di.Named('a')]"
        else:
            text = inner
        return f'"{text}"' if mode == "whole" else text

    def default(self) -> str:
        return self.rng.choice(["None", "7", "SENTINEL"])

    def params(self, allow_t: bool = False, first: str = "") -> str:
        rng = self.rng
        kinds = sorted((rng.choice("ppk") for _ in range(rng.randrange(5))), key="pk".index)
        posonly = rng.randrange(sum(k == "p" for k in kinds) + 1) if rng.random() < 0.4 else 0
        out = [first] if first else []
        defaulted = False
        star = False
        for i, kind in enumerate(kinds):
            if kind == "k" and not star:
                out.append("*args" if rng.random() < 0.3 else "*")
                star = True
            annotated = rng.random() < 0.9
            has_default = rng.random() < 0.3 or not annotated or (kind == "p" and defaulted)
            defaulted |= kind == "p" and has_default
            text = f"p{i}"
            if annotated:
                text += f": {self.hint(allow_t)}"
            if has_default:
                text += f" = {self.default()}"
            out.append(text)
            if kind == "p" and i + 1 == posonly:
                out.append("/")
        if not star and rng.random() < 0.2:
            out.append("*args")
        if rng.random() < 0.2:
            out.append("**kwargs")
        return ", ".join(out)

    def fields(self, allow_t: bool = False, all_defaults: bool = False) -> list[str]:
        rng = self.rng
        out = []
        defaulted = False
        for i in range(rng.randrange(4)):
            has_default = all_defaults or defaulted or rng.random() < 0.3
            defaulted |= has_default
            text = f"f{len(self.body)}_{i}: {self.hint(allow_t)}"
            out.append(text + (f" = {self.default()}" if has_default else ""))
        return out or ["pass"]

    def add(self, n: int) -> None:
        rng = self.rng
        choices = ["init", "inherit", "func", "dataclass", "namedtuple", "generic", "partial"]
        kind = rng.choice(choices)
        if kind == "inherit" and not self.inits:
            kind = "init"
        name = f"F{n}"
        body = self.body
        if kind == "init":
            deco = "    @wrap\n" if rng.random() < 0.15 else ""
            body.append(
                f"class {name}:\n{deco}    def __init__({self.params(first='self')}):\n"
                "        pass\n"
            )
            self.inits.append(name)
        elif kind == "inherit":
            base = rng.choice(self.inits)
            bases = rng.choice([base, f"Mixin, {base}", f"Proto, {base}"])
            body.append(f"class {name}({bases}):\n    pass\n")
        elif kind in ("func", "partial"):
            head = rng.choice(["def", "def", "async def"])
            deco = "@wrap\n" if rng.random() < 0.15 and kind == "func" else ""
            ret = rng.choice([f"P{n}", f'"P{n}"'])
            body.append(
                f"class P{n}:\n    pass\n\n\n"
                f"{deco}{head} {name}({self.params()}) -> {ret}:\n    pass\n"
            )
        elif kind == "dataclass":
            base = rng.choice(self.dataclasses) if self.dataclasses and rng.random() < 0.4 else ""
            fields = self.fields(all_defaults=bool(base))
            if not base and fields != ["pass"] and rng.random() < 0.3:
                fields.append("_: dataclasses.KW_ONLY")
                fields.append(f"k{n}: {self.hint()}")
            lines = "\n".join(f"    {f}" for f in fields)
            body.append(f"@dataclasses.dataclass\nclass {name}({base}):\n{lines}\n")
            self.dataclasses.append(name)
        elif kind == "namedtuple":
            lines = "\n".join(f"    {f}" for f in self.fields())
            body.append(f"class {name}(NamedTuple):\n{lines}\n")
        else:  # generic: registered parameterised, and through a subclass
            if rng.random() < 0.3:
                lines = "\n".join(f"    {f}" for f in self.fields(allow_t=True))
                body.append(f"@dataclasses.dataclass\nclass {name}(Generic[T]):\n{lines}\n")
            else:
                body.append(
                    f"class {name}(Generic[T]):\n"
                    f"    def __init__({self.params(allow_t=True, first='self')}):\n"
                    "        pass\n"
                )
            arg = rng.choice(["E0", "E1", "int"])  # evaluated where the subclass is
            if rng.random() < 0.5:
                body.append(f"class {name}Sub({name}[{arg}]):\n    pass\n")
                self.cases.append(("subclass", f"{name}Sub", arg))
        self.cases.append((kind, name, rng.choice(["E0", "E1", "int", "L1"])))

    def source(self) -> str:
        future = "from __future__ import annotations\n\n" if self.future else ""
        return future + _FUZZ_PRELUDE + "\n\n" + "\n\n".join(self.body) + _FUZZ_EPILOGUE


def _fuzz_key(hint: Any) -> Any:
    """The key the design gives a hint (docs/design.md, "Declare": "Keys are
    the type, or `Annotated[T, Named("x")]`"): other metadata is dropped."""
    if typing.get_origin(hint) is Annotated:
        names = [m for m in hint.__metadata__ if isinstance(m, di.Named)]
        return Annotated[hint.__origin__, names[-1]] if names else hint.__origin__
    return hint


def _fuzz_bind(hint: Any, var: Any, arg: Any) -> Any:
    if hint is var:
        return arg
    if var in getattr(hint, "__parameters__", ()):
        return hint[arg]
    return hint


def _fuzz_expected(factory: Any) -> list[tuple[str, Any, bool, Any]]:
    """The reference: inspect.signature's parameters, get_type_hints' hints."""
    drop: set[str] = set()
    var = arg = None
    cls = typing.get_origin(factory) or factory
    if typing.get_origin(factory) is not None:  # Box[int]: T bound to int
        var, arg = cls.__parameters__[0], typing.get_args(factory)[0]
    elif isinstance(factory, type):  # class Sub(Box[int]): T bound to int
        origin = getattr(cls, "__orig_bases__", (None,))[0]
        if typing.get_origin(origin) is not None and typing.get_origin(origin) is not Generic:
            var = typing.get_origin(origin).__parameters__[0]
            arg = typing.get_args(origin)[0]
    if isinstance(factory, functools.partial):
        # The design: "its keywords are left out here: the bound argument wins"
        # (inspect shows each as a keyword-only parameter with that default).
        params = list(inspect.signature(factory).parameters.values())
        drop = set(factory.keywords)
        fn = inspect.unwrap(factory.func)
        hints = typing.get_type_hints(fn, fn.__globals__, {}, include_extras=True)
    elif dataclasses.is_dataclass(cls) or hasattr(cls, "_fields"):
        params = list(inspect.signature(cls).parameters.values())
        hints = typing.get_type_hints(cls, include_extras=True)
    elif isinstance(cls, type):
        # The design reads "the `__init__` that runs: the first along the MRO
        # that is not typing's Protocol placeholder" (inspect.signature(cls)
        # would read the placeholder's (*args, **kwargs)).
        init = next(
            vars(k)["__init__"]
            for k in cls.__mro__
            if "__init__" in vars(k)
            and vars(k)["__init__"] is not getattr(typing, "_no_init_or_replace_init", None)
        )
        params = list(inspect.signature(init).parameters.values())[1:]
        fn = inspect.unwrap(init)
        hints = typing.get_type_hints(fn, fn.__globals__, {}, include_extras=True)
    else:
        params = list(inspect.signature(factory).parameters.values())
        fn = inspect.unwrap(factory)
        # Locals of their own: typing interns `Optional["E0"]` across modules
        # (the design's note on `type_hints`), so the default would be stale.
        hints = typing.get_type_hints(fn, fn.__globals__, {}, include_extras=True)
    return [
        (
            p.name,
            _fuzz_key(_fuzz_bind(hints[p.name], var, arg)) if p.name in hints else None,
            p.kind is p.KEYWORD_ONLY,
            p.default,
        )
        for p in params
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in drop
    ]


def _fuzz_cases(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any, Any, Any]]:
    """(source, factory, what di read, what it provides) for every case."""
    import random  # only this test draws at random

    rng = random.Random(_FUZZ_SEED)
    for m in range(_FUZZ_MODULES):
        gen = _FuzzModule(rng, future=rng.random() < 0.5)
        for n in range(5):
            gen.add(n)
        source = gen.source()
        module = dataclass_module(monkeypatch, f"di_test_fuzz_{m}", source)
        ns = vars(module)
        for kind, name, arg in gen.cases:
            factory: Any = ns[name]
            key: Any = factory
            if kind == "generic":
                factory = key = factory[ns.get(arg, int)]  # int: a builtin
            elif kind in ("func", "partial"):
                key = ns[f"P{name[1:]}"]
            if kind == "partial":
                names = [
                    p.name
                    for p in inspect.signature(factory).parameters.values()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                ]
                first = next(iter(inspect.signature(factory).parameters.values()), None)
                positional = (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD) if first else ()
                if first is not None and first.kind in positional and rng.random() < 0.5:
                    factory = functools.partial(factory, None)
                elif names:
                    factory = functools.partial(factory, **{rng.choice(names): None})
                else:
                    factory = functools.partial(factory)
                provider = di.Registry().register(key, factory)
            else:
                reg = di.Registry()
                reg.provider(factory)
                provider = reg.get(key)
            assert provider is not None, source
            yield f"{source}\n# case: {kind} {name}", factory, provider, key


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="the reference, 3.10's typing.get_type_hints, differs there by design: it makes "
    "a None default Optional, leaves strings inside builtin generics and refuses KW_ONLY as "
    "a string (di's own 3.10 wiring is pinned by the tests above)",
)
def test_wiring_matches_signature_and_type_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    count = 0
    for source, factory, provider, key in _fuzz_cases(monkeypatch):
        count += 1
        got = [(d.name, d.key, d.keyword_only, d.default) for d in provider.dependencies]
        assert got == _fuzz_expected(factory), source
        assert provider.provides == key, source
    assert count >= 250
