"""The `di` error hierarchy and how a problem is rendered.

Every error says what was asked, what is missing, and how to fix it. They all
derive from `DIError`, so ``except di.DIError`` catches anything `di` raises
on its own behalf; errors raised *by your providers* pass through unchanged.
"""

from __future__ import annotations

import collections.abc as cabc
import typing
from collections.abc import Iterable, Sequence
from types import GenericAlias, NoneType, UnionType
from typing import Annotated, Any

__all__ = [
    "AsyncProviderError",
    "CheckpointClosedError",
    "CircularDependencyError",
    "DIError",
    "DuplicateProviderError",
    "GraphError",
    "NoActiveScopeError",
    "ProviderNotFoundError",
    "ScopeError",
    "UnresolvableAnnotationError",
    "describe_key",
]


def describe_key(key: Any) -> str:
    """Render a provider key the way a user wrote it: ``Settings``,
    ``Annotated[Engine, Named('replica')]``, ``list[int]``.

    Classes go by their short (qualified) name wherever they appear, inside
    ``Annotated`` and generic aliases too (``Repo[Engine]``, not
    ``app.db.Repo[app.db.Engine]``)."""
    # Before 3.11 list[int] and Repo[int] (types.GenericAlias) pass for classes.
    if type(key) is type or (isinstance(key, type) and not isinstance(key, GenericAlias)):
        return key.__qualname__
    return _describe_hint(key)


def _strip(text: str) -> str:
    return text.replace("typing_extensions.", "").replace("typing.", "")


def _safe_repr(obj: object) -> str:
    """A repr for a message, which must not fail on a repr that raises."""
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__qualname__} instance>"


def _describe_hint(hint: Any) -> str:
    if hint is None or hint is NoneType:
        return "None"
    if hint is Ellipsis:
        return "..."
    if isinstance(hint, typing.ForwardRef):  # as written: Injected["Later"]
        return hint.__forward_arg__
    # Before 3.11 list[int] and Repo[int] (types.GenericAlias) pass for classes.
    if isinstance(hint, type) and not isinstance(hint, GenericAlias):
        return hint.__qualname__
    if isinstance(hint, list):  # the parameters of a Callable
        return f"[{', '.join(_describe_hint(h) for h in hint)}]"
    origin = typing.get_origin(hint)
    if origin is Annotated:
        meta = ", ".join(map(_safe_repr, hint.__metadata__))
        return f"Annotated[{_describe_hint(hint.__origin__)}, {meta}]"
    args = getattr(hint, "__args__", None)
    if origin is None or type(args) is not tuple:  # a TypeVar, a ForwardRef, anything else
        return _strip(_safe_repr(hint))
    if origin is UnionType:
        return " | ".join(_describe_hint(a) for a in args)
    if origin is typing.Union:
        others = [a for a in args if a is not NoneType]
        if len(args) == 2 and len(others) == 1:
            return f"Optional[{_describe_hint(others[0])}]"
        return f"Union[{', '.join(_describe_hint(a) for a in args)}]"
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    name = getattr(hint, "_name", None)  # List, Dict, Callable... of typing
    if not isinstance(name, str):
        name = origin.__qualname__ if isinstance(origin, type) else _strip(repr(hint)).split("[")[0]
    if not args:
        return f"{name}[()]"
    if origin is cabc.Callable:
        params = args[:-1]
        if len(params) == 1 and (
            params[0] is Ellipsis
            or isinstance(params[0], typing.ParamSpec)
            or getattr(params[0], "__origin__", None) is typing.Concatenate
        ):
            head = _describe_hint(params[0])
        else:
            head = _describe_hint(list(params))
        return f"{name}[{head}, {_describe_hint(args[-1])}]"
    return f"{name}[{', '.join(_describe_hint(a) for a in args)}]"


def describe_path(keys: Iterable[Any]) -> str:
    return " -> ".join(describe_key(k) for k in keys)


class DIError(Exception):
    """Base class of every error `di` raises on its own behalf."""


class GraphError(DIError):
    """The provider graph is invalid. Raised once, at container build, listing
    every problem found (missing providers, cycles, scope violations, async
    providers needed from sync code), so one run shows them all."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"the provider graph has {count} problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


class DuplicateProviderError(DIError):
    """The same key was registered twice in one registry without
    ``override=True``."""


class UnresolvableAnnotationError(DIError, NameError):
    """A provider's annotation names something that does not exist when the
    provider is registered (a class defined further down, an import made only
    under ``if TYPE_CHECKING:``). A `NameError` too, as the failed evaluation
    was: ``name`` is the missing name."""


class ProviderNotFoundError(DIError, LookupError):
    """No provider is registered for the key that was resolved."""

    def __init__(self, key: Any, chain: Sequence[Any] = (), *, why: str | None = None) -> None:
        self.key = key
        self.chain = list(chain)
        if why is not None:  # the key itself is no key (an instance, a string)
            super().__init__(why)
            return
        needed = f" (needed by {describe_path(self.chain)})" if self.chain else ""
        super().__init__(
            f"no provider for {describe_key(key)}{needed}; register one with "
            f"@registry.provider(), registry.register({describe_key(key)}, Impl) or "
            f"registry.value({describe_key(key)}, instance)"
        )

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0])

    def __reduce__(self) -> Any:
        # Pickled and copied with its key, chain and message (the default
        # would call it again with the message as its key).
        return (type(self), (self.key, self.chain), {**self.__dict__, "args": self.args})


class CircularDependencyError(DIError):
    """A provider needed itself while it was being created (found at run time,
    when a factory resolves from its own container); also a sync resolve, in a
    thread that runs an event loop, of a key another task or thread is creating:
    it cannot wait there (the creator may be a task of that loop)."""


class ScopeError(DIError):
    """A scope was used against its rules: an unknown or out-of-order level,
    checkpoints exited out of order, a scoped key resolved where its level is
    not entered, context values that do not belong to the level."""


class NoActiveScopeError(ScopeError):
    """Something needed an entered container or checkpoint and found none in
    this task or thread."""


class CheckpointClosedError(ScopeError):
    """The checkpoint has already been torn down: it can no longer be held,
    spawned into, or resolved from."""


class AsyncProviderError(DIError):
    """An async provider (or async teardown) was needed from sync code. `di`
    never starts a private event loop; use ``aresolve`` / ``async with``."""


class ResourceOpenError(DIError, RuntimeError):
    """Opening a `RefCounted` resource (or building a `ClientContext` client)
    failed. The original exception is the ``__cause__``; the resource stays
    closed and the next enter tries again."""
