"""RefCounted: a resource opened on first enter and closed on last exit.

Any number of threads and tasks (asyncio or trio) may share one `RefCounted`.
Two locks keep that correct and cheap:

- a tiny ``threading.Lock`` guards the counter and the open resource. It is
  only ever held for a few bytecodes, never across user code or an ``await``,
  so taking it from async code cannot stall the event loop for long. This is
  the whole cost of entering or leaving a resource that is already open.
- an ``aiologic.Lock`` serialises the transitions (calling ``open`` and
  ``close``), which may block or await for as long as the user's code takes.
  aiologic lets threads (``with``) and asyncio/trio tasks (``async with``)
  wait on the same lock.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

import aiologic
from aiologic.lowlevel import current_async_library

from di.errors import AsyncProviderError, CircularDependencyError, ResourceOpenError
from di.registry import call_target

__all__ = ["RefCounted", "ResourceOpenError"]

T = TypeVar("T")

logger = logging.getLogger("di")

# The RefCounted whose open or close the current task runs a part of, on that
# transition's behalf, in a task of its own (ClientContext's cleanup of a
# client whose initialize() failed, under asyncio). Entering or closing that
# RefCounted from there is a re-entry, as from the transition's own task: it
# would wait for ever for the transition that waits for it.
on_behalf_of: ContextVar[object] = ContextVar("di.lifecycle.on_behalf_of", default=None)


def _is_async_callable(fn: object) -> bool:
    # A callable object with an ``async def __call__`` is as async as a
    # coroutine function: `call_target` finds the method that decides. Some
    # objects say so themselves instead (`unittest.mock.AsyncMock` marks its
    # instances, whose class `__call__` is a plain def).
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call_target(fn))


def describe_callable(fn: object) -> str:
    """``make_pool`` or ``Pool.open``; a nested function without its
    ``outer.<locals>.`` prefix, which only adds noise to messages. Never the
    callable's ``repr()``: a ``partial(make_client, api_key=...)`` would put
    its secret in every message and log line that names it."""
    if isinstance(fn, functools.partial):
        return f"partial({describe_callable(fn.func)})"
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str):
        return f"{describe_callable(type(fn))} instance"
    return qualname.rpartition("<locals>.")[2]


class RefCounted(Generic[T]):
    """A shared resource that is opened on first enter and closed on last exit.

    ``open`` takes no arguments and returns the resource; ``close`` receives
    it. Either may be a plain function or a coroutine function. Enter with
    ``with`` (both sync) or ``async with`` (always allowed)::

        pool = di.RefCounted(lambda: make_pool(dsn), lambda p: p.close())

        with pool as p:          # first enter: make_pool() runs
            with pool as q:      # already open: q is p, ref_count == 2
                ...
        # last exit: p.close() runs; the next enter opens a fresh pool

    Rules:

    - ``ref_count`` rises only after a successful open. A failed open raises
      `ResourceOpenError` (the original error is its ``__cause__``);
      cancellation (``asyncio.CancelledError``, ``trio.Cancelled``) and other
      ``BaseException`` such as ``KeyboardInterrupt`` propagate unchanged, and
      so does `di.CircularDependencyError` (trying again cannot help).
      Either way the count and state are exactly what they were before.
    - An ``open`` or ``close`` that enters or closes the same resource again,
      itself or through code it calls (a `di.ClientContext` client whose
      ``initialize()`` calls ``get_client()``), raises
      `di.CircularDependencyError` at that inner call, which would otherwise
      wait for ever for the transition it is part of. That holds in the
      transition's own task or thread; a task or thread it starts and waits
      for (``asyncio.gather``, a trio nursery, a worker thread) is not seen as
      part of it, and its re-entry waits for ever with it.
    - ``close()`` while references are held logs a warning on the ``"di"``
      logger and leaves the closing to the last exit; ``close(force=True)``
      closes at once (the holders' exits still count down, and a later enter
      opens a fresh resource).
    - An error raised by ``close`` propagates, and the resource is still
      considered closed.
    - A sync ``with`` / ``close()`` on a resource whose ``open`` or ``close``
      is async raises `di.AsyncProviderError` and changes nothing: `di`
      never starts a private event loop.

    ``async with`` and ``aclose()`` wait for the transition lock without
    blocking the event loop, so an ``async with`` that finds another thread
    opening the resource lets the loop run meanwhile (that open may need it).
    Once they hold the lock, a plain ``open`` or ``close`` runs directly and
    only a coroutine it returns (``lambda p: p.aclose()``) is awaited. When
    neither returns one, nothing yields while the lock is held, so sync and
    async users can share the resource even inside one event-loop thread;
    a sync ``with`` / ``close()`` there that needs the lock while a task of
    the same thread holds it (handed over by another thread but not yet
    run, or awaiting such a coroutine) cannot wait without blocking that
    task, and raises `di.AsyncProviderError` (use ``async with`` there).
    A last ``async with`` exit of a cancelled block still closes the resource
    (an async ``close`` sees the cancellation at its first checkpoint); only
    one cancelled while waiting for another task's or thread's open or close
    leaves the resource open, unreferenced, until the next exit or ``close()``.
    """

    __slots__ = (
        "__weakref__",
        "_busy",
        "_close",
        "_close_awaits",
        "_count",
        "_held",
        "_name",
        "_open",
        "_open_awaits",
        "_state",
        "_sync",
        "_transition",
        "_waiting",
    )

    @overload
    def __init__(
        self,
        open: Callable[[], Coroutine[Any, Any, T]],
        close: Callable[[T], object],
        *,
        name: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        open: Callable[[], T],
        close: Callable[[T], object],
        *,
        name: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        open: Callable[[], Any],
        close: Callable[[Any], Any],
        *,
        name: str | None = None,
    ) -> None:
        for what, fn in (("open", open), ("close", close)):
            if not callable(fn):
                raise TypeError(
                    f"RefCounted({what}=...) takes a callable (RefCounted(open, close): open() "
                    f"makes the resource, close(resource) releases it); got a "
                    f"{type(fn).__qualname__}"
                )
        self._open = open
        self._close = close
        self._name = name or describe_callable(open)
        self._open_awaits = _is_async_callable(open)
        self._close_awaits = _is_async_callable(close)
        self._sync = not (self._open_awaits or self._close_awaits)
        self._state = threading.Lock()
        self._transition = aiologic.Lock()
        # Which callable the transition lock's holder is running ("open" or
        # "close"); only the holder writes it, and only a re-entry reads it.
        self._busy = ""
        # The threads of the tasks blocked in (or just handed) the transition
        # lock, one entry per task; see _acquire_sync.
        self._waiting: list[int] = []
        self._count = 0
        # A 1-tuple rather than (flag, value) so a single attribute read tells
        # both whether it is open and what is open, without the state lock.
        self._held: tuple[T] | None = None

    # -- introspection -----------------------------------------------------

    @property
    def name(self) -> str:
        """The name used in messages (``name=`` or the qualname of ``open``)."""
        return self._name

    @property
    def ref_count(self) -> int:
        """How many ``with`` / ``async with`` blocks currently hold it."""
        return self._count

    @property
    def is_async(self) -> bool:
        """True if ``open`` or ``close`` must be awaited (only ``async with``)."""
        return self._open_awaits or self._close_awaits

    @property
    def is_open(self) -> bool:
        """Whether the resource is currently open."""
        return self._held is not None

    @property
    def resource(self) -> T:
        """The open resource; `RuntimeError` when it is not open."""
        held = self._held
        if held is None:
            if self._count:  # holders are left: close(force=True) ended it under them
                raise RuntimeError(
                    f"{self._name} was closed by close(force=True) while held; use the "
                    f"resource the enter returned, or enter again for a fresh one"
                )
            raise RuntimeError(
                f"{self._name} is not open; enter it first (`with rc as res` or "
                f"`async with rc as res`)"
            )
        return held[0]

    def __repr__(self) -> str:
        state = "open" if self._held is not None else "closed"
        return f"<RefCounted {self._name} {state} ref_count={self._count}>"

    # -- state changes shared by the sync and async paths -------------------

    def _join(self, counted: bool = True) -> tuple[T] | None:
        """Take a reference if the resource is open; None means open it."""
        with self._state:
            held = self._held
            if held is not None and counted:
                self._count += 1
            return held

    def _publish(self, resource: T, counted: bool) -> None:
        with self._state:
            self._held = (resource,)
            if counted:
                self._count += 1

    def _release(self) -> bool:
        """Drop a reference; True when it was the last and a close is due."""
        with self._state:
            if self._count <= 0:
                raise RuntimeError(
                    f"{self._name}: exit without a matching enter (ref_count is already 0); "
                    f"each exit must pair with one `with` / `async with` enter"
                )
            self._count -= 1
            return self._count == 0 and self._held is not None

    def _should_defer(self, force: bool) -> bool:
        # Holders of a force-closed resource have nothing left to defer.
        if force or self._count == 0 or self._held is None:
            return False
        logger.warning(
            "close() of %s deferred: %d reference(s) still held; it closes when the "
            "last one exits (pass force=True to close it now)",
            self._name,
            self._count,
        )
        return True

    def _detach(self, force: bool) -> tuple[T] | None:
        """Mark it closed and hand back what must be closed, if anything.

        Called with the transition lock held, so no open or close runs
        concurrently; the state lock makes the decision atomic with respect
        to fast-path enters, which may have taken a reference meanwhile.
        """
        with self._state:
            held = self._held
            if held is None or (self._count > 0 and not force):
                return None
            self._held = None
            return held

    def _open_failed(self, exc: Exception) -> ResourceOpenError:
        return ResourceOpenError(
            f"opening {self._name} failed ({type(exc).__name__}: {exc}); it stays "
            f"closed and the next enter tries again"
        )

    def _not_async(self, what: str, coro: Coroutine[Any, Any, Any]) -> AsyncProviderError:
        coro.close()  # never awaited: close it so Python does not warn
        return AsyncProviderError(
            f"{what} of {self._name} returned a coroutine but is not a coroutine function, "
            f"so it was taken for sync code and cannot be awaited; pass the `async def` "
            f"itself (e.g. `async def {what}(...): ...`) rather than a lambda returning one"
        )

    def _reentered(self) -> CircularDependencyError:
        doing = "opening" if self._busy == "open" else "closing"
        return CircularDependencyError(
            f"{self._name} re-entered itself while {doing}: its {self._busy} (or code it "
            f"calls) entered or closed {self._name} again, which would wait for ever for "
            f"that {self._busy} to finish; pass the resource to that code instead"
        )

    def _cannot_wait(self) -> AsyncProviderError:
        return AsyncProviderError(
            f"{self._name} is being opened or closed by another task of this thread, or "
            f"one is waiting to, and sync code here cannot wait behind it without blocking "
            f"that task's event loop; use `async with` / `await rc.aclose()` in async code"
        )

    def _require_sync(self, use_instead: str) -> None:
        if not self._sync:
            raise AsyncProviderError(
                f"{self._name} has an async open or close, so it cannot be used from "
                f"sync code; use {use_instead}"
            )

    # -- sync ---------------------------------------------------------------

    def _open_sync(self) -> T:
        self._busy = "open"
        try:
            resource = self._open()
        except CircularDependencyError:
            raise
        except Exception as exc:
            raise self._open_failed(exc) from exc
        if inspect.iscoroutine(resource):
            raise self._not_async("open", resource)
        return resource  # type: ignore[no-any-return]

    def _close_sync(self, resource: T) -> None:
        self._busy = "close"
        result = self._close(resource)
        if inspect.iscoroutine(result):
            raise self._not_async("close", result)

    def _acquire_sync(self) -> None:
        lock = self._transition
        # Sync code inside a task may be running that task's own open or
        # close (an `async with` of a sync RefCounted), so both owners count.
        in_task = current_async_library(failsafe=True) is not None
        if lock.green_owned() or (in_task and lock.async_owned()) or on_behalf_of.get() is self:
            raise self._reentered()
        # A task of this thread queued for the lock would get it before us
        # and could never run to release it while we block the thread.
        # aiologic does not see that for a task it has just handed the lock
        # to (it is still "releasing" then). Only this thread adds or removes
        # its own entries, so reading without the state lock is safe.
        if threading.get_ident() in self._waiting:
            raise self._cannot_wait()
        try:
            lock.green_acquire()
        except RuntimeError:
            # aiologic refuses to block this thread: the lock belongs to
            # another task of it (awaiting inside its open or close).
            raise self._cannot_wait() from None

    def _enter_sync(self, counted: bool = True) -> T:
        held = self._join(counted)
        if held is not None:
            return held[0]
        self._acquire_sync()
        try:
            # Another thread may have opened it while we waited for the lock.
            held = self._join(counted)
            if held is not None:
                return held[0]
            resource = self._open_sync()
            self._publish(resource, counted)
            return resource
        finally:
            self._transition.green_release()

    def _close_now_sync(self, force: bool) -> None:
        self._acquire_sync()
        try:
            held = self._detach(force)
            if held is not None:
                self._close_sync(held[0])
        finally:
            self._transition.green_release()

    def __enter__(self) -> T:
        self._require_sync("`async with` instead of `with`")
        return self._enter_sync()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._require_sync("`async with` instead of `with`")
        if self._release():
            self._close_now_sync(force=False)

    def close(self, force: bool = False) -> None:
        """Close the resource now, or at the last exit if references are held.

        With ``force=True`` it closes at once even while held: the holders
        keep their (now closed) resource and their exits only count down; a
        later enter opens a fresh resource. Closing a closed resource does
        nothing.
        """
        self._require_sync("`await rc.aclose()` instead of `rc.close()`")
        if not self._should_defer(force):
            self._close_now_sync(force)

    # -- async --------------------------------------------------------------

    async def _acquire_async(self) -> None:
        lock = self._transition
        # A thread's own sync transition can only be running code here if it
        # started an event loop inside its open or close: a re-entry too.
        if lock.async_owned() or lock.green_owned() or on_behalf_of.get() is self:
            raise self._reentered()
        # A free lock is taken without a checkpoint, so a plain open or close
        # that returns no coroutine holds it without ever yielding (a sync
        # `with` of this thread cannot find it taken), and under trio a last
        # exit of a block that ends by cancellation still closes the resource
        # (an async close sees the cancellation at its own first checkpoint,
        # as under AsyncExitStack). Only an exit cancelled while another task
        # or thread holds the lock leaves it open, unreferenced.
        if await lock.async_acquire(blocking=False):
            return
        thread = threading.get_ident()
        with self._state:
            self._waiting.append(thread)
        try:
            await lock.async_acquire()
        finally:
            with self._state:
                self._waiting.remove(thread)

    async def _open_async(self) -> T:
        self._busy = "open"
        try:
            result = self._open()
            # A lambda returning a coroutine is not a coroutine function, but
            # here we can still await it; a resource that merely happens to be
            # awaitable is left alone.
            if self._open_awaits or inspect.iscoroutine(result):
                result = await result
        except CircularDependencyError:
            raise
        except Exception as exc:
            raise self._open_failed(exc) from exc
        return result  # type: ignore[no-any-return]

    async def _enter_async(self, counted: bool = True) -> T:
        held = self._join(counted)
        if held is not None:
            return held[0]
        # Cancellation anywhere below leaves the state untouched: it only
        # changes in _publish, after open has succeeded.
        await self._acquire_async()
        try:
            held = self._join(counted)
            if held is not None:
                return held[0]
            resource = await self._open_async()
            self._publish(resource, counted)
            return resource
        finally:
            self._transition.async_release()

    async def _close_now_async(self, force: bool) -> None:
        await self._acquire_async()
        try:
            held = self._detach(force)
            if held is not None:
                self._busy = "close"
                result = self._close(held[0])
                if self._close_awaits or inspect.iscoroutine(result):
                    await result
        finally:
            self._transition.async_release()

    async def __aenter__(self) -> T:
        return await self._enter_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The reference is dropped before waiting for the transition lock so
        # a cancelled exit cannot leak a reference; at worst the resource
        # stays open until the next exit or close().
        if self._release():
            await self._close_now_async(force=False)

    async def aclose(self, force: bool = False) -> None:
        """Async twin of `close`: close now, or at the last exit if held."""
        if not self._should_defer(force):
            await self._close_now_async(force)
