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
import weakref
from collections.abc import Coroutine
from types import AsyncGeneratorType, GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiologic

from di.errors import AsyncProviderError, CheckpointClosedError, ScopeError, describe_key
from di.levels import DEFAULT_ORDER, Scope
from di.teardown import (
    adidnt_stop,
    aunwind,
    aunwind_raised,
    didnt_stop,
    needs_async,
    unwind,
    unwind_raised,
)

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
    has its own, and a task started inside a scope sees that scope.

    The container uses ``var`` itself: ``var.get(...)`` on a ContextVar is a
    C method CPython specialises at the call site, where a bound method
    kept in an attribute is not (measured: about 20 ns per call, four calls
    per scope)."""

    __slots__ = ("__weakref__", "var")

    def __init__(self, name: str = "di.current") -> None:
        self.var: contextvars.ContextVar[Checkpoint | None] = contextvars.ContextVar(
            name, default=None
        )


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


# What a container keeps: both have get(default), set(value) -> token, reset(token).
Storage = contextvars.ContextVar["Checkpoint | None"] | ThreadLocalStorage


# Storage instances handed to a container. One shared by two containers would
# make each see the other's checkpoints as current (and nest into them); the
# hot paths trust the storage, so sharing is refused once, here.
# Both weak: a storage is free again once its container is gone.
_claimed: weakref.WeakKeyDictionary[
    ContextVarStorage | ThreadLocalStorage, weakref.ref[Container]
] = weakref.WeakKeyDictionary()


def make_storage(kind: str | ContextVarStorage | ThreadLocalStorage, owner: Container) -> Storage:
    if isinstance(kind, (ContextVarStorage, ThreadLocalStorage)):
        holder = _claimed.get(kind)
        if holder is not None and holder() is not None:
            raise ValueError(
                f"{kind!r} already serves another container; give each container its own "
                f"storage (a new ContextVarStorage() / ThreadLocalStorage(), or the names "
                f"'contextvar' / 'thread')"
            )
        _claimed[kind] = weakref.ref(owner)
        return kind.var if isinstance(kind, ContextVarStorage) else kind
    if kind == "contextvar":
        return ContextVarStorage().var
    if kind == "thread":
        return ThreadLocalStorage()
    raise ValueError(f"unknown scope storage {kind!r}; use 'contextvar' or 'thread'")


# -- the checkpoint -----------------------------------------------------------

# The key under which a checkpoint keeps its hold state in its own dict (a
# private object cannot collide with a registry key). Its value is a
# `_Holds` once anybody holds the checkpoint, or _CLOSING once the last holder
# has claimed teardown. One atomic ``dict.setdefault`` decides between the two
# (see __exit__), so the common case -- nobody ever holds it -- takes no lock.
_HOLD: Final = object()
_CLOSING: Final = object()


class _Holds:
    """Hold bookkeeping, made by the first ``hold()``/``spawn()``."""

    __slots__ = ("block", "holders", "lock", "registered")

    def __init__(self) -> None:
        # It guards a few lines of bookkeeping and is never held across an
        # await, so a plain lock serves threads and tasks alike; an aiologic
        # lock would be a trio checkpoint even when free, and a holder leaving
        # a cancelled scope would be cancelled there before it let go.
        self.lock = threading.Lock()
        self.block = True  # the block that entered the checkpoint is still inside
        self.holders: dict[object, str] = {}
        self.registered = False  # with the container (_live) and holding its parent

    def release(self, holder: object | None) -> bool:
        """Drop one holder (None: the block); True if it was the last."""
        if holder is None:
            self.block = False
        else:
            self.holders.pop(holder, None)
        return not self.block and not self.holders


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

    # Only what every checkpoint needs is a slot, set once at creation:
    # a request scope pays for each store.
    __slots__ = ("__weakref__", "_async", "_container", "_exits", "_level", "_parent", "_token")

    _container: Container
    _exits: list[Any] | None
    _level: int
    _parent: Checkpoint | None
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
    # contents are. (These wrap the C slots directly: no Python call.)
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __bool__(self) -> bool:
        # A checkpoint is a scope, not a collection: `if container.current_scope:`
        # must not read "no scope" while the scope holds nothing yet.
        return True

    def __missing__(self, key: Any) -> Any:
        if self._exits is None:  # not entered yet, or torn down: owns nothing
            raise self._unusable(key)
        try:
            plan = self._container._plans[key]
        except KeyError:
            plan = None  # compiled below, outside the handler: an error there chains nothing
        if plan is None:
            plan = self._container._plan(key)
        return plan(self)

    async def aresolve(self, key: TypeForm[T], /) -> T:
        """Resolve ``key`` in this checkpoint, running async providers:
        ``await scope.aresolve(T)``."""
        # An `async def`: the plan is looked up when the coroutine runs, not
        # when it is made, so a task made before a close or an override and
        # run after it gets the current plan. (A hit is then one frame.)
        try:
            value = _dget(self, key, _MISSING)
        except TypeError:  # unhashable: said with the key (zero cost unless raised)
            value = _MISSING
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        if self._exits is None:
            raise self._unusable(key)
        container = self._container
        try:
            plan = container._aplans[key]
        except (KeyError, TypeError):
            plan = None  # compiled below, outside the handler: an error there chains nothing
        if plan is None:
            plan = container._aplan(key)
        return await plan(self)  # type: ignore[no-any-return]

    # -- identity and state
    @property
    def level(self) -> str:
        """The level's name, e.g. ``"request"``."""
        return self._container._levels[int(self._level)]

    @property
    def parent(self) -> Checkpoint | None:
        """The enclosing checkpoint (None for the root or before entering)."""
        return getattr(self, "_parent", None)

    @property
    def closed(self) -> bool:
        """True once teardown has run (or started)."""
        return self._exits is None and self._token is not None

    def _unusable(self, key: Any = None) -> ScopeError:
        """Why nothing can be resolved or held here: never entered, or torn down."""
        what = f"resolve {describe_key(key)}" if key is not None else "use it"
        if self._token is None:
            return ScopeError(
                f"cannot {what} in {self!r}: it has not been entered; enter it first "
                f"(`with container.scope(...) as scope:` or `async with`)"
            )
        return CheckpointClosedError(
            f"cannot {what} in {self!r}: it has been torn down; use hold() or spawn() "
            f"to keep a checkpoint alive for work that outlives its block"
        )

    @property
    def holds(self) -> int:
        """How many ``hold()``/``spawn()`` holders keep it alive now."""
        state = dict.get(self, _HOLD)
        if not isinstance(state, _Holds):
            return 0
        # A held child holding its parent is bookkeeping, not a user's hold.
        return sum(1 for h in list(state.holders) if not isinstance(h, Checkpoint))

    def _held(self) -> bool:
        """Whether anybody (the entering block included) still holds it."""
        if self._exits is None:
            return False
        state = dict.get(self, _HOLD)
        if isinstance(state, _Holds):
            return state.block or bool(state.holders)
        return not self._ended()

    def _ended(self) -> bool:
        """Whether the block that entered it has ended (here or elsewhere)."""
        token = self._token
        return token is _EXITED or type(token) is _Elsewhere

    def _lingers(self) -> bool:
        """Open although the block that entered it has ended."""
        return self._ended() and self._exits is not None

    def describe_holders(self) -> str:
        """Who holds this checkpoint now, for logs and shutdown warnings."""
        state = dict.get(self, _HOLD)
        who = list(state.holders.values()) if isinstance(state, _Holds) else []
        if not self._ended() and self._token is not None:
            who.insert(0, "the block that entered it")
        return ", ".join(who) or "nobody"

    def __repr__(self) -> str:
        state = "open" if self._exits is not None else "closed" if self._token else "new"
        return f"<di.Checkpoint {self.level!r} {state} at {id(self):#x}>"

    # -- entering and leaving
    def __enter__(self) -> Checkpoint:
        container = self._container
        storage = container._storage
        parent = storage.get(None)
        if parent is None:
            parent = container._root
        if parent._level >= self._level or self._token is not None:
            raise self._cannot_enter(parent)
        self._parent = parent
        self._exits = []
        self._token = storage.set(self)
        return self

    def _cannot_enter(self, parent: Checkpoint) -> ScopeError:
        if self._token is not None:
            return ScopeError(
                f"{self!r} was already entered; make a new one with container.scope()"
            )
        return ScopeError(
            f"cannot enter scope {self.level!r} inside {parent.level!r}: levels must get "
            f"deeper ({' < '.join(self._container._levels)})"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        storage = self._container._storage
        if storage.get(None) is not self:
            return self._exit_elsewhere(exc)
        try:
            storage.reset(self._token)
        except (ValueError, TypeError):
            if type(self._token) is _Elsewhere:
                self._exited_elsewhere(storage)
                return None
            # current here only because this task inherited it
            return self._exit_elsewhere(exc, inherited=True)
        self._token = _EXITED
        if _setdefault(self, _HOLD, _CLOSING) is not _CLOSING:
            return self._release(exc, None)  # somebody holds it: maybe not last
        exits = self._exits
        if self._async or exits is None:
            return self._teardown(exc)  # the rare cases, with their errors
        # The common case, inline: nobody else holds it, sync teardown, and
        # (when the block raised nothing) generator providers, finished right
        # here as `unwind` would, without its frame and its general loop.
        self._exits = None
        # Emptied before its exits run: an instance already torn down must not
        # be served by a hit meanwhile (a later finalizer, another thread).
        # The claim goes too; a late hold() finds _exits None and refuses.
        _clear(self)
        try:
            if exits and exc is None:
                try:
                    while exits:
                        gen = exits.pop()
                        if type(gen) is not GeneratorType:
                            exits.append(gen)  # for unwind, below
                            break
                        for _ in gen:
                            didnt_stop(gen)
                except BaseException as new:
                    exc = new
                if exc is not None:  # go on outside the handler: no implicit chaining
                    try:
                        return unwind_raised(exits, exc)
                    finally:
                        exc = None  # no cycle through this frame (teardown._reraise)
            return unwind(exits, exc) if exits else False
        finally:
            # _closed() without its _live pop: a checkpoint nobody held was
            # never registered.
            if self._container._waiters:
                self._container._compiler.forget(self)

    async def __aenter__(self) -> Checkpoint:
        # __enter__'s body again: a call from here would cost a frame.
        container = self._container
        storage = container._storage
        parent = storage.get(None)
        if parent is None:
            parent = container._root
        if parent._level >= self._level or self._token is not None:
            raise self._cannot_enter(parent)
        self._parent = parent
        self._exits = []
        self._token = storage.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        storage = self._container._storage
        if storage.get(None) is not self:
            return await self._aexit_elsewhere(exc)
        try:
            storage.reset(self._token)
        except (ValueError, TypeError):
            if type(self._token) is _Elsewhere:
                self._exited_elsewhere(storage)
                return None
            return await self._aexit_elsewhere(exc, inherited=True)
        self._token = _EXITED
        if _setdefault(self, _HOLD, _CLOSING) is not _CLOSING:
            return await self._arelease(exc, None)
        exits = self._exits
        if exits is None:
            return False
        self._exits = None
        _clear(self)  # as in __exit__
        try:
            # As in __exit__: generators and async generators finished inline.
            if exits and exc is None:
                try:
                    while exits:
                        entry = exits.pop()
                        kind = type(entry)
                        if kind is AsyncGeneratorType:
                            async for _ in entry:
                                await adidnt_stop(entry)
                        elif kind is GeneratorType:
                            for _ in entry:
                                didnt_stop(entry)
                        else:
                            exits.append(entry)  # for aunwind, below
                            break
                except BaseException as new:
                    exc = new
                if exc is not None:
                    try:
                        return await aunwind_raised(exits, exc)
                    finally:
                        exc = None  # as in __exit__
            return await aunwind(exits, exc) if exits else False
        finally:
            if self._container._waiters:
                self._container._compiler.forget(self)

    def _out_of_order(self) -> ScopeError:
        current = self._container._storage.get(None)
        return ScopeError(
            f"checkpoints exited out of order: exiting {self!r} while {current!r} is "
            f"current in this task or thread; exit the innermost scope first"
        )

    # Leaving a checkpoint that is not current here. If it is further up this
    # task's (thread's) chain, scopes are being left out of order: refuse, and
    # keep the stack intact so they can still be left innermost first. If it
    # is not in the chain at all, this task or thread never entered it (the
    # block began in another): its block ends all the same, so it is released
    # or torn down as usual -- nothing is left open -- and then refused, since
    # the task that entered it still has it current. A task that inherited
    # the checkpoint with its context (asyncio.create_task copies it) sees it
    # current but holds no token for it: the same foreign exit, and this
    # task's own copy of the storage goes back to the parent.
    def _foreign_exit(self, inherited: bool) -> ScopeError:
        storage = self._container._storage
        current = storage.get(None)
        if inherited:
            parent = self._parent
            storage.set(None if parent is self._container._root else parent)
        else:
            cp = current
            while cp is not None:
                if cp is self:
                    raise self._out_of_order()
                cp = cp._parent
        # The entering task (thread) still has it current: keep its token, so
        # that its own exit can put its storage back (see _exited_elsewhere).
        if type(self._token) is not _Elsewhere:  # a second foreign exit keeps the first's
            self._token = _Elsewhere(self._token)
        here = "it inherited it" if inherited else f"here {current!r} is current"
        return ScopeError(
            f"{self!r} was exited in a task or thread that did not enter it ({here}); its "
            f"teardown has run. Enter and leave a scope in the same task or thread, and "
            f"share it with hold() or spawn()"
        )

    def _exited_elsewhere(self, storage: Storage) -> None:
        # The entering block ends after another task or thread already exited
        # the checkpoint (and was refused): its teardown or release has run;
        # only this task's storage still points here.
        token = self._token
        assert type(token) is _Elsewhere
        try:
            storage.reset(token.token)
        except ValueError:
            # Not the entering task either: another one that inherited it,
            # exiting it after a first foreign exit. Put its storage back.
            parent = self._parent
            storage.set(None if parent is self._container._root else parent)
            raise ScopeError(
                f"{self!r} was already exited elsewhere, and this task did not enter it "
                f"(it inherited it); leave a scope only in the task or thread that entered it"
            ) from None
        self._token = _EXITED

    def _not_open(self, inherited: bool) -> ScopeError:
        """An exit of a checkpoint never entered, or already left: nothing
        to release or tear down, and nothing changes (but a task that
        inherited it current goes back to its parent)."""
        if inherited:
            parent = self._parent
            self._container._storage.set(None if parent is self._container._root else parent)
        if self._token is None:
            return ScopeError(
                f"{self!r} was exited but has not been entered (nothing changed); use it as "
                f"`with container.scope(...) as scope:`"
            )
        return ScopeError(
            f"{self!r} was already exited: a scope is left once, by the block that entered it"
        )

    def _exit_elsewhere(self, exc: BaseException | None, inherited: bool = False) -> bool | None:
        if self._token is None or self._token is _EXITED:
            raise self._not_open(inherited)
        error = self._foreign_exit(inherited)
        if _setdefault(self, _HOLD, _CLOSING) is not _CLOSING:
            self._release(exc, None)
        else:
            self._teardown(exc)
        raise error

    async def _aexit_elsewhere(
        self, exc: BaseException | None, inherited: bool = False
    ) -> bool | None:
        if self._token is None or self._token is _EXITED:
            raise self._not_open(inherited)
        error = self._foreign_exit(inherited)
        if _setdefault(self, _HOLD, _CLOSING) is not _CLOSING:
            await self._arelease(exc, None)
        else:
            await self._ateardown(exc)
        raise error

    # -- holders
    def hold(self) -> Hold:
        """Keep this checkpoint open while the returned block runs.

        Works with ``with`` (threads) and ``async with`` (tasks). Inside the
        block the checkpoint is current, so ``container.resolve`` and
        ``di.inject`` see it. Teardown runs when the last holder leaves: the
        block that entered the scope, or the last hold, whichever ends later.

        A thread must take its hold before the block can end (or it finds
        the checkpoint torn down: `CheckpointClosedError`), and leave it in
        that same thread:

        >>> # with container.scope("request") as scope:
        >>> #     held = threading.Event()
        >>> #     threading.Thread(target=work, args=(scope, held)).start()
        >>> #     held.wait()                  # the block ends only once it is held
        >>> # def work(scope, held):
        >>> #     with scope.hold():
        >>> #         held.set()
        >>> #         scope.resolve(Session)   # still the request's session
        """
        return Hold(self)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start an asyncio task that runs in this checkpoint and holds it
        until the task ends (returns, raises or is cancelled).

        The task is one more holder, like ``async with scope.hold()``: when it
        is the last one, its exception goes into the teardown, and a teardown
        that suppresses it (a generator provider that swallows it) makes the
        task return None.

        >>> # async with container.scope("request") as scope:
        >>> #     scope.spawn(send_receipt())   # may run after the response
        """
        if not asyncio.iscoroutine(coro):
            raise TypeError(
                f"spawn() takes a coroutine, not {coro!r}; call the async function: "
                f"scope.spawn(work(...))"
            )
        if not isinstance(self._container._storage, contextvars.ContextVar):
            coro.close()
            raise ScopeError(
                "spawn() needs the contextvar scope storage (the task must see its checkpoint); "
                "this container uses thread-local storage"
            )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio, or no event loop at all
            coro.close()
            raise ScopeError(
                "spawn() starts an asyncio task, and no asyncio event loop is running here; "
                "under trio or anyio, hold the checkpoint from a nursery task instead: "
                "`async with scope.hold(): ...`"
            ) from None
        who = f"task spawned to run {getattr(coro, '__qualname__', coro)!r}"
        # A key of its own: the coroutine could be passed twice (the second
        # task fails at once, and must not release the first one's hold).
        key = object()
        try:
            self._acquire(key, who)
        except BaseException:
            coro.close()
            raise
        context = contextvars.copy_context()
        context.run(self._container._storage.set, self)
        released = False

        async def run() -> T | None:
            nonlocal released
            try:
                result = await coro
            except BaseException as exc:
                released = True
                if await self._arelease(exc, key):
                    return None  # the teardown suppressed it, as for `async with hold()`
                raise
            released = True
            await self._arelease(None, key)
            return result

        def done(task: asyncio.Task[T | None]) -> None:
            # A task cancelled before its first step never enters run()'s body.
            if not released:
                coro.close()
                # Its cancellation goes into the teardown, as for any last holder.
                exc = asyncio.CancelledError() if task.cancelled() else None
                _background.add(cleanup := loop.create_task(self._arelease(exc, key)))
                cleanup.add_done_callback(_background.discard)

        task = context.run(loop.create_task, run())
        task.add_done_callback(done)
        return task  # type: ignore[return-value]  # None only when suppressed (docstring)

    def _state(self) -> _Holds:
        state = dict.get(self, _HOLD)
        if state is None and self._exits is not None:
            new = _Holds()
            state = dict.setdefault(self, _HOLD, new)
            if state is new and self._exits is None:
                # Torn down between the check and the install (the teardown
                # clears the dict, claim included): put the claim back.
                dict.__setitem__(self, _HOLD, _CLOSING)
                state = _CLOSING
        if not isinstance(state, _Holds) or self._exits is None:
            if self._token is None:
                raise self._unusable()
            raise CheckpointClosedError(
                f"{self!r} has been torn down and cannot be held; hold it while its block is "
                f"still running (e.g. call hold()/spawn() inside the `with` block)"
            )
        return state

    def _hold_parent(self) -> None:
        # A held checkpoint may outlive its block, and it resolves through its
        # parents: it holds its parent until it is torn down itself.
        parent = self._parent
        if parent is not None and not isinstance(parent, Root):
            parent._acquire(self, f"child {self!r}")

    def _parent_holds(self) -> Checkpoint | None:
        parent = getattr(self, "_parent", None)
        if parent is None or isinstance(parent, Root):
            return None
        state = dict.get(parent, _HOLD)
        return parent if isinstance(state, _Holds) and self in state.holders else None

    def _add(self, state: _Holds, holder: object, who: str) -> None:
        if not state.block and not state.holders:  # everyone left: teardown is due
            raise CheckpointClosedError(f"{self!r} has been torn down and cannot be held")
        if holder in state.holders:
            # One Hold entered twice would be released by its first exit while
            # the second block still runs in the checkpoint.
            raise ScopeError(
                f"this hold() of {self!r} is already entered; call scope.hold() once for "
                f"each block that holds the checkpoint"
            )
        state.holders[holder] = who

    def _acquire(self, holder: object, who: str) -> None:
        state = self._state()
        with state.lock:
            self._add(state, holder, who)  # refuses if its teardown is already due
            first, state.registered = not state.registered, True
        if first:
            self._register_held(holder)

    async def _aacquire(self, holder: object, who: str) -> None:
        self._acquire(holder, who)  # no await: a trio checkpoint here could be cancelled

    def _register_held(self, holder: object) -> None:
        # Only once a holder is in, so a hold that loses the race with the
        # block's exit leaves nothing behind. Now the checkpoint may outlive
        # its block: shutdown must be able to find it, and it resolves through
        # its parents, so it holds its parent until it is torn down.
        self._container._live[self] = None
        try:
            self._hold_parent()
        except BaseException:
            self._release(None, holder)
            raise

    def _release(self, exc: BaseException | None, holder: object | None) -> bool:
        state = dict.get(self, _HOLD)
        if not isinstance(state, _Holds):  # torn down already (forced at shutdown)
            return False
        with state.lock:
            last = state.release(holder)
        return self._teardown(exc) if last else False

    async def _arelease(self, exc: BaseException | None, holder: object | None) -> bool:
        state = dict.get(self, _HOLD)
        if not isinstance(state, _Holds):
            return False
        with state.lock:
            last = state.release(holder)
        return await self._ateardown(exc) if last else False

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
        self._empty()
        try:
            suppressed = unwind(exits, exc)
        except BaseException as error:
            # As from nested `with` blocks: what this teardown raised goes on
            # into the parent's teardown, which may suppress it.
            if self._closed_release_parent(error):
                return True
            raise
        # So does the holder's error, unless this teardown suppressed it.
        return self._closed_release_parent(None if suppressed else exc) or suppressed

    def _empty(self) -> None:
        # Before the exits run, as in __exit__: nothing torn down is served by
        # a hit meanwhile. A held one keeps the claim, so later holds see it
        # is closed (a hold() also finds _exits None and refuses).
        held = _HOLD in self
        _clear(self)
        if held:
            dict.__setitem__(self, _HOLD, _CLOSING)

    def _closed_release_parent(self, exc: BaseException | None) -> bool:
        self._closed()
        parent = self._parent_holds()
        return parent is not None and parent._release(exc, self)

    async def _ateardown(self, exc: BaseException | None) -> bool:
        exits = self._exits
        if exits is None:
            return False
        self._exits = None
        self._empty()
        try:
            suppressed = await aunwind(exits, exc) if self._async else unwind(exits, exc)
        except BaseException as error:
            if await self._aclosed_release_parent(error):
                return True
            raise
        return await self._aclosed_release_parent(None if suppressed else exc) or suppressed

    async def _aclosed_release_parent(self, exc: BaseException | None) -> bool:
        self._closed()
        parent = self._parent_holds()
        return parent is not None and await parent._arelease(exc, self)

    def _closed(self) -> None:
        # After the exits ran (emptied before them, in _empty): no longer
        # registered with the container; waiters left here find it closed.
        container = self._container
        container._live.pop(self, None)
        if container._waiters:
            container._compiler.forget(self)


class Hold:
    """The context manager `Checkpoint.hold()` returns."""

    __slots__ = ("_cp", "_owner", "_token")

    _token: Any  # the storage's token, or _ALREADY

    def __init__(self, checkpoint: Checkpoint) -> None:
        self._cp = checkpoint
        self._owner: object | None = None  # who entered it; None when not inside its block

    def _not_inside(self) -> ScopeError:
        return ScopeError(
            f"hold() of {self._cp!r} was exited without being entered, or exited twice "
            f"(nothing changed); use it as `with scope.hold():` / `async with scope.hold():`"
        )

    # Inside the block the checkpoint is current and its container counts as
    # entered here (for `inject` and `active_container()`), without taking a
    # reference on the container: the hold keeps the checkpoint, and so its
    # parents, alive, which is all a resolve needs.
    def _make_current(self, cp: Checkpoint) -> None:
        container = cp._container
        storage = container._storage
        # Already current here (a hold inside the block that entered it): a
        # second token would hide from the block's exit that the hold is still
        # inside, and this hold's exit, coming after the block's, would make
        # the torn-down checkpoint current again. Nothing set, nothing to undo.
        self._token = _ALREADY if storage.get(None) is cp else storage.set(cp)
        self._owner = _here()
        container._push_entered(self)

    def _restore(self, cp: Checkpoint) -> ScopeError | None:
        """Undo `_make_current`. Left in a task or thread that did not enter
        it: nothing of this hold's is current there; the error to raise once
        released. A scope entered inside the hold and still current is an
        exit out of order: refused, nothing changed."""
        container = cp._container
        owner, self._owner = self._owner, None
        if owner != _here():
            return self._left_elsewhere(cp)
        storage = container._storage
        current = storage.get(None)
        node = current
        while node is not None and node is not cp:
            node = node._parent
        if node is cp and current is not cp:
            self._owner = owner
            raise ScopeError(
                f"hold() of {cp!r} left while {current!r}, entered inside it, is still "
                f"current; exit the inner scope first"
            )
        if not container._pop_entered(self):  # the same thread, another context
            return self._left_elsewhere(cp)
        if self._token is not _ALREADY and current is cp:
            try:
                storage.reset(self._token)
            except ValueError:  # the same thread, another context (Context.run)
                return self._left_elsewhere(cp)
        return None

    @staticmethod
    def _left_elsewhere(cp: Checkpoint) -> ScopeError:
        return ScopeError(
            f"hold() of {cp!r} was left in a task or thread that did not enter it (e.g. an "
            f"abandoned async generator finalized by the event loop); it has been released. "
            f"Leave a hold in the task or thread that entered it"
        )

    def __enter__(self) -> Checkpoint:
        cp = self._cp
        cp._acquire(self, _who())
        self._make_current(cp)
        return cp

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._owner is None:
            raise self._not_inside()
        cp = self._cp
        error = self._restore(cp)
        suppressed = cp._release(exc, self)
        if error is not None:
            raise error
        return suppressed

    async def __aenter__(self) -> Checkpoint:
        cp = self._cp
        await cp._aacquire(self, _who())
        self._make_current(cp)
        return cp

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._owner is None:
            raise self._not_inside()
        cp = self._cp
        error = self._restore(cp)
        suppressed = await cp._arelease(exc, self)
        if error is not None:
            raise error
        return suppressed


def _here() -> object:
    """The task (asyncio, trio) or else the thread running here."""
    try:
        task = aiologic.lowlevel.current_async_task()
    except Exception:  # no event loop here: a plain thread
        task = None
    return threading.get_ident() if task is None else task


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

    # Its aresolve is Checkpoint's: a plan given the root resolves in
    # whatever checkpoint is current (singletons ignore it).
    __slots__ = ()

    def __repr__(self) -> str:
        return f"<di.Checkpoint {self.level!r} (container root) at {id(self):#x}>"

    def _specialise(self) -> None:
        """Give this root a type of its own whose ``__missing__`` closes over
        the plans and the root itself.

        ``container.resolve`` of anything not cached at the root (a transient,
        a scoped key resolved from the container) misses the dict, and C then
        calls ``__missing__``: a plain method is bound on every miss and reads
        the plans through two attributes; this one is called as it is (a
        staticmethod), about 4% of a top-level transient graph. A type costs
        about 7 us, so it is made when the container first generates code
        (an exec costs more), not at build: a cold start that resolves once
        never pays for it. The layout is the same (no new slots), so the
        instance's class can be swapped in place.
        """
        if type(self) is not Root:
            return
        container = self._container
        plans = container._plans
        plan_for = container._plan
        root = self

        def __missing__(key: Any) -> Any:
            try:
                plan = plans[key]
            except KeyError:
                plan = None  # compiled below, outside the handler: its error chains nothing
            if plan is None:
                plan = plan_for(key)
            return plan(root)

        self.__class__ = type(
            "Root",
            (Root,),
            {"__slots__": (), "__module__": __name__, "__missing__": staticmethod(__missing__)},
        )


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MISSING: Final = _Sentinel("<missing>")
_setdefault = dict.setdefault
_clear = dict.clear
_dget = dict.get
_EXITED: Final = _Sentinel("<exited>")
_ALREADY: Final = _Sentinel("<already current>")  # a Hold's token when it set nothing


class _Elsewhere:
    """A checkpoint's token once another task or thread exited it: the
    entering one's own token, kept for that block's exit."""

    __slots__ = ("token",)

    def __init__(self, token: Any) -> None:
        self.token = token


# Strong references to release tasks started from done-callbacks, so the
# event loop cannot drop them before they run.
_background: set[asyncio.Task[Any]] = set()


def new_checkpoint(container: Container, level: int, cls: type[Checkpoint] = Checkpoint) -> Any:
    cp = cls()
    cp._container = container
    cp._level = level
    cp._parent = None
    cp._exits = []
    cp._async = False
    cp._token = None
    return cp
