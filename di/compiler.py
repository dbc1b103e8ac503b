"""Compile: one specialised plan per key, generated once, on first use.

A plan is a small generated function ``plan(cp)`` that returns the value of
one key in checkpoint ``cp`` (the container's root: whatever checkpoint is
current in this task or thread). Transient dependencies are inlined into their dependent's plan, so
``A(B(D()), C(D(), S))`` is one Python frame, not five; a singleton that
already exists when a plan is generated is baked in as a constant (else read
from the root checkpoint's dict); scoped keys walk ``_parent`` pointers to the
checkpoint that owns their level.

Plans are made lazily, the first time a key misses, so building a container
costs only validation and a key never resolved costs nothing; a transient's
first call even walks the graph without generating code (see `_first_use`).

Concurrency, and why it costs almost nothing on the common path:

- a singleton is created under its own `aiologic.Lock`, made on first
  creation; once created it is served from the root dict and no lock is taken
  again;
- a scoped instance is created under a marker: the creator puts a fresh
  object into the checkpoint's dict under a per-key private key (one atomic
  ``setdefault``); it stays beside the stored value and is taken back only if
  creation fails. Another thread or task that finds the marker without the
  value waits on an `aiologic.Event`, unless the creation that owns it is
  further up its own stack: that is a cycle.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, NoReturn

import aiologic
import aiologic.lowlevel

from di.errors import (
    AsyncProviderError,
    CheckpointClosedError,
    CircularDependencyError,
    GraphError,
    NoActiveScopeError,
    ScopeError,
    describe_key,
)
from di.graph import too_deep
from di.registry import Kind
from di.teardown import AsyncExit, Slot, aunwind, needs_async, unwind

if TYPE_CHECKING:
    from di.container import Container
    from di.graph import Graph
    from di.scopes import Checkpoint

__all__ = ["Compiler"]

Plan = Callable[[Any], Any]
APlan = Callable[[Any], Awaitable[Any]]

_M: Final = object()
# (SUPPLIED, key): where a scope keeps a context value supplied while an
# override of its key is in force, for when that override ends.
SUPPLIED: Final = object()
_MAX_NESTING: Final = 50  # calls nested in one generated expression, at most


def _enter_cm(manager: Any, exits: list[Any], key: Any) -> Any:
    """Enter a sync context manager a ``cm=True`` provider returned, the way
    ``with`` does (methods looked up on the type)."""
    kind = type(manager)
    enter = getattr(kind, "__enter__", None)
    if enter is None:
        if hasattr(kind, "__aenter__"):
            raise AsyncProviderError(
                f"the cm=True provider of {describe_key(key)} returned {kind.__qualname__}, an "
                f"async context manager, but nothing said so up front; annotate the factory's "
                f"return type as AbstractAsyncContextManager[{describe_key(key)}] so di enters "
                f"it with `async with`"
            )
        raise TypeError(
            f"the cm=True provider of {describe_key(key)} returned {kind.__qualname__}, which "
            f"is not a context manager"
        )
    value = enter(manager)
    exits.append(kind.__exit__.__get__(manager))
    return value


class _Fn:
    """Source lines and constants of one generated function."""

    def __init__(self, ns: dict[str, Any]) -> None:
        self.ns = ns
        self.ids: dict[int, str] = {}
        self.lines: list[str] = []
        self.count = 0
        self.owners: dict[tuple[str, int], str] = {}
        self.depth: dict[str, int] = {}  # nesting of the call expressions emitted so far
        # Whether anything emitted so far can run user code (a factory, a
        # lookup that may create). Emission order is evaluation order.
        self.ran = False
        self.baked: dict[str, str] = {}  # a baked-in singleton's name -> its key's
        self.guarded = False  # it passes a baked-in singleton on behind `_stale`
        self.own_exit = ""  # the generator a plan hands over itself (_emit_creation's own)
        # A plan that gathers its exits in a private list (`private`) keeps
        # their place in its checkpoint's list (`flush`, a statement: a Slot,
        # see _reserve) before a nested scoped or singleton creation hands
        # over its own, once anything may have been pushed (`pushed`); one
        # that did (`reserved`) hands over with _hand, committing its slots.
        self.private = ""
        self.flush = ""
        self.pushed = False
        self.reserved = False

    def const(self, obj: Any, prefix: str) -> str:
        name = self.ids.get(id(obj))
        if name is None:
            name = f"{prefix}{len(self.ns)}"
            self.ns[name] = obj
            self.ids[id(obj)] = name
        return name

    def tmp(self) -> str:
        self.count += 1
        return f"v{self.count}"


class Compiler:
    """Turns the validated graph into plans for one container."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.waiters: dict[Any, list[Any]] = {}
        self.locks: dict[Any, Any] = {}
        self.marker_keys: dict[Any, _MarkerKey] = {}

    # -- public entry points -------------------------------------------------
    def plan(self, key: Any) -> Plan:
        return self._generate(self._sync_plan, key)  # type: ignore[no-any-return]

    def aplan(self, key: Any) -> APlan:
        return self._generate(self._async_plan, key)  # type: ignore[no-any-return]

    def _generate(self, make: Callable[[Any], Any], key: Any) -> Any:
        # Emitting follows transient chains by recursion (one frame per level)
        # and runs no user code: a RecursionError here means the chain is deeper
        # than the recursion limit allows.
        try:
            return make(key)
        except RecursionError as exc:
            raise GraphError([too_deep(key)]) from exc

    def _sync_plan(self, key: Any) -> Plan:
        graph = self.container._graph
        if graph.is_async[key]:
            return self._async_only(key)
        level = graph.level[key]
        kind = graph.providers[key].kind
        if level == 0:
            return self._singleton_plan(key)
        if kind is Kind.CONTEXT:
            return self._context_plan(key, is_async=False)
        if level is None:
            return self._first_use(key)
        return self._scoped_plan(key, is_async=False)

    def _first_use(self, key: Any) -> Plan:
        """A transient's plan for its first call: interpret the graph, and
        generate code only if the key is resolved again. A cold start (build,
        resolve the root once) then pays for no code generation at all, while
        every key resolved twice runs generated code from then on."""
        container = self.container
        plans = container._plans
        # What `key` is a transient in: every override change (and the broken
        # state an out-of-order end leaves, which keeps the graph) bumps the
        # generation, always under the override lock.
        built, made = container._graph, container._generation

        def replan(cp: Any, stale: Any) -> Any:
            # An override began or ended since this plan was fetched: the key
            # may be of another kind now (an override's value). The current
            # plan is made afresh, and a first-use one is run without its own
            # check: under override churn, a loop of re-plans would recurse.
            with container._override_lock:
                if plans.get(key) is stale:
                    del plans[key]
            current = container._plan(key)
            return getattr(current, "run", current)(cp)

        def first(cp: Any) -> Any:
            if container._generation != made:
                return replan(cp, first)
            return run(cp)

        def run(cp: Any) -> Any:
            def compile_now(cp: Any) -> Any:
                with container._override_lock:  # one graph, as in Container._plan
                    if container._generation != made:
                        compiled = None
                    else:
                        compiled = plans[key] = self._generate(self._sync_transient, key)
                if compiled is None:
                    return replan(cp, compile_now)
                return compiled(cp)

            plans[key] = compile_now
            root = self.container._root
            if cp is root:  # from the container: the checkpoint current here
                cp = self.container._storage.get(None)
                if cp is None:
                    cp = root
            ex = cp._exits
            if ex is None and self._needs_exits(key):
                raise self._closed(cp, key)  # before any factory runs, as the plan does
            # Its own list, handed over after the last check, as in the plans.
            mine: list[Any] = []
            try:
                value = self._interpret(key, cp, mine, ex, built)
            except BaseException as exc:
                if mine and ex is not None:
                    self._failed(cp, ex, mine, key, exc)
                if isinstance(exc, RecursionError):
                    raise GraphError([too_deep(key)]) from exc
                raise
            if mine:
                assert ex is not None
                if cp._exits is not ex:
                    self._late(cp, mine, key)
                self._hand(cp, ex, mine, key, False)
            return value

        first.run = run  # type: ignore[attr-defined]
        return first

    def _interpret(
        self, key: Any, cp: Any, ex: list[Any] | None, into: list[Any] | None, graph: Graph
    ) -> Any:
        """Make transient ``key`` in ``cp`` by walking the graph: the same
        steps the generated plan takes, without generating it. Exits go onto
        ``ex``, the resolve's own list, and are handed to ``into``, ``cp``'s
        list when the resolve began (a forced close gives the root a new list
        meanwhile), before a scoped or singleton key is made (see _Fn.flush)."""
        container = self.container
        providers = graph.providers
        levels = graph.level
        root = container._root
        value_kind, call_kind, generator_kind = Kind.VALUE, Kind.CALL, Kind.GENERATOR
        drops = container._drops  # as a plan's `_stale` (Container._drop_cached)

        # A closure over locals, not a method: a cold start walks every node once.
        def make(key: Any) -> Any:
            # Tuples unpacked, not read by field name (an unspecialised
            # attribute lookup on 3.11).
            _, factory, kind, _, deps, _ = providers[key]
            args: list[Any] = []
            kwargs: dict[str, Any] | None = None
            singleton = None  # one read here, to pass on: not across a close
            for dname, dkey, keyword_only, default in deps:
                dprovider = providers.get(dkey)
                if dprovider is None:  # a kept default: as in _emit_creation
                    if kwargs is None and not keyword_only:
                        args.append(default)
                    continue
                level = levels[dkey]
                if level is None:
                    value = make(dkey)
                elif dprovider.kind is value_kind:
                    value = dprovider.factory
                elif level == 0:
                    if ex and into is not None and dkey not in root:
                        _reserve(into, ex)
                    value = root[dkey]
                    singleton = dkey
                else:
                    owner = cp
                    while owner._level > level:
                        owner = owner._parent
                    if owner._level != level:
                        raise self._noscope(dkey, cp)
                    if ex and into is not None and dkey not in owner:
                        _reserve(into, ex)
                    value = owner[dkey]
                if kwargs is not None or keyword_only:
                    kwargs = {} if kwargs is None else kwargs
                    kwargs[dname] = value
                else:
                    args.append(value)
            if singleton is not None and container._drops != drops:
                raise self._again(singleton)  # as a plan's guard does (_guard_baked)
            made = factory(*args, **kwargs) if kwargs else factory(*args)
            if kind is call_kind:
                return made
            if ex is None or cp._exits is None:
                raise self._closed(cp, key)
            if kind is generator_kind:
                value = next(made)
                ex.append(made)
                return value
            return _enter_cm(made, ex, key)  # Kind.CM: async kinds never reach a sync plan

        try:
            return make(key)
        finally:
            # `make` is in its own closure cell: a cycle holding what it made
            # (and its exceptions' frames) until a GC pass.
            make = None  # type: ignore[assignment]

    def _async_plan(self, key: Any) -> APlan:
        graph = self.container._graph
        level = graph.level[key]
        kind = graph.providers[key].kind
        if level == 0 and kind is not Kind.VALUE:
            # Even a sync factory's singleton is made on the async path here: a
            # RefCounted or ClientContext it returns may need `async with`.
            return self._async_singleton_plan(key)
        # The sync plan serves what cannot wait on another creator: no scoped
        # key in the subtree. A scoped one may find another thread's creation
        # in progress, and under aresolve that wait must be awaited, never
        # block the event loop: the async plan.
        if kind is Kind.CONTEXT or not (graph.is_async[key] or graph.needs_level[key]):
            root = self.container._root
            if level is None and any(s not in root for s in graph.singletons_below(key)):
                # A singleton not made yet is made on the async path (a
                # RefCounted needs `async with`), and where its parameter
                # comes, as the sync plan would: an async plan, which awaits
                # it there.
                return self._transient_plan(key, is_async=True)
            return self._run_sync(key)
        if level is None:
            return self._transient_plan(key, is_async=True)
        return self._scoped_plan(key, is_async=True)

    def _run_sync(self, key: Any) -> APlan:
        """``aresolve`` of a key whose subtree is all sync and whose singletons
        all exist (else it gets an async plan: see _async_plan): its sync plan.
        One the plan did not find made (dropped between compiling and the
        call) is made first, on the async path (a RefCounted or ClientContext
        a plain ``def`` returns is entered with ``async with`` there)."""
        container = self.container
        plans, plan_for, root = container._plans, container._plan, container._root
        pending = container._graph.singletons_below(key)

        async def run_sync(cp: Any) -> Any:
            nonlocal pending
            if pending:
                for s in pending:
                    if s not in root:  # dict.__contains__: checkpoints define no other
                        await root.aresolve(s)
                # Made now, and kept until a close or an override, both of
                # which drop this plan: later calls need not look again.
                pending = ()
            # Read each time: the sync plan is replaced once generated.
            plan = plans.get(key) or plan_for(key)
            return plan(cp)

        return run_sync

    # -- shared namespace ----------------------------------------------------
    def _namespace(self) -> dict[str, Any]:
        c = self.container
        return {
            "_root": c._root,
            "_stale": False,
            "_sget": c._storage.get,
            "_M": _M,
            "_dget": dict.get,
            "_setdefault": dict.setdefault,
            "_pop": dict.pop,
            "_id": id,
            "_waiters": self.waiters,
            "_wait": self._wait,
            "_await": self._await,
            "_wake": self._wake,
            "_noscope": self._noscope,
            "_closed": self._closed,
            "_SUPPLIED": SUPPLIED,
            "_late": self._late,
            "_alate": self._alate,
            "_reclaim": self._reclaim,
            "_reserve": _reserve,
            "_hand": self._hand,
            "_ahand": self._ahand,
            "_failed": self._failed,
            "_afailed": self._afailed,
            "_again": self._again,
            "_areclaim": self._areclaim,
            "_AsyncExit": AsyncExit,
            "_enter_cm": _enter_cm,
        }

    def _compile(self, fn: _Fn, name: str) -> Any:
        source = "\n".join(fn.lines)
        code = compile(source, f"<di plan {name}>", "exec")
        exec(code, fn.ns)
        compiled = fn.ns[name]
        if _FRAMES_HOLD_FUNCTIONS and name not in compiled.__code__.co_names:
            # Not left in its own globals (a cycle: the singletons it baked in
            # would outlive a close or an override's end until a GC pass).
            # Before 3.11 a running frame does not hold its function, and one
            # must stay alive in `_baked` or `Container._scoped` while it runs:
            # there it keeps the cycle.
            del fn.ns[name]
        if fn.guarded:  # under the override lock, as every drop is
            self.container._baked.add(compiled)
        self.container._root._specialise()  # once: see Root._specialise
        return compiled

    # -- emitting values -----------------------------------------------------
    def _owner(self, fn: _Fn, cp: str, level: int, key: Any, pad: str) -> str:
        cached = fn.owners.get((cp, level))
        if cached is not None:
            return cached
        o = fn.tmp()
        k = fn.const(key, "K")
        fn.lines += [
            f"{pad}{o} = {cp}",
            f"{pad}while {o}._level > {level}: {o} = {o}._parent",
            f"{pad}if {o}._level != {level}: raise _noscope({k}, {cp})",
        ]
        fn.owners[(cp, level)] = o
        return o

    def _emit(self, fn: _Fn, key: Any, cp: str, ex: str, is_async: bool, pad: str) -> str:
        """Append the statements that make ``key`` to fn; return its expression."""
        graph = self.container._graph
        provider = graph.providers[key]
        level = graph.level[key]
        kind = provider.kind
        if kind is Kind.VALUE:
            return fn.const(provider.factory, "V")
        if level is None:
            return self._emit_creation(fn, key, cp, ex, is_async, pad)
        k = fn.const(key, "K")
        if level == 0:
            made = dict.get(self.container._root, key, _M)
            if made is not _M:
                # Already created: bake the instance in. The container drops
                # every plan whenever it drops singletons (close, override).
                s = fn.const(made, "S")
                fn.baked[s] = k  # the call that takes it may guard it
                return s
            holder = "_root"
        else:
            holder = self._owner(fn, cp, level, key, pad)
        fn.ran = True
        # What this creation entered so far goes to its checkpoint before a
        # nested creation hands over its own exits (see _Fn.flush).
        flush = fn.pushed and fn.flush and provider.kind is not Kind.CONTEXT
        fn.reserved = fn.reserved or bool(flush)
        # Under aresolve everything not made yet takes the async path: a
        # singleton may need `async with`, a scoped key may have to await
        # another's creation. A context value is never made: a plain lookup.
        if is_async and provider.kind is not Kind.CONTEXT:
            v = fn.tmp()
            if level == 0:
                fn.baked[v] = k  # read now, passed on later: guarded as if baked in
            fn.lines.append(f"{pad}{v} = _dget({holder}, {k}, _M)")
            if flush:
                fn.lines += [
                    f"{pad}if {v} is _M:",
                    f"{pad}    if {fn.private}: {fn.flush}",
                    f"{pad}    {v} = await {holder}.aresolve({k})",
                ]
            else:
                fn.lines.append(f"{pad}if {v} is _M: {v} = await {holder}.aresolve({k})")
            return v
        if flush:
            v = fn.tmp()
            fn.lines += [
                f"{pad}if {fn.private} and {k} not in {holder}: {fn.flush}",
                f"{pad}{v} = {holder}[{k}]",
            ]
        elif level == 0:
            v = fn.tmp()
            fn.lines.append(f"{pad}{v} = {holder}[{k}]")
        else:
            return f"{holder}[{k}]"
        if level == 0:
            # A singleton not made when the plan was compiled is read here and
            # passed on after the arguments that follow: guarded like one baked
            # in (_guard_baked), so that a close meanwhile is refused.
            fn.baked[v] = k
        return v

    def _emit_creation(
        self, fn: _Fn, key: Any, cp: str, ex: str, is_async: bool, pad: str, own: bool = False
    ) -> str:
        """Emit the factory call for ``key`` with its dependencies; transient
        generators and context managers push their exit onto ``ex``. With
        ``own``, a generator (async generator) ``key`` itself is not pushed:
        its name is left in ``fn.own_exit`` for the plan to hand over."""
        graph = self.container._graph
        provider = graph.providers[key]
        f = fn.const(provider.factory, "F")
        # Arguments: evaluate each in order; an argument that needed statements
        # forces the earlier ones into temporaries so creation order is kept.
        parts: list[tuple[str, str]] = []  # (prefix "name=" or "", expr)
        keyword = False
        for dep in provider.dependencies:
            if not graph.used(dep) or dep.key not in graph.providers:
                # A kept default: left to Python among the keyword-only ones;
                # before them passed as itself, by position (the value Python
                # would pass), so later arguments can go by position too.
                if keyword or dep.keyword_only:
                    continue
                parts.append(("", fn.const(dep.default, "V")))
                continue
            before = len(fn.lines)
            if graph.level[dep.key] is None:  # a transient: straight in, one frame per level
                expr = self._emit_creation(fn, dep.key, cp, ex, is_async, pad)
            else:
                expr = self._emit(fn, dep.key, cp, ex, is_async, pad)
            if len(fn.lines) > before and parts:
                hoisted = fn.lines[before:]
                del fn.lines[before:]
                for i, (prefix, e) in enumerate(parts):
                    if not e.isidentifier():
                        t = fn.tmp()
                        fn.lines.append(f"{pad}{t} = {e}")
                        parts[i] = (prefix, t)
                fn.lines += hoisted
            keyword = keyword or dep.keyword_only
            parts.append((f"{dep.name}=" if keyword else "", expr))
        if fn.baked:
            self._guard_baked(fn, parts, pad)
        call = f"{f}({', '.join(p + e for p, e in parts)})"
        fn.ran = True
        kind = provider.kind
        if kind is Kind.CALL:
            # Python's parser refuses more than 200 nested parentheses: a long
            # chain of inlined transients goes into a temporary now and then.
            depth = 1 + max((fn.depth.get(e, 0) for _, e in parts), default=0)
            if depth < _MAX_NESTING:
                fn.depth[call] = depth
                return call
            t = fn.tmp()
            fn.lines.append(f"{pad}{t} = {call}")
            return t
        v = fn.tmp()
        # Everything below pushes an exit onto `ex`, but a coroutine and an
        # own generator (handed over by the plan itself).
        fn.pushed = fn.pushed or not (kind is Kind.COROUTINE or own)
        if kind is Kind.COROUTINE:
            fn.lines.append(f"{pad}{v} = await {call}")
        elif kind is Kind.GENERATOR:
            g = fn.tmp()
            fn.lines += [f"{pad}{g} = {call}", f"{pad}{v} = next({g})"]
            if own:
                fn.own_exit = g
            else:
                fn.lines.append(f"{pad}{ex}.append({g})")
        elif kind is Kind.ASYNC_GENERATOR:
            g = fn.tmp()
            fn.lines += [f"{pad}{g} = {call}", f"{pad}{v} = await {g}.__anext__()"]
            if own:
                fn.own_exit = g
            else:
                fn.lines += [f"{pad}{ex}.append({g})", f"{pad}{cp}._async = True"]
        elif kind is Kind.CM:
            m = fn.tmp()
            k = fn.const(key, "K")
            fn.lines += [f"{pad}{m} = {call}", f"{pad}{v} = _enter_cm({m}, {ex}, {k})"]
        elif kind is Kind.ASYNC_CM:
            m = fn.tmp()
            fn.lines += [
                f"{pad}{m} = {call}",
                f"{pad}{v} = await {m}.__aenter__()",
                f"{pad}{ex}.append(_AsyncExit({m}.__aexit__))",
                f"{pad}{cp}._async = True",
            ]
        else:  # pragma: no cover - VALUE and CONTEXT never reach a factory call
            raise AssertionError(kind)
        return v

    @staticmethod
    def _guard_baked(fn: _Fn, parts: list[tuple[str, str]], pad: str) -> None:
        """A call already running when a close tears down a singleton it baked
        in must not pass it on. So user code among a call's arguments runs
        before a baked singleton is read (into temporaries, in order: reading a
        constant has no effects to keep in order), and if any user code ran
        before the read in this plan, the read sits behind `_stale`, which the
        close sets (Container._drop_cached): one global test, false path first."""
        baked = [i for i, (_, e) in enumerate(parts) if e in fn.baked]
        if not baked:
            return
        if any(not e.isidentifier() for _, e in parts[baked[0] + 1 :]):
            for i, (prefix, e) in enumerate(parts):
                if not e.isidentifier():
                    t = fn.tmp()
                    fn.lines.append(f"{pad}{t} = {e}")
                    parts[i] = (prefix, t)
        if fn.ran:
            fn.guarded = True
            for i in baked:
                prefix, s = parts[i]
                parts[i] = (prefix, f"(_again({fn.baked[s]}) if _stale else {s})")

    def _needs_exits(self, key: Any) -> bool:
        """Whether making ``key`` (itself or an inlined transient below it)
        pushes an exit."""
        kind = self.container._graph.providers[key].kind
        if kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR, Kind.CM, Kind.ASYNC_CM):
            return True
        return self._exits_below(key)

    def _exits_below(self, key: Any) -> bool:
        """Whether a transient inlined below ``key`` pushes an exit. (A loop,
        not any() over a generator: a chain takes one frame per level here.)"""
        graph = self.container._graph
        for d in graph.providers[key].dependencies:
            if graph.level.get(d.key, 0) is None and self._needs_exits(d.key):
                return True
        return False

    def _hand_over(
        self, fn: _Fn, key: Any, cp: str, expr: str, is_async: bool, pad: str, store: bool
    ) -> list[str]:
        """The lines that hand a one-exit creation's generator (``fn.own_exit``;
        ``expr`` names its value) to ``cp``'s list ``ex`` after the checks for
        a teardown begun meanwhile; with ``store``, the value is stored in
        ``cp`` between them (and taken back with the generator)."""
        g, k = fn.own_exit, fn.const(key, "K")
        late = "await _alate" if is_async else "_late"
        reclaim = "await _areclaim" if is_async else "_reclaim"
        lines = [f"{pad}if {cp}._exits is not ex: {late}({cp}, [{g}], {k})"]
        if store:  # not once an override replaced it (see _scoped_plan)
            lines.append(f"{pad}if not _gone: {cp}[{k}] = {expr}")
        if self.container._graph.providers[key].kind is Kind.ASYNC_GENERATOR:
            lines.append(f"{pad}{cp}._async = True")  # before the list holds it
        lines += [f"{pad}ex.append({g})", f"{pad}if {cp}._exits is not ex:"]
        if store:
            lines.append(f"{pad}    _pop({cp}, {k}, None)")
        lines.append(f"{pad}    {reclaim}({cp}, ex, [{g}], {k})")
        if is_async and not store:
            # A transient made at the root under aresolve hands over through
            # _ahand, which refuses an async exit while a sync close unwinds
            # the root's list (it could not run it).
            head = f"{pad}if {cp} is _root: await _ahand({cp}, ex, [{g}], {k}, False)"
            return [head, f"{pad}else:", *(f"    {line}" for line in lines)]
        return lines

    def _one_exit(self, key: Any) -> bool:
        """Whether ``key``'s only exit is its own generator (async generator):
        then a creation hands that one over, with no list of its own."""
        kind = self.container._graph.providers[key].kind
        return kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR) and not self._exits_below(key)

    def _needs_cp(self, key: Any) -> bool:
        graph = self.container._graph
        return graph.needs_level[key] > 0 or self._needs_exits(key)

    # -- plans ---------------------------------------------------------------
    def _transient_plan(self, key: Any, is_async: bool) -> Plan | APlan:
        fn = _Fn(self._namespace())
        fn.lines.append(f"{'async ' if is_async else ''}def plan(cp):")
        pad = "    "
        if self._needs_cp(key):
            fn.lines.append(f"{pad}if cp is _root: cp = _sget(_root)")
        exits = self._needs_exits(key)
        if not exits:  # the common transient: nothing to unwind, one expression
            expr = self._emit_creation(fn, key, "cp", "ex", is_async, pad)
            fn.lines.append(f"{pad}return {expr}")
            return self._compile(fn, "plan")  # type: ignore[no-any-return]
        k = fn.const(key, "K")
        late = "await _alate" if is_async else "_late"
        reclaim = "await _areclaim" if is_async else "_reclaim"
        fn.lines += [
            f"{pad}ex = cp._exits",
            f"{pad}if ex is None: raise _closed(cp, {k})",
        ]
        if self._one_exit(key):
            # Its own generator is all it enters: nothing to unwind if the
            # creation fails, and that one generator is handed over after the
            # last check, as a list of its own would be (see _scoped_plan).
            expr = self._emit_creation(fn, key, "cp", "ex", is_async, pad, own=True)
            fn.lines += self._hand_over(fn, key, "cp", expr, is_async, pad, store=False)
            fn.lines.append(f"{pad}return {expr}")
            return self._compile(fn, "plan")  # type: ignore[no-any-return]
        fn.private = "mine"
        fn.flush = "_reserve(ex, mine)"
        fn.lines += [
            # Its own list, handed over after the last check (see _scoped_plan).
            f"{pad}mine = []",
            # On 3.11+ this try costs the success path one NOP and no jump
            # (the success tail is its `else`).
            f"{pad}try:",
        ]
        expr = self._emit_creation(fn, key, "cp", "mine", is_async, pad + "    ")
        # A failed creation hands what it entered to the checkpoint (to unwind
        # at its exit); torn down meanwhile, it unwinds what is still its own
        # (_failed: the creation's error goes on, unless it is an Exception
        # and the refusal replaces it).
        failed = f"{'await _afailed' if is_async else '_failed'}(cp, ex, mine, {k}, e)"
        on_error = [f"{pad}        {failed}"]
        hand = f"{'await _ahand' if is_async else '_hand'}(cp, ex, mine, {k}, False)"
        inline = ["ex += mine", f"if cp._exits is not ex: {reclaim}(cp, ex, mine, {k})"]
        if fn.reserved:  # it kept places in ex: hand over by committing them
            body = [hand]
        elif is_async:  # to the root through _ahand (see _hand_over)
            body = [f"if cp is _root: {hand}", "else:", *(f"    {line}" for line in inline)]
        else:
            body = inline
        handed = [f"{pad}    {line}" for line in body]
        fn.lines += [
            f"{pad}    v = {expr}",
            f"{pad}except BaseException as e:",
            f"{pad}    if mine:",
            *on_error,
            f"{pad}    raise",
            f"{pad}else:",
            f"{pad}    if cp._exits is not ex: {late}(cp, mine, {k})",
            *handed,
            f"{pad}    return v",
        ]
        return self._compile(fn, "plan")  # type: ignore[no-any-return]

    def _sync_transient(self, key: Any) -> Plan:
        return self._transient_plan(key, is_async=False)

    def _context_plan(self, key: Any, is_async: bool) -> Plan | APlan:
        level = self.container._graph.level[key]
        assert level is not None
        fn = _Fn(self._namespace())
        k = fn.const(key, "K")
        fn.lines += [
            f"{'async ' if is_async else ''}def plan(cp):",
            "    if cp is _root:",
            "        cp = _sget(None)",
            f"        if cp is None: raise _noscope({k}, _root)",
            f"        return cp[{k}]",
            "    c = cp",
            f"    while c._level > {level}: c = c._parent",
            f"    if c._level != {level}: raise _noscope({k}, cp)",
            f"    if c is not cp: return c[{k}]",
            # Torn down: its values were dropped with it, supplied or not.
            f"    if cp._exits is None: raise _closed(cp, {k})",
            # Supplied while an override of the key was in force: it serves now.
            f"    v = _dget(cp, (_SUPPLIED, {k}), _M)",
            "    if v is not _M:",
            f"        cp[{k}] = v",
            "        return v",
            f"    raise _noscope({k}, cp, supplied=False)",
        ]
        return self._compile(fn, "plan")  # type: ignore[no-any-return]

    def _scoped_plan(self, key: Any, is_async: bool) -> Plan | APlan:
        level = self.container._graph.level[key]
        assert level is not None
        fn = _Fn(self._namespace())
        k = fn.const(key, "K")
        pk = fn.const(self._marker_key(key), "P")
        pad = "        "
        # Sync and async differ only in how a value is fetched and awaited.
        a = "async " if is_async else ""
        if is_async:
            current = f"await cp.aresolve({k})"
            # A hit in the owner at once; else through its aresolve, the
            # current plan (no plan names itself: see _compile).
            in_owner = [
                f"        v = _dget(o, {k}, _M)",
                f"        return v if v is not _M else await o.aresolve({k})",
            ]
            wait = f"await _await(c, {k}, {pk})"
        else:
            current = f"cp[{k}]"
            in_owner = [f"        return o[{k}]"]
            wait = f"_wait(c, {k}, {pk})"
        head = [
            f"{a}def plan(c):",
            # Called on the owning checkpoint itself (the common case) it goes
            # straight on; the root (level 0) is never a scoped key's owner.
            f"    if c._level != {level}:",
            "        if c is _root:",
            "            cp = _sget(None)",
            f"            if cp is None: raise _noscope({k}, _root)",
            f"            return {current}",
            "        o = c",
            f"        while o._level > {level}: o = o._parent",
            f"        if o._level != {level}: raise _noscope({k}, c)",
            *in_owner,
            "    ex = c._exits",
            f"    if ex is None: raise _closed(c, {k})",
            # A fresh empty list is the creator's mark: unique, and the
            # cheapest object to make. (Who made it is found only when somebody
            # has to wait: see _creating_below.)
            "    mark = []",
            f"    if _setdefault(c, {pk}, mark) is not mark: return {wait}",
            "    try:",
        ]
        exits = self._needs_exits(key)
        one = exits and self._one_exit(key)
        if exits and not one:
            # What this creation enters gathers in a list of its own and is
            # handed to the checkpoint only after the last check: a teardown
            # that began meanwhile then never sees it, and this creation never
            # unwinds another's exits (the teardown's thread is doing that).
            head.insert(-1, "    mine = []")
        fn.lines += head
        fn.owners[("c", level)] = "c"
        if exits and not one:
            fn.private = "mine"
            fn.flush = "_reserve(ex, mine)"
        expr = self._emit_creation(
            fn, key, "c", "mine" if exits and not one else "ex", is_async, pad, own=one
        )
        # The marker stays once the value is stored (a hit never looks at it,
        # and the checkpoint drops both at teardown); only a failed creation
        # takes it back, so that the next caller creates afresh.
        late = "await _alate" if is_async else "_late"
        reclaim = "await _areclaim" if is_async else "_reclaim"
        value, on_error = "v", []
        if one:
            # The common resource: a generator provider with nothing below it
            # to tear down. That generator is all it enters, so it is handed
            # over alone, after the same checks, with no list of its own (a
            # failure before then has nothing to unwind).
            value = expr
            fn.lines += self._hand_over(fn, key, "c", expr, is_async, pad, store=True)
        else:
            fn.lines += [
                f"{pad}v = {expr}",
                # Torn down meanwhile (a forced shutdown while a holder was
                # creating): what was made must not outlive it, nor be served.
                # Checked before the store, and again after it: the teardown
                # marks the checkpoint closed, then empties it, so a store that
                # lands between the two checks is taken back (only a hit in
                # those few bytecodes could still see it).
                f"{pad}if c._exits is not ex: {late}(c, mine, {k})"
                if exits
                else f"{pad}if c._exits is not ex: raise _closed(c, {k})",
                f"{pad}if not _gone: c[{k}] = v",
            ]
        if exits and not one and fn.reserved:
            # It kept places in ex: hand over by committing them (_hand).
            hand = "await _ahand" if is_async else "_hand"
            fn.lines.append(f"{pad}{hand}(c, ex, mine, {k}, True)")
        elif exits and not one:
            fn.lines += [
                f"{pad}ex += mine",
                f"{pad}if c._exits is not ex:",
                f"{pad}    _pop(c, {k}, None)",
                f"{pad}    {reclaim}(c, ex, mine, {k})",
            ]
        elif not exits:
            # Nothing entered: nothing to unwind (the list is the teardown's).
            fn.lines += [
                f"{pad}if c._exits is not ex:",
                f"{pad}    _pop(c, {k}, None)",
                f"{pad}    raise _closed(c, {k})",
            ]
        if exits and not one:
            # A failed creation hands what it entered to the checkpoint, to
            # unwind at its exit (as before a failed `with`); torn down
            # meanwhile, it unwinds what is still its own (see _failed).
            failed = "await _afailed" if is_async else "_failed"
            on_error = ["        if mine:", f"            {failed}(c, ex, mine, {k}, e)"]
        fn.lines += [
            "    except BaseException as e:",
            f"        _pop(c, {pk}, None)",
            f"        if _waiters: _wake(c, {pk})",
            *on_error,
            "        raise",
            # An override of this key (or of one below it) began during the
            # creation: what was made goes to this caller, and stays the
            # checkpoint's to tear down, but is not kept (never stored if it
            # began before the store): the request serves the override, as it
            # does for what it has not created yet. (`_gone` is set by
            # Container._rebuild, in this plan's globals.)
            "    if _gone:",
            f"        _pop(c, {k}, None)",
            f"        _pop(c, {pk}, None)",
            f"    if _waiters: _wake(c, {pk})",
            f"    return {value}",
        ]
        fn.ns["_gone"] = False
        plan = self._compile(fn, "plan")
        plan.key = key
        self.container._scoped.add(plan)  # under the override lock, as _rebuild reads it
        return plan  # type: ignore[no-any-return]

    def _make_fn(self, key: Any, is_async: bool) -> Any:
        """The creation of a singleton, without locking: ``make(root)``."""
        fn = _Fn(self._namespace())
        fn.lines += [
            f"{'async ' if is_async else ''}def make(c, ex):",
        ]
        fn.owners[("c", 0)] = "c"
        fn.private = "ex"  # a _Private list: its slots go to the root's list it began with
        fn.flush = "_reserve(ex.began, ex)"
        expr = self._emit_creation(fn, key, "c", "ex", is_async, "    ")
        fn.lines.append(f"    return {expr}")
        return self._compile(fn, "make")

    def _singleton_plan(self, key: Any) -> Plan:
        provider = self.container._graph.providers[key]
        root = self.container._root
        if provider.kind is Kind.VALUE:
            value = provider.factory

            def plan_value(cp: Any) -> Any:
                # The root already holds it (_fill_values, at build and after
                # every override or close); storing here could put back a
                # value an override has just replaced.
                return value

            return plan_value
        make = self._make_fn(key, is_async=False)
        lock = self._lock(key)
        container = self.container
        enter = container._enter_lifecycle
        # `make` is compiled for this graph and open state (both read under
        # the override lock, as every change to them is made).
        built, opened = container._generation, container._closes
        graph = container._graph  # what it is built on, should overrides come

        def attempt(cp: Any) -> Any:
            """Take the key's lock and make it, unless made meanwhile; _STALE
            if this plan went out of date while waiting for the lock."""
            if lock.green_owned():
                raise CircularDependencyError(
                    f"{describe_key(key)} needed itself while being created: its factory "
                    f"resolves it (directly or through another factory) from the container"
                )
            try:
                lock.green_acquire()
            except RecursionError:
                raise
            except RuntimeError:  # aiologic: a task of this thread holds it
                raise CircularDependencyError(
                    f"{describe_key(key)} is being created by `aresolve` in a task of this "
                    f"thread: its own factory resolves it (a cycle), or another task's sync "
                    f"resolve would block the thread that must finish it; use `await "
                    f"container.aresolve({describe_key(key)})` there"
                ) from None
            try:
                value = dict.get(root, key, _M)
                if value is not _M:
                    return value
                closes, generation, began = container._closes, container._generation, root._exits
                # Both compared: a close bumps `_closes`, then `_generation`,
                # and these reads may fall in between. Out of date, `make` may
                # be compiled for a graph no longer in force (an override began
                # or ended), or have singletons of a closed open state baked in.
                if generation != built or closes != opened:
                    return _STALE
                # The singleton's own teardowns (its inlined transients,
                # itself) gather here: a failed creation unwinds them at once,
                # like a failed `with`, and a good one hands them to the root,
                # LIFO.
                exits = _Private(began)
                try:
                    value = enter(make(root, exits), exits)
                except BaseException as exc:
                    unwind(exits.withdrawn(), exc)
                    raise
                if not self._keep(key, value, exits, closes, generation, graph, began):
                    self._late(root, exits, key)
                return value
            finally:
                lock.green_release()

        def plan(cp: Any) -> Any:
            # Made already: no lock. (Resolved from a scope, a singleton
            # misses that scope's dict and lands here on every call.)
            value = dict.get(root, key, _M)
            if value is not _M:
                return value
            value = attempt(cp)
            # Out of date: the current plan makes it (only creation gets here).
            # A loop, not a call: under steady overrides a waiter may find
            # plan after plan out of date.
            while value is _STALE:
                current = container._plan(key)
                again = getattr(current, "attempt", None)
                if again is None:  # an override made the key a value or a factory
                    return current(cp)
                value = again(cp)
            return value

        plan.attempt = attempt  # type: ignore[attr-defined]
        return plan

    def _async_singleton_plan(self, key: Any) -> APlan:
        root = self.container._root
        make = self._make_fn(key, is_async=True)
        lock = self._lock(key)
        container = self.container
        aenter = container._aenter_lifecycle
        built, opened = container._generation, container._closes
        graph = container._graph

        async def attempt(cp: Any) -> Any:
            if lock.async_owned():
                raise CircularDependencyError(
                    f"{describe_key(key)} needed itself while being created: its factory "
                    f"resolves it (directly or through another factory) from the container"
                )
            # A free lock is taken without a checkpoint: under trio, taking it
            # would otherwise pause there, and a sync resolve of the key by
            # another task of this thread would find a creation it cannot
            # wait for, though a sync factory's never yields.
            if not await lock.async_acquire(blocking=False):
                await lock.async_acquire()
            try:
                value = dict.get(root, key, _M)
                if value is not _M:
                    return value
                closes, generation, began = container._closes, container._generation, root._exits
                if generation != built or closes != opened:
                    return _STALE  # as in _singleton_plan
                exits = _Private(began)
                try:
                    value = await aenter(await make(root, exits), exits)
                except BaseException as exc:
                    await aunwind(exits.withdrawn(), exc)
                    raise
                if not self._keep(key, value, exits, closes, generation, graph, began):
                    await self._alate(root, exits, key)
                return value
            finally:
                lock.async_release()

        async def plan(cp: Any) -> Any:
            value = dict.get(root, key, _M)
            if value is not _M:
                return value
            value = await attempt(cp)
            while value is _STALE:  # as in _singleton_plan
                current = container._aplan(key)
                again = getattr(current, "attempt", None)
                if again is None:
                    return await current(cp)
                value = await again(cp)
            return value

        plan.attempt = attempt  # type: ignore[attr-defined]
        return plan

    def _async_path(self, key: Any) -> str:
        """``A -> B -> C (an async generator, file:line)``: the first async
        provider below ``key``, with the path to it (only errors call this)."""
        graph = self.container._graph
        path, seen = [key], {key}
        while True:
            provider = graph.providers[path[-1]]
            if provider.kind.asynchronous and len(path) > 1:
                break
            below = next(
                (
                    d.key
                    for d in provider.dependencies
                    if d.key in graph.providers and d.key not in seen and graph.is_async[d.key]
                ),
                None,
            )
            if below is None:
                break
            path.append(below)
            seen.add(below)
        last = graph.providers[path[-1]]
        where = f" ({last.kind.described}, {last.source})" if last.kind.asynchronous else ""
        return " -> ".join(describe_key(k) for k in path) + where

    def _async_only(self, key: Any) -> Plan:
        container = self.container
        provider = container._graph.providers[key]
        level = container._graph.level[key]
        root = container._root

        def plan(cp: Any) -> Any:
            if level == 0:  # a singleton aresolve made is a value from then on
                value = dict.get(root, key, _M)
                if value is not _M:
                    return value
            elif level:  # scoped: aresolve may have made it already, then it is a value
                owner = cp
                if owner is root:  # from the container: the checkpoint current here
                    owner = container._storage.get(None)
                while owner is not None and owner._level > level:
                    owner = owner._parent
                if owner is not None and owner._level == level:
                    value = dict.get(owner, key, _M)
                    if value is not _M:
                        return value
            own = provider.kind.asynchronous
            why = (
                f"is provided by {provider.kind.described} ({provider.source})"
                if own
                else f"depends on an async provider: {self._async_path(key)}"
            )
            raise AsyncProviderError(
                f"{describe_key(key)} {why}, so it cannot be resolved from sync code; use "
                f"`await container.aresolve({describe_key(key)})` (di never starts a private "
                f"event loop)"
            )

        return plan

    # -- helpers the generated code calls -----------------------------------
    def _lock(self, key: Any) -> Any:
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks.setdefault(key, aiologic.Lock())
        return lock

    def _marker_key(self, key: Any) -> _MarkerKey:
        marker = self.marker_keys.get(key)
        if marker is None:
            marker = self.marker_keys.setdefault(key, _MarkerKey(key))
        return marker

    def _noscope(self, key: Any, cp: Checkpoint, supplied: bool = True) -> ScopeError:
        c = self.container
        level = c._graph.level[key]
        assert level is not None
        name = c._levels[level]
        if not supplied:
            return ScopeError(
                f"{describe_key(key)} is a context value of scope {name!r} but was not "
                f"supplied; pass it at entry: container.scope({name!r}, "
                f"context={{{describe_key(key)}: ...}})"
            )
        where = "no scope is entered" if cp is c._root else f"the current scope is {cp.level!r}"
        return NoActiveScopeError(
            f"{describe_key(key)} is {name}-scoped but no {name!r} scope is active here "
            f"({where}); resolve it inside `with container.scope({name!r}):`"
        )

    def _closed(self, cp: Checkpoint, key: Any = None) -> ScopeError:
        if cp is self.container._root:  # never entered as a scope: the container closed
            return self._closed_container(key)
        return cp._unusable(key)

    def _keep(
        self,
        key: Any,
        value: Any,
        exits: list[Any],
        closes: int,
        generation: int,
        graph: Graph,
        began: list[Any] | None,
    ) -> bool:
        """Hand a new singleton's exits to the root and cache it, atomically with
        overrides and closes (both change these under the same lock). False if
        the container closed meanwhile: nothing would tear it down. If an
        override of the key or of what it needs began or ended meanwhile, what
        it was built on is unknown (its plan may have read a value swapped in
        or out since): its caller gets it, its teardown is the root's, and the
        container never serves it. Else it is cached, and recorded with the
        graph its plan was compiled for (Container._made): whether overrides
        leave it in force is read from that graph when they change. (A plan
        already out of date when its creation begins never gets here: it hands
        over to the current plan.)"""
        container, root = self.container, self.container._root
        with container._override_lock:
            if container._closes != closes or root._exits is not began or began is None:
                return False
            if needs_async(Slot.entries_of(exits)):
                if container._sync_unwind:  # a sync close could not run its exit
                    return False
                root._async = True
            rest = self._commit(exits)  # no close began: none can have been reached
            if rest is None:  # pragma: no cover - a close is refused above
                return False
            began.extend(rest)
            if container._unwinding or container._dropped.get(key, 0) > generation:
                return True
            container._made.setdefault(key, []).append((graph, value))
            # Nothing it is built on changed since its plan was compiled, so it
            # is in force (setdefault: the cache is not emptied under a holder
            # of the key's lock, but an override's end may have refilled it).
            dict.setdefault(root, key, value)
            return True

    @staticmethod
    def _again(key: Any) -> Any:
        """A call running across a close: ``key``, baked in, is torn down."""
        raise CheckpointClosedError(
            f"the container closed while a resolve that needs {describe_key(key)} was "
            f"running; {describe_key(key)} has been torn down"
        )

    @staticmethod
    def _closed_container(key: Any) -> CheckpointClosedError:
        return CheckpointClosedError(
            f"the container closed while {describe_key(key)} was being made; what it made "
            f"has been torn down"
        )

    # ``cp`` was torn down while ``key`` was being made into ``exits`` (only a
    # forced shutdown does that to a checkpoint in use; for the root, the
    # container closed, and a singleton made then must not be served by its
    # next open): unwind what is left on that list, which nobody else will,
    # and refuse.
    def _late(self, cp: Checkpoint, exits: list[Any], key: Any) -> NoReturn:
        error = self._closed(cp, key)
        own = Slot.mine(exits)
        if own is not exits:
            exits.clear()  # consumed, as unwinding it in place would
        try:
            unwind(own, None)
        except Exception as exc:  # an interrupt or cancellation goes on as it is
            raise error from exc
        raise error

    # A creation's hand-over of its own list ``mine`` to its checkpoint's list
    # ``ex``, after the checks, when it kept places there (Slots): commit them
    # (what they hold is then unwound in their place) and append the rest. A
    # teardown begun meanwhile (or a slot an unwind reached first) leaves all
    # of it this creation's own, unwound here (`_late`). With ``stored``, the
    # value already stored in ``cp`` is taken back with its exits.
    def _hand(self, cp: Checkpoint, ex: list[Any], mine: list[Any], key: Any, stored: bool) -> None:
        own = self._give(cp, ex, mine)
        if own is not None:
            if stored:
                dict.pop(cp, key, None)
            self._late(cp, own, key)

    async def _ahand(
        self, cp: Checkpoint, ex: list[Any], mine: list[Any], key: Any, stored: bool
    ) -> None:
        """`_hand` under aresolve (see `_agive`)."""
        own = self._agive(cp, ex, mine)
        if own is not None:
            if stored:
                dict.pop(cp, key, None)
            await self._alate(cp, own, key)

    def _failed(
        self, cp: Checkpoint, ex: list[Any], mine: list[Any], key: Any, exc: BaseException
    ) -> None:
        """A failed creation's hand-over: what it entered goes to the
        checkpoint, to unwind at its exit (as before a failed `with`). If a
        teardown began meanwhile, it unwinds here what is still its own (as
        `_late` does, handing it nothing): an exit's error then replaces the
        creation's (chained to it); else an interrupt or a cancellation goes on
        as it is, and an Exception gives way to the refusal."""
        own = self._give(cp, ex, mine)
        if own is not None:
            try:
                unwind(own, None)
            except BaseException as new:
                _chain_to(new, exc)
                raise
            if isinstance(exc, Exception):
                raise self._closed(cp, key) from exc

    async def _afailed(
        self, cp: Checkpoint, ex: list[Any], mine: list[Any], key: Any, exc: BaseException
    ) -> None:
        own = self._agive(cp, ex, mine)
        if own is not None:
            try:
                await aunwind(own, None)
            except BaseException as new:
                _chain_to(new, exc)
                raise
            if isinstance(exc, Exception):
                raise self._closed(cp, key) from exc

    def _give(self, cp: Checkpoint, ex: list[Any], mine: list[Any]) -> list[Any] | None:
        """Hand ``mine`` to ``ex``; None if handed, else (a teardown began)
        what is still this creation's own, to unwind."""
        if cp._exits is ex:
            rest = self._commit(mine)
            if rest is not None:
                ex += rest
                if cp._exits is ex:
                    return None
                return self._taken_back(ex, rest)  # what the teardown did not take
        return self._own(mine)

    def _agive(self, cp: Checkpoint, ex: list[Any], mine: list[Any]) -> list[Any] | None:
        """`_give` under aresolve. To the root, it takes the override lock, as a
        singleton's hand-over does (`_keep`): a sync close that is unwinding
        the root's list could not run an async exit, so it is refused then."""
        if cp is self.container._root:
            return None if self._to_root(ex, mine) else self._own(mine)
        return self._give(cp, ex, mine)

    @staticmethod
    def _own(mine: list[Any]) -> list[Any]:
        own = list(Slot.mine(mine))
        mine.clear()
        return own

    def _to_root(self, ex: list[Any], mine: list[Any]) -> bool:
        container = self.container
        with container._override_lock:
            if container._root._exits is not ex:
                return False
            if needs_async(Slot.entries_of(mine)):
                if container._sync_unwind:
                    return False
                container._root._async = True  # before the list holds it
            rest = self._commit(mine)
            if rest is None:
                return False
            ex += rest
            return True

    @staticmethod
    def _commit(mine: list[Any]) -> list[Any] | None:
        """Commit ``mine``'s slots and return the rest, or None (``mine`` left
        with what is still its own) if an unwind reached a slot first."""
        rest = [e for e in mine if type(e) is not Slot]
        for e in mine:
            if type(e) is Slot and not e.commit():
                mine[:] = Slot.mine(mine)
                return None
        mine.clear()
        return rest

    def _reclaim(self, cp: Checkpoint, ex: list[Any], mine: list[Any], key: Any) -> NoReturn:
        """``mine`` was handed to ``cp``'s list ``ex`` as a teardown began:
        take back, by identity, what of it the teardown has not taken, and
        unwind that (`_late`). Never another creation's exits."""
        self._late(cp, self._taken_back(ex, mine), key)

    async def _areclaim(self, cp: Checkpoint, ex: list[Any], mine: list[Any], key: Any) -> NoReturn:
        await self._alate(cp, self._taken_back(ex, mine), key)

    @staticmethod
    def _taken_back(ex: list[Any], mine: list[Any]) -> list[Any]:
        ours = []
        for entry in mine:
            try:
                # One C call, atomic beside the teardown's pops from the same
                # list; entries compare by identity (generators, bound exits).
                ex.remove(entry)
            except ValueError:  # the teardown took it, and runs it
                continue
            ours.append(entry)
        mine.clear()
        return ours

    async def _alate(self, cp: Checkpoint, exits: list[Any], key: Any) -> NoReturn:
        error = self._closed(cp, key)
        own = Slot.mine(exits)
        if own is not exits:
            exits.clear()  # consumed, as unwinding it in place would
        try:
            await aunwind(own, None)
        except Exception as exc:  # an interrupt or cancellation goes on as it is
            raise error from exc
        raise error

    def _check_cycle(self, cp: Checkpoint, marker_key: _MarkerKey) -> None:
        if _creating_below(dict.get(cp, marker_key)):
            raise CircularDependencyError(
                f"{describe_key(marker_key.key)} needed itself while being created in {cp!r}: "
                f"its factory resolves it (directly or through another factory)"
            )

    def _register_waiter(self, cp: Checkpoint, marker_key: _MarkerKey) -> Any:
        event = aiologic.Event()
        waiting = self.waiters.setdefault((cp, marker_key), [])
        waiting.append(event)
        # Re-check after registering: the creator may have finished in between
        # (it stores the value, or removes its marker, before it wakes waiters).
        if marker_key in cp and marker_key.key not in cp:
            return event
        with contextlib.suppress(ValueError):  # already woken and popped
            waiting.remove(event)
        return None

    def forget(self, cp: Checkpoint) -> None:
        """Drop the waiter lists of a torn-down checkpoint (they would keep
        it alive), waking whoever still waits there: a creation cut short by
        a forced teardown would never wake them, and they find the checkpoint
        closed. Called only when some creation was ever contended."""
        for entry in [k for k in list(self.waiters) if k[0] is cp]:
            for event in self.waiters.pop(entry, ()):
                event.set()

    def _wait(self, cp: Checkpoint, key: Any, marker_key: _MarkerKey) -> Any:
        self._check_cycle(cp, marker_key)
        if aiologic.lowlevel.current_async_library(failsafe=True) is not None:
            # This thread runs an event loop: blocking it could wait for ever
            # on a task of that very loop, and would stall the loop anyway.
            if marker_key in cp and key not in cp:
                raise CircularDependencyError(
                    f"{describe_key(key)} is being created by another task or thread, and a "
                    f"sync resolve in a thread that runs an event loop cannot wait for it (the "
                    f"creator may be a task of this loop); use `await "
                    f"scope.aresolve({describe_key(key)})` there"
                )
            return cp[key]
        event = self._register_waiter(cp, marker_key)
        if event is not None:
            event.wait()
        return cp[key]

    async def _await(self, cp: Checkpoint, key: Any, marker_key: _MarkerKey) -> Any:
        self._check_cycle(cp, marker_key)
        event = self._register_waiter(cp, marker_key)
        if event is not None:
            await event
        return await cp.aresolve(key)

    def _wake(self, cp: Checkpoint, marker_key: _MarkerKey) -> None:
        for event in self.waiters.pop((cp, marker_key), ()):
            event.set()


# Whether a running frame holds its function (3.11's f_func): a compiled plan
# in `Container._baked` then lives while it runs without a reference of its own.
_FRAMES_HOLD_FUNCTIONS: Final = sys.version_info >= (3, 11)


def _creating_below(mark: object) -> bool:
    """Whether the creation that owns ``mark`` runs further up this thread's
    (or task's) stack: then waiting for it would wait for ourselves.

    Only a caller that found somebody else's mark gets here, so walking the
    frames costs nothing on the common path, and the creator never has to
    spend a thread or task lookup (on 3.11, asyncio's costs a ``getpid``
    system call) on identifying itself."""
    if mark is None:
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "plan" and frame.f_locals.get("mark") is mark:
            return True
        frame = frame.f_back
    return False


_STALE: Any = object()  # a singleton plan's attempt found itself out of date


class _MarkerKey:
    """The private key under which a creation marker sits in a checkpoint."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"<creating {describe_key(self.key)}>"


class _Private(list):  # type: ignore[type-arg]
    """A singleton creation's own exit list, with the root's list ``began``
    (as it was when the creation began), where its slots go (`_reserve`)."""

    __slots__ = ("began",)

    def __init__(self, began: list[Any] | None) -> None:
        super().__init__()
        self.began = began

    def withdrawn(self) -> list[Any]:
        """For a failed creation: all it entered, its slots claimed and taken
        out of the root's list (one C call each, by identity; a close may have
        taken them already), so that failures leave nothing behind there."""
        own = Slot.mine(self)
        if own is not self and self.began is not None:
            for e in self:
                if type(e) is Slot:
                    with contextlib.suppress(ValueError):
                        self.began.remove(e)
        return own


def _chain_to(new: BaseException, exc: BaseException) -> None:
    """An exit's error, raised while a failed creation unwinds what it entered
    (its chain among the exits kept, cut where the creation's error is being
    handled): end its chain at the creation's error, as nested `with` blocks
    would, so that nothing is lost. Nothing to do if the chain already reaches
    it (an exit that re-raised it)."""
    linked: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in linked:
        linked.add(id(e))
        e = e.__context__
    seen: set[int] = set()
    while id(new) not in seen:
        if id(new) in linked:
            return
        seen.add(id(new))
        if new.__context__ is None:
            new.__context__ = exc
            return
        new = new.__context__


def _reserve(target: list[Any] | None, mine: list[Any]) -> None:
    """Keep the place, in ``target``, of what ``mine`` gathered since its last
    slot: a `Slot` holding it goes into both lists (see `teardown.Slot`). A
    nested creation is about to hand its own exits over to ``target``."""
    start = len(mine)
    while start and type(mine[start - 1]) is not Slot:
        start -= 1
    if target is None or start == len(mine):
        return
    slot = Slot(mine[start:])
    del mine[start:]
    mine.append(slot)
    target.append(slot)
