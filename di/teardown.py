"""Teardown: unwind a checkpoint's exit list exactly like nested ``with``.

This is the one hand-written substitute DESIGN.md allows: a checkpoint keeps
a plain list of what it entered, and unwinding it reproduces
`contextlib.ExitStack.__exit__` / `AsyncExitStack.__aexit__` case by case
(LIFO order, every exit runs, a True return suppresses, a new exception
replaces the old with ``__context__`` chained). It exists because a request
scope pays for an ExitStack on every cycle, while a list append per resource
and one loop at the end cost a fraction of that; the ExitStack
equivalence tests in tests/test_scopes.py check it case by case.

An entry is one of:
- a generator (a generator provider after its first ``next``): finished with
  `contextlib.contextmanager` semantics;
- an async generator: likewise with `asynccontextmanager` semantics;
- `AsyncExit`: a bound ``__aexit__`` (async context managers, RefCounted);
- `Slot`: a place a creation keeps for exits it entered before a creation
  nested in it handed over its own; once committed, its entries are unwound
  in its place;
- any other callable: a bound ``__exit__``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, Callable, Generator
from types import AsyncGeneratorType, GeneratorType
from typing import Any, NamedTuple, NoReturn

__all__ = [
    "AsyncExit",
    "Slot",
    "adidnt_stop",
    "aunwind",
    "aunwind_raised",
    "didnt_stop",
    "handled",
    "needs_async",
    "unwind",
    "unwind_raised",
]

# The exception being handled where the unwind starts (ExitStack's frame_exc).
# sys.exception() (3.11+) skips building exc_info's tuple on every scope exit.
handled: Callable[[], BaseException | None] = getattr(sys, "exception", lambda: sys.exc_info()[1])
_UNSET: Any = object()


class AsyncExit(NamedTuple):
    """An exit that must be awaited: a bound ``__aexit__``."""

    aexit: Callable[..., Any]


_COMMITTED: Any = object()
_TAKEN: Any = object()


class Slot(dict[int, Any]):
    """A place a creation keeps in its checkpoint's exit list (the compiler's
    ``_reserve``) for the exits it entered before a creation nested in it (a
    scoped or singleton key it needs, made there and then) handed over its
    own: so that the list unwinds in entering order, as nested ``with``
    blocks would. The entries stay the creation's until it commits the
    slot, with its last hand-over; an unwind that reaches a committed slot
    runs them in its place, one that reaches it first finds nothing there and
    leaves them to the creation (which, finding the teardown, unwinds its own:
    ``mine``). Whoever comes first wins: ``dict.setdefault`` is atomic."""

    __slots__ = ("entries",)

    # Identity semantics: two slots are never "equal" because their contents are.
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __init__(self, entries: list[Any]) -> None:
        super().__init__()
        self.entries = entries

    def commit(self) -> bool:
        """The creation hands the entries over; False if an unwind came first."""
        return self.setdefault(0, _COMMITTED) is _COMMITTED

    def take(self) -> list[Any]:
        """An unwind reached the slot: the entries to run here, if committed."""
        return self.entries if self.setdefault(0, _TAKEN) is _COMMITTED else []

    def committed(self) -> bool:
        return self.get(0) is _COMMITTED

    @staticmethod
    def entries_of(exits: list[Any]) -> list[Any]:
        """``exits`` with each slot replaced by its entries (a view, no claim)."""
        if not any(type(e) is Slot for e in exits):
            return exits
        return [x for e in exits for x in (e.entries if type(e) is Slot else (e,))]

    @staticmethod
    def mine(exits: list[Any]) -> list[Any]:
        """``exits`` with each slot not committed replaced by its entries, which
        are then the caller's alone (a creation that unwinds its own)."""
        if not any(type(e) is Slot for e in exits):
            return exits
        out: list[Any] = []
        for e in exits:
            if type(e) is not Slot:
                out.append(e)
            elif e.setdefault(0, _TAKEN) is not _COMMITTED:
                out += e.entries
                e.entries = []  # the slot left behind holds on to nothing
        return out


def needs_async(exits: list[Any]) -> bool:
    return any(
        type(e) is AsyncGeneratorType
        or type(e) is AsyncExit
        or (type(e) is Slot and e.committed() and needs_async(e.entries))
        for e in exits
    )


def _name(gen: Any) -> str:
    return str(getattr(gen, "__qualname__", gen))


def didnt_stop(gen: Generator[Any, Any, Any]) -> NoReturn:
    """What contextmanager does when a generator yields a second time."""
    try:
        raise RuntimeError(f"generator provider {_name(gen)} didn't stop")
    finally:
        gen.close()


async def adidnt_stop(agen: AsyncGenerator[Any, Any]) -> NoReturn:
    try:
        raise RuntimeError(f"generator provider {_name(agen)} didn't stop")
    finally:
        await agen.aclose()


def _exit_generator(gen: Generator[Any, Any, Any], exc: BaseException | None) -> bool:
    # contextlib.contextmanager.__exit__, for a generator already past its yield.
    if exc is None:
        for _ in gen:  # exhausting beats next() + catching StopIteration
            didnt_stop(gen)
        return False
    tb = exc.__traceback__
    try:
        gen.throw(exc)
    except StopIteration as stop:
        return stop is not exc
    except RuntimeError as err:
        if err is exc:
            err.__traceback__ = tb
            return False
        if isinstance(exc, StopIteration) and err.__cause__ is exc:
            exc.__traceback__ = tb
            return False
        raise
    except BaseException as err:
        if err is not exc:
            raise
        err.__traceback__ = tb
        return False
    try:
        raise RuntimeError(f"generator provider {_name(gen)} didn't stop after throw()")
    finally:
        gen.close()


async def _exit_async_generator(agen: AsyncGenerator[Any, Any], exc: BaseException | None) -> bool:
    # contextlib.asynccontextmanager.__aexit__, for a generator past its yield.
    if exc is None:
        async for _ in agen:
            await adidnt_stop(agen)
        return False
    tb = exc.__traceback__
    try:
        await agen.athrow(exc)
    except StopAsyncIteration as stop:
        return stop is not exc
    except RuntimeError as err:
        if err is exc:
            err.__traceback__ = tb
            return False
        if isinstance(exc, (StopIteration, StopAsyncIteration)) and err.__cause__ is exc:
            exc.__traceback__ = tb
            return False
        raise
    except BaseException as err:
        if err is not exc:
            raise
        err.__traceback__ = tb
        return False
    try:
        raise RuntimeError(f"generator provider {_name(agen)} didn't stop after athrow()")
    finally:
        await agen.aclose()


def _fix_context(
    new: BaseException, old: BaseException | None, frame: BaseException | None
) -> None:
    # As ExitStack does: make the new exception's chain end at the one it replaced.
    while True:
        ctx = new.__context__
        if ctx is None or ctx is old:
            return
        if ctx is frame:
            break
        new = ctx
    new.__context__ = old


def _reraise(exc: BaseException) -> None:
    # The frames an exception leaves through must not keep it in a local:
    # its traceback holds them, a cycle that would keep it (and every
    # checkpoint and instance on the way) alive until a GC pass.
    fixed = exc.__context__
    try:
        raise exc
    except BaseException:
        exc.__context__ = fixed
        raise
    finally:
        exc = fixed = None  # type: ignore[assignment]


def unwind(
    exits: list[Any],
    exc: BaseException | None,
    frame: BaseException | None = _UNSET,
    pending: bool = False,
) -> bool:
    """Run every exit, LIFO; return True if ``exc`` was suppressed.

    Raises the last exception a teardown raised (chained like ExitStack).
    An async entry here is a bug of the caller: use `aunwind`. ``frame`` and
    ``pending`` continue an unwind begun elsewhere (see `unwind_raised`).
    """
    received = exc is not None and not pending
    if frame is _UNSET:
        frame = handled()
    suppressed = False
    while exits:
        entry = exits.pop()
        try:
            if type(entry) is GeneratorType:
                if exc is None:
                    # the common case, inlined: a clean generator finishes here
                    for _ in entry:
                        didnt_stop(entry)
                    continue
                stop = _exit_generator(entry, exc)
            elif type(entry) is AsyncGeneratorType or type(entry) is AsyncExit:
                raise RuntimeError("async teardown reached the sync unwind")  # pragma: no cover
            elif type(entry) is Slot:
                exits += entry.take()  # unwound here, in its place
                continue
            elif exc is None:
                stop = entry(None, None, None)
            else:
                stop = entry(type(exc), exc, exc.__traceback__)
            if stop:
                suppressed = True
                pending = False
                exc = None
        except BaseException as new:
            _fix_context(new, exc, frame)
            pending = True
            exc = new
    if pending:
        assert exc is not None
        try:
            _reraise(exc)
        finally:
            exc = frame = None  # no cycle through this frame (see _reraise)
    return received and suppressed


def unwind_raised(exits: list[Any], new: BaseException) -> bool:
    """Go on unwinding after an exit raised ``new`` in a block that raised
    nothing (a caller's inline fast path): chain ``new`` as ExitStack would,
    run the remaining exits, re-raise unless one suppresses it.

    Call it after the ``except`` block that caught ``new`` has ended, so that
    the exception being handled is again the one around the caller's ``with``
    (ExitStack's frame exception), and no implicit chaining happens."""
    frame = handled()
    _fix_context(new, None, frame)
    try:
        return unwind(exits, new, frame, pending=True)
    finally:
        new = frame = None  # type: ignore[assignment]  # see _reraise


async def aunwind_raised(exits: list[Any], new: BaseException) -> bool:
    """The async twin of `unwind_raised`."""
    frame = handled()
    _fix_context(new, None, frame)
    try:
        return await aunwind(exits, new, frame=frame, pending=True)
    finally:
        new = frame = None  # type: ignore[assignment]  # see _reraise


async def aunwind(
    exits: list[Any],
    exc: BaseException | None,
    after: Callable[[], None] | None = None,
    frame: BaseException | None = _UNSET,
    pending: bool = False,
) -> bool:
    """`unwind` for a list that may hold async entries (AsyncExitStack).

    ``after`` runs once everything is unwound, raising or not.
    """
    received = exc is not None and not pending
    if frame is _UNSET:
        frame = handled()
    suppressed = False
    try:
        while exits:
            entry = exits.pop()
            try:
                kind = type(entry)
                if kind is GeneratorType:
                    stop = _exit_generator(entry, exc)
                elif kind is AsyncGeneratorType:
                    if exc is None:
                        async for _ in entry:
                            await adidnt_stop(entry)
                        continue
                    stop = await _exit_async_generator(entry, exc)
                elif kind is AsyncExit:
                    if exc is None:
                        stop = await entry.aexit(None, None, None)
                    else:
                        stop = await entry.aexit(type(exc), exc, exc.__traceback__)
                elif kind is Slot:
                    exits += entry.take()  # unwound here, in its place
                    continue
                elif exc is None:
                    stop = entry(None, None, None)
                else:
                    stop = entry(type(exc), exc, exc.__traceback__)
                if stop:
                    suppressed = True
                    pending = False
                    exc = None
            except BaseException as new:
                _fix_context(new, exc, frame)
                pending = True
                exc = new
    finally:
        if after is not None:
            after()
    if pending:
        assert exc is not None
        try:
            _reraise(exc)
        finally:
            exc = frame = None  # see _reraise
    return received and suppressed
