"""Inject into functions: ``di.inject``, ``di.Depends(T)``, ``di.Injected[T]``.

Give a parameter the caller leaves out a ``Depends`` default:
``repo: Repo = di.Depends(Repo)``. A type checker then sees an optional
parameter of type ``Repo``, so ``handler(1)`` checks. ``Injected[T]`` marks a
parameter by its annotation alone; to a type checker it is a plain, required
``T`` (``inject`` keeps the signature as it is), so a checked call that
leaves it out is an error: use it where the caller passes the argument or is
not type-checked (a framework calling the function).

The signature is read once, at decoration. At each call the marked
parameters that were not passed explicitly are resolved from the container
entered in this task or thread, in its current checkpoint. Resources the call
opens for itself (transient generator providers) are closed when it returns,
exactly like nested ``with`` blocks around the call.

A generator or async generator function is wrapped by one of the same kind:
its dependencies are resolved when it starts (its first iteration, where its
own body would start to run), and its resources stay open while it runs and
are closed when it finishes, raises or is closed, like ``with`` blocks around
its body.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from di.container import _entered, active_container
from di.errors import AsyncProviderError, NoActiveScopeError, ProviderNotFoundError, describe_key
from di.registry import (
    INJECT_MARKER,
    checked_key,
    key_problem,
    normalized,
    type_hints,
)
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
"""``repo: di.Injected[Repo]`` marks a parameter for `inject` to fill.

To a type checker it is a plain ``Repo``, and the parameter is still required:
a checked call that leaves it out is an error. For a parameter callers leave
out, write ``repo: Repo = di.Depends(Repo)`` instead."""

_NOT_INJECTED: Any = object()
_EMPTY = inspect.Parameter.empty


class _Depends:
    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Depends({self.key!r})"


def Depends(key: TypeForm[T], /) -> T:
    """Mark a parameter for `inject` by its default:
    ``settings: Settings = di.Depends(Settings)``.

    Typed to return ``T``, so the parameter type-checks as an optional
    ``Settings`` and calls that leave it out check too: the form to use for
    parameters the caller omits. The key is the one given here, whatever the
    annotation says."""
    return _Depends(checked_key(key, "di.Depends()"))  # type: ignore[return-value]


def _globals(fn: Callable[..., Any]) -> dict[str, Any]:
    """Where `typing.get_type_hints` takes the globals of ``fn`` from."""
    nsobj: Any = fn
    while hasattr(nsobj, "__wrapped__"):
        nsobj = nsobj.__wrapped__
    return getattr(nsobj, "__globals__", {})


def _hints(fn: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Exception]]:
    """The evaluated annotations of `fn`, and why each one that could not be
    evaluated failed.

    All at once with `typing.get_type_hints` (as 3.11 reads them: see
    `di.registry.type_hints`) when that works. When it fails
    (a name imported only under ``if TYPE_CHECKING:``, a class defined later
    in the module), each parameter's annotation is evaluated on its own, the
    same way and in the same globals, so one that `inject` does not need
    cannot make the decoration fail."""
    try:
        return type_hints(fn), {}
    except Exception:
        annotations = getattr(fn, "__annotations__", None)
        if not isinstance(annotations, dict):
            raise
    globalns = _globals(fn)
    hints: dict[str, Any] = {}
    failed: dict[str, Exception] = {}
    for name, value in annotations.items():
        if name == "return":
            continue
        holder = types.SimpleNamespace(__annotations__={name: value})
        try:
            # Locals of their own: typing caches a ForwardRef's value when the two
            # namespaces are one, and one ForwardRef may serve several modules.
            hints.update(typing.get_type_hints(holder, globalns, {}, include_extras=True))
        except Exception as exc:
            failed[name] = exc
    return hints, failed


_MARKED_TEXT = re.compile(r"\b(?:Injected|INJECT_MARKER)\b")
_OUTER_NAME = re.compile(r"\s*([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)\s*(?:\[|$)")


def _is_marker(obj: Any) -> bool:
    # By identity: another library's metadata may compare oddly (or raise).
    return typing.get_origin(obj) is Annotated and any(
        m is INJECT_MARKER for m in getattr(obj, "__metadata__", ())
    )


def _is_marked(annotation: Any, globalns: dict[str, Any]) -> bool:
    """Whether an annotation that could not be evaluated marks its parameter
    for injection: its text names ``Injected``; or it subscripts a name that
    is ``Injected`` in the function's globals (an alias: ``from di import
    Injected as Inj``, ``Inj[Later]``), only that outer (dotted) name being
    looked up; or it is an ``Annotated`` with the marker around a forward
    reference (``Injected["Later"]``)."""
    if not isinstance(annotation, str):
        return _is_marker(annotation)
    # The outer (dotted) name, looked up in the globals first: it says what
    # the annotation is, whatever it is called (an alias of Injected, an
    # alias of Injected[X], or another library's `Injected`).
    match = _OUTER_NAME.match(annotation)
    if match is not None:
        first, *rest = (part.strip() for part in match.group(1).split("."))
        try:
            obj = globalns[first]
            for part in rest:
                obj = getattr(obj, part)
        except Exception:
            pass
        else:
            if obj is not Annotated:  # Annotated[Injected[X], ...] is marked too: read the text
                return obj is Injected or _is_marker(obj)
    return _MARKED_TEXT.search(annotation) is not None


def _unevaluable(fn: Callable[..., Any], name: str, annotation: Any, exc: Exception) -> Exception:
    text = annotation if isinstance(annotation, str) else describe_key(annotation)
    head = (
        f"@di.inject cannot evaluate the annotation {text!r} of parameter {name!r} of "
        f"{fn.__qualname__}"
    )
    fix = "or give the parameter a `= di.Depends(Key)` default, which names the key itself"
    if isinstance(exc, NameError):
        return NameError(
            f"{head}: name {exc.name!r} is not defined. The parameter is marked for "
            f"injection, so its key is needed when the function is decorated: import "
            f"{exc.name!r} at run time (not only under `if TYPE_CHECKING:`) and define it "
            f"before the decorated function, {fix}",
            name=exc.name,
        )
    return TypeError(
        f"{head}: {type(exc).__name__}: {exc}. The parameter is marked for injection, so "
        f"its key is needed when the function is decorated: fix the annotation, {fix}"
    )


def _targets(
    fn: Callable[..., Any],
) -> tuple[list[tuple[str, int | None, Any]], list[tuple[Any, Any]]]:
    """What to inject: ``(name, position or None, key)`` of every marked
    parameter that can be passed by keyword, and ``(key or _NOT_INJECTED,
    default)`` of each positional-only parameter up to the last marked one
    (those are passed positionally, with the defaults of the unmarked ones
    between them).

    A parameter whose annotation cannot be evaluated is not injected, unless
    it is marked: then the decoration fails, naming it and the missing name.
    A ``Depends`` default gives the key itself, whatever the annotation."""
    hints, failed = _hints(fn)
    keyword = []
    positional = []
    last = 0
    for index, param in enumerate(inspect.signature(fn).parameters.values()):
        if isinstance(param.default, _Depends):
            key = param.default.key
        elif param.name in failed:
            annotation = fn.__annotations__[param.name]
            if _is_marked(annotation, _globals(fn)):
                exc = failed[param.name]
                raise _unevaluable(fn, param.name, annotation, exc) from exc
            key = _NOT_INJECTED
        else:
            hint = hints.get(param.name)
            where = f"parameter {param.name!r} of {fn.__qualname__}"
            key = normalized(hint, where) if _is_marker(hint) else _NOT_INJECTED
            if key is not _NOT_INJECTED and key_problem(key) is not None:
                shown = "di.Injected" if type(key) is TypeVar else describe_key(hint)
                raise TypeError(
                    f"{where} is annotated {shown}, which names no type to inject; say what it "
                    f"needs: Injected[Repo]"
                )
        if key is not _NOT_INJECTED and param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise TypeError(
                f"{star}{param.name} of {fn.__qualname__} is marked for injection; only named "
                f"parameters can be injected: declare one parameter per dependency"
            )
        if param.kind is param.POSITIONAL_ONLY:
            positional.append((key, param.default))
            if key is not _NOT_INJECTED:
                last = index + 1
        elif key is not _NOT_INJECTED:
            position = index if param.kind is param.POSITIONAL_OR_KEYWORD else None
            keyword.append((param.name, position, key))
    return keyword, positional[:last]


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
    if container is not None:
        return container
    if _entered.get() is None:
        raise NoActiveScopeError(
            f"{fn.__qualname__} needs injection but no container is entered in this task or "
            f"thread; wrap the call in `with container:` (or `async with container:`). A "
            f"`container.scope()` block alone does not count (a server's request task may not "
            f"inherit the lifespan's enter): enter the container in that task too, or run "
            f"the call inside `scope.hold()`"
        )
    # An entry this task or thread inherited (it was created inside a `with
    # container` block) that outlived the block: resolving would make
    # singletons in a closed container that nothing tears down.
    raise NoActiveScopeError(
        f"{fn.__qualname__} needs injection but the container this task or thread "
        f"inherited (it was created inside the container's block) has closed; enter it "
        f"again (`with container:` / `async with container:`) or do the work inside its "
        f"block"
    )


def inject(fn: F) -> F:
    """Fill the parameters marked with `Depends` or `Injected` at each call.

    >>> import di
    >>> @di.inject
    ... def greet(name: str, greeting: str = di.Depends(str)) -> str:
    ...     return f"{greeting}, {name}"

    The decorated function keeps its signature for type checkers: a
    ``Depends`` parameter has a default, so ``greet("Ada")`` checks, while an
    ``Injected[T]`` parameter is still required and a checked call must pass
    it. Use ``= di.Depends(T)`` for the parameters callers leave out.

    Explicitly passed arguments win and their providers are not called.
    Positional-only parameters are injected positionally. A coroutine,
    generator or async generator function stays one; a generator's
    dependencies are resolved at its first iteration and the resources it
    opened are closed when it finishes, raises or is closed. Put ``inject``
    directly on the async def or generator: a plain function wrapping one (a
    sync decorator between them) is taken as the plain function it is, and a
    call of it that opened resources (transient generator providers) and got
    back a coroutine or generator raises `TypeError` instead of closing them
    before that runs. On top of ``@staticmethod`` or ``@classmethod``, the
    function inside is wrapped, and stays one.

    `NoActiveScopeError` if no container is entered in this task or thread,
    or if the one it inherited (a task started inside ``async with
    container``) has closed since.

    Annotations are evaluated at decoration; one that cannot be (a name
    imported only under ``if TYPE_CHECKING:``, a class defined later) is
    skipped when its parameter is not injected. A marked parameter whose
    annotation cannot be evaluated is an error right away (`NameError`,
    naming the parameter and the missing name); a ``Depends`` default needs
    no annotation.
    """
    if isinstance(fn, (staticmethod, classmethod)):
        # On top of @staticmethod / @classmethod: wrap the function and wrap
        # the result the same way, so the class binds it as before (a class
        # method's wrapper gets ``cls`` as its first, explicit argument).
        return type(fn)(inject(fn.__func__))
    keyword, positional = _targets(fn)

    # A call's todo is a list of (name, key): name is the keyword to pass the
    # resolved value by, or, for a positional-only parameter, its index (an int
    # key in kwargs, which `place` then moves into args). Functions without
    # positional-only targets never build or look for those.
    place: Callable[[tuple[Any, ...], dict[Any, Any]], tuple[Any, ...]] | None = None

    if not positional:

        def missing(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, Any]]:
            return [
                (name, key)
                for name, position, key in keyword
                if name not in kwargs and (position is None or position >= len(args))
            ]

    else:

        def missing(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, Any]]:
            todo: list[tuple[Any, Any]] = []
            for index in range(len(args), len(positional)):
                key, default = positional[index]
                if key is not _NOT_INJECTED:
                    todo.append((index, key))
                elif default is _EMPTY:
                    break  # a required argument is missing: the call will say so
            todo.extend(
                (name, key)
                for name, position, key in keyword
                if name not in kwargs and (position is None or position >= len(args))
            )
            return todo

        def place(args: tuple[Any, ...], kwargs: dict[Any, Any]) -> tuple[Any, ...]:
            extra = []
            for index in range(len(args), len(positional)):
                if index in kwargs:
                    extra.append(kwargs.pop(index))
                    continue
                default = positional[index][1]
                if default is _EMPTY:
                    break
                extra.append(default)
            return (*args, *extra)

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
                name = None  # resolved: what fails from here is the call's own
                if place is not None:
                    args = place(args, kwargs)
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if not await aunwind(exits, exc):
                    _explain(fn, name, key, exc, sync=False)
                    raise
                return None
            await aunwind(exits, None)
            return result

        return async_wrapper  # type: ignore[return-value]

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            todo = missing(args, kwargs)
            if not todo:
                return (yield from fn(*args, **kwargs))
            frame = _frame(_container(fn))
            exits = frame._exits
            assert exits is not None
            try:
                for name, key in todo:
                    kwargs[name] = frame[key]
                name = None  # resolved: what fails from here is the call's own
                if place is not None:
                    args = place(args, kwargs)
                result = yield from fn(*args, **kwargs)
            except BaseException as exc:  # GeneratorExit included: closed early
                if not unwind(exits, exc):
                    _explain(fn, name, key, exc)
                    raise
                return None
            unwind(exits, None)
            return result

        return generator_wrapper  # type: ignore[return-value]

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def async_generator_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            todo = missing(args, kwargs)
            exits = None
            if todo:
                frame = _frame(_container(fn))
                exits = frame._exits
                assert exits is not None
            try:
                for name, key in todo:
                    kwargs[name] = await frame.aresolve(key)
                name = None  # resolved: what fails from here is the call's own
                if place is not None and todo:
                    args = place(args, kwargs)
                # `yield from` for async generators: every item out, every
                # asend/athrow/aclose in, until the body stops.
                body: AsyncGenerator[Any, Any] = fn(*args, **kwargs)
                try:
                    item = await body.asend(None)
                    while True:
                        try:
                            sent = yield item
                        except GeneratorExit:
                            await body.aclose()
                            raise
                        except BaseException as exc:
                            thrown = exc
                        else:
                            item = await body.asend(sent)
                            continue
                        try:
                            # outside the except block, as `yield from` throws:
                            # what the body raises later is not chained to it
                            item = await body.athrow(thrown)
                        finally:
                            del thrown
                except StopAsyncIteration:
                    pass  # the body finished (raised inside it, it is a RuntimeError)
            except BaseException as exc:
                if exits is None or not await aunwind(exits, exc):
                    if exits is not None:
                        _explain(fn, name, key, exc, sync=False)
                    raise
                return
            if exits is not None:
                await aunwind(exits, None)

        return async_generator_wrapper  # type: ignore[return-value]

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
            name = None  # resolved: what fails from here is the call's own
            if place is not None:
                args = place(args, kwargs)
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if not unwind(exits, exc):
                _explain(fn, name, key, exc)
                raise
            return None
        if exits and _runs_later(result):
            # A plain wrapper around an async def or a generator (a decorator
            # below inject): its body runs after this call returns, when the
            # resources opened for the call would already be closed.
            _discard(result)
            unwind(exits, None)
            raise TypeError(
                f"{fn.__qualname__} is a plain function that returned "
                f"{type(result).__name__} {result!r}, to run after the call; the resources "
                f"di opened for the call would be closed before it runs. Put @di.inject "
                f"directly on the async def or generator (below the other decorators)"
            )
        unwind(exits, None)
        return result

    return wrapper  # type: ignore[return-value]


def _explain(
    fn: Callable[..., Any], name: Any, key: Any, exc: BaseException, sync: bool = True
) -> None:
    """Raise, in place of ``exc``, the same error naming the function and the
    parameter whose resolve failed (None: the resolves were done). Its
    traceback is kept: it shows where in the factories it failed."""
    if name is None:
        return
    if isinstance(name, int):  # a positional-only parameter, by its index
        name = list(inspect.signature(fn).parameters)[name]
    where = f"parameter {name!r} of {fn.__qualname__}"
    new: BaseException
    if type(exc) is ProviderNotFoundError and exc.key is key:
        new = ProviderNotFoundError(
            key, why=f"{where} needs {describe_key(key)}, which has no provider; {exc}"
        )
    elif type(exc) is AsyncProviderError and sync:
        new = AsyncProviderError(
            f"{where} needs {describe_key(key)}, which a plain (sync) function cannot get: "
            f"{exc}. Make {fn.__qualname__} an `async def` (a generator: an async "
            f"generator): @di.inject awaits its providers then"
        )
    else:
        return
    raise new.with_traceback(exc.__traceback__) from None


def _runs_later(result: Any) -> bool:
    # Bodies not started yet. A Future or Task is running already, on what it
    # was given: returned as it is.
    return inspect.iscoroutine(result) or inspect.isgenerator(result) or inspect.isasyncgen(result)


def _discard(result: Any) -> None:
    # A coroutine or generator never started holds nothing: closing it only
    # spares the "never awaited" warning. (An async generator's close needs an
    # await; a Future or Task is someone else's.)
    if inspect.iscoroutine(result) or inspect.isgenerator(result):
        result.close()
