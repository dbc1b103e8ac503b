"""Inject into functions: ``di.inject``, ``di.Injected[T]``, ``di.Depends(T)``.

The signature is read once, at decoration. At each call the marked
parameters that were not passed explicitly are resolved from the container
entered in this task or thread, in its current checkpoint. Resources the call
opens for itself (transient generator providers) are closed when it returns,
exactly like nested ``with`` blocks around the call.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from di.container import active_container
from di.errors import NoActiveScopeError
from di.registry import INJECT_MARKER, normalize_key
from di.scopes import new_checkpoint
from di.teardown import aunwind, unwind

if TYPE_CHECKING:
    from typing import TypeAlias

    from typing_extensions import TypeForm

    from di.container import Container
    from di.scopes import Checkpoint

__all__ = ["Depends", "Injected", "inject"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

Injected: TypeAlias = Annotated[T, INJECT_MARKER]
"""``repo: di.Injected[Repo]`` marks a parameter for `inject` to fill."""


class _Depends:
    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Depends({self.key!r})"


def Depends(key: TypeForm[T], /) -> T:
    """Mark a parameter for `inject` by its default:
    ``settings: Settings = di.Depends(Settings)``."""
    return _Depends(normalize_key(key))  # type: ignore[return-value]


def _targets(fn: Callable[..., Any]) -> list[tuple[str, int | None, Any]]:
    """(name, position or None, key) of every parameter to inject."""
    hints = typing.get_type_hints(fn, include_extras=True)
    found = []
    for index, param in enumerate(inspect.signature(fn).parameters.values()):
        position = (
            index if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) else None
        )
        if isinstance(param.default, _Depends):
            found.append((param.name, position, param.default.key))
            continue
        hint = hints.get(param.name)
        if typing.get_origin(hint) is Annotated and INJECT_MARKER in getattr(
            hint, "__metadata__", ()
        ):
            found.append((param.name, position, normalize_key(hint)))
    return found


def _frame(container: Container) -> Checkpoint:
    # A call frame: between the current checkpoint and any deeper level, so
    # scoped keys resolve in their owners while the call's own transient
    # resources are pushed onto its exit list.
    parent = container._storage.get(None)
    if parent is None:
        parent = container._root
    frame: Checkpoint = new_checkpoint(container, parent._level)
    frame._level = parent._level + 0.5  # type: ignore[assignment]
    frame._parent = parent
    return frame


def _container(fn: Callable[..., Any]) -> Container:
    container = active_container()
    if container is None:
        raise NoActiveScopeError(
            f"{fn.__qualname__} needs injection but no container is entered in this task or "
            f"thread; wrap the call in `with container:` (or `async with container:`)"
        )
    return container


def inject(fn: F) -> F:
    """Fill the parameters marked with `Injected` or `Depends` at each call.

    >>> import di
    >>> @di.inject
    ... def greet(name: str, greeting: di.Injected[str]) -> str:
    ...     return f"{greeting}, {name}"

    Explicitly passed arguments win and their providers are not called.
    """
    targets = _targets(fn)

    def missing(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
        return [
            (name, key)
            for name, position, key in targets
            if name not in kwargs and (position is None or position >= len(args))
        ]

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            todo = missing(args, kwargs)
            if not todo:
                return await fn(*args, **kwargs)
            frame = _frame(_container(fn))
            exits = frame._exits
            assert exits is not None
            try:
                for name, key in todo:
                    kwargs[name] = await frame.aresolve(key)
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if not await aunwind(exits, exc):
                    raise
                return None
            await aunwind(exits, None)
            return result

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        todo = missing(args, kwargs)
        if not todo:
            return fn(*args, **kwargs)
        frame = _frame(_container(fn))
        exits = frame._exits
        assert exits is not None
        try:
            for name, key in todo:
                kwargs[name] = frame[key]
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if not unwind(exits, exc):
                raise
            return None
        unwind(exits, None)
        return result

    return wrapper  # type: ignore[return-value]
