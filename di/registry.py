"""Declare: providers and the registries that hold them.

A provider is a factory plus what it provides (its key) and what it needs
(its dependencies), read once from type hints at registration. Nothing here
resolves anything; `di.Container` validates and compiles a registry.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import enum
import functools
import inspect
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FunctionType, GenericAlias, MethodType, SimpleNamespace
from typing import Annotated, Any, Final, NamedTuple, TypeVar, overload

from di.errors import DuplicateProviderError, ScopeError, describe_key
from di.levels import DEFAULT_ORDER

__all__ = [
    "Dependency",
    "Kind",
    "Named",
    "Provider",
    "Registry",
    "default_registry",
    "normalize_key",
    "register_provider",
]

F = TypeVar("F", bound=Callable[..., Any])

NO_DEFAULT: Final[Any] = inspect.Parameter.empty


@dataclass(frozen=True, repr=False)
class Named:
    """A qualifier: ``Annotated[Engine, di.Named("replica")]`` is a key of its
    own, distinct from plain ``Engine``."""

    name: str

    def __repr__(self) -> str:  # as written: Named('replica'), for messages
        return f"Named({self.name!r})"


class _InjectMarker:
    """The metadata `di.Injected[T]` puts into ``Annotated``."""

    def __repr__(self) -> str:
        return "Injected"


INJECT_MARKER: Final = _InjectMarker()


def _is_class(obj: Any) -> bool:
    """Whether ``obj`` is a class. Before 3.11 a parameterised builtin or
    generic class (``list[int]``, ``Repo[int]``: a `types.GenericAlias`)
    passes ``isinstance(obj, type)`` too; it is no class of its own."""
    return isinstance(obj, type) and not isinstance(obj, GenericAlias)


if sys.version_info >= (3, 11):

    def type_hints(fn: Any, globalns: dict[str, Any] | None = None) -> dict[str, Any]:
        """`typing.get_type_hints` of ``fn``, ``Annotated`` kept."""
        return typing.get_type_hints(fn, globalns, include_extras=True)

else:

    def type_hints(fn: Any, globalns: dict[str, Any] | None = None) -> dict[str, Any]:
        """`typing.get_type_hints` of ``fn``, ``Annotated`` kept, as 3.11 reads
        it: 3.10 wraps the hint of a parameter whose default is ``None`` in
        ``Optional`` (``repo: Repo = None`` would need ``Optional[Repo]``).
        A holder with the same annotations but no defaults, read in the same
        globals, is left as written."""
        annotations = getattr(fn, "__annotations__", None)
        if not isinstance(annotations, dict) or not hasattr(fn, "__code__"):
            return typing.get_type_hints(fn, globalns, include_extras=True)
        if globalns is None:  # where get_type_hints takes them from
            nsobj = fn
            while hasattr(nsobj, "__wrapped__"):
                nsobj = nsobj.__wrapped__
            globalns = getattr(nsobj, "__globals__", {})
        holder = SimpleNamespace(__annotations__=annotations)
        return typing.get_type_hints(holder, globalns, include_extras=True)


def normalize_key(hint: Any) -> Any:
    """The registry key for a type hint: ``Annotated`` is kept only for a
    `Named` qualifier (other metadata, `Injected` included, is dropped)."""
    if type(hint) is type:  # the common case, without typing's machinery
        return hint
    if typing.get_origin(hint) is Annotated:
        base = hint.__origin__
        names = [m for m in hint.__metadata__ if isinstance(m, Named)]
        return Annotated[base, names[-1]] if names else base
    return hint


class Kind(enum.Enum):
    """How a factory makes its value (and whether it has teardown)."""

    CALL = "function or class"
    COROUTINE = "coroutine function"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async generator"
    CM = "context manager"
    ASYNC_CM = "async context manager"
    VALUE = "value"
    CONTEXT = "context value"

    @property
    def is_async(self) -> bool:
        return self.asynchronous

    # Set on each member below: a plain attribute read, no Python call.
    asynchronous: bool
    described: str  # with its article, for messages: "a coroutine function"


for _kind in Kind:
    _kind.asynchronous = _kind in (Kind.COROUTINE, Kind.ASYNC_GENERATOR, Kind.ASYNC_CM)
    _kind.described = f"{'an' if _kind.value[0] in 'aeiou' else 'a'} {_kind.value}"
_CALL: Final = Kind.CALL


class Dependency(NamedTuple):
    """One parameter of a factory: where it goes and which key fills it."""

    # NamedTuple, not a frozen dataclass: a cold start reads hundreds of
    # these, and a frozen dataclass costs several times more to build.
    name: str
    key: Any
    keyword_only: bool
    default: Any = NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


class Provider(NamedTuple):
    """What one registration made: read-only for users.

    ``scope`` is the level name (the first level means singleton) or None for
    transient. ``source`` is ``file:line`` of the registration, for errors.
    """

    provides: Any
    factory: Any
    kind: Kind
    scope: str | None
    dependencies: tuple[Dependency, ...]
    origin: Any  # a code object (rendered only when an error needs it) or "file:line"

    @property
    def source(self) -> str:
        """Where it was registered, as ``file:line``."""
        code = self.origin
        if isinstance(code, str):
            return code
        return f"{code.co_filename}:{code.co_firstlineno}"

    @property
    def is_async(self) -> bool:
        return self.kind.asynchronous

    @property
    def name(self) -> str:
        return getattr(self.factory, "__qualname__", None) or describe_key(self.provides)


# -- reading hints ------------------------------------------------------------

_ITERATOR_ORIGINS = (cabc.Iterator, cabc.Generator, cabc.Iterable)
_ASYNC_ITERATOR_ORIGINS = (cabc.AsyncIterator, cabc.AsyncGenerator, cabc.AsyncIterable)
_CM_ORIGINS = (contextlib.AbstractContextManager,)
_ASYNC_CM_ORIGINS = (contextlib.AbstractAsyncContextManager,)


def _hints(fn: Any) -> dict[str, Any]:
    # Reading __annotations__ directly costs about a tenth of get_type_hints;
    # only string annotations (PEP 563 or forward references) need evaluating.
    ann = getattr(fn, "__annotations__", None)
    if not ann:
        return {}
    for value in ann.values():
        if type(value) is str:
            return type_hints(fn)
    return ann  # type: ignore[no-any-return]  # read only, never mutated


def _unwrap(hint: Any, origins: tuple[Any, ...]) -> Any:
    if typing.get_origin(hint) in origins:
        args = typing.get_args(hint)
        return args[0] if args else Any
    return hint


def _parameters(fn: Any, hints: dict[str, Any], skip_first: bool) -> tuple[Dependency, ...]:
    # A Python function (`_read`): its code object says what it takes.
    code = fn.__code__
    argcount = code.co_argcount
    names = code.co_varnames[: argcount + code.co_kwonlyargcount]
    defaults = fn.__defaults__ or ()
    kwdefaults = fn.__kwdefaults__ or {}
    first_default = argcount - len(defaults)
    deps = []
    # One loop, no helper calls on the common path: a cold start reads every
    # parameter of every provider once.
    for i in range(1 if skip_first else 0, len(names)):
        name = names[i]
        if i < argcount:
            default = defaults[i - first_default] if i >= first_default else NO_DEFAULT
        else:
            default = kwdefaults.get(name, NO_DEFAULT)
        hint = hints.get(name, NO_DEFAULT)
        if hint is NO_DEFAULT or type(hint) is not type:
            deps.append(_dependency(fn, name, hints, i >= argcount, default))
        else:
            deps.append(_new_dependency(Dependency, (name, hint, i >= argcount, default)))
    return tuple(deps)


def class_provider(
    cls: type, key: Any, kind: Kind, scope: str | None, source: str | None
) -> Provider:
    """The provider of a class, autowired from its ``__init__`` (or, when
    that is ``object.__init__``, from a Python ``__new__``: `_from_new`).

    Positional parameters only: a cold start registers every class through
    here. The common ``__init__`` -- positional parameters, each annotated
    with a plain class, no defaults -- is read in one tight loop, about half
    the cost of the general path (`_hints` + `_parameters`), which takes
    everything else."""
    init = cls.__init__  # type: ignore[misc]
    if type(init) is not FunctionType:  # object.__init__ or a C-level __init__
        if init is object.__init__:
            new = cls.__new__
            if type(new) is FunctionType:  # a Python __new__ (NamedTuple...) takes the arguments
                read, origin = _from_new(cls, new, source)
                return _new_provider(Provider, (key, cls, kind, scope, read, origin))
        return _new_provider(Provider, (key, cls, kind, scope, (), source or _caller_location()))
    code = init.__code__
    deps: Any = None
    if init.__defaults__ is None and not code.co_kwonlyargcount:
        ann = init.__annotations__
        deps = []
        for name in code.co_varnames[1 : code.co_argcount]:
            hint = ann.get(name)
            if type(hint) is not type:  # missing, a string, generic, Annotated...
                deps = None
                break
            deps.append(_new_dependency(Dependency, (name, hint, False, NO_DEFAULT)))
    if deps is None or (not deps and getattr(init, "__wrapped__", None) is not None):
        # Every other shape; or a decorator's wrapper, whose own (*args,
        # **kwargs) the loop read as nothing: `_read` reads what it wraps.
        _, deps, code = _read(init, skip_first=True)
    else:
        deps = tuple(deps)
    return _new_provider(Provider, (key, cls, kind, scope, deps, source or code))


def _from_new(cls: type, new: Any, source: str | None) -> tuple[tuple[Dependency, ...], Any]:
    """The dependencies and origin of a class whose ``__init__`` is
    ``object.__init__``, read from its Python ``__new__`` (``cls`` skipped) by
    the same rules as an ``__init__``.

    ``collections.namedtuple`` (so ``typing.NamedTuple`` too) makes ``__new__``
    with ``eval`` in a throwaway namespace (no module, no builtins) and keeps
    string annotations as ``ForwardRef``: those resolve in the module of the
    class that defines ``__new__``, and the registration is its own origin."""
    if new.__module__ in sys.modules:  # written in a module, like any __init__
        _, deps, code = _read(new, skip_first=True)
        return deps, source or code
    hints = new.__annotations__
    if any(type(hint) is str or type(hint) is typing.ForwardRef for hint in hints.values()):
        owner = next(k for k in cls.__mro__ if "__new__" in vars(k))
        module = sys.modules.get(owner.__module__)
        hints = type_hints(new, getattr(module, "__dict__", None))
    return _parameters(new, hints, skip_first=True), source or _caller_location()


# Build these NamedTuples without their generated Python __new__ (hot at cold start).
_new_dependency = tuple.__new__
_new_provider = tuple.__new__


def _read(fn: Any, skip_first: bool) -> tuple[dict[str, Any], tuple[Dependency, ...], Any]:
    """The hints, dependencies and code object of a Python function.

    A decorator's wrapper (``__wrapped__``: ``functools.wraps``,
    ``contextlib.contextmanager``) is read through to the function it wraps,
    since the wrapper's own ``(*args, **kwargs)`` says nothing; the wrapper is
    still what the provider calls. One that sets ``__signature__`` is read as
    `inspect.signature` reads it."""
    if getattr(fn, "__wrapped__", None) is None:  # a plain function: the common case
        hints = _hints(fn)
        return hints, _parameters(fn, hints, skip_first), fn.__code__
    # Stop where inspect.signature stops: at an explicit __signature__, or at
    # a bound method (its bound first argument is not a parameter).
    inner = inspect.unwrap(fn, stop=_ends_unwrapping)
    if type(inner) is FunctionType and getattr(inner, "__signature__", None) is None:
        hints = _hints(inner)
        return hints, _parameters(inner, hints, skip_first), inner.__code__
    hints, deps = _from_signature(fn, skip_first)
    return hints, deps, getattr(inspect.unwrap(fn), "__code__", fn.__code__)


def _ends_unwrapping(fn: Any) -> bool:
    return hasattr(fn, "__signature__") or type(fn) is MethodType


def _from_signature(fn: Any, skip_first: bool) -> tuple[dict[str, Any], tuple[Dependency, ...]]:
    """The hints and dependencies `inspect.signature` gives: for a wrapper
    with an explicit ``__signature__``, and for callables with no code object
    of their own (callable instances, ``functools.partial``, builtins)."""
    sig = inspect.signature(fn, eval_str=True)
    params = list(sig.parameters.values())[1 if skip_first else 0 :]
    hints = {p.name: p.annotation for p in params if p.annotation is not p.empty}
    if sig.return_annotation is not sig.empty:
        hints["return"] = sig.return_annotation
    if any(type(hint) is str for hint in hints.values()):
        # An explicit __signature__ is taken as it is: evaluate its strings
        # where the innermost function was written.
        globalns = getattr(inspect.unwrap(fn), "__globals__", None)
        carrier = SimpleNamespace(__annotations__=hints)
        hints = typing.get_type_hints(carrier, globalns, include_extras=True)
    deps = [
        _dependency(fn, p.name, hints, p.kind is p.KEYWORD_ONLY, p.default)
        for p in params
        if p.kind is not p.VAR_POSITIONAL and p.kind is not p.VAR_KEYWORD
    ]
    return hints, tuple(deps)


def _dependency(fn: Any, name: str, hints: dict[str, Any], kw: bool, default: Any) -> Dependency:
    hint = hints.get(name, inspect.Parameter.empty)
    if hint is inspect.Parameter.empty:
        if default is not NO_DEFAULT:
            return Dependency(name, None, kw, default)
        raise TypeError(
            f"parameter {name!r} of {getattr(fn, '__qualname__', fn)!r} has no type hint, "
            f"so di cannot tell what to inject; annotate it or give it a default"
        )
    return Dependency(name, normalize_key(hint), kw, default)


def _caller_location() -> str:
    # The first frame outside this module is where the user registered.
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:  # pragma: no cover - only when called from this module's top
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def call_target(fn: Any) -> Any:
    """What decides how calling ``fn`` behaves (returns, is awaited, yields):
    a function, method or class is itself; ``functools.partial`` and bound
    methods are seen through; any other callable (an instance) is its class's
    ``__call__``. ``inspect.iscoroutinefunction`` and its siblings read the
    answer, which on the callable itself would miss an ``async def __call__``."""
    while True:
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif type(fn) is MethodType:
            fn = fn.__func__
        else:
            break
    if type(fn) is FunctionType or _is_class(fn):
        return fn
    return getattr(type(fn), "__call__", None)  # noqa: B004 - the method, not callable()


def make_provider(
    factory: Any,
    *,
    provides: Any = None,
    scope: str | None = None,
    cm: bool = False,
    source: str | None = None,
) -> Provider:
    """Read one factory: what it provides, what it needs, how it makes it."""
    if type(factory) is type or _is_class(factory):  # a class; Repo[int] is read below
        kind = Kind.CALL
        if cm:
            kind = Kind.ASYNC_CM if hasattr(factory, "__aenter__") else Kind.CM
        key = factory if provides is None else normalize_key(provides)
        return class_provider(factory, key, kind, scope, source)
    if not callable(factory):
        raise TypeError(f"{factory!r} is not callable: a provider must be a function or a class")
    target = factory  # what says the kind: see `call_target`
    if type(factory) is FunctionType:  # def, async def, lambda: the common case
        hints, deps, code = _read(factory, skip_first=False)
    elif type(factory) is MethodType and type(factory.__func__) is FunctionType:
        # A bound method, or a classmethod read off its class: the instance or
        # the class is bound, so the function's first parameter is no dependency.
        hints, deps, code = _read(factory.__func__, skip_first=True)
    else:  # a callable instance, functools.partial, a builtin, a generic alias...
        cls = typing.get_origin(factory)
        if cls is not Annotated and isinstance(cls, type):  # Repo[int]: a generic class
            return _generic_class_provider(factory, cls, provides, scope, cm, source)
        hints, deps = _from_signature(factory, skip_first=False)
        code = None
        target = call_target(factory)
    ret = hints.get("return", inspect.Parameter.empty)
    if cm:
        origin = typing.get_origin(ret) or ret
        is_async = (
            origin in _ASYNC_ITERATOR_ORIGINS
            or origin in _ASYNC_CM_ORIGINS
            or (isinstance(origin, type) and hasattr(origin, "__aenter__"))
        )
        kind = Kind.ASYNC_CM if is_async else Kind.CM
        ret = _unwrap(
            ret, _ASYNC_ITERATOR_ORIGINS + _ITERATOR_ORIGINS + _CM_ORIGINS + _ASYNC_CM_ORIGINS
        )
    elif inspect.isasyncgenfunction(target):
        kind, ret = Kind.ASYNC_GENERATOR, _unwrap(ret, _ASYNC_ITERATOR_ORIGINS)
    elif inspect.isgeneratorfunction(target):
        kind, ret = Kind.GENERATOR, _unwrap(ret, _ITERATOR_ORIGINS)
    elif inspect.iscoroutinefunction(target):
        kind = Kind.COROUTINE
    else:
        kind = Kind.CALL
    key = provides if provides is not None else ret
    if key is inspect.Parameter.empty or key is None:
        raise TypeError(
            f"{getattr(factory, '__qualname__', factory)!r} has no return annotation, so di "
            f"cannot tell what it provides; annotate its return type or pass provides=..."
        )
    # The code object itself: rendering "file:line" waits until an error needs it.
    origin = source or (code if code is not None else _caller_location())
    return Provider(normalize_key(key), factory, kind, scope, deps, origin)


def _generic_class_provider(
    alias: Any, cls: type, provides: Any, scope: str | None, cm: bool, source: str | None
) -> Provider:
    """The provider of a parameterised generic class, ``Repo[int]``: wired
    from ``cls`` as `class_provider` wires it, keyed by the alias, and called
    as the alias (which sets ``__orig_class__`` on the instance, as Python
    does). Type variables in the hints of the class's own ``__init__`` (or
    ``__new__``) are bound to the alias's arguments: ``item: T`` needs ``int``."""
    kind = _CALL
    if cm:
        kind = Kind.ASYNC_CM if hasattr(cls, "__aenter__") else Kind.CM
    key = alias if provides is None else normalize_key(provides)
    made = class_provider(cls, key, kind, scope, source)
    deps = made.dependencies
    if any(_type_variables(dep.key) for dep in deps):
        deps = _bind_type_variables(alias, cls, deps)
    return made._replace(factory=alias, dependencies=deps)


def _type_variables(hint: Any) -> tuple[Any, ...]:
    """The type variables left free in a hint: ``T``, ``list[T]``."""
    if type(hint) is TypeVar:
        return (hint,)
    if _is_class(hint):  # a generic class's own __parameters__ are not free here
        return ()
    return tuple(getattr(hint, "__parameters__", ()))


def _bind_type_variables(
    alias: Any, cls: type, deps: tuple[Dependency, ...]
) -> tuple[Dependency, ...]:
    """``deps`` with the type variables of ``cls`` bound to the arguments of
    ``alias``. Only a method ``cls`` defines itself is bound: an inherited one
    is written in terms of its own class's variables. A variable left free is
    an error, unless the parameter has a default to keep."""
    method = "__init__" if type(cls.__init__) is FunctionType else "__new__"  # type: ignore[misc]
    params = tuple(getattr(cls, "__parameters__", ()))
    args = typing.get_args(alias)
    bound: dict[Any, Any] = {}
    own = method in vars(cls)
    if own and len(params) == len(args) and all(type(p) is TypeVar for p in params):
        bound = dict(zip(params, args, strict=True))
    wired = []
    for dep in deps:
        free = _type_variables(dep.key)
        if free:
            if type(dep.key) is TypeVar:
                key = bound.get(dep.key, dep.key)
            elif any(var in bound for var in free):
                key = dep.key[tuple(bound.get(var, var) for var in free)]
            else:
                key = dep.key
            left = _type_variables(key)
            if left and not dep.has_default:
                where = getattr(getattr(cls, method), "__qualname__", method)
                why = ""
                if not own:
                    why = (
                        f"; {cls.__qualname__} inherits {where}, and di binds the type "
                        f"variables of a class's own {method} only"
                    )
                raise TypeError(
                    f"parameter {dep.name!r} of {where!r} is annotated with "
                    f"{describe_key(dep.key)}, which {describe_key(alias)} does not bind to a "
                    f"type (type variable {', '.join(map(describe_key, left))} is left{why}), "
                    f"so di cannot tell what to inject; annotate it with a concrete type or "
                    f"give it a default"
                )
            dep = dep._replace(key=normalize_key(key))
        wired.append(dep)
    return tuple(wired)


# -- the registry --------------------------------------------------------------


class Registry:
    """A set of providers, keyed by what they provide (type plus optional name).

    >>> registry = Registry()
    >>> @registry.provider(singleton=True)
    ... def settings() -> dict[str, str]:
    ...     return {"env": "prod"}

    ``levels`` is the scope order, outermost first; the first level is the
    container itself (singletons).
    """

    def __init__(self, levels: Sequence[str] = DEFAULT_ORDER) -> None:
        names = tuple(str(level) for level in levels)
        if not names or len(set(names)) != len(names):
            raise ScopeError(f"scope levels must be distinct and non-empty, got {names!r}")
        self.levels: tuple[str, ...] = names
        self._providers: dict[Any, Provider] = {}

    # -- introspection
    def __contains__(self, key: object) -> bool:
        return normalize_key(key) in self._providers

    def __iter__(self) -> Iterator[Provider]:
        return iter(list(self._providers.values()))

    def __len__(self) -> int:
        return len(self._providers)

    def get(self, key: Any) -> Provider | None:
        return self._providers.get(normalize_key(key))

    # -- registration
    def _level(self, singleton: bool, scope: str | None) -> str | None:
        if scope is not None:
            scope = str(scope)
            if scope not in self.levels:
                raise ScopeError(
                    f"unknown scope {scope!r}; this registry's levels are {' < '.join(self.levels)}"
                )
            if singleton and scope != self.levels[0]:
                raise ScopeError(
                    f"singleton=True conflicts with scope={scope!r}; pass one or the other"
                )
            return scope
        return self.levels[0] if singleton else None

    def add(self, provider: Provider, *, override: bool = False) -> Provider:
        """Add a ready `Provider`; the other methods all come here."""
        old = self._providers.get(provider.provides)
        if old is not None and not override:
            raise DuplicateProviderError(
                f"{describe_key(provider.provides)} is registered twice: first at {old.source}, "
                f"again at {provider.source}; pass override=True to replace it on purpose"
            )
        self._providers[provider.provides] = provider
        return provider

    @overload
    def provider(self, factory: F, /) -> F: ...
    @overload
    def provider(
        self,
        *,
        singleton: bool = False,
        scope: str | None = None,
        provides: Any = None,
        cm: bool = False,
        override: bool = False,
    ) -> Callable[[F], F]: ...
    def provider(
        self,
        factory: Any = None,
        *,
        singleton: bool = False,
        scope: str | None = None,
        provides: Any = None,
        cm: bool = False,
        override: bool = False,
    ) -> Any:
        """Register a factory, as ``@registry.provider`` or with options.

        The return annotation says what it provides (``Iterator[T]`` /
        ``AsyncIterator[T]`` for generators, whose code after ``yield`` is
        teardown); parameter annotations say what it needs.

        >>> registry = Registry()
        >>> @registry.provider(scope="request")
        ... def session() -> Iterator[list[str]]:
        ...     log: list[str] = []
        ...     yield log
        ...     log.clear()
        """
        if factory is not None and scope is None and not (singleton or provides or cm):
            # `@registry.provider` / `registry.provider(cls)`: the plain transient case.
            if type(factory) is type:  # a plain class (no metaclass): the common case
                made = class_provider(factory, factory, _CALL, None, None)
            else:
                made = make_provider(factory)
            key = made[0]  # .provides: a NamedTuple field read is unspecialised on 3.11
            if override or key not in self._providers:
                self._providers[key] = made
            else:
                self.add(made)  # raises DuplicateProviderError, naming both places
            return factory
        level = self._level(singleton, scope)

        def decorate(fn: F) -> F:
            self.add(make_provider(fn, provides=provides, scope=level, cm=cm), override=override)
            return fn

        return decorate(factory) if factory is not None else decorate

    def register(
        self,
        interface: Any,
        implementation: Any,
        *,
        singleton: bool = False,
        scope: str | None = None,
        cm: bool = False,
        override: bool = False,
    ) -> Provider:
        """Provide ``interface`` with ``implementation``: a class (autowired
        from its ``__init__``, or ``__new__``, hints) or a factory function."""
        level = self._level(singleton, scope)
        made = make_provider(
            implementation, provides=interface, scope=level, cm=cm, source=_caller_location()
        )
        return self.add(made, override=override)

    def value(self, key: Any, instance: Any, *, override: bool = False) -> Provider:
        """Provide a ready instance (never torn down by di)."""
        made = Provider(
            normalize_key(key), instance, Kind.VALUE, self.levels[0], (), _caller_location()
        )
        return self.add(made, override=override)

    def context(self, key: Any, *, scope: str | None = None, override: bool = False) -> Provider:
        """Declare a value supplied at scope entry:
        ``container.scope("request", context={Request: request})``. ``scope``
        defaults to ``"request"``; a registry without that level must name one."""
        if scope is None:
            if "request" not in self.levels:
                below = ", ".join(map(repr, self.levels[1:]))
                raise ScopeError(
                    f"context {describe_key(key)} needs scope=...: the default, 'request', is "
                    f"not one of this registry's levels ({' < '.join(self.levels)}); "
                    + (f"pass one of {below}" if below else "it has no level below the container")
                )
            scope = "request"
        level = self._level(False, scope)
        if level == self.levels[0]:
            # The container level is never entered with container.scope(), so
            # nothing could ever supply the value.
            raise ScopeError(
                f"context {describe_key(key)} cannot live at {level!r}, the container itself: "
                f"context values are passed to container.scope(level, context=...); declare it "
                f"at one of {', '.join(map(repr, self.levels[1:]))}, or register the value as a "
                f"singleton (registry.value({describe_key(key)}, instance))"
            )
        made = Provider(normalize_key(key), None, Kind.CONTEXT, level, (), _caller_location())
        return self.add(made, override=override)

    def include(self, other: Registry, *, override: bool = False) -> None:
        """Add every provider of ``other`` (modules compose); a key both
        registries provide is an error unless ``override=True``, or unless both
        hold the same registration (a registry included by two paths)."""
        if other.levels != self.levels:
            raise ScopeError(
                f"cannot include a registry with levels {other.levels!r} into one with "
                f"{self.levels!r}"
            )
        for provider in other:
            old = self._providers.get(provider.provides)
            if old is not None and _same(old, provider):
                continue  # one registration reached twice (both included a third registry)
            self.add(provider, override=override)


def _same(a: Provider, b: Provider) -> bool:
    """The same registration: one Provider, or an equal one (the same factory,
    compared by identity, never by a user's ``__eq__``)."""
    return a is b or (a.factory is b.factory and a[2:] == b[2:])


default_registry: Final = Registry()
"""Where `register_provider` registers unless told otherwise."""


@overload
def register_provider(factory: F, /) -> F: ...
@overload
def register_provider(
    *,
    singleton: bool = False,
    scope: str | None = None,
    provides: Any = None,
    registry: Registry | None = None,
    cm: bool = False,
    override: bool = False,
) -> Callable[[F], F]: ...
def register_provider(
    factory: Any = None,
    *,
    singleton: bool = False,
    scope: str | None = None,
    provides: Any = None,
    registry: Registry | None = None,
    cm: bool = False,
    override: bool = False,
) -> Any:
    """Register a factory on `default_registry` (or ``registry=``).

    >>> @register_provider(singleton=True, registry=Registry())
    ... def settings() -> dict[str, str]:
    ...     return {"env": "prod"}
    """
    target = default_registry if registry is None else registry
    options = target.provider(
        singleton=singleton, scope=scope, provides=provides, cm=cm, override=override
    )
    return options(factory) if factory is not None else options
