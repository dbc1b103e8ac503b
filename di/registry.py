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
import operator
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import InitVar, dataclass
from types import (
    CodeType,
    FrameType,
    FunctionType,
    GenericAlias,
    MethodType,
    ModuleType,
    NoneType,
    SimpleNamespace,
    UnionType,
)
from typing import (
    Annotated,
    Any,
    Final,
    ForwardRef,
    NamedTuple,
    ParamSpec,
    TypeVar,
    overload,
)

import typing_extensions

from di.errors import (
    DuplicateProviderError,
    ScopeError,
    UnresolvableAnnotationError,
    describe_key,
)
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


def _own_locals(fn: Any) -> dict[str, Any] | None:
    """The locals `type_hints` passes: a fresh empty dict, except for a class
    (whose own namespace `typing.get_type_hints` takes, a fresh dict per base).

    typing interns what it builds: ``Optional["Engine"]`` and
    ``Annotated["Engine", Named("x")]`` written in two modules are one object,
    holding one ``ForwardRef``, and a ``ForwardRef`` evaluated with locals that
    *are* the globals (`get_type_hints`' default) keeps its first value for
    good, so the second module would get the first one's ``Engine``. Locals
    of their own make it evaluate again, in these globals (names resolve as
    before: an empty locals dict, then the globals)."""
    return None if isinstance(fn, type) else {}


if sys.version_info >= (3, 11):

    def type_hints(fn: Any, globalns: dict[str, Any] | None = None) -> dict[str, Any]:
        """`typing.get_type_hints` of ``fn``, ``Annotated`` kept, each forward
        reference evaluated in ``fn``'s globals (`_own_locals`)."""
        return typing.get_type_hints(fn, globalns, _own_locals(fn), include_extras=True)

else:

    def type_hints(fn: Any, globalns: dict[str, Any] | None = None) -> dict[str, Any]:
        """`typing.get_type_hints` of ``fn``, ``Annotated`` kept, as 3.11 reads
        it: 3.10 wraps the hint of a parameter whose default is ``None`` in
        ``Optional`` (``repo: Repo = None`` would need ``Optional[Repo]``), and
        leaves a string inside a builtin generic as it is (``list["Engine"]``).
        A holder with the same annotations but no defaults, each string inside
        a builtin generic made a ``ForwardRef``, is read in the same globals."""
        annotations = getattr(fn, "__annotations__", None)
        if not isinstance(annotations, dict) or isinstance(fn, (type, ModuleType)):
            return typing.get_type_hints(fn, globalns, _own_locals(fn), include_extras=True)
        if globalns is None:  # where get_type_hints takes them from
            nsobj = fn
            while hasattr(nsobj, "__wrapped__"):
                nsobj = nsobj.__wrapped__
            globalns = getattr(nsobj, "__globals__", {})
        holder = SimpleNamespace(
            __annotations__={k: _refs(_initvar(v, globalns)) for k, v in annotations.items()}
        )
        hints = typing.get_type_hints(holder, globalns, {}, include_extras=True)
        # A string annotation evaluates to what may hold strings again
        # (``"list['Engine']"`` is ``list['Engine']``): evaluated once more
        # until nothing changes, as 3.11 does in one call (bounded: each round
        # evaluates one level of quotes).
        for _ in range(8):
            again = {k: _refs(v) for k, v in hints.items()}
            if all(again[k] is v for k, v in hints.items()):
                break
            holder = SimpleNamespace(__annotations__=again)
            hints = typing.get_type_hints(holder, globalns, {}, include_extras=True)
        return hints

    def _initvar(hint: Any, globalns: dict[str, Any]) -> Any:
        """A string annotation that is a dataclass's ``InitVar[X]`` (under
        ``from __future__ import annotations``), as the ``InitVar`` it
        evaluates to, which 3.10's `typing.get_type_hints` refuses (no type;
        3.11 takes it); what it holds is evaluated by `_initvars`. Any other
        annotation as it is, also one that does not evaluate (the error is
        then get_type_hints' own)."""
        if type(hint) is not str or "InitVar" not in hint:
            return hint
        try:
            value = eval(hint, globalns, {})  # as get_type_hints evaluates it
        except Exception:  # left to get_type_hints
            return hint
        return value if type(value) is InitVar else hint

    def _refs(hint: Any) -> Any:
        """``hint`` with each string inside a builtin generic made a
        ``ForwardRef``, which 3.10's `typing.get_type_hints` then evaluates
        (3.11 does so itself). Rebuilt the way 3.10's ``typing._eval_type``
        rebuilds what it evaluates."""
        if not isinstance(hint, (GenericAlias, UnionType, typing._GenericAlias)):  # type: ignore[attr-defined]
            return hint
        origin = typing.get_origin(hint)
        if origin is typing.Literal:
            return hint  # literal strings are values
        old: tuple[Any, ...] = hint.__args__
        if isinstance(hint, GenericAlias):
            args = tuple(ForwardRef(a) if type(a) is str else _refs(a) for a in old)
        else:
            args = tuple(_refs(a) for a in old)
        if all(a is b for a, b in zip(args, old, strict=True)):
            return hint
        if isinstance(hint, GenericAlias):
            if origin is cabc.Callable:
                # ``Callable[["Engine"], R]`` holds its argument list flat,
                # (``"Engine"``, R): rebuilt as an argument list and a result,
                # or ``...`` / a ParamSpec / ``Concatenate[...]`` and a result.
                *params, result = args
                if len(params) == 1 and typing._is_param_expr(params[0]):  # type: ignore[attr-defined]
                    return cabc.Callable[params[0], result]
                return cabc.Callable[params, result]
            return GenericAlias(typing.get_origin(hint), args)
        if isinstance(hint, UnionType):
            return functools.reduce(operator.or_, args)
        return hint.copy_with(args)


def normalize_key(hint: Any) -> Any:
    """The registry key for a type hint: ``Annotated`` is kept only for a
    `Named` qualifier (other metadata, `Injected` included, is dropped)."""
    if type(hint) is type:  # the common case, without typing's machinery
        return hint
    if typing.get_origin(hint) is Annotated:
        base = hint.__origin__
        names = [m for m in hint.__metadata__ if isinstance(m, Named)]
        if len(names) > 1:
            raise TypeError(
                f"{describe_key(hint)} carries {len(names)} di.Named qualifiers; a key has one "
                f"name: keep the one you mean"
            )
        return Annotated[base, names[0]] if names else base
    return hint


def normalized(hint: Any, where: str) -> Any:
    """`normalize_key`, its refusal (two `Named`) saying ``where`` the hint was."""
    try:
        return normalize_key(hint)
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from None


# Where typing's own forms live: an object of a type from one of these is a
# type form (Optional[X], a NewType, Literal[...], Any), not a value.
_FORM_MODULES: Final = frozenset({"typing", "typing_extensions"})
_ANYS: Final = frozenset({id(Any), id(getattr(typing_extensions, "Any", Any))})


def _is_form(key: Any) -> bool:
    """A type form other than a class: list[int], Optional[X], X | Y, a
    NewType, Literal[...], an alias of a user generic. (Asked of the object's
    type or of typing, never of the object: a proxy may answer any attribute.)"""
    return (
        type(key).__module__ in _FORM_MODULES
        or isinstance(key, (GenericAlias, UnionType))
        or typing.get_origin(key) is not None
    )


def key_problem(key: Any) -> str | None:
    """Why ``key`` (normalised) can never name a provider, or None if it can.
    For messages and registration only: never on a resolve's path."""
    try:
        hash(key)
    except TypeError:
        return (
            f"is not hashable ({type(key).__qualname__}); a key is a type, a typing form such as "
            f"list[int], or Annotated[T, di.Named('x')]"
        )
    if typing.get_origin(key) is Annotated:  # a Named key: judged by what it names
        return key_problem(key.__origin__)
    if key is None or key is NoneType:
        return "is None; a key is a type: pass the class the value is an instance of"
    if id(key) in _ANYS or type(key) in (TypeVar, ParamSpec, _TYPE_VAR_TUPLE):
        # (Any is a class on 3.11, and typing_extensions' own one on 3.10)
        return "names no concrete type; use the class (or a NewType) the value is an instance of"
    if isinstance(key, type):
        return None
    if isinstance(key, (str, ForwardRef)):
        return (
            "is a string, and di does not evaluate strings as keys; pass the class itself, or "
            "use Annotated[T, di.Named(...)] to tell two of one type apart"
        )
    if _is_form(key):
        return None
    return (
        f"is an instance of {type(key).__qualname__}, not a type; pass the class "
        f"({type(key).__qualname__}), or register a ready instance with registry.value(Class, "
        f"instance)"
    )


def checked_key(key: Any, what: str) -> Any:
    """``key`` normalised, or a TypeError naming ``what`` was given and why it
    cannot be a key. Registration only."""
    if type(key) is type and key is not NoneType:
        return key
    normal = normalized(key, what)
    problem = key_problem(normal)
    if problem is not None:
        raise TypeError(f"{what}: the key {shown_key(key)} {problem}")
    return normal


def shown_key(key: Any) -> str:
    """A key for a message; a value given where a key belongs is shown by its
    type only (its repr may hold a secret)."""
    if (
        key is None
        or isinstance(key, (type, str))
        or _is_form(key)
        or (
            isinstance(key, (list, tuple, set, frozenset))
            and all(isinstance(item, type) or _is_form(item) for item in key)
        )
    ):
        return describe_key(key)
    return f"<{type(key).__qualname__} instance>"


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
    # Where it was registered, rendered only when an error needs it: the
    # caller's (code, f_lasti), or "file:line"; a code object (its definition)
    # when nothing registered it (a container's override).
    origin: Any

    @property
    def source(self) -> str:
        """Where it was registered, as ``file:line``."""
        origin = self.origin
        if isinstance(origin, str):
            return origin
        if isinstance(origin, tuple):
            return _render(origin)
        return f"{origin.co_filename}:{origin.co_firstlineno}"

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
    # only a string or forward reference, at the top or nested (`Annotated["Engine",
    # Named("x")]`, `Optional["Engine"]`, `list["Engine"]`), needs evaluating.
    ann = getattr(fn, "__annotations__", None)
    if not ann:
        return {}
    for value in ann.values():
        if type(value) is not type and value is not None and _unevaluated(value):
            return _evaluated(fn, ann)
    return ann  # type: ignore[no-any-return]  # read only, never mutated


def _unevaluated(hint: Any) -> bool:
    """Whether ``hint`` is, or holds, a string or ``ForwardRef`` that only
    `type_hints` evaluates: ``"Engine"``, ``Optional["Engine"]``,
    ``Annotated["Engine", Named("x")]``, ``list["Engine"]``."""
    if type(hint) is str or type(hint) is ForwardRef:
        return True
    if type(hint) is InitVar:  # ``InitVar["Engine"]``: typing leaves it as it is
        return _unevaluated(hint.type)
    if _is_class(hint):
        return False
    args = getattr(hint, "__args__", None)
    if type(args) is not tuple or typing.get_origin(hint) is typing.Literal:
        return False  # not generic; or a Literal, whose strings are values
    return any(
        _unevaluated(arg) if type(arg) is not list else any(map(_unevaluated, arg))
        for arg in args
        if type(arg) is not type
    )


def _evaluated(
    fn: Any, ann: dict[str, Any], globalns: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The annotations ``ann`` of ``fn``, evaluated by `type_hints`. A name
    that is not defined at registration is an `UnresolvableAnnotationError`
    naming the parameter; in the return annotation only, it is kept as an
    `_Unresolvable` that `make_provider` raises unless ``provides=`` makes the
    annotation unneeded (a class's ``__init__`` never needs it)."""
    try:
        return _initvars(type_hints(fn, globalns), globalns, fn)
    except (NameError, AttributeError):  # AttributeError: ``xml.dom`` not imported
        pass
    # The error path: evaluate each annotation on its own, in the same
    # globals, to name the one that fails.
    if globalns is None:
        nsobj = fn
        while hasattr(nsobj, "__wrapped__"):
            nsobj = nsobj.__wrapped__
        globalns = getattr(nsobj, "__globals__", {})
    hints: dict[str, Any] = {}
    for name, value in ann.items():
        holder = SimpleNamespace(__annotations__={name: value})
        try:
            hints.update(_initvars(type_hints(holder, globalns), globalns, fn))
        except (NameError, AttributeError) as exc:
            error = _unresolvable(fn, name, value, exc)
            if name != "return":
                raise error from None
            hints[name] = _Unresolvable(error, _outer(value, globalns))
    return hints


def _initvars(hints: dict[str, Any], globalns: dict[str, Any] | None, fn: Any) -> dict[str, Any]:
    """``hints`` with what each ``InitVar`` holds evaluated too
    (``InitVar["Engine"]``, ``InitVar[list["Engine"]]``), which typing leaves
    as it is: in the same globals."""
    if not any(type(v) is InitVar and _unevaluated(v.type) for v in hints.values()):
        return hints
    if globalns is None:
        nsobj = fn
        while hasattr(nsobj, "__wrapped__"):
            nsobj = nsobj.__wrapped__
        globalns = getattr(nsobj, "__globals__", {})
    hints = dict(hints)
    for name, value in hints.items():
        if type(value) is InitVar and _unevaluated(value.type):
            holder = SimpleNamespace(__annotations__={name: value.type})
            hints[name] = InitVar(type_hints(holder, globalns)[name])
    return hints


class _Unresolvable(NamedTuple):
    """A return annotation that could not be evaluated, the error saying so,
    and what `_outer` reads of its outer type."""

    error: UnresolvableAnnotationError
    outer: Any


def _outer(value: Any, globalns: dict[str, Any]) -> Any:
    """The outer type of a return annotation whose arguments do not evaluate
    (``"AbstractAsyncContextManager[Pool]"``, ``Pool`` undefined), which is
    all ``cm=True`` needs to tell ``with`` from ``async with``: its origin
    when the outer name (dotted, before any ``[``) is defined in the
    function's globals; else that name's text; None when there is no name to
    read."""
    origin = typing.get_origin(value)
    if origin is not None:
        return origin
    if type(value) is ForwardRef:
        value = value.__forward_arg__
    if type(value) is not str:
        return None
    head = value.partition("[")[0].strip()
    first, *rest = head.split(".")
    found: Any = globalns.get(first, NO_DEFAULT)
    for part in rest:
        found = getattr(found, part, NO_DEFAULT)
    if found is NO_DEFAULT:
        return head or None
    return typing.get_origin(found) or found


def _unresolvable(
    fn: Any, name: str, value: Any, exc: NameError | AttributeError
) -> UnresolvableAnnotationError:
    text = value if type(value) is str else describe_key(value)
    where = getattr(fn, "__qualname__", None) or repr(fn)
    # A class is registered, not its __init__ (or __new__).
    registered = where.rpartition(".")[0] if where.endswith((".__init__", ".__new__")) else where
    missing = exc.name if getattr(exc, "name", None) else str(exc)
    problem = f"name {missing!r} is not defined"
    if isinstance(exc, AttributeError):  # a submodule not imported, say
        problem = str(exc)
    if name == "return":
        what = f"the return annotation {text!r} of {where}"
        fix = "or pass provides=... to the registration, so di does not need the return annotation"
    else:
        what = f"the annotation {text!r} of parameter {name!r} of {where}"
        fix = "or annotate the parameter with a type that exists when it is registered"
    return UnresolvableAnnotationError(
        f"di cannot evaluate {what}: {problem}. di reads a provider's "
        f"types when it is registered, so {missing!r} must exist then: import it at run time "
        f"(not only under `if TYPE_CHECKING:`) and define it before registering {registered}, "
        f"{fix}",
        name=exc.name,
    )


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


def class_provider(cls: type, key: Any, kind: Kind, scope: str | None, source: Origin) -> Provider:
    """The provider of a class, autowired from its ``__init__`` (or, when
    that is ``object.__init__``, from a Python ``__new__``: `_from_new`).

    Positional parameters only: a cold start registers every class through
    here. The common ``__init__`` -- positional parameters, each annotated
    with a plain class, no defaults -- is read in one tight loop, about half
    the cost of the general path (`_wire_class`), which takes everything
    else."""
    init = cls.__init__  # type: ignore[misc]
    if type(init) is not FunctionType:  # object.__init__ or a C-level __init__
        if init is object.__init__:
            new = cls.__new__
            if type(new) is FunctionType:  # a Python __new__ (NamedTuple...) takes the arguments
                return _wire_class(cls, key, kind, scope, source)
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
    if deps is None or (
        not deps and (init is _PROTOCOL_INIT or getattr(init, "__wrapped__", None) is not None)
    ):
        # Every other shape; or a (*args, **kwargs) the loop read as nothing:
        # typing's Protocol placeholder, or a decorator's wrapper.
        return _wire_class(cls, key, kind, scope, source)
    return _new_provider(Provider, (key, cls, kind, scope, tuple(deps), source or code))


# What typing.Protocol gives a class that lists a protocol before the base
# whose __init__ it means: called, it finds that __init__ along the MRO.
_PROTOCOL_INIT: Final = getattr(typing, "_no_init_or_replace_init", None)


def _wire_class(
    cls: type,
    key: Any,
    kind: Kind,
    scope: str | None,
    source: Origin,
    alias: Any = None,
    bound: tuple[int, frozenset[str]] = (0, frozenset()),
) -> Provider:
    """The general path of `class_provider`, and the one of a parameterised
    alias (``alias``: ``Repo[int]``, which keeps the key and is called).

    Reads the ``__init__`` that runs -- the first along the MRO that is not
    typing's Protocol placeholder -- through `_read`, or, for
    ``object.__init__``, a Python ``__new__`` (`_from_new`). Type variables in
    its hints are bound through the alias's arguments and the
    ``__orig_bases__`` of the classes between ``cls`` and the one that defines
    the method (`_bind_type_variables`); one left free is refused here.

    ``bound``: how many positional arguments, and which keywords, a
    ``functools.partial`` of the alias binds (`_partial_of_generic`): those
    parameters are neither evaluated nor bound, only read as placeholders
    that the partial's provider then drops."""
    owner, init = _init_of(cls)
    skip: frozenset[str] = frozenset()
    if type(init) is FunctionType:
        positional, keywords = bound
        if positional or keywords:
            code = init.__code__
            skip = keywords | frozenset(code.co_varnames[1 : 1 + positional][: code.co_argcount])
        homes = _field_homes(owner, init)
        if skip and getattr(init, "__wrapped__", None) is None:
            ann = {k: v for k, v in init.__annotations__.items() if k not in skip}
            hints = _field_hints(init, owner, homes, ann)
            hints = {**hints, **dict.fromkeys(skip, object)}  # placeholders, dropped
            deps = _parameters(init, hints, skip_first=True)
            origin: Any = init.__code__
        elif any(home is not owner for home in homes.values()):  # inherited fields
            hints = _field_hints(init, owner, homes)
            deps = _parameters(init, hints, skip_first=True)
            origin = init.__code__
        else:
            _, deps, origin = _read(init, skip_first=True)
    elif init is object.__init__ and type(cls.__new__) is FunctionType:
        owner = next(k for k in cls.__mro__ if "__new__" in vars(k))
        init = cls.__new__
        deps, origin = _from_new(cls, init, source)
    else:  # a C-level __init__
        deps, origin = (), None
    if any(_type_variables(dep.key) for dep in deps if dep.name not in skip):
        deps = _bind_type_variables(alias, cls, owner, init, deps, skip)
    origin = source or origin or _caller_location()
    return _new_provider(
        Provider, (key, cls if alias is None else alias, kind, scope, deps, origin)
    )


def _init_of(cls: type) -> tuple[type, Any]:
    """The class that defines the ``__init__`` that runs, and that
    ``__init__``: the first along the MRO that is not typing's Protocol
    placeholder (which, called, finds the same one).

    The placeholder, called once, puts the base's ``__init__`` into the
    class's own ``__dict__`` (``SqlRepo.__init__ = BaseRepo.__init__``), as
    may a user (``__init__ = Base.__init__``): the function belongs to the
    last class along the MRO that holds it as its own, whose type variables
    are the ones it means."""
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is not None and init is not _PROTOCOL_INIT:
            owner = klass
            for base in klass.__mro__[1:]:
                if vars(base).get("__init__") is init:
                    owner = base
            return owner, getattr(klass, "__init__", init)
    return object, object.__init__  # pragma: no cover - object defines __init__


def _from_new(cls: type, new: Any, source: Origin) -> tuple[tuple[Dependency, ...], Any]:
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
    if any(_unevaluated(hint) for hint in hints.values()):
        owner = next(k for k in cls.__mro__ if "__new__" in vars(k))
        module = sys.modules.get(owner.__module__)
        hints = _evaluated(new, hints, getattr(module, "__dict__", None))
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
    of their own (callable instances, ``functools.partial``, builtins).

    What a ``functools.partial`` binds is no dependency: `inspect.signature`
    drops its positional arguments, and shows each bound keyword as a
    parameter with that default, which is left out here (the bound argument
    wins, as an argument passed to a `di.inject` function does)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[1 if skip_first else 0 :]
    bound: set[str] = set()
    inner = fn
    while isinstance(inner, functools.partial):
        bound.update(inner.keywords)
        inner = inner.func
    if bound:
        params = [p for p in params if p.name not in bound]
    hints = {p.name: p.annotation for p in params if p.annotation is not p.empty}
    if sig.return_annotation is not sig.empty:
        hints["return"] = sig.return_annotation
    if any(_unevaluated(hint) for hint in hints.values()):
        # Evaluated where the function that takes the call was written (what
        # `inspect.signature(eval_str=True)` would use), also an explicit
        # __signature__, which is taken as it is.
        written, globalns = _written(fn)
        name = getattr(fn, "__qualname__", None) or getattr(written, "__qualname__", None)
        owner, homes = _homes_of(fn, written)
        if owner is not None and any(home is not owner for home in homes.values()):
            # A dataclass's inherited fields, each in its declaring module.
            hints = _field_hints(written, owner, homes, hints)
        else:
            carrier = SimpleNamespace(__annotations__=hints, __qualname__=name or repr(fn))
            hints = _evaluated(carrier, hints, globalns)
    deps = [
        _dependency(fn, p.name, hints, p.kind is p.KEYWORD_ONLY, p.default)
        for p in params
        if p.kind is not p.VAR_POSITIONAL and p.kind is not p.VAR_KEYWORD
    ]
    return hints, tuple(deps)


def _unaliased(fn: Any) -> Any:
    """What ``fn`` calls, seen through ``functools.partial``, with a
    parameterised alias (``Repo[int]``) taken as its class."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    origin = typing.get_origin(target)
    if origin is not Annotated and isinstance(origin, type):  # Repo[int]
        return origin
    return target


def _homes_of(fn: Any, written: Any) -> tuple[type | None, dict[str, type]]:
    """For ``fn`` that calls a class (behind a ``functools.partial``, say)
    whose generated ``__init__`` is ``written``: the class that defines it
    and its fields' homes (`_field_homes`); else None and nothing."""
    target = _unaliased(fn)
    if not _is_class(target):
        return None, {}
    owner, init = _init_of(target)
    if init is not written:
        return None, {}
    return owner, _field_homes(owner, init)


def _written(fn: Any) -> tuple[Any, dict[str, Any] | None]:
    """The function whose annotations `inspect.signature` shows for ``fn``,
    unwrapped, and the globals they were written in. A class, also behind a
    ``functools.partial`` or as a parameterised alias (``Repo[int]``), is read
    from the method that takes the call: its metaclass's Python ``__call__``,
    else the ``__init__`` that runs (`_init_of`), else a Python ``__new__``
    (one `collections.namedtuple` wrote has no module: the module of the
    class that defines it, as `_from_new` reads it)."""
    target = call_target(_unaliased(fn)) or fn
    if _is_class(target):
        cls = target
        call = getattr(type(cls), "__call__", None)  # noqa: B004 - the metaclass's method
        _, init = _init_of(cls)
        if type(call) is FunctionType:
            target = call
        elif type(init) is FunctionType or type(cls.__new__) is not FunctionType:
            target = init
        else:
            target = cls.__new__
            if target.__module__ not in sys.modules:
                owner = next(k for k in cls.__mro__ if "__new__" in vars(k))
                module = sys.modules.get(owner.__module__)
                return target, getattr(module, "__dict__", None)
    target = inspect.unwrap(target)
    return target, getattr(target, "__globals__", None)


def _dependency(fn: Any, name: str, hints: dict[str, Any], kw: bool, default: Any) -> Dependency:
    hint = hints.get(name, inspect.Parameter.empty)
    if hint is inspect.Parameter.empty:
        if default is not NO_DEFAULT:
            return Dependency(name, None, kw, default)
        raise TypeError(
            f"parameter {name!r} of {getattr(fn, '__qualname__', fn)!r} has no type hint, "
            f"so di cannot tell what to inject; annotate it or give it a default"
        )
    if type(hint) is InitVar:  # a dataclass's InitVar[X] parameter takes an X
        hint = hint.type
    where = f"parameter {name!r} of {getattr(fn, '__qualname__', 'the factory')!r}"
    return Dependency(name, normalized(hint, where), kw, default)


def _caller_location() -> str:
    # The first frame outside this module is where the user registered.
    frame = _caller()
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


_getframe: Final = sys._getframe

_Site = tuple[CodeType, int]
"""Where a registration was made: the caller's code object and ``f_lasti``
(two attribute reads; the line is looked up only when an error names it)."""

Origin = _Site | str | None
"""What a registration passes down as its place: a `_Site`, ``file:line``,
or None (the factory's own code object then stands for it)."""


def _caller() -> FrameType:
    """The frame that called into this module: the first one outside it."""
    frame = _getframe(2)
    while frame.f_code.co_filename == __file__ and frame.f_back is not None:
        frame = frame.f_back
    return frame


def _site() -> _Site:
    """The `_Site` of the caller (`_caller`)."""
    frame = _caller()
    return frame.f_code, frame.f_lasti


def _render(site: _Site) -> str:
    """``file:line`` of a `_Site`."""
    code, lasti = site
    line = next((n for start, end, n in code.co_lines() if start <= lasti < end), None)
    return f"{code.co_filename}:{line if line is not None else code.co_firstlineno}"


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
    source: Origin = None,
) -> Provider:
    """Read one factory: what it provides, what it needs, how it makes it."""
    if type(factory) is type or _is_class(factory):  # a class; Repo[int] is read below
        kind = Kind.CALL
        if cm:
            kind = _cm_kind(factory)
        key = factory if provides is None else checked_key(provides, "provides=")
        return class_provider(factory, key, kind, scope, source)
    if not callable(factory):
        shown = "None" if factory is None else f"a {type(factory).__qualname__} instance"
        fix = (
            f"; to provide a ready instance, use registry.value({shown_key(provides)}, instance)"
            if provides is not None and factory is not None
            else ""
        )
        raise TypeError(
            f"a provider must be a function or a class, got {shown} (not callable){fix}"
        )
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
        if isinstance(factory, functools.partial):
            made = _partial_of_generic(factory, provides, scope, cm, source)
            if made is not None:
                return made
        hints, deps = _from_signature(factory, skip_first=False)
        code = None
        target = call_target(factory)
    ret = hints.get("return", inspect.Parameter.empty)
    if type(ret) is _Unresolvable:
        if provides is None:
            raise ret.error
        # provides= replaces it: read as unannotated, except that cm=True
        # reads its outer type to tell `with` from `async with` (`_outer`):
        # an undefined outer name is async when it says "Async", else sync.
        outer = ret.outer if cm else None
        if type(outer) is str:
            outer = contextlib.AbstractAsyncContextManager if "Async" in outer else None
        ret = inspect.Parameter.empty if outer is None else outer
    if cm:
        if not _calls_return(target):
            raise TypeError(_cm_misfit(factory, target))
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
    if provides is not None:
        key = checked_key(provides, "provides=")
    else:
        key = ret
        name = getattr(factory, "__qualname__", None) or f"a {type(factory).__qualname__}"
        if key is inspect.Parameter.empty:
            raise TypeError(
                f"{name!r} has no return annotation, so di cannot tell what it provides; "
                f"annotate its return type or pass provides=..."
            )
        if type(key) is not type:
            normal = normalized(key, f"the return annotation of {name!r}")
            if normal is None or normal is NoneType:
                problem: str | None = "None, which is no value to inject"
            elif key_problem(normal) is not None:
                problem = f"{describe_key(key)}, which names no concrete type"
            else:
                problem = None
            if problem is not None:
                raise TypeError(
                    f"{name!r} is annotated to return {problem}, so di cannot tell what it "
                    f"provides; annotate the type it returns or pass provides=..."
                )
    # The code object itself: rendering "file:line" waits until an error needs it.
    origin = source or (code if code is not None else _caller_location())
    return Provider(normalize_key(key), factory, kind, scope, deps, origin)


def _cm_kind(cls: type) -> Kind:
    """How di enters instances of ``cls``, registered with ``cm=True``: what
    its instances have (its MRO's, not its metaclass's, methods)."""

    def has(name: str) -> bool:
        return any(name in vars(klass) for klass in cls.__mro__)

    if has("__aenter__"):
        return Kind.ASYNC_CM
    if has("__enter__"):
        return Kind.CM
    raise TypeError(
        f"{cls.__qualname__} is registered with cm=True, but its instances are no context "
        f"managers (no __enter__ or __aenter__): di would enter each one; register it "
        f"without cm=True"
    )


def _calls_return(target: Any) -> bool:
    """Whether calling returns the value itself: False for a coroutine
    function (a coroutine to await), a generator or an async generator."""
    return not (
        inspect.iscoroutinefunction(target)
        or inspect.isgeneratorfunction(target)
        or inspect.isasyncgenfunction(target)
    )


def _cm_misfit(factory: Any, target: Any) -> str:
    """Why ``factory`` cannot be registered with ``cm=True``."""
    name = getattr(factory, "__qualname__", None) or repr(factory)
    if inspect.iscoroutinefunction(target):
        return (
            f"{name!r} is a coroutine function (async def), registered with cm=True: di enters "
            f"what the factory returns, and an async def returns a coroutine, not a context "
            f"manager; make it a plain def that returns the (async) context manager, or an async "
            f"generator (yield the value, teardown after the yield) registered without cm=True"
        )
    what = "an async generator" if inspect.isasyncgenfunction(target) else "a generator"
    wrap = "asynccontextmanager" if inspect.isasyncgenfunction(target) else "contextmanager"
    return (
        f"{name!r} is {what}, registered with cm=True: di enters what the factory returns, and "
        f"{what} function returns {what}, not a context manager; register it without cm=True "
        f"(its code after the yield is teardown already), or decorate it with "
        f"@contextlib.{wrap}"
    )


def _generic_class_provider(
    alias: Any,
    cls: type,
    provides: Any,
    scope: str | None,
    cm: bool,
    source: Origin,
    bound: tuple[int, frozenset[str]] = (0, frozenset()),
) -> Provider:
    """The provider of a parameterised generic class, ``Repo[int]``: wired
    from ``cls`` as `class_provider` wires it, keyed by the alias, and called
    as the alias (which sets ``__orig_class__`` on the instance, as Python
    does). Type variables in the hints of the ``__init__`` (or ``__new__``)
    are bound to the alias's arguments: ``item: T`` needs ``int``."""
    kind = _cm_kind(cls) if cm else _CALL
    key = alias if provides is None else checked_key(provides, "provides=")
    return _wire_class(cls, key, kind, scope, source, alias, bound)


def _partial_of_generic(
    factory: functools.partial[Any], provides: Any, scope: str | None, cm: bool, source: Origin
) -> Provider | None:
    """The provider of a ``functools.partial`` of a parameterised generic
    class (``partial(Repo[int], url)``), whose own signature is the alias's
    ``(*args, **kwargs)``: wired as `_generic_class_provider` wires the
    alias, less what the partial binds (its positional arguments fill the
    first positional parameters; its keywords, those by name), and called as
    the partial. None for a partial of anything else."""
    inner: Any = factory
    positional = 0
    keywords: set[str] = set()
    while isinstance(inner, functools.partial):
        positional += len(inner.args)
        keywords.update(inner.keywords)
        inner = inner.func
    cls = typing.get_origin(inner)
    if cls is Annotated or not isinstance(cls, type):
        return None
    bound = (positional, frozenset(keywords))
    made = _generic_class_provider(inner, cls, provides, scope, cm, source, bound)
    deps = []
    by_keyword = False  # after one bound by keyword, the rest are keyword-only
    for dep in made.dependencies:
        if not dep.keyword_only and positional:
            positional -= 1
        elif dep.name in keywords:
            by_keyword = by_keyword or not dep.keyword_only
        else:
            deps.append(dep._replace(keyword_only=True) if by_keyword else dep)
    return made._replace(factory=factory, dependencies=tuple(deps))


def _type_variables(hint: Any) -> tuple[Any, ...]:
    """The type variables left free in a hint: ``T``, ``list[T]``."""
    if type(hint) is TypeVar:
        return (hint,)
    if _is_class(hint):  # a generic class's own __parameters__ are not free here
        return ()
    return tuple(getattr(hint, "__parameters__", ()))


def _substitute(hint: Any, bound: dict[Any, Any]) -> Any:
    """``hint`` with its type variables replaced as ``bound`` says."""
    if type(hint) is TypeVar:
        return bound.get(hint, hint)
    free = _type_variables(hint)
    if any(var in bound for var in free):
        return hint[tuple(bound.get(var, var) for var in free)]
    return hint


def _pair(params: tuple[Any, ...], args: tuple[Any, ...]) -> dict[Any, Any]:
    """Each `TypeVar` among a generic class's ``params`` and the argument at
    its place in ``args``. A ParamSpec's argument (an argument list) is
    skipped, as are a TypeVarTuple's: it takes the arguments left over, so
    the parameters before it pair from the start and those after it from the
    end. Nothing pairs when the numbers cannot match."""
    star = next((i for i, p in enumerate(params) if type(p) is _TYPE_VAR_TUPLE), None)
    if star is None:
        if len(params) != len(args):
            return {}
        pairs = list(zip(params, args, strict=True))
    else:
        after = len(params) - star - 1
        if len(args) < star + after:
            return {}
        pairs = list(zip(params[:star], args[:star], strict=True))
        pairs += zip(params[star + 1 :], args[len(args) - after :], strict=True)
    return {p: a for p, a in pairs if type(p) is TypeVar}


_TYPE_VAR_TUPLE: Final = getattr(typing, "TypeVarTuple", None)  # 3.11+


def _type_arguments(cls: type, alias: Any) -> dict[Any, dict[Any, Any]]:
    """For ``cls`` and each generic class along its MRO, what its type
    variables stand for: bound by ``alias``'s arguments (``Box[int]``) for
    ``cls``, and for a base by how the class below subscripted it in its
    ``__orig_bases__`` (``class IntBox(Box[int])``, ``class Sub(Box[list[T]])``).
    Only type variables: a ParamSpec or TypeVarTuple is left out (`_pair`)."""
    params = tuple(getattr(cls, "__parameters__", ()))
    own = _pair(params, typing.get_args(alias)) if alias is not None else {}
    bound = {cls: own}
    for klass in cls.__mro__:  # a class comes before its bases
        mine = bound.get(klass, {})
        for base in vars(klass).get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if origin in bound or not isinstance(origin, type):
                continue  # bound by a nearer class; or no class (NamedTuple's function)
            pairs = _pair(tuple(getattr(origin, "__parameters__", ())), typing.get_args(base))
            bound[origin] = {p: _substitute(a, mine) for p, a in pairs.items()}
    return bound


def _field_homes(owner: type, method: Any) -> dict[str, type]:
    """For the ``__init__`` that `dataclasses` generated for ``owner``: each
    field's name and the class that declared it, along the MRO (``item: T``
    of ``class DBox(Generic[T])`` in ``class DSub(DBox[int])``'s ``__init__``
    means DBox's ``T``). A class inherits its bases' `dataclasses.Field`
    objects as they are, so a field's home is the last class that holds the
    same one. Empty for any other method: its hints were all written where
    it is defined."""
    fields = vars(owner).get("__dataclass_fields__")
    code = getattr(method, "__code__", None)
    if code is None:
        return {}
    if not isinstance(fields, dict):
        return _attrs_homes(owner, code)
    if not _generated(code, fields):
        return {}
    homes = {}
    for name, field in fields.items():
        home = owner
        for base in owner.__mro__[1:]:
            if vars(base).get("__dataclass_fields__", {}).get(name) is field:
                home = base
        homes[name] = home
    return homes


def _attrs_homes(owner: type, code: CodeType) -> dict[str, type]:
    """`_field_homes` for a class attrs made (``__attrs_attrs__``), whose
    generated ``__init__`` holds its bases' fields' hints too: an attribute
    marked ``inherited`` belongs to the nearest base along the MRO that
    declares it as its own. Keyed by the ``__init__`` parameter (the
    attribute's ``alias``: ``_x`` takes ``x``)."""
    attributes = vars(owner).get("__attrs_attrs__")
    if attributes is None or not code.co_filename.startswith("<attrs generated"):
        return {}
    homes = {}
    for attribute in attributes:
        name = getattr(attribute, "alias", None) or attribute.name.lstrip("_")
        home = owner
        if attribute.inherited:
            for base in owner.__mro__[1:]:
                declared = vars(base).get("__attrs_attrs__", ())
                if any(a.name == attribute.name and not a.inherited for a in declared):
                    home = base
                    break
        homes[name] = home
    return homes


def _field_hints(
    init: Any, owner: type, homes: dict[str, type], ann: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The hints of a generated ``__init__`` (`_field_homes`), each field's
    evaluated in the module of the class that declared it, as
    `typing.get_type_hints` evaluates a class's annotations per base: under
    ``from __future__ import annotations`` the generated method holds the
    strings, and its globals are the module of ``owner``, where a base's
    ``Engine`` may be another class, or no name at all. ``ann``: the
    annotations to read, when not all of ``init``'s."""
    if ann is None:
        ann = init.__annotations__
    if not any(type(v) is not type and v is not None and _unevaluated(v) for v in ann.values()):
        return ann
    own: dict[str, Any] = init.__globals__
    groups: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for name, value in ann.items():
        home = homes.get(name, owner)
        module = sys.modules.get(home.__module__) if home is not owner else None
        globalns = own if module is None else vars(module)
        groups.setdefault(id(globalns), (globalns, {}))[1][name] = value
    hints: dict[str, Any] = {}
    for globalns, part in groups.values():
        carrier = SimpleNamespace(__annotations__=part, __qualname__=init.__qualname__)
        hints.update(_evaluated(carrier, part, globalns))
    return hints


def _generated(code: CodeType, fields: dict[str, Any]) -> bool:
    """Whether ``code`` is of a method `dataclasses` generated, not one
    written in the class body (which a dataclass keeps) that merely came from
    ``exec``/``compile(..., "<string>")`` too. `dataclasses` compiles its
    methods as ``"<string>"`` code nested in a ``def __create_fn__(...)``
    (3.10 to 3.13): on 3.11+ the code's ``co_qualname`` says so
    (``__create_fn__.<locals>.__init__``). 3.10 has no ``co_qualname``, and
    sets ``__qualname__`` to ``Cls.__init__`` as a hand-written one has, so
    there it takes the shape of the generated text: the ``def`` on line 2
    (right after ``def __create_fn__(...):``) and only field names as
    parameters. A hand-written method in string code that matches both takes
    exactly the fields' parameters, so reading them as fields is what it means
    too, nearly always."""
    if code.co_filename != "<string>":
        return False
    qualname: str | None = getattr(code, "co_qualname", None)
    if qualname is not None:  # 3.11+
        return qualname.startswith("__create_fn__.")
    names = code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount]
    return code.co_firstlineno == 2 and all(name in fields for name in names)


def _bind_type_variables(
    alias: Any,
    cls: type,
    owner: type,
    method: Any,
    deps: tuple[Dependency, ...],
    skip: frozenset[str] = frozenset(),
) -> tuple[Dependency, ...]:
    """``deps`` of ``method`` (defined by ``owner``, ``cls`` or one of its
    bases) with its type variables bound as `_type_arguments` says, for
    ``owner`` and every class along its MRO (the nearest binding of a
    variable wins): a ``__init__`` may use its bases' type variables
    (`dataclasses` writes inherited fields' hints into the subclass's, each
    bound as in the class that declared it: `_field_homes`). A variable left
    free is an error, unless the parameter has a default to keep."""
    arguments = _type_arguments(cls, alias)
    homes = _field_homes(owner, method)
    combined: dict[type, dict[Any, Any]] = {}
    wired = []
    for dep in deps:
        if dep.name not in skip and _type_variables(dep.key):
            home = homes.get(dep.name, owner)
            bound = combined.get(home)
            if bound is None:
                # home's own variables are bound only by the arguments given
                # for home itself: a base may reuse the same TypeVar object
                # (``class B(A[int], Generic[T])``), and its binding is not B's.
                own = set(getattr(home, "__parameters__", ()))
                bound = combined[home] = dict(arguments.get(home, {}))
                for klass in home.__mro__[1:]:  # a class comes before its bases
                    for var, arg in arguments.get(klass, {}).items():
                        if var not in own:
                            bound.setdefault(var, arg)
            key = _substitute(dep.key, bound)
            left = _type_variables(key)
            if left and not dep.has_default:
                raise TypeError(_left_free(alias, cls, owner, method, dep, left))
            dep = dep._replace(key=normalize_key(key))
        wired.append(dep)
    return tuple(wired)


def _left_free(
    alias: Any, cls: type, owner: type, method: Any, dep: Dependency, left: tuple[Any, ...]
) -> str:
    """Why ``dep`` cannot be wired: type variables ``left`` are not bound."""
    where = getattr(method, "__qualname__", None) or f"{owner.__qualname__}.__init__"
    what = describe_key(cls if alias is None else alias)
    fix = "annotate the parameter with a concrete type, or give it a default"
    generic: Any = next((k for k in (cls, owner) if getattr(k, "__parameters__", ())), None)
    examples = [_example(p) for p in getattr(generic, "__parameters__", ())]
    if examples and None not in examples:  # e.g. Box[int], or class IntBox(Box[int])
        example = f"{generic.__name__}[{', '.join(map(str, examples))}]"
        first = str(examples[0]).strip("[]")
        fix = (
            f"register an alias or a subclass that binds it (like {example}, or "
            f"`class {first[:1].upper()}{first[1:]}{generic.__name__}({example})`), {fix}"
        )
    return (
        f"parameter {dep.name!r} of {where!r} is annotated with {describe_key(dep.key)}, "
        f"which {what} does not bind to a type (type variable{'s' if len(left) > 1 else ''} "
        f"{', '.join(map(describe_key, left))} {'are' if len(left) > 1 else 'is'} left free), "
        f"so di cannot tell what to "
        f"inject; {fix}"
    )


def _example(param: Any) -> str | None:
    """An argument for a generic class's parameter in a suggested alias:
    ``int`` for a type variable (its first constraint or its bound if it has
    one, when that is a class), ``[int]`` (an argument list) for a ParamSpec,
    ``int`` for a TypeVarTuple; None when there is no such argument to
    suggest."""
    if type(param) is TypeVar:
        given = param.__constraints__[0] if param.__constraints__ else param.__bound__
        if given is None:
            return "int"
        return given.__name__ if _is_class(given) else None
    if type(param) is ParamSpec:
        return "[int]"
    if type(param) is _TYPE_VAR_TUPLE:
        return "int"
    return None


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
        if isinstance(levels, str) or not isinstance(levels, cabc.Iterable):
            raise TypeError(
                f"levels= takes a sequence of level names, outermost first, e.g. "
                f"levels=('app', 'session', 'request'); got {levels!r}"
            )
        names = tuple(str(level) for level in levels)
        if not names or len(set(names)) != len(names) or not all(names):
            raise ScopeError(
                f"levels= must name distinct, non-empty levels, outermost first; got {names!r}"
            )
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
            # Where it is registered is the caller (register_provider never
            # comes here): kept as (code, f_lasti), rendered only by an error.
            caller = _getframe(1)
            site = (caller.f_code, caller.f_lasti)
            if type(factory) is type:  # a plain class (no metaclass): the common case
                made = class_provider(factory, factory, _CALL, None, site)
            else:
                made = make_provider(factory, source=site)
            key = made[0]  # .provides: a NamedTuple field read is unspecialised on 3.11
            if override or key not in self._providers:
                self._providers[key] = made
            else:
                self.add(made)  # raises DuplicateProviderError, naming both places
            return factory
        level = self._level(singleton, scope)

        def decorate(fn: F) -> F:
            made = make_provider(fn, provides=provides, scope=level, cm=cm, source=_site())
            self.add(made, override=override)
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
        if interface is None:
            raise TypeError(
                "register(None, ...): the first argument is the key the implementation provides "
                "(a type); to read the key from the implementation's return annotation, use "
                "registry.provider()"
            )
        checked_key(interface, "register()")
        level = self._level(singleton, scope)
        made = make_provider(
            implementation, provides=interface, scope=level, cm=cm, source=_caller_location()
        )
        return self.add(made, override=override)

    def value(self, key: Any, instance: Any, *, override: bool = False) -> Provider:
        """Provide a ready instance (never torn down by di)."""
        made = Provider(
            checked_key(key, "value()"),
            instance,
            Kind.VALUE,
            self.levels[0],
            (),
            _caller_location(),
        )
        return self.add(made, override=override)

    def context(self, key: Any, *, scope: str | None = None, override: bool = False) -> Provider:
        """Declare a value supplied at scope entry:
        ``container.scope("request", context={Request: request})``. ``scope``
        defaults to ``"request"``; a registry without that level must name one."""
        key = checked_key(key, "context()")
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
        made = Provider(key, None, Kind.CONTEXT, level, (), _caller_location())
        return self.add(made, override=override)

    def include(self, other: Registry, *, override: bool = False) -> None:
        """Add every provider of ``other`` (modules compose); a key both
        registries provide is an error unless ``override=True``, or unless both
        hold the same registration (a registry included by two paths)."""
        if not isinstance(other, Registry):
            raise TypeError(f"include() takes a di.Registry, got {_a_value(other)}")
        if other.levels != self.levels:
            raise ScopeError(
                f"cannot include a registry with levels {other.levels!r} into one with "
                f"{self.levels!r}; make both with the same Registry(levels=...)"
            )
        for provider in other:
            old = self._providers.get(provider.provides)
            if old is not None and _same(old, provider):
                continue  # one registration reached twice (both included a third registry)
            self.add(provider, override=override)


def _same(a: Provider, b: Provider) -> bool:
    """The same registration: one Provider, or an equal one (the same factory,
    compared by identity, never by a user's ``__eq__``). Where a factory was
    registered tells two apart only for `register`, `value` and `context`
    (``file:line``): one factory registered in two registries by `provider`
    is one."""
    if a is b:
        return True
    if a.factory is not b.factory or a[2:5] != b[2:5]:
        return False
    if isinstance(a.origin, str) or isinstance(b.origin, str):
        return bool(a.origin == b.origin)
    return True


def _a_value(obj: object) -> str:
    """What was passed where something else belonged, for a message: the
    class itself by name, else its type (a repr may hold a secret)."""
    if isinstance(obj, type):
        return f"the class {obj.__qualname__} (an instance was expected: {obj.__qualname__}())"
    return f"a {type(obj).__qualname__}"


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
    if not isinstance(target, Registry):
        raise TypeError(
            f"register_provider(registry=...) takes a di.Registry, got {_a_value(registry)}"
        )
    options = target.provider(
        singleton=singleton, scope=scope, provides=provides, cm=cm, override=override
    )
    return options(factory) if factory is not None else options
