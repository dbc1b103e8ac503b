"""Validate: the whole provider graph, once, before anything is compiled.

Every problem is collected, then raised together as one `GraphError`, so a
developer fixes them all in one pass: missing providers (with the chain that
needed them), cycles (with the path), scope violations (a longer-lived
provider holding a shorter-lived one) and, in a sync-only container, async
providers that some path needs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from di.errors import GraphError, describe_key, describe_path
from di.registry import NO_DEFAULT, Dependency, Kind, Provider, key_problem

__all__ = ["Graph", "dependents"]

_GREY, _BLACK = 1, 2


class Graph:
    """The validated graph: providers plus what the compiler needs to know
    about each key (its level, whether anything below it is async)."""

    def __init__(
        self, providers: Mapping[Any, Provider], levels: Sequence[str], *, sync: bool = False
    ) -> None:
        self.providers = providers if isinstance(providers, dict) else dict(providers)
        self.levels = tuple(levels)
        self.sync = sync
        # level index of each key: 0 = singleton, i = scoped at levels[i], None = transient
        self.level: dict[Any, int | None] = {}
        # the deepest level a key (transitively) needs: where it can be resolved at all
        self.needs_level: dict[Any, int] = {}
        self.is_async: dict[Any, bool] = {}
        # keys provided by a ready value (the container stores them at build)
        self.values: list[Any] = []
        # A valid graph -- the common case -- is walked once, in a lean walk
        # that stops at the first problem; only then does a second, thorough
        # walk find every problem and the chain that leads to each.
        try:
            if self._check():
                return
            problems: list[str] = []
            self._report(problems)
        except RecursionError:
            problems = [too_deep(None)]
        raise GraphError(problems)

    def used(self, dep: Dependency) -> bool:
        """Whether ``dep`` is injected (False: its default is kept)."""
        return dep.key in self.providers or not dep.has_default

    def dependents(self, key: Any) -> set[Any]:
        """Every key whose value (transitively) depends on ``key``."""
        return dependents(self.providers, key)

    def built_on(self, key: Any) -> tuple[tuple[Any, Provider], ...]:
        """The providers a value of ``key`` is built on: its own and those of
        every key below it, each with its key (an override swaps one)."""
        providers = self.providers
        seen = {key}
        todo = [key]
        while todo:
            for dep in providers[todo.pop()].dependencies:
                if dep.key not in seen and dep.key in providers:
                    seen.add(dep.key)
                    todo.append(dep.key)
        return tuple((k, providers[k]) for k in seen)

    def singletons_below(self, key: Any) -> tuple[Any, ...]:
        """The created-once keys (first level, not plain values) that ``key``
        needs, transitively, dependencies before their dependents. Iterative:
        chains may be deeper than the recursion limit."""
        providers, level = self.providers, self.level
        found: list[Any] = []
        seen = {key}
        stack: list[tuple[Any, Iterator[Any]]] = [(key, iter(providers[key].dependencies))]
        while stack:
            k, deps = stack[-1]
            for dep in deps:
                d = dep.key
                if d not in seen and d in providers:
                    seen.add(d)
                    stack.append((d, iter(providers[d].dependencies)))
                    break
            else:
                stack.pop()
                if k is not key and level[k] == 0 and providers[k].kind is not Kind.VALUE:
                    found.append(k)
        return tuple(found)

    # -- the walks ------------------------------------------------------------
    def _check(self) -> bool:
        """Fill level, needs_level and is_async in one depth-first walk;
        False at the first problem of any kind (the tables are then refilled
        by `_report`)."""
        providers = self.providers
        index = {name: i for i, name in enumerate(self.levels)}
        level = self.level
        needs_level = self.needs_level
        async_below = self.is_async
        values = self.values
        sync = self.sync
        value_kind = Kind.VALUE

        # Hot at cold start (every node once): plain dict reads. A key in
        # `level` but not yet in `needs_level` is on the current path.
        def visit(key: Any) -> int:
            # Unpacked, not read by field name: on 3.11 a NamedTuple field read
            # is an unspecialised attribute lookup, several times a subscript.
            _, _, kind, scope, deps, _ = providers[key]
            own = None if scope is None else index[scope]
            level[key] = own
            deepest = own or 0
            is_async = kind.asynchronous
            for _, dkey, _, ddefault in deps:
                dneeds = needs_level.get(dkey)
                if dneeds is None:
                    if dkey in level:  # on the path: a cycle
                        raise _Invalid
                    if dkey not in providers:
                        if ddefault is NO_DEFAULT:
                            raise _Invalid
                        continue  # its default is kept
                    dneeds = visit(dkey)
                if async_below[dkey]:
                    is_async = True
                if dneeds > deepest:
                    # deepest >= own until a violation, so this is dneeds > own
                    if own is not None:
                        raise _Invalid
                    deepest = dneeds
            if kind is value_kind:
                values.append(key)
            elif sync and kind.asynchronous:
                raise _Invalid
            needs_level[key] = deepest
            async_below[key] = is_async
            return deepest

        try:
            for key in providers:
                if key not in needs_level:
                    visit(key)
        except _Invalid:
            return False
        finally:
            # `visit` is in its own closure cell: a cycle holding the providers
            # (an ended override's value among them) until a GC pass.
            visit = None  # type: ignore[assignment]
        return True

    def _report(self, problems: list[str]) -> None:
        """Walk again, collecting every problem with the path that shows it."""
        color: dict[Any, int] = {}
        index = {name: i for i, name in enumerate(self.levels)}
        level = self.level = {
            k: None if p.scope is None else index[p.scope] for k, p in self.providers.items()
        }
        self.needs_level = {}
        self.is_async = {}
        reported: set[Any] = set()
        providers = self.providers
        needs_level = self.needs_level
        async_below = self.is_async

        sync = self.sync

        def visit(key: Any, path: list[Any]) -> None:
            # Hot at cold start (every node once): plain dict reads; colour
            # WHITE is "absent", BLACK is "has needs_level".
            color[key] = _GREY
            # Unpacked, not read by field name: on 3.11 a NamedTuple field read
            # is an unspecialised attribute lookup, several times a subscript.
            _, _, kind, _, deps, _ = providers[key]
            path.append(key)
            own = level[key]
            deepest = 0 if own is None else own
            is_async = kind.asynchronous
            for dname, dkey, _, ddefault in deps:
                state = color.get(dkey)
                if state is None:
                    if dkey not in providers:
                        if ddefault is NO_DEFAULT and (dkey, key) not in reported:
                            reported.add((dkey, key))
                            problems.append(_missing(dkey, dname, path))
                        continue
                    visit(dkey, path)
                elif state == _GREY:
                    cycle = [*path[path.index(dkey) :], dkey]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        problems.append(
                            f"cycle: {describe_path(cycle)}; break it by injecting a factory "
                            f"or restructuring one of these providers"
                        )
                    continue
                dneeds = needs_level[dkey]
                if async_below[dkey]:
                    is_async = True
                if own is not None and dneeds > own and (key, dkey) not in reported:
                    reported.add((key, dkey))
                    problems.append(self._scope_problem(key, dkey, dneeds))
                if dneeds > deepest:
                    deepest = dneeds
            # A key with a level of its own is resolved at that level: a
            # dependency deeper than it is its own violation (reported just
            # above), and is not passed on to its dependents, which would
            # otherwise be reported for holding a key that outlives them.
            needs_level[key] = deepest if own is None else own
            async_below[key] = is_async
            if sync and kind.asynchronous and key not in reported:
                reported.add(key)
                problems.append(
                    f"{describe_key(key)} is provided by {kind.described} "
                    f"({providers[key].source}), but this container is sync-only (sync=True); "
                    f"make the provider sync, or build the container without sync=True "
                    f"and use aresolve"
                )
            path.pop()
            color[key] = _BLACK

        # Roots first (keys nothing depends on), so a missing key is reported
        # with the longest chain that needed it.
        needed = {dkey for p in providers.values() for _, dkey, _, _ in p.dependencies}
        order = [k for k in providers if k not in needed] + [k for k in providers if k in needed]
        try:
            for key in order:
                if key not in color:
                    visit(key, [])
        finally:
            visit = None  # type: ignore[assignment]  # as in _check

    def _scope_problem(self, key: Any, dkey: Any, dneeds: int) -> str:
        own = self.level[key]
        assert own is not None
        lifetime = "singleton" if own == 0 else f"{self.levels[own]}-scoped"
        dlevel = self.level[dkey]
        if dlevel is None:
            what = f"transient {describe_key(dkey)}, which needs the {self.levels[dneeds]} scope"
        else:
            what = f"{self.levels[dlevel]}-scoped {describe_key(dkey)}"
        return (
            f"scope violation: {lifetime} {describe_key(key)} depends on {what}; a longer-lived "
            f"provider cannot hold a shorter-lived one. Make {describe_key(key)} live at "
            f"least as short ({self.levels[dneeds]!r}), or {describe_key(dkey)} longer"
        )


class _Invalid(Exception):
    """Raised inside `Graph._check` at the first problem: `_report` says what."""


def too_deep(key: Any) -> str:
    """The problem of a dependency chain deeper than the walks can follow."""
    where = "a dependency chain" if key is None else f"the dependency chain of {describe_key(key)}"
    return (
        f"{where} is deeper than Python's recursion limit ({sys.getrecursionlimit()}) lets "
        f"di follow (or a factory recursed); shorten the chain, or raise the limit with "
        f"sys.setrecursionlimit()"
    )


def in_force(built_on: tuple[tuple[Any, Provider], ...], providers: Mapping[Any, Provider]) -> bool:
    """Whether a value built on these providers (``Graph.built_on``) is one
    the graph of ``providers`` would build."""
    return all(providers.get(key) is provider for key, provider in built_on)


def _missing(key: Any, name: str, path: list[Any]) -> str:
    """The problem of a parameter whose key nothing provides."""
    where = describe_path([*path, key])
    problem = key_problem(key)
    if problem is not None:  # Any, a TypeVar, None: no registration can help
        return (
            f"parameter {name!r} (in {where}) is annotated {describe_key(key)}, which names no "
            f"type di can provide; annotate it with a concrete type, or give it a default"
        )
    return (
        f"no provider for {describe_key(key)} (needed by {where}); register one, e.g. "
        f"registry.register({describe_key(key)}, Impl), or give parameter {name!r} a default"
    )


def dependents(providers: Mapping[Any, Provider], key: Any) -> set[Any]:
    """Every key whose value (transitively) depends on ``key`` among
    ``providers`` (valid together or not)."""
    reverse: dict[Any, set[Any]] = {}
    for k, p in providers.items():
        for d in p.dependencies:
            reverse.setdefault(d.key, set()).add(k)
    seen: set[Any] = set()
    todo = [key]
    while todo:
        for k in reverse.get(todo.pop(), ()):
            if k not in seen:
                seen.add(k)
                todo.append(k)
    return seen
