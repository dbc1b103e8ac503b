"""Scopes as stack checkpoints.

A `Checkpoint` is one entered scope level. It *is* a dict: the scoped
instances and context values it owns, keyed like the registry, so a cached
lookup is one C-level ``dict`` subscript with no Python frame. A miss goes to
``__missing__``, which runs the key's compiled plan; the plan walks up the
``_parent`` pointers to the checkpoint that owns the key's level, so a child
reaches what its parents hold without copying anything.

The checkpoint also keeps its exit list (see `di.teardown`) and a refcount:
the ``with`` block that entered it is one holder, ``hold()`` and ``spawn()``
add more, and teardown runs once, when the last holder leaves.

Which checkpoint is current is kept per container in a storage: a
`ContextVar` (the default: per task, inherited by child tasks) or
thread-local storage.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiologic

from di.errors import AsyncProviderError, CheckpointClosedError, ScopeError
from di.levels import DEFAULT_ORDER, Scope
from di.teardown import aunwind, needs_async, unwind

if TYPE_CHECKING:
    from typing_extensions import TypeForm

    from di.container import Container

__all__ = [
    "DEFAULT_ORDER",
    "Checkpoint",
    "ContextVarStorage",
    "Scope",
    "ThreadLocalStorage",
]

T = TypeVar("T")
log = logging.getLogger("di")


# -- storages -----------------------------------------------------------------


class ContextVarStorage:
    """Keeps the current checkpoint in a `ContextVar`: each asyncio/trio task
    has its own, and a task started inside a scope sees that scope."""

    __slots__ = ("get", "reset", "set")

    def __init__(self, name: str = "di.current") -> None:
        var: contextvars.ContextVar[Checkpoint | None] = contextvars.ContextVar(name, default=None)
        # Bound C methods: the scope enter/exit path calls them directly.
        self.get = var.get
        self.set = var.set
        self.reset = var.reset


class ThreadLocalStorage(threading.local):
    """Keeps the current checkpoint per thread (not per task): for
    thread-pool servers that run no event loop."""

    current: Checkpoint | None = None

    def get(self, default: Checkpoint | None = None) -> Checkpoint | None:
        cur = self.current
        return default if cur is None else cur

    def set(self, value: Checkpoint | None) -> Any:
        old = self.current
        self.current = value
        return (old,)

    def reset(self, token: Any) -> None:
        self.current = token[0]


def make_storage(kind: str | ContextVarStorage | ThreadLocalStorage) -> Any:
    if isinstance(kind, (ContextVarStorage, ThreadLocalStorage)):
        return kind
    if kind == "contextvar":
        return ContextVarStorage()
    if kind == "thread":
        return ThreadLocalStorage()
    raise ValueError(f"unknown scope storage {kind!r}; use 'contextvar' or 'thread'")


# -- the checkpoint -----------------------------------------------------------

# Keys a checkpoint keeps in its own dict besides instances: a private object
# cannot collide with any registry key.
_HOLD: Final = object()  # the hold lock, or _CLOSING once teardown is claimed
_CLOSING: Final = object()


class Checkpoint(dict[Any, Any]):
    """One entered scope level: what it holds, its parent, its teardowns.

    Made by ``container.scope(level, context=...)`` and entered with ``with``
    or ``async with``::

        with container.scope("request", context={Request: req}) as scope:
            handler = scope.resolve(Handler)

    ``resolve(T)`` returns the instance of ``T`` for this checkpoint (cached
    scoped instances are served by a plain dict lookup); ``aresolve(T)`` is
    the async twin. ``hold()`` and ``spawn(coro)`` keep the checkpoint alive
    for work that outlives the block that entered it.
    """

    __slots__ = (
        "_async",
        "_container",
        "_exits",
        "_holders",
        "_level",
        "_parent",
        "_plans",
        "_refs",
        "_shared",
        "_token",
    )

    _container: Container
    _exits: list[Any] | None
    _holders: dict[object, str] | None
    _level: int
    _parent: Checkpoint | None
    _plans: dict[Any, Any]
    _refs: int
    _shared: bool
    _async: bool
    _token: Any

    if TYPE_CHECKING:

        def resolve(self, key: TypeForm[T], /) -> T:
            """Resolve ``key`` in this checkpoint."""
            ...

    else:
        # A hit is one C-level dict lookup; a miss calls __missing__.
        resolve = dict.__getitem__

    # Identity semantics: two checkpoints are never "equal" because their
    # contents are.
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __missing__(self, key: Any) -> Any:
        try:
            plan = self._plans[key]
        except KeyError:
            plan = self._container._plan(key)
        return plan(self)

    async def aresolve(self, key: TypeForm[T], /) -> T:
        """Resolve ``key`` in this checkpoint, running async providers."""
        value = dict.get(self, key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        return await self._container._aplan(key)(self)  # type: ignore[no-any-return]

    # -- identity and state
    @property
    def level(self) -> str:
        """The level's name, e.g. ``"request"``."""
        return self._container._levels[int(self._level)]

    @property
    def parent(self) -> Checkpoint | None:
        """The enclosing checkpoint (None for the container's root)."""
        return self._parent

    @property
    def closed(self) -> bool:
        """True once teardown has run (or started)."""
        return self._exits is None

    @property
    def holds(self) -> int:
        """How many ``hold()``/``spawn()`` holders keep it alive now."""
        return max(self._refs - (0 if self._token is _EXITED else 1), 0) if self._shared else 0

    def __repr__(self) -> str:
        state = "closed" if self._exits is None else "open"
        return f"<di.Checkpoint {self.level!r} {state} at {id(self):#x}>"

    # -- entering and leaving
    def __enter__(self) -> Checkpoint:
        container = self._container
        parent = container._storage.get(None)
        if parent is None:
            parent = container._root
        if self._token is not None or self._exits is None:
            raise ScopeError(f"{self!r} was already entered; make a new one with container.scope()")
        if parent._level >= self._level:
            raise ScopeError(
                f"cannot enter scope {self.level!r} inside {parent.level!r}: levels must get "
                f"deeper ({' < '.join(container._levels)})"
            )
        self._parent = parent
        self._token = container._storage.set(self)
        container._live[self] = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._leave()
        if dict.setdefault(self, _HOLD, _CLOSING) is _CLOSING:
            # No holder ever joined: this block is the last one out.
            return self._teardown(exc)
        return self._release(exc)

    async def __aenter__(self) -> Checkpoint:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._leave()
        if dict.setdefault(self, _HOLD, _CLOSING) is _CLOSING:
            return await self._ateardown(exc)
        return await self._arelease(exc)

    def _leave(self) -> None:
        storage = self._container._storage
        if storage.get(None) is not self:
            current = storage.get(None)
            raise ScopeError(
                f"checkpoints exited out of order: exiting {self!r} while {current!r} is "
                f"current in this task or thread; exit the innermost scope first"
            )
        storage.reset(self._token)
        self._token = _EXITED

    # -- holders
    def hold(self) -> Hold:
        """Keep this checkpoint open while the returned block runs.

        Works with ``with`` (threads) and ``async with`` (tasks). Inside the
        block the checkpoint is current, so ``container.resolve`` and
        ``di.inject`` see it. Teardown runs when the last holder leaves: the
        block that entered the scope, or the last hold, whichever ends later.

        >>> # with container.scope("request") as scope:
        >>> #     threading.Thread(target=work, args=(scope,)).start()
        >>> # def work(scope):
        >>> #     with scope.hold():
        >>> #         scope.resolve(Session)   # still the request's session
        """
        return Hold(self)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start an asyncio task that runs in this checkpoint and holds it
        until the task ends (returns, raises or is cancelled).

        >>> # async with container.scope("request") as scope:
        >>> #     scope.spawn(send_receipt())   # may run after the response
        """
        if not isinstance(self._container._storage, ContextVarStorage):
            coro.close()
            raise ScopeError(
                "spawn() needs the contextvar scope storage (the task must see its checkpoint); "
                "this container uses thread-local storage"
            )
        loop = asyncio.get_running_loop()
        who = f"task spawned to run {getattr(coro, '__qualname__', coro)!r}"
        try:
            self._acquire(coro, who)
        except BaseException:
            coro.close()
            raise
        context = contextvars.copy_context()
        context.run(self._container._storage.set, self)
        released = False

        async def run() -> T:
            nonlocal released
            try:
                result = await coro
            except BaseException as exc:
                released = True
                await self._arelease(exc, coro)
                raise
            released = True
            await self._arelease(None, coro)
            return result

        def done(task: asyncio.Task[T]) -> None:
            # A task cancelled before its first step never enters run()'s body.
            if not released:
                coro.close()
                _background.add(cleanup := loop.create_task(self._arelease(None, coro)))
                cleanup.add_done_callback(_background.discard)

        task = context.run(loop.create_task, run())
        task.add_done_callback(done)
        return task

    def _lock(self) -> Any:
        lock = dict.get(self, _HOLD)
        if lock is None:
            lock = dict.setdefault(self, _HOLD, aiologic.Lock())
        if lock is _CLOSING:
            raise CheckpointClosedError(
                f"{self!r} has been torn down and cannot be held; hold it while its block is "
                f"still running (e.g. call hold()/spawn() inside the `with` block)"
            )
        return lock

    def _acquire(self, holder: object, who: str) -> None:
        with self._lock():
            self._add_ref(holder, who)

    async def _aacquire(self, holder: object, who: str) -> None:
        async with self._lock():
            self._add_ref(holder, who)

    def _add_ref(self, holder: object, who: str) -> None:
        if self._refs <= 0 or self._exits is None:
            raise CheckpointClosedError(f"{self!r} has been torn down and cannot be held")
        self._refs += 1
        self._shared = True
        if self._holders is None:
            self._holders = {}
        self._holders[holder] = who

    def _drop_ref(self, holder: object | None) -> bool:
        if holder is not None and self._holders is not None:
            self._holders.pop(holder, None)
        self._refs -= 1
        return self._refs == 0

    def _release(self, exc: BaseException | None, holder: object | None = None) -> bool:
        lock = dict.get(self, _HOLD)
        if lock is None or lock is _CLOSING:  # torn down already (forced at shutdown)
            return False
        with lock:
            last = self._drop_ref(holder)
        return self._teardown(exc) if last else False

    async def _arelease(self, exc: BaseException | None, holder: object | None = None) -> bool:
        lock = dict.get(self, _HOLD)
        if lock is None or lock is _CLOSING:  # torn down already (forced at shutdown)
            return False
        async with lock:
            last = self._drop_ref(holder)
        return await self._ateardown(exc) if last else False

    def describe_holders(self) -> str:
        """Who holds this checkpoint now, for logs and shutdown warnings."""
        holders = list((self._holders or {}).values())
        if self._token is not _EXITED and self._token is not None:
            holders.insert(0, "the block that entered it")
        return ", ".join(holders) or "nobody"

    # -- teardown
    def _teardown(self, exc: BaseException | None) -> bool:
        exits = self._exits
        if exits is None:
            return False
        if self._async and needs_async(exits):
            self._container._orphan(self)
            raise AsyncProviderError(
                f"{self!r} holds async teardown (async generator or async context manager "
                f"providers) but was released from sync code; leave it with `async with`. It "
                f"will be torn down when the container closes"
            )
        self._exits = None
        self._refs = 0
        try:
            return unwind(exits, exc)
        finally:
            self._closed()

    async def _ateardown(self, exc: BaseException | None) -> bool:
        exits = self._exits
        if exits is None:
            return False
        self._exits = None
        self._refs = 0
        try:
            if self._async:
                return await aunwind(exits, exc)
            return unwind(exits, exc)
        finally:
            self._closed()

    def _closed(self) -> None:
        # Drop the instances (nothing may be served from a torn-down
        # checkpoint) but keep the claim, so later holds see it is closed.
        dict.clear(self)
        dict.__setitem__(self, _HOLD, _CLOSING)
        self._holders = None
        self._container._forget(self)


class Hold:
    """The context manager `Checkpoint.hold()` returns."""

    __slots__ = ("_cp", "_token")

    def __init__(self, checkpoint: Checkpoint) -> None:
        self._cp = checkpoint

    def __enter__(self) -> Checkpoint:
        cp = self._cp
        cp._acquire(self, _who())
        self._token = cp._container._storage.set(cp)
        return cp

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        cp = self._cp
        cp._container._storage.reset(self._token)
        return cp._release(exc, self)

    async def __aenter__(self) -> Checkpoint:
        cp = self._cp
        await cp._aacquire(self, _who())
        self._token = cp._container._storage.set(cp)
        return cp

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        cp = self._cp
        cp._container._storage.reset(self._token)
        return await cp._arelease(exc, self)


def _who() -> str:
    try:
        task = aiologic.lowlevel.current_async_task()
    except Exception:  # no event loop here: a plain thread
        return f"hold() in thread {threading.current_thread().name!r}"
    name = getattr(task, "get_name", None)
    return f"hold() in task {name() if name else getattr(task, 'name', task)!r}"


class Root(Checkpoint):
    """The container's own checkpoint (the first level): its dict is the
    singleton cache, so ``container.resolve`` of a created singleton is one
    C-level dict lookup."""

    __slots__ = ()

    def __missing__(self, key: Any) -> Any:
        try:
            plan = self._plans[key]
        except KeyError:
            plan = self._container._plan(key)
        # None: "resolve in whatever checkpoint is current" (singletons ignore it)
        return plan(None)

    async def aresolve(self, key: TypeForm[T], /) -> T:
        value = dict.get(self, key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        return await self._container._aplan(key)(None)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<di.Checkpoint {self.level!r} (container root) at {id(self):#x}>"


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MISSING: Final = _Sentinel("<missing>")
# Strong references to release tasks started from done-callbacks, so the
# event loop cannot drop them before they run.
_background: set[asyncio.Task[Any]] = set()
_EXITED: Final = _Sentinel("<exited>")


def new_checkpoint(container: Container, level: int, cls: type[Checkpoint] = Checkpoint) -> Any:
    cp = cls()
    cp._container = container
    cp._plans = container._plans
    cp._level = level
    cp._parent = None
    cp._exits = []
    cp._refs = 1
    cp._shared = False
    cp._async = False
    cp._token = None
    cp._holders = None
    return cp
