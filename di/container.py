"""Container: validate and compile a registry, resolve, override, lifecycle.

The container's root checkpoint is the singleton cache. ``container.resolve``
*is* that dict's ``__getitem__``: a created singleton comes back from one
C-level lookup with no Python frame; anything else misses into the compiled
plan for its key, which resolves in the checkpoint current in this task or
thread.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import numbers
import sys
import threading
import time
import typing
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiologic
import aiologic.lowlevel

from di.client import ClientContext
from di.compiler import SUPPLIED, Compiler
from di.errors import (
    AsyncProviderError,
    GraphError,
    ProviderNotFoundError,
    ScopeError,
    describe_key,
)
from di.graph import Graph, dependents, in_force
from di.lifecycle import RefCounted
from di.registry import (
    Kind,
    Provider,
    Registry,
    default_registry,
    key_problem,
    make_provider,
    normalize_key,
    shown_key,
)
from di.scopes import Checkpoint, ContextVarStorage, Root, Storage, ThreadLocalStorage, make_storage
from di.scopes import new_checkpoint as _new_checkpoint
from di.teardown import AsyncExit, aunwind, needs_async, unwind

if TYPE_CHECKING:
    from typing_extensions import TypeForm

__all__ = ["Container", "active_container"]

T = TypeVar("T")
log = logging.getLogger("di")

# The containers entered in this task or thread, innermost first, as a
# linked tuple (container, rest, the checkpoint current at that enter, the
# hold() that made the entry or None for a `with container` block):
# `di.inject` resolves from the head.
_entered: contextvars.ContextVar[tuple[Container, Any, Any, Any] | None] = contextvars.ContextVar(
    "di.entered", default=None
)


def active_container() -> Container | None:
    """The container entered (``with``/``async with``) in this task or thread,
    the one `di.inject` resolves from; None if there is none, or if the block
    this task inherited the container from (a task created inside it) has
    ended and the container has closed since."""
    head = _entered.get()
    if head is None or (head[3] is None and not head[0]._open):
        return None
    return head[0]


# How often a close looks again for holders, and an exit for the close it
# found under way (only while one is).
_POLL: Final = 0.005

# What a singleton provider may return for the container to enter and release.
_LIFECYCLES: Final = (RefCounted, ClientContext)


class Container:
    """Validates a registry, compiles it, and resolves from it.

    >>> import di
    >>> registry = di.Registry()
    >>> @registry.provider(singleton=True)
    ... def settings() -> dict[str, str]:
    ...     return {"env": "prod"}
    >>> container = di.Container(registry)
    >>> container.resolve(dict[str, str])
    {'env': 'prod'}

    ``storage`` is ``"contextvar"`` (current scope per task, the default) or
    ``"thread"`` (per thread), or a `ContextVarStorage` / `ThreadLocalStorage`
    instance, which serves one container at a time: it is free again once that
    container is garbage-collected (a container refers to itself through its
    root, so that takes a collection pass). ``shutdown_timeout`` is how long
    closing waits for held checkpoints before tearing them down anyway.
    ``sync=True`` promises sync-only use: validation then rejects every async
    provider.
    """

    # Slots: the scope and resolve paths read _storage, _root, _plans and
    # _waiters on every request, and a slot read stays specialised whichever
    # container it comes from (a dict-backed attribute deoptimises when two
    # containers take turns at one call site). ``__dict__`` holds the
    # per-instance ``resolve`` and ``aresolve``.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_aplans",
        "_baked",
        "_base",
        "_broken",
        "_closes",
        "_closing",
        "_compiler",
        "_count_lock",
        "_dropped",
        "_drops",
        "_generation",
        "_graph",
        "_level_index",
        "_levels",
        "_lifecycle_lock",
        "_live",
        "_made",
        "_open",
        "_override_lock",
        "_overrides",
        "_plans",
        "_refs",
        "_registry",
        "_root",
        "_scoped",
        "_storage",
        "_sync",
        "_sync_unwind",
        "_teardown",
        "_unwinding",
        "_waiters",
        "shutdown_timeout",
    )

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        storage: str | ContextVarStorage | ThreadLocalStorage = "contextvar",
        shutdown_timeout: float = 5.0,
        sync: bool = False,
    ) -> None:
        registry = default_registry if registry is None else registry
        if not isinstance(registry, Registry):
            shown = (
                f"the class {registry.__qualname__} (did you mean {registry.__qualname__}()?)"
                if isinstance(registry, type)
                else f"a {type(registry).__qualname__}"
            )
            raise TypeError(f"Container() takes a di.Registry, got {shown}")
        given: object = shutdown_timeout  # (typeshed does not make float a numbers.Real)
        if isinstance(given, bool) or not isinstance(given, numbers.Real):
            raise TypeError(
                f"shutdown_timeout= is the seconds a close waits for holders: a number >= 0, "
                f"got a {type(given).__qualname__}"
            )
        if not shutdown_timeout >= 0:  # NaN too
            raise ValueError(
                f"shutdown_timeout= is the seconds a close waits for holders: a number >= 0, "
                f"got {shutdown_timeout!r}"
            )
        try:
            shutdown_timeout = float(shutdown_timeout)
        except OverflowError:
            raise ValueError(
                "shutdown_timeout= is the seconds a close waits for holders: got a number "
                "too large for a float"
            ) from None
        self._registry = registry
        self._levels: tuple[str, ...] = registry.levels
        # The levels a scope can have: all but the container's own (level 0).
        self._level_index = {name: i for i, name in enumerate(self._levels) if i}
        self._base: dict[Any, Provider] = dict(registry._providers)
        self._overrides: list[_Override] = []
        # Guards the override bookkeeping, and every store that must agree
        # with it (a cached singleton or plan, the close's reset): plain
        # dict work, never held across an await, so a threading lock serves
        # threads and tasks alike.
        # Reentrant: values dropped under it may run finalizers that resolve
        # (and so compile and store a plan) in this very thread.
        self._override_lock = threading.RLock()
        self._sync = sync
        self._graph = Graph(self._base, self._levels, sync=sync)  # read only: no copy
        self.shutdown_timeout = shutdown_timeout
        self._storage: Storage = make_storage(storage, self)
        self._plans: dict[Any, Any] = {}
        self._aplans: dict[Any, Any] = {}
        # Checkpoints that may outlive their block (held, or left waiting for
        # async teardown): what shutdown waits for and tears down. A scope that
        # nobody holds is torn down by its own block and never registered.
        self._live: dict[Checkpoint, None] = {}
        self._root: Root = _new_checkpoint(self, 0, Root)
        self._compiler = Compiler(self)
        # The compiler's waiter lists, read by every scope exit: empty unless
        # some scoped creation was ever contended.
        self._waiters = self._compiler.waiters
        self._refs = 0
        self._closes = 0  # how many times it closed: overrides check it
        # How many times a close dropped the singletons (before tearing them
        # down, where `_closes` counts only once they are): the first-use
        # interpreter's twin of a plan's `_stale`.
        self._drops = 0
        # Bumped whenever plans and cached singletons are dropped (close,
        # override): what was made or compiled under an older one is not kept.
        self._generation = 0
        # Under the override lock: key -> every singleton kept since the last
        # close, oldest first, with the graph it was built in: the cache holds,
        # for each key, the newest one whose providers (its key's and those of
        # every key below it, in that graph) are all in force (_rebuild).
        self._made: dict[Any, list[tuple[Graph, Any]]] = {}
        # key -> the generation whose override last changed what it is built
        # on: a singleton in creation across that change may have read either
        # side, so it is never kept (Compiler._keep); an unrelated override is
        # no reason to make a singleton twice.
        self._dropped: dict[Any, int] = {}
        # The compiled functions that pass on a baked-in singleton behind
        # `_stale` (Compiler._emit_creation), held weakly: one still running
        # is alive (its frame holds it) when a close sets their `_stale`.
        self._baked: weakref.WeakSet[Any] = weakref.WeakSet()
        # The compiled scoped plans (``.key``: what they store), held weakly:
        # an override sets `_gone` in those a swap affects, so that a creation
        # under way does not store what the override replaced.
        self._scoped: weakref.WeakSet[Any] = weakref.WeakSet()
        # Set while the overrides in force make an invalid graph (one ended
        # out of order): every miss raises it (_invalid).
        self._broken: GraphError | None = None
        self._count_lock = threading.Lock()
        self._open = False
        # Serialises closes (a close holds it from its decision to its end).
        self._lifecycle_lock = aiologic.Lock()
        # Under the count lock: a close has found the container unreferenced
        # and will look again before it tears down (an exit that drops the
        # last reference meanwhile leaves the closing to it), and, while a
        # close tears down, the event it sets when done (enters wait for it).
        self._closing = False
        self._teardown: aiologic.Event | None = None
        # Under the override lock: a sync close is unwinding the root, which
        # refuses exits it could not run (Compiler._keep).
        self._sync_unwind = False
        # Under the override lock: a close is unwinding the root (from its
        # first pass to the reset); new singletons are not cached meanwhile.
        self._unwinding = False
        self._fill_values()
        # The hot path: C-level dict lookups, no Python frame for a cache hit.
        self.__dict__["resolve"] = self._root.__getitem__
        self.__dict__["aresolve"] = self._root.aresolve

    # -- resolving --------------------------------------------------------------
    def resolve(self, key: TypeForm[T], /) -> T:
        """Return the instance for ``key`` in the current checkpoint (the
        app root when no scope is entered). Singletons are created once."""
        return self._root[key]  # type: ignore[no-any-return]  # replaced per instance

    async def aresolve(self, key: TypeForm[T], /) -> T:
        """Async twin of `resolve` (``await container.aresolve(T)``): runs
        async providers."""
        return await self._root.aresolve(key)  # replaced per instance

    def _plan(self, key: Any) -> Any:
        plan = self._plans.get(key)
        return plan if plan is not None else self._new_plan(key, self._plans, self._compiler.plan)

    def _aplan(self, key: Any) -> Any:
        try:
            plan = self._aplans.get(key)
        except TypeError:  # unhashable: _known says so
            plan = None
        return plan if plan is not None else self._new_plan(key, self._aplans, self._compiler.aplan)

    def _new_plan(self, key: Any, plans: dict[Any, Any], compile: Any) -> Any:
        # A key asked in another spelling (`Annotated[T, "doc"]` for T) is
        # found under its normal form: compiled once, not on every miss.
        # (Kept only under that form: a first-use plan replaces itself.)
        known = self._known(key)
        # Compiled against one graph: an override cannot swap it midway (the
        # lock is reentrant; compiling runs no user code). Looked up again
        # under it: another thread may have compiled it meanwhile.
        with self._override_lock:
            plan = plans.get(known)
            if plan is None:
                if (broken := self._broken) is not None:  # read under the lock
                    raise self._invalid("an override ended out of order", broken)
                plan = plans[known] = compile(known)
        return plan

    def _known(self, key: Any) -> Any:
        try:
            if key in self._graph.providers:
                return key
        except TypeError:  # unhashable (aresolve and override come here): maybe its
            pass  # Annotated metadata only, which the normal form drops
        normal = normalize_key(key)
        try:
            if normal in self._graph.providers:
                return normal
        except TypeError:
            raise TypeError(
                f"cannot resolve the key {shown_key(key)}: it {key_problem(normal)}"
            ) from None
        problem = key_problem(normal)  # (Annotated metadata is no part of the key)
        if problem is None:
            raise ProviderNotFoundError(key)
        if isinstance(key, str) and any(
            getattr(k, "__qualname__", None) == key for k in self._graph.providers
        ):
            problem += f" (here: resolve({key}), the class, not its name)"
        elif problem.startswith("is an instance of"):
            name = type(key).__qualname__
            problem = f"is an instance of {name}, not a type: pass the class, resolve({name})"
        raise ProviderNotFoundError(key, why=f"cannot resolve {shown_key(key)}: the key {problem}")

    def _fill_values(self) -> None:
        # While broken, the graph kept is only a record: it may hold an ended override.
        if self._broken is not None:
            return
        providers = self._graph.providers
        for key in self._graph.values:
            dict.__setitem__(self._root, key, providers[key].factory)

    # -- scopes -----------------------------------------------------------------
    def scope(self, level: str, context: Mapping[Any, Any] | None = None) -> Checkpoint:
        """A new checkpoint of ``level``, to enter with ``with`` / ``async with``.

        ``context`` supplies the values declared with
        ``registry.context(Key, scope=level)``.
        """
        try:
            index = self._level_index[level]  # a subscript: cheaper than .get()
        except (KeyError, TypeError):
            if level == self._levels[0]:
                raise ScopeError(
                    f"{level!r} is the container itself, the outermost of "
                    f"{' < '.join(self._levels)}; enter the container (`with container:`) "
                    f"instead"
                ) from None
            raise ScopeError(
                f"unknown scope {level!r}; levels are {' < '.join(self._levels)}"
            ) from None
        # new_checkpoint() inlined: this runs once per request
        cp = Checkpoint()
        cp._container = self
        cp._level = index
        cp._exits = None  # a list once entered: nothing is resolved before
        cp._async = False
        cp._token = None
        if context is not None:  # (None, the common case: one test)
            if type(context) is not dict and not isinstance(context, Mapping):
                raise TypeError(
                    f"context= takes a mapping of context keys to values, e.g. "
                    f"context={{Request: request}}; got a {type(context).__qualname__}"
                )
            self._check_context(context, level, index)
            # An overridden context key keeps its override (a test swaps the
            # request while the app under test still passes the real one).
            # (Kept aside, not dropped: it serves once the override ends.)
            skip = {e.key for e in self._overrides} if self._overrides else ()
            for key, value in context.items():
                key = normalize_key(key)
                dict.__setitem__(cp, (SUPPLIED, key) if key in skip else key, value)
        return cp

    def _check_context(self, context: Mapping[Any, Any], level: str, index: int) -> None:
        for key in context:
            # The registry's declarations, not the current graph: an override
            # may have replaced the key with a plain value.
            provider = self._base.get(normalize_key(key))
            if provider is None or provider.kind is not Kind.CONTEXT:
                raise ScopeError(
                    f"{describe_key(key)} is not declared as a context value; declare it with "
                    f"registry.context({describe_key(key)}, scope={level!r})"
                )
            if provider.scope != level:
                raise ScopeError(
                    f"{describe_key(key)} is a context value of scope {provider.scope!r}, not "
                    f"{level!r}; pass it to container.scope({provider.scope!r}, context=...)"
                )

    @property
    def current_scope(self) -> Checkpoint | None:
        """The checkpoint current in this task or thread (None at the root)."""
        cp: Checkpoint | None = self._storage.get(None)
        return cp

    def lingering_checkpoints(self, level: str | None = None) -> int:
        """Checkpoints (of ``level``, or all) whose block has ended but that
        are not torn down yet: kept open by ``hold()``/``spawn()``, or waiting
        for an async teardown that a sync exit could not run.

        A scope nobody holds is torn down by its own block and never counts."""
        live = [cp for cp in list(self._live) if cp._lingers()]
        if level is None:
            return len(live)
        return sum(1 for cp in live if cp.level == level)

    def held_checkpoints(self, level: str | None = None) -> int:
        """Active ``hold()`` / ``spawn()`` holds (on ``level``, or all)."""
        return sum(cp.holds for cp in list(self._live) if level is None or cp.level == level)

    def _orphan(self, cp: Checkpoint) -> None:
        # Nobody holds it any more; the container's (async) close tears it down.
        self._live[cp] = None
        log.warning("%r needs async teardown; it will run when the container closes", cp)

    # -- singletons that are lifecycles -----------------------------------------
    def _enter_lifecycle(self, value: Any, exits: list[Any]) -> Any:
        if isinstance(value, ClientContext):
            raise AsyncProviderError(
                f"{type(value).__name__} can only be entered with `async with`; resolve "
                f"it with `await container.aresolve(...)`"
            )
        if isinstance(value, RefCounted):
            if value.is_async:
                raise AsyncProviderError(
                    f"a singleton provider returned {value!r}, whose open or close is async, "
                    f"so it cannot be entered from sync code; resolve it (or what needs it) "
                    f"with `await container.aresolve(...)`"
                )
            value.__enter__()
            exits.append(value.__exit__)
        return value

    async def _aenter_lifecycle(self, value: Any, exits: list[Any]) -> Any:
        if isinstance(value, RefCounted) and not value.is_async:
            # Entered without blocking the loop (another thread may be opening
            # it, and that open may need this loop), and left synchronously,
            # so a sync close of the container can release it.
            await value.__aenter__()
            exits.append(value.__exit__)
        elif isinstance(value, _LIFECYCLES):
            await value.__aenter__()
            exits.append(AsyncExit(value.__aexit__))
        return value

    # -- overrides ----------------------------------------------------------------
    def override(self, key: Any, value_or_factory: Any) -> _Overriding:
        """Swap the provider of ``key`` inside the block; restore it on exit.

        A class (``FakeRepo``, or a parameterised one, ``FakeRepo[int]``) or a
        function (a ``def``, lambda or bound method) is used as a transient
        factory (autowired from its hints); anything else, a callable instance
        or a ``partial`` included, is served as the value. Checked when the
        block is entered. Nestable; what tests use::

            with container.override(Mailer, FakeMailer()):
                ...

        It also decorates a function (plain or async): the override is in
        force during each call.
        """
        return _Overriding(self, key, value_or_factory)

    def _begin_override(self, key: Any, value_or_factory: Any) -> _Override:
        key = self._known(key)
        if (
            isinstance(value_or_factory, type)
            or isinstance(typing.get_origin(value_or_factory), type)  # Repo[int]
            or (callable(value_or_factory) and hasattr(value_or_factory, "__code__"))
        ):
            provider = make_provider(value_or_factory, provides=key)
        else:
            provider = Provider(key, value_or_factory, Kind.VALUE, self._levels[0], (), "override")
        entry = _Override(key, provider)
        with self._override_lock:
            self._overrides.append(entry)
            try:
                self._rebuild(key)
            except BaseException:
                self._overrides.pop()
                raise
        return entry

    def _end_override(self, entry: _Override) -> None:
        with self._override_lock:
            was = self._broken
            dropped = self._remove_override(entry)
            broken = self._broken if was is None else None
        del dropped  # freed outside the lock: finalizers may resolve
        if broken is not None:  # this end made it invalid (a later one, in order, did not)
            raise self._invalid(
                f"the override of {describe_key(entry.key)} ended out of order", broken
            )

    def _invalid(self, how: str, broken: GraphError) -> GraphError:
        """What a miss raises while the overrides in force make an invalid
        graph (one ended out of order): ``broken``, read once by the caller
        (another thread's override may repair the graph meanwhile)."""
        return GraphError(
            [
                f"{how}: the overrides still in force make an invalid graph without it; "
                f"nothing can be resolved until they end too. End overrides innermost first",
                *broken.problems,
            ]
        )

    def _remove_override(self, entry: _Override) -> list[Any]:
        # By identity: list.remove() compares with ==, and two overriding
        # values may be equal (or compare into an array).
        index = next(i for i, e in enumerate(self._overrides) if e is entry)
        del self._overrides[index]
        self._rebuild(entry.key, ending=True)
        # What was built on this override's provider can never be in force
        # again (a new override makes a new provider): forgotten (its
        # teardown stays registered). The caller frees it outside the lock.
        dropped: list[Any] = []
        for key, made in self._made.items():
            kept = [
                (graph, value)
                for graph, value in made
                if not any(p is entry.provider for _, p in graph.built_on(key))
            ]
            if len(kept) < len(made):
                dropped.append(made[:])
                made[:] = kept
        return dropped

    def _rebuild(self, key: Any, ending: bool = False) -> None:
        """Recompile for the current overrides, and cache, for each key the
        swap of ``key``'s provider may affect, the newest singleton made since
        the last close that was built entirely on providers in force now (one
        set aside by an override comes back when it ends, in whatever order
        overrides end; one built under an override serves only while it and
        every other provider it was built on are in force)."""
        providers = dict(self._base)
        for entry in self._overrides:
            providers[entry.key] = entry.provider
        try:
            graph: Graph | None = Graph(providers, self._levels, sync=self._sync)
        except GraphError as error:
            if not ending:
                raise  # the override is refused: its caller takes it out again
            # An override ended out of order, and the ones still in force make
            # an invalid graph without it. It has ended all the same: nothing
            # of it is served, and every miss raises this until the overrides
            # make a valid graph again (the graph kept is only a record).
            graph, self._broken = None, error
        else:
            self._broken = None
        # Only these can change: a singleton whose value is valid before or
        # after the swap has `key` below it in that graph.
        affected = {key} | dependents(providers, key) | self._graph.dependents(key)
        if graph is not None:
            self._graph = graph
        self._plans.clear()
        self._aplans.clear()
        # Last: a plan that reads the new generation has read the new graph.
        # (The singletons it drops stay open: a call already running that
        # baked one in may still pass it on.)
        self._generation += 1
        for compiled in list(self._scoped):
            if compiled.key in affected:
                compiled.__globals__["_gone"] = True
        root, made = self._root, self._made
        for k in affected:
            self._dropped[k] = self._generation
            dict.pop(root, k, None)
            if graph is None:
                continue
            for built, value in reversed(made.get(k, ())):
                if in_force(built.built_on(k), providers):
                    dict.__setitem__(root, k, value)
                    break
        self._fill_values()  # (not while broken: see there)

    # -- lifecycle ----------------------------------------------------------------
    @property
    def ref_count(self) -> int:
        """How many ``with``/``async with`` blocks hold the container now."""
        return self._refs

    @property
    def is_open(self) -> bool:
        """True from the first enter until the container closes."""
        return self._open

    def _push_entered(self, holder: object = None) -> None:
        # Also what Checkpoint.hold() does (``holder``: the Hold), so `inject`
        # finds the container in a thread or task that holds a checkpoint
        # without entering it.
        _entered.set((self, _entered.get(), self._storage.get(None), holder))

    # The lifecycle lock serialises closes; a close holds it from its decision
    # to its end. Enters do not take it: they count under the plain count lock
    # and wait only while a close is tearing down (``_teardown``, an event set
    # when it is done), so a holder that enters the container while a close
    # waits for it gets in, and the close, finding the reference when it is
    # done waiting, defers to that block's last exit. Exits drop their
    # reference first, under the count lock (a cancelled async exit cannot
    # keep its reference; RefCounted does the same), then take the lifecycle
    # lock to close; an exit finding it taken by a close that has committed
    # (``_closing``: it counts the references again before tearing down)
    # leaves the closing to it, and never waits for a close that may be
    # waiting for this very exit's holder.

    def _count_in(self) -> aiologic.Event | None:
        """Take a reference; or, while a close tears down, the event it sets
        when done (nothing is taken then: wait for it and try again)."""
        with self._count_lock:
            done = self._teardown
            if done is None:
                self._refs += 1
                self._open = True
            return done

    def _release(self) -> int | None:
        """Drop a reference. When it was the last and no committed close will
        count again, the close count now (to close unless a close came
        first); else None."""
        with self._count_lock:
            if self._refs <= 0:
                raise RuntimeError(
                    "container exit without a matching enter (ref_count is already 0); each "
                    "exit must pair with one `with container` / `async with container`"
                )
            self._refs -= 1
            return self._closes if self._refs == 0 and not self._closing else None

    def _busy(self, what: str) -> ScopeError:
        """Why ``what`` cannot wait for the close that holds the lifecycle
        lock: aiologic refuses with a bare RuntimeError."""
        lock = self._lifecycle_lock
        if lock.green_owned():
            closer = "thread"
        elif (
            aiologic.lowlevel.current_async_library(failsafe=True) is not None
            and lock.async_owned()
        ):
            closer = "task"
        else:
            # A thread cannot block on a lock that a task of its own event
            # loop holds: that task could never run to release it. The only
            # such holder is an async close.
            return ScopeError(
                f"{what} cannot wait here: an async close of this container (aclose(), or "
                f"the last `async with container` exit) is in progress in this thread's "
                f"event loop, and waiting for it would block that loop for ever; use the "
                f"async form (`async with container`, `await container.aclose()`) in async code"
            )
        # This very thread or task holds it: a teardown that the container's
        # own close is running wants the container again.
        return ScopeError(
            f"{what} was called from a teardown that this container's own close is running "
            f"(in this same {closer}): the container is being closed, and it cannot be entered "
            f"or closed again from inside that close; resolve what the teardown needs before "
            f"the container closes, and do not enter or close the container in teardowns"
        )

    def _green_acquire(self, what: str) -> None:
        try:
            self._lifecycle_lock.green_acquire()
        except RuntimeError:
            raise self._busy(what) from None

    async def _async_acquire(self, what: str) -> None:
        lock = self._lifecycle_lock
        if lock.green_owned():  # this thread's sync close, in a loop its teardown runs
            raise self._busy(what)
        try:
            # A free lock first, without a checkpoint: under trio a cancelled
            # scope (`finally: await container.aclose()`) still closes, as the
            # last `async with` exit does.
            if not await lock.async_acquire(blocking=False):
                await lock.async_acquire()
        except RuntimeError:
            if lock.async_owned():
                raise self._busy(what) from None
            raise

    def __enter__(self) -> Container:
        while (done := self._count_in()) is not None:
            # A close is tearing down: wait for it, unless it is this thread's
            # own (or a task of this thread's event loop holds its lock).
            lock = self._lifecycle_lock
            try:
                if lock.green_acquire(blocking=False):  # it has just finished
                    lock.green_release()
                    continue
            except RuntimeError:
                raise self._busy("`with container`") from None
            done.wait()
        self._push_entered()
        return self

    async def __aenter__(self) -> Container:
        while (done := self._count_in()) is not None:
            lock = self._lifecycle_lock
            # This task's own close, or this thread's sync close running a
            # teardown that runs an event loop: either would wait for itself.
            if lock.async_owned() or lock.green_owned():
                raise self._busy("`async with container`")
            await done
        self._push_entered()
        return self

    def _refuse_last_exit_inside_a_scope(self) -> None:
        # The last exit closes the singletons. A scope of ours still current
        # here that was not current when this block entered was entered inside
        # the block and not left: exits out of order, refused as checkpoints
        # refuse them, with nothing released, so the scope can be left first.
        # (A scope current at the enter -- entered before the block, or
        # inherited by this task -- encloses the block: no error.)
        if self._refs == 1:
            current = self._storage.get(None)
            node = _entered.get()
            while node is not None and (node[0] is not self or node[3] is not None):
                node = node[1]
            at_enter = node[2] if node is not None else None
            if current is not None and current is not at_enter and current._exits is not None:
                raise ScopeError(
                    f"the container's last block is ending while {current!r} is still "
                    f"current in this task or thread; exit the scope first (scopes nest "
                    f"inside the container's block)"
                )

    def _refuse_close_inside_a_scope(self, what: str) -> None:
        # close() / aclose() has no block of its own, so any live checkpoint of
        # ours current here would see the singletons it resolves through close
        # under it (LIFO broken; a later resolve there would make them again).
        current = self._storage.get(None)
        if current is not None and current._exits is not None:
            raise ScopeError(
                f"{what} was called while {current!r} is current in this task or thread: "
                f"closing would tear the singletons down under it; leave the scope (or the "
                f"hold()) first, or pass force=True to tear it down before the singletons"
            )

    def _pop_entered(self, holder: object = None) -> bool:
        """Drop this container's innermost entry made by ``holder`` (None: a
        ``with container`` block) from this task's chain, wherever it sits:
        blocks and holds left out of order must not leave a closed container
        active here. The entries above it are rebuilt as they were. False if
        there is none here (another context made it)."""
        head = _entered.get()
        if head is not None and head[0] is self and head[3] is holder:
            _entered.set(head[1])
            return True
        inner: list[tuple[Container, Any, Any, Any]] = []
        node = head
        while node is not None and (node[0] is not self or node[3] is not holder):
            inner.append(node)
            node = node[1]
        if node is None:
            return False
        rest = node[1]
        for container, _, at_enter, by in reversed(inner):
            rest = (container, rest, at_enter, by)
        _entered.set(rest)
        return True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._refuse_last_exit_inside_a_scope()
        self._pop_entered()
        closes = self._release()
        if closes is None:
            return
        lock = self._lifecycle_lock
        try:
            while not lock.green_acquire(timeout=_POLL):
                # A close committed after our release, or one tearing down
                # (it empties the root whatever the count: a forced one may
                # be waiting for this very block's thread), or closed.
                if self._closing or self._teardown is not None or self._closes != closes:
                    return
        except RuntimeError:
            # A task of this thread's event loop holds the lock (or this
            # thread's own close, running a teardown that exits a block): the
            # only holder is a close in progress, and it leaves the container
            # closed, which is what this exit wanted. Waiting for it would
            # deadlock the loop.
            return
        try:
            if self._closes == closes:  # not closed meanwhile
                self._close_now()  # unless a block entered meanwhile
        finally:
            lock.green_release()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._refuse_last_exit_inside_a_scope()
        self._pop_entered()
        closes = self._release()
        if closes is None:
            return
        lock = self._lifecycle_lock
        # A free lock is taken without a checkpoint: under trio, a block that
        # ends by cancellation still closes the container (with nobody to
        # wait for, its async teardowns run in the cancelled scope and see the
        # cancellation, as under AsyncExitStack; a cancelled wait for holders
        # finishes shielded, see _aclose_interrupted). Only an exit cancelled
        # while another close holds the lock leaves the container open,
        # unreferenced, until the next exit or close().
        if not await lock.async_acquire(blocking=False):
            while not await lock.async_acquire(timeout=_POLL):
                if self._closing or self._teardown is not None or self._closes != closes:
                    return  # as in __exit__
        try:
            if self._closes == closes:
                await self._aclose_now()
        finally:
            lock.async_release()

    def close(self, force: bool = False) -> None:
        """Close every singleton (LIFO) now; while ``with`` blocks still hold
        the container, warn and defer to the last exit unless ``force``.

        Not held, but inside a live scope of this container: refused
        (`ScopeError`), as the scope would outlive the singletons it uses;
        ``force=True`` there tears this task's (thread's) own scopes down
        first, then the singletons."""
        if self._deferred(force):
            return
        if not force:
            self._refuse_close_inside_a_scope("close()")
        self._green_acquire("close()")
        try:
            self._close_now(force, asked=True)
        finally:
            self._lifecycle_lock.green_release()

    async def aclose(self, force: bool = False) -> None:
        """Async twin of `close`, for async teardowns."""
        if self._deferred(force):
            return
        if not force:
            self._refuse_close_inside_a_scope("aclose()")
        await self._async_acquire("aclose()")
        try:
            await self._aclose_now(force, asked=True)
        finally:
            self._lifecycle_lock.async_release()

    def _deferred(self, force: bool) -> bool:
        if self._refs > 0 and not force:
            self._warn_deferred()
            return True
        return False

    def _warn_deferred(self) -> None:
        log.warning(
            "close() asked while the container is held by %d block(s); it will close at "
            "the last exit (pass force=True to close now)",
            self._refs,
        )

    def _commit(self, force: bool, asked: bool) -> bool:
        """About to close (lifecycle lock held): False if a block holds the
        container and this close is not forced (its last exit closes); else
        mark the close committed, so that an exit dropping the last reference
        from now on leaves the closing to it."""
        with self._count_lock:
            deferred = bool(self._refs) and not force
            if not deferred:
                self._closing = True
        if deferred and asked:
            self._warn_deferred()
        return not deferred

    def _begin_teardown(self, force: bool, asked: bool) -> bool:
        """Done waiting for holders (lifecycle lock held): tear down now, or,
        if a block entered the container meanwhile and this close is not
        forced, leave it to that block's last exit (False)."""
        with self._count_lock:
            self._closing = False
            if self._refs and not force:
                deferred = True
            else:
                deferred = False
                self._teardown = aiologic.Event()  # enters wait for it from now on
        if deferred and asked:
            self._warn_deferred()
        return not deferred

    def _end_teardown(self) -> None:
        with self._count_lock:
            done, self._teardown = self._teardown, None
        if done is not None:
            done.set()

    def _stragglers(self) -> list[Checkpoint]:
        # Checkpoints current in *this* task are our own enclosing blocks:
        # waiting for them would wait forever.
        own: set[int] = set()
        cp = self._storage.get(None)
        while cp is not None:
            own.add(id(cp))
            cp = cp._parent
        return [cp for cp in list(self._live) if id(cp) not in own and cp._held()]

    def _own_scopes(self) -> list[Checkpoint]:
        """The live checkpoints of this task's (thread's) own chain, which a
        forced close cannot wait for: it tears them down before the
        singletons, with a warning."""
        own: list[Checkpoint] = []
        cp = self._storage.get(None)
        while cp is not None and cp is not self._root:
            if cp._exits is not None:
                own.append(cp)
            cp = cp._parent
        for cp in own:
            log.warning(
                "shutdown: close(force=True) was called inside %r (current in this task or "
                "thread); tearing it down before the singletons",
                cp,
            )
        return own

    def _log_wait(self, held: list[Checkpoint]) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "shutdown: waiting up to %.3gs (shutdown_timeout) for %d held checkpoint(s): %s",
                self.shutdown_timeout,
                len(held),
                ", ".join(f"{cp!r} held by {cp.describe_holders()}" for cp in held),
            )

    def _wait_for_holders(self, deadline: float) -> list[Checkpoint]:
        while True:
            left = self._stragglers()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(_POLL)

    def _warn_forced(self, cps: list[Checkpoint], interrupted: BaseException | None = None) -> None:
        for cp in cps:
            if interrupted is None:
                log.warning(
                    "shutdown: %r is still held by %s after %.3gs (shutdown_timeout); "
                    "tearing it down anyway",
                    cp,
                    cp.describe_holders(),
                    self.shutdown_timeout,
                )
            else:
                log.warning(
                    "shutdown: %r is still held by %s and the close waiting for it was "
                    "interrupted (%s); tearing it down anyway",
                    cp,
                    cp.describe_holders(),
                    type(interrupted).__name__,
                )

    def _to_tear_down(self, stuck: list[Checkpoint], own: list[Checkpoint]) -> list[Checkpoint]:
        """The stuck checkpoints, the caller's own ones (a forced close), and
        those nobody holds but that still wait for (async) teardown, deepest
        first: LIFO across levels."""
        unheld = [cp for cp in list(self._live) if cp._exits is not None and not cp._held()]
        doomed = dict.fromkeys(stuck + own + unheld)  # each once
        return sorted(doomed, key=lambda cp: -cp._level)

    def _close_now(self, force: bool = False, asked: bool = False) -> None:
        """Close, with the lifecycle lock held: wait for held checkpoints (a
        block may enter meanwhile: then, unless forced, nothing closes), tear
        the stuck and waiting ones down, then the singletons."""
        if not self._commit(force, asked):
            return
        try:
            own = self._own_scopes() if force else []
            stuck = self._stragglers()
            if stuck:
                self._log_wait(stuck)
                stuck = self._wait_for_holders(time.monotonic() + self.shutdown_timeout)
        except BaseException:
            with self._count_lock:
                self._closing = False
            raise
        if not self._begin_teardown(force, asked):
            return
        try:
            self._warn_forced(stuck)
            doomed = self._to_tear_down(stuck, own)
            root = self._root
            pending = [cp for cp in doomed if cp._exits and needs_async(cp._exits)]
            if pending or needs_async(root._exits or []):
                raise AsyncProviderError(
                    "the container holds async teardown (async generator or async context "
                    "manager providers); close it with `async with container` or `await "
                    "container.aclose()`"
                )
            failure: BaseException | None = None
            for cp in doomed:  # all of them, as ExitStack runs every exit
                try:
                    cp._teardown(None)
                except BaseException as exc:
                    _chain(exc, failure)  # every error stays visible, the latest raised
                    failure = exc
            failure = self._unwind_root(failure)
        finally:
            self._end_teardown()
        if failure is not None:
            raise failure

    def _unwind_root(self, failure: BaseException | None) -> BaseException | None:
        """Unwind the root's exits (singletons, LIFO) and empty the root.

        Unwound in place, as ExitStack pops its callbacks: a singleton that a
        teardown makes meanwhile hands its exits to this same list and is
        unwound next. The root is reset only once the list is empty, under the
        lock a singleton's hand-over takes; what arrived after the last pass
        gets another."""
        exits = self._root._exits
        if exits is None:  # never, for the root (it is entered from the start)
            exits = []
        # From here a singleton with async teardown made meanwhile (aresolve
        # in another thread's loop) is refused and unwound by its maker
        # (Compiler._keep), since this sync unwind could not run its exit;
        # one handed over since the check in _close_now is refused here.
        with self._override_lock:
            arrived = needs_async(exits)
            self._sync_unwind = not arrived
        if arrived:
            error = AsyncProviderError(
                "an async singleton was made while this sync close began; the singletons "
                "are left open: close the container with `await container.aclose()`"
            )
            _chain(error, failure)
            raise error
        self._drop_singletons()  # once: from here nothing new is cached
        reset = False
        try:
            while not reset:
                try:
                    unwind(exits, None)
                except BaseException as exc:
                    _chain(exc, failure)
                    failure = exc
                reset = self._reset_root(exits)
        finally:
            self._sync_unwind = False
            if not reset:
                self._reset_root()
        return failure

    async def _aunwind_root(self, failure: BaseException | None) -> BaseException | None:
        """Async twin of `_unwind_root`."""
        exits = self._root._exits
        if exits is None:  # never, for the root (it is entered from the start)
            exits = []
        self._drop_singletons()  # once: from here nothing new is cached
        reset = False
        try:
            while not reset:
                try:
                    await aunwind(exits, None)
                except BaseException as exc:
                    _chain(exc, failure)
                    failure = exc
                reset = self._reset_root(exits)
        finally:
            if not reset:
                self._reset_root()
        return failure

    async def _aclose_now(self, force: bool = False, asked: bool = False) -> None:
        if not self._commit(force, asked):
            return
        own = self._own_scopes() if force else []
        left = self._stragglers()
        if left:
            now = _clock()
            deadline = now() + self.shutdown_timeout
            self._log_wait(left)
            try:
                while (left := self._stragglers()) and now() < deadline:
                    await aiologic.lowlevel.async_sleep(_POLL)
            except BaseException as exc:
                # Cancelled (or interrupted) while waiting for holders: the wait
                # stays cancellable, but the close is not abandoned half-way
                # (unless a block entered meanwhile: then it is that block's).
                if self._begin_teardown(force, asked):
                    try:
                        await self._aclose_interrupted(exc, own)
                    finally:
                        self._end_teardown()
                raise
        if not self._begin_teardown(force, asked):
            return
        try:
            self._warn_forced(left)
            await self._afinish(left, own)
        finally:
            self._end_teardown()

    async def _aclose_interrupted(self, interrupted: BaseException, own: list[Checkpoint]) -> None:
        """Finish a close whose wait for holders was cancelled: tear down now
        what is still held (with the usual warning), then the singletons.

        Not cut short at its first await, so every checkpoint and singleton is
        torn down once: under trio in a shielded cancel scope
        (``aiologic.lowlevel.shield``); under asyncio in this same task, whose
        delivered cancellation does not recur (only a second ``cancel()``
        during the teardown would interrupt it). The teardowns do not see the
        cancellation: nothing is thrown into them (as in every close of the container, which never
        hands its block's exception to them) and their awaits are not
        cancelled. The cancellation was aimed at this exit's wait, not at the
        resources, some of which belong to other tasks' requests, and a
        generator provider whose cleanup follows its ``yield`` without
        ``finally`` would skip that cleanup if it were thrown in. The caller
        re-raises ``interrupted``; a teardown error cannot replace it, so it
        is logged instead.
        """
        stuck = self._stragglers()
        self._warn_forced(stuck, interrupted)
        closes = self._closes
        try:
            anyio = sys.modules.get("anyio")
            if anyio is not None:
                # anyio's cancel scopes deliver their cancellation again at
                # every await (asyncio backend too): shield with one of
                # theirs, which also stays in this task.
                with anyio.CancelScope(shield=True):
                    await self._afinish_logged(stuck, own)
            elif aiologic.lowlevel.current_async_library(failsafe=True) == "asyncio":
                # In this very task: teardowns may be bound to the task that
                # opened them (anyio cancel scopes, asyncio.timeout), and the
                # cancellation already delivered does not recur unless the
                # task is cancelled again. (asyncio's shield would run them in
                # a task of their own.)
                await self._afinish_logged(stuck, own)
            else:  # trio: a shielded cancel scope, in this task
                await aiologic.lowlevel.shield(self._afinish_logged(stuck, own))
        except BaseException as late:
            # A second cancellation that arrived meanwhile (asyncio's shield
            # re-raises it once the teardown is done): the first one is
            # enough. Anything else (KeyboardInterrupt, ...) propagates.
            if type(late) is not type(interrupted):
                raise
        finally:
            if self._closes == closes:  # the shielded teardown never got to run
                self._reset_root()

    async def _afinish_logged(self, stuck: list[Checkpoint], own: list[Checkpoint]) -> None:
        try:
            await self._afinish(stuck, own)
        except Exception:
            log.exception(
                "shutdown: a teardown failed while closing after an interrupted wait for "
                "holders; the interruption propagates instead"
            )

    async def _afinish(self, stuck: list[Checkpoint], own: list[Checkpoint]) -> None:
        """Tear down the stuck checkpoints, the caller's own (a forced close)
        and the unheld ones left waiting, then the root's exits (singletons,
        LIFO), and empty the root."""
        failure: BaseException | None = None
        for cp in self._to_tear_down(stuck, own):
            try:
                await cp._ateardown(None)
            except BaseException as exc:
                _chain(exc, failure)
                failure = exc
        failure = await self._aunwind_root(failure)
        if failure is not None:
            raise failure

    def _drop_singletons(self) -> None:
        """Before the root's exits run: a singleton torn down must not be
        served meanwhile, by a hit or by a plan that baked it in. One resolved
        during the close is made afresh (and closed by this close)."""
        with self._override_lock:
            # Freed outside the lock: finalizers may resolve. What overrides
            # set aside is being torn down too: none comes back.
            dropped = self._drop_cached()
            # Until the reset: one made meanwhile is closed by this close, and
            # so is not cached (Compiler._keep), or it would be served after.
            self._unwinding = True
        del dropped

    def _drop_cached(self) -> list[Any]:
        """Under the override lock: empty the singleton cache (and forget
        what overrides set aside) and the plans that may have baked its
        instances in; the caller frees what is returned outside the lock
        (finalizers may resolve)."""
        dropped = [dict(self._root), self._made]
        self._made = {}
        dict.clear(self._root)
        self._plans.clear()
        self._aplans.clear()
        # The singletons are about to be torn down: a call already running
        # that baked one in must not pass it on (it raises instead).
        for compiled in list(self._baked):
            compiled.__globals__["_stale"] = True
        self._baked.clear()
        self._drops += 1
        self._generation += 1
        return dropped

    def _reset_root(self, unwound: list[Any] | None = None) -> bool:
        """Empty the root: the container is closed. Given ``unwound`` (the
        root's exit list a close has just unwound), only if nothing was handed
        to it since: False then, to unwind again. The root then gets a fresh
        list, so a creation begun before the reset finds it swapped and
        unwinds what it made itself (``Compiler._keep`` / ``_late``)."""
        with self._override_lock:  # an override entering or ending sees all or nothing
            if unwound is not None:
                if unwound:
                    return False
                self._root._exits = []
            dropped = self._drop_cached()
            self._open = False
            self._closes += 1
            self._unwinding = False
            self._root._async = False
            self._fill_values()
        del dropped
        return True


class _Override:
    """One active ``override()``: the key and the provider swapped in."""

    __slots__ = ("key", "provider")

    def __init__(self, key: Any, provider: Provider) -> None:
        self.key = key
        self.provider = provider


_F = TypeVar("_F", bound=typing.Callable[..., Any])


def _clock() -> Any:
    """The running event loop's clock: the one its sleeps are measured by (a
    test's mock clock under trio or asyncio included)."""
    library = aiologic.lowlevel.current_async_library(failsafe=True)
    if library == "trio":
        return sys.modules["trio"].current_time
    if library == "asyncio":
        return sys.modules["asyncio"].get_running_loop().time
    return time.monotonic


class _Overriding:
    """What ``container.override()`` returns: one ``with`` block, entered once."""

    __slots__ = ("_container", "_entry", "_key", "_value")

    def __init__(self, container: Container, key: Any, value_or_factory: Any) -> None:
        self._container = container
        self._key = key
        self._value = value_or_factory
        self._entry: _Override | bool | None = None  # None: new; False: ended

    def __enter__(self) -> None:
        container = self._container
        with container._override_lock:  # claimed before it begins: one block only
            if self._entry is not None:
                raise RuntimeError(
                    f"this override of {describe_key(self._key)} was already entered; call "
                    f"container.override() again for another block"
                )
            self._entry = True
        try:
            self._entry = container._begin_override(self._key, self._value)
        except BaseException:
            self._entry = None  # refused: it may be entered again
            raise

    def __call__(self, fn: _F) -> _F:
        """As a decorator: the override is in force during each call (a fresh
        one per call, so calls may overlap), for a plain or an async function,
        as a ``@contextmanager`` object decorates."""
        container, key, value = self._container, self._key, self._value
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            # Its body runs after the call returns: the override would be over.
            raise TypeError(
                f"override() cannot decorate the generator function "
                f"{getattr(fn, '__qualname__', 'given')}: its body runs after the call, when "
                f"the override would be over; use `with container.override(...):` inside it"
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with container.override(key, value):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with container.override(key, value):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __exit__(self, *exc_info: object) -> None:
        with self._container._override_lock:  # taken once, as it was claimed
            entry = self._entry
            if type(entry) is _Override:
                self._entry = False
        if type(entry) is not _Override:
            raise RuntimeError(
                f"override of {describe_key(self._key)} exited without being entered; use it "
                f"as `with container.override(...):`"
            )
        self._container._end_override(entry)


def _chain(exc: BaseException, earlier: BaseException | None) -> None:
    """Make an earlier teardown error the context of a later one, as a
    later exit of an ExitStack would see it. Each checkpoint (and the root)
    is still torn down with no exception thrown in: one request's failed
    finalizer is not delivered into another's, nor into the singletons'."""
    if earlier is not None and earlier is not exc:
        ctx = exc
        while ctx.__context__ is not None and ctx.__context__ is not earlier:
            ctx = ctx.__context__
        if ctx.__context__ is None:
            ctx.__context__ = earlier
