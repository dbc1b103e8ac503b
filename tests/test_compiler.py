"""di/compiler.py: every way a plan runs makes the same thing.

A transient key's first resolve is interpreted (``Compiler._interpret``), its
later ones run generated code; scoped keys and singletons always run
generated code, and ``aresolve`` runs async plans (or the sync plan, for an
all-sync subtree). Random graphs, each run in fresh containers along one
random sequence of scopes and resolves, sync and async, are checked against
each other and against a plain model of the documented semantics: the same
factory calls with the same arguments (passed the same way: by position, by
name, a kept default left out), in the same order, the same exits pushed and
unwound LIFO at scope (or container) exit, the same errors. Two differences
it found once have minimal, named tests at the end.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest

import di

# -- what every factory records --------------------------------------------------
#
# A journal entry is a tuple: ("make", label, ((param, label of argument), ...)),
# ("enter", label) for a context manager, ("call", count by position, names by
# keyword) before a "callable" kind's make, ("close", label, exception type name or
# None), ("got", label) / ("error", type name, message) for each resolve, and
# ("scope", level) / ("left", level) / ("closed",) around blocks. A label is
# "N<node>#<creation index>", so two runs compare with no object identity.

Entry = tuple[Any, ...]


class Boom(Exception):
    """What a failing factory raises (its message is the label it made)."""


def fails(failing: dict[int, int | None], node: int, count: int) -> bool:
    """Whether the ``count``-th making of ``node`` fails: every one, or one."""
    return node in failing and failing[node] in (None, count)


class Thing:
    """Base of every key's class: what a factory makes carries its label."""

    label = "?"


@dataclass(frozen=True)
class Marker:
    """A parameter default, or a context value or a registered value."""

    label: str


def label_of(value: Any) -> str:
    label = getattr(value, "label", None)
    return label if isinstance(label, str) else repr(value)


class Recorder:
    """The journal of one run; the factories of one graph share it."""

    def __init__(self, classes: list[type], failing: dict[int, int | None]) -> None:
        self.classes = classes
        self.failing = failing
        self.journal: list[Entry] = []
        self.count = 0
        self.counts = [0] * len(classes)  # how often each node was made

    def reset(self) -> None:
        self.journal = []
        self.count = 0
        self.counts = [0] * len(self.classes)

    def made(self, thing: Any, node: int, args: dict[str, Any]) -> Any:
        thing.label = label = f"N{node}#{self.count}"
        self.count += 1
        self.journal.append(("make", label, tuple((k, label_of(v)) for k, v in args.items())))
        self.counts[node] += 1
        if fails(self.failing, node, self.counts[node]):
            raise Boom(label)
        return thing

    def new(self, node: int, args: dict[str, Any]) -> Any:
        cls = self.classes[node]
        return self.made(object.__new__(cls), node, args)

    def close(self, thing: Any, exc: BaseException | None) -> None:
        self.journal.append(("close", thing.label, None if exc is None else type(exc).__name__))


class Manager:
    """What a ``cm=True`` factory returns."""

    def __init__(self, recorder: Recorder, thing: Any) -> None:
        self.recorder, self.thing = recorder, thing

    def __enter__(self) -> Any:
        self.recorder.journal.append(("enter", self.thing.label))
        return self.thing

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> None:
        self.recorder.close(self.thing, exc)


class AsyncManager:
    """What an async ``cm=True`` factory returns."""

    def __init__(self, recorder: Recorder, thing: Any) -> None:
        self.recorder, self.thing = recorder, thing

    async def __aenter__(self) -> Any:
        self.recorder.journal.append(("enter", self.thing.label))
        return self.thing

    async def __aexit__(self, et: Any, exc: BaseException | None, tb: Any) -> None:
        self.recorder.close(self.thing, exc)


# -- random graphs ------------------------------------------------------------------

# "callable": an instance whose ``__call__(*args, **kwargs)`` has a
# ``__signature__``, so the journal also shows how it was called.
SYNC_KINDS = ("class", "function", "generator", "cm", "callable")
ASYNC_KINDS = ("coroutine", "async_generator", "async_cm")
EXITS = ("generator", "cm", "async_generator", "async_cm")
LEVELS = {"singleton": 0, "value": 0, "session": 1, "request": 2}
CONTEXTS = {"ctx_session": ("session", 1), "ctx_request": ("request", 2)}
NO_DEFAULT: Any = object()


class Unregistered:
    """A type no graph registers (a kept default's annotation)."""


@dataclass
class Param:
    name: str
    style: str  # "positional_only", "positional" or "keyword_only"
    target: int | None  # the node injected; None: the default is kept
    annotation: Any
    default: Any = NO_DEFAULT


@dataclass
class Node:
    index: int
    cls: type
    key: Any
    lifetime: str  # singleton, session, request, transient, value, ctx_session, ctx_request
    kind: str  # a factory kind; "" for values and context values
    params: list[Param] = field(default_factory=list)
    need: int = 0  # the deepest level its subtree needs


@dataclass
class Graph:
    nodes: list[Node]
    failing: dict[int, int | None]  # node: which of its makings fails (None: every one)
    recorder: Recorder
    registry: di.Registry
    is_async: bool  # some factory is async: aresolve only


def _level(node: Node) -> int | None:
    if node.lifetime in CONTEXTS:
        return CONTEXTS[node.lifetime][1]
    return LEVELS.get(node.lifetime)


def _params(rng: random.Random, i: int, eligible: list[Node], later: list[Node]) -> list[Param]:
    """A random parameter list in an order Python accepts (positional-only,
    positional, keyword-only; positional defaults only after the last
    positional parameter without one), each injected (with or without a
    default) or a kept default (its type not registered)."""
    order = ("positional_only", "positional", "keyword_only")
    styles = sorted(
        (rng.choice((*order, "positional")) for _ in range(rng.randint(0, 4))), key=order.index
    )
    positional = sum(style != "keyword_only" for style in styles)
    # Positional parameters from here on have a default; with nothing to
    # inject, every parameter has one (and keeps it).
    first_default = rng.randint(0, positional) if eligible else 0
    unregistered: list[Any] = [
        Unregistered,
        Annotated[Unregistered, di.Named("nobody")],
        *(n.cls for n in later if n.key is not n.cls),  # registered by name only
        *(Annotated[n.cls, di.Named("other")] for n in later[:2]),
    ]
    params: list[Param] = []
    for j, style in enumerate(styles):
        name = f"p{j}"
        if style == "keyword_only":
            defaulted = not eligible or rng.random() < 0.4
        else:
            defaulted = j >= first_default
        if defaulted and (not eligible or rng.random() < 0.5):
            default = Marker(f"default:N{i}.{name}")
            params.append(Param(name, style, None, rng.choice(unregistered), default))
            continue
        target = rng.choice(eligible)
        default = Marker(f"unused:N{i}.{name}") if defaulted else NO_DEFAULT
        params.append(Param(name, style, target.index, target.key, default))
    return params


def random_graph(rng: random.Random, chain: bool = False) -> Graph:
    """Up to 8 nodes, dependencies to later ones; with ``chain``, 60 to 80,
    each needing the next transient (mostly transients: inlined calls nested
    deeper than one generated expression may hold), other dependencies only
    on non-transients (so the inlined tree stays a chain)."""
    n = rng.randint(60, 80) if chain else rng.randint(1, 8)
    is_async = rng.random() < 0.3
    kinds = SYNC_KINDS + ASYNC_KINDS if is_async else SYNC_KINDS
    classes = [type(f"K{i}", (Thing,), {}) for i in range(n)]
    failing: dict[int, int | None] = {}
    recorder = Recorder(classes, failing)
    nodes: list[Node | None] = [None] * n
    # Dependencies point to later nodes (a DAG): build from the last one up.
    for i in reversed(range(n)):
        cls = classes[i]
        key: Any = cls if rng.random() < 0.7 else Annotated[cls, di.Named(f"n{i}")]
        roll = rng.random()
        if i == 0:  # the root: mostly transient, else request-scoped
            lifetime = "transient" if roll < 0.75 else "request"
        else:
            lifetime = rng.choices(
                (
                    "transient",
                    "singleton",
                    "session",
                    "request",
                    "value",
                    "ctx_session",
                    "ctx_request",
                ),
                (40, 3, 1, 3, 1, 1, 1) if chain else (5, 3, 1, 3, 1, 1, 1),
            )[0]
        node = Node(i, cls, key, lifetime, "")
        nodes[i] = node
        later = [m for m in nodes[i + 1 :] if m is not None]
        if lifetime == "value" or lifetime in CONTEXTS:
            node.need = _level(node) or 0
            continue
        node.kind = rng.choice(kinds)
        own = _level(node)
        eligible = [m for m in later if own is None or m.need <= own]
        if chain:
            others = [m for m in eligible if m.lifetime != "transient"]
            node.params = _params(rng, i, others, later)
            # The next transient: first, or last by keyword.
            after = next((m for m in later if m.lifetime == "transient"), None)
            if after is not None and after in eligible:
                style = rng.choice(("positional_only", "positional", "keyword_only"))
                at = len(node.params) if style == "keyword_only" else 0
                if not at and node.params and node.params[0].style == "positional_only":
                    style = "positional_only"  # not a positional one before it
                link = Param("chain", style, after.index, after.key)
                node.params.insert(at, link)
        else:
            node.params = _params(rng, i, eligible, later)
        below = [m.need for m in later for p in node.params if p.target == m.index]
        node.need = own if own is not None else max(below, default=0)
    done = [node for node in nodes if node is not None]
    factories = [node for node in done if node.kind]
    if factories and rng.random() < 0.35:
        # Mostly one that enters something first, which must then be unwound
        # (a singleton's at once, with the error thrown in).
        weights = [
            1 + _enters(node, done) * (12 if node.lifetime == "singleton" else 4)
            for node in factories
        ]
        failing[rng.choices(factories, weights)[0].index] = rng.choice((None, 1, 1, 2))
    registry = _register(rng, done, recorder)
    is_async = any(node.kind in ASYNC_KINDS for node in done)
    return Graph(done, failing, recorder, registry, is_async)


def _enters(node: Node, nodes: list[Node]) -> bool:
    """Whether making ``node`` enters a transient's generator or context
    manager (its own exit list, or its dependent's)."""
    return any(
        nodes[p.target].lifetime == "transient"
        and (nodes[p.target].kind in EXITS or _enters(nodes[p.target], nodes))
        for p in node.params
        if p.target is not None
    )


# -- factories, as source (real signatures, annotations set afterwards) --------------


def _signature(params: list[Param], first: str = "") -> str:
    parts = [first] if first else []
    seen_keyword = False
    for k, p in enumerate(params):
        if p.style == "keyword_only" and not seen_keyword:
            parts.append("*")
            seen_keyword = True
        parts.append(p.name if p.default is NO_DEFAULT else f"{p.name}=D{k}")
        nxt = params[k + 1].style if k + 1 < len(params) else "keyword_only"
        if p.style == "positional_only" and nxt != "positional_only":
            parts.append("/")
    return ", ".join(parts)


class CallShape:
    """A factory that records how it is called (how many arguments by
    position, which by name) before making its node's value."""

    def __init__(self, recorder: Recorder, node: Node) -> None:
        kinds = {
            "positional_only": inspect.Parameter.POSITIONAL_ONLY,
            "positional": inspect.Parameter.POSITIONAL_OR_KEYWORD,
            "keyword_only": inspect.Parameter.KEYWORD_ONLY,
        }
        self.recorder, self.node = recorder, node.index
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    p.name,
                    kinds[p.style],
                    default=inspect.Parameter.empty if p.default is NO_DEFAULT else p.default,
                    annotation=p.annotation,
                )
                for p in node.params
            ],
            return_annotation=node.cls,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.recorder.journal.append(("call", len(args), tuple(kwargs)))
        bound = self.__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        return self.recorder.new(self.node, bound.arguments)


def _factory(node: Node, recorder: Recorder) -> Any:
    if node.kind == "callable":
        return CallShape(recorder, node)
    params = node.params
    args = "{" + ", ".join(f"{p.name!r}: {p.name}" for p in params) + "}"
    made = f"_rec.new({node.index}, {args})"
    body = {
        "class": f"def __init__({_signature(params, 'self')}):\n"
        f"    _rec.made(self, {node.index}, {args})\n",
        "function": f"def make({_signature(params)}):\n    return {made}\n",
        "coroutine": f"async def make({_signature(params)}):\n    return {made}\n",
        "cm": f"def make({_signature(params)}):\n    return _Manager(_rec, {made})\n",
        "async_cm": f"def make({_signature(params)}):\n    return _AsyncManager(_rec, {made})\n",
    }.get(node.kind)
    if body is None:  # a generator or async generator
        asynchronous = "async " if node.kind == "async_generator" else ""
        body = (
            f"{asynchronous}def make({_signature(params)}):\n"
            f"    thing = {made}\n"
            "    try:\n"
            "        yield thing\n"
            "    except BaseException as exc:\n"
            "        _rec.close(thing, exc)\n"
            "        raise\n"
            "    _rec.close(thing, None)\n"
        )
    ns: dict[str, Any] = {
        "_rec": recorder,
        "_Manager": Manager,
        "_AsyncManager": AsyncManager,
        **{f"D{k}": p.default for k, p in enumerate(params)},
    }
    exec(body, ns)
    annotations = {p.name: p.annotation for p in params}
    if node.kind == "class":
        init = ns["__init__"]
        init.__annotations__ = annotations | {"return": None}
        node.cls.__init__ = init  # type: ignore[misc]
        return node.cls
    returns = {
        "generator": Iterator[node.cls],  # type: ignore[name-defined]
        "async_generator": AsyncIterator[node.cls],  # type: ignore[name-defined]
        "cm": AbstractContextManager[node.cls],  # type: ignore[name-defined]
        "async_cm": AbstractAsyncContextManager[node.cls],  # type: ignore[name-defined]
    }.get(node.kind, node.cls)
    make = ns["make"]
    make.__annotations__ = annotations | {"return": returns}
    return make


def _register(rng: random.Random, nodes: list[Node], recorder: Recorder) -> di.Registry:
    reg = di.Registry()
    for node in sorted(nodes, key=lambda _: rng.random()):  # any registration order
        if node.lifetime == "value":
            reg.value(node.key, Marker(f"value:N{node.index}"))
            continue
        if node.lifetime in CONTEXTS:
            reg.context(node.key, scope=CONTEXTS[node.lifetime][0])
            continue
        factory = _factory(node, recorder)
        options: dict[str, Any] = {}
        if node.lifetime == "singleton":
            options = rng.choice([{"singleton": True}, {"scope": "app"}])
        elif node.lifetime != "transient":
            options = {"scope": node.lifetime}
        cm = node.kind in ("cm", "async_cm")
        if node.kind == "class" and node.key is node.cls and not options and rng.random() < 0.5:
            reg.provider(factory)  # bare: a plain class's fast path
        elif rng.random() < 0.5:
            reg.register(node.key, factory, cm=cm, **options)
        else:
            reg.provider(provides=node.key, cm=cm, **options)(factory)
    return reg


# -- one sequence of scopes and resolves, run three ways ------------------------------
#
# ("resolve", node, via, sync): via "scope" resolves from the innermost scope
# object, "outer" from the one around it (its parent, or itself if it has
# none), "container" from the container (the checkpoint current here, or the
# root); ``sync`` says how the mixed run resolves it (the sync run resolves
# everything, the aresolve run awaits everything). ("scope", level, items)
# enters a scope, supplying its level's context values.

Item = tuple[Any, ...]


def random_sequence(rng: random.Random, graph: Graph) -> list[Item]:
    """Three request scopes, each resolving the root (the first resolve of a
    transient root is interpreted, the later ones run generated code), with
    other resolves around it, now and then inside a session scope, and now and
    then a resolve outside any scope."""
    n = len(graph.nodes)

    def resolve(node: int | None = None, via: str | None = None) -> Item:
        if node is None:
            node = 0 if rng.random() < 0.5 else rng.randrange(n)
        via = via or rng.choice(("scope", "scope", "outer", "container", "container"))
        return ("resolve", node, via, rng.random() < 0.5)

    sequence: list[Item] = []
    for _ in range(3):
        if rng.random() < 0.2:
            sequence.append(resolve(rng.randrange(n), "container"))
        inner = [resolve() for _ in range(rng.randint(0, 2))]
        inner.insert(rng.randint(0, len(inner)), resolve(0))
        request: Item = ("scope", "request", inner)
        if rng.random() < 0.3:
            around = [resolve() for _ in range(rng.randint(0, 2))]
            around.insert(rng.randint(0, len(around)), request)
            sequence.append(("scope", "session", around))
        else:
            sequence.append(request)
    return sequence


def pick(via: str, stack: list[Any], container: Any) -> Any:
    """Where a resolve goes: a scope object from ``stack`` (innermost last),
    or ``container``."""
    if via == "container" or not stack:
        return container
    return stack[-2] if via == "outer" and len(stack) > 1 else stack[-1]


def _context(graph: Graph, level: str, number: int) -> dict[Any, Any]:
    return {
        node.key: Marker(f"ctx:N{node.index}@{number}")
        for node in graph.nodes
        if node.lifetime in CONTEXTS and CONTEXTS[node.lifetime][0] == level
    }


def run_sync(graph: Graph, sequence: list[Item]) -> list[Entry]:
    recorder = graph.recorder
    recorder.reset()
    journal = recorder.journal
    container = di.Container(graph.registry)
    scopes = iter(range(1000))

    def run(items: list[Item], stack: list[di.Checkpoint]) -> None:
        for item in items:
            if item[0] == "resolve":
                _, node, via, _ = item
                where = pick(via, stack, container)
                try:
                    value = where.resolve(graph.nodes[node].key)
                except Exception as exc:
                    journal.append(("error", type(exc).__name__, str(exc)))
                else:
                    journal.append(("got", label_of(value)))
                continue
            _, level, inner = item
            context = _context(graph, level, next(scopes))
            journal.append(("scope", level))
            with container.scope(level, context=context) as entered:
                run(inner, [*stack, entered])
            journal.append(("left", level))

    with container:
        run(sequence, [])
    journal.append(("closed",))
    return journal


async def run_async(graph: Graph, sequence: list[Item], mixed: bool) -> list[Entry]:
    recorder = graph.recorder
    recorder.reset()
    journal = recorder.journal
    container = di.Container(graph.registry)
    scopes = iter(range(1000))

    async def run(items: list[Item], stack: list[di.Checkpoint]) -> None:
        for item in items:
            if item[0] == "resolve":
                _, node, via, sync = item
                where = pick(via, stack, container)
                key = graph.nodes[node].key
                try:
                    value = where.resolve(key) if mixed and sync else await where.aresolve(key)
                except Exception as exc:
                    journal.append(("error", type(exc).__name__, str(exc)))
                else:
                    journal.append(("got", label_of(value)))
                continue
            _, level, inner = item
            context = _context(graph, level, next(scopes))
            journal.append(("scope", level))
            async with container.scope(level, context=context) as entered:
                await run(inner, [*stack, entered])
            journal.append(("left", level))

    async with container:
        await run(sequence, [])
    journal.append(("closed",))
    return journal


# -- the model: what the documented semantics say each run records --------------------


class ModelError(Exception):
    """An error the model expects (its message is the exception's type name)."""


class ModelScope:
    def __init__(self, level: int, parent: ModelScope | None) -> None:
        self.level, self.parent = level, parent
        self.cache: dict[int, str] = {}
        self.exits: list[str] = []


class Model:
    """Resolution as docs/design.md and docs/api.md describe it, written plainly:
    arguments made in parameter order (a kept default is its default); a
    singleton made once, its own exits unwound at once if its creation fails,
    else handed to the root; a scoped instance made once per scope of its
    level, a transient on every resolve, inlined into what needs it (its exits
    go where its dependent's go); what a creation entered so far is handed
    over before a scoped or singleton key it needs is made (teardown in
    entering order); a failed creation inside a scope leaves what it entered
    to that scope's exit; exits unwound LIFO when their scope (the root: the
    container) is left. A sync resolve of a key with an async
    provider below it is an AsyncProviderError, unless it is a scoped or
    singleton instance already made."""

    def __init__(self, graph: Graph, mode: str) -> None:
        self.nodes = graph.nodes
        self.failing = graph.failing
        self.mode = mode  # "sync", "aresolve" or "mixed"
        self.journal: list[Entry] = []
        self.count = 0
        self.counts = [0] * len(self.nodes)
        self.root = ModelScope(0, None)

    def run(self, sequence: list[Item]) -> list[Entry]:
        scopes = iter(range(1000))

        def run(items: list[Item], stack: list[ModelScope]) -> None:
            for item in items:
                if item[0] == "resolve":
                    _, node, via, sync = item
                    sync = self.mode == "sync" or (self.mode == "mixed" and sync)
                    scope = pick(via, stack, None)
                    scope = scope or (stack[-1] if stack else self.root)
                    try:
                        if sync:
                            value = self.resolve_sync(node, scope)
                        else:
                            value = self.aresolve(node, scope)
                    except (ModelError, Boom) as exc:
                        name = str(exc) if isinstance(exc, ModelError) else "Boom"
                        self.journal.append(("error", name))
                    else:
                        self.journal.append(("got", value))
                    continue
                _, level, inner = item
                entered = ModelScope(LEVELS[level], stack[-1] if stack else self.root)
                number = next(scopes)
                for node in self.nodes:
                    if node.lifetime in CONTEXTS and CONTEXTS[node.lifetime][0] == level:
                        entered.cache[node.index] = f"ctx:N{node.index}@{number}"
                self.journal.append(("scope", level))
                run(inner, [*stack, entered])
                self.unwind(entered.exits, None)
                self.journal.append(("left", level))

        run(sequence, [])
        self.unwind(self.root.exits, None)
        self.journal.append(("closed",))
        return self.journal

    def unwind(self, exits: list[str], exc: BaseException | None) -> None:
        while exits:
            self.journal.append(("close", exits.pop(), None if exc is None else type(exc).__name__))

    def owner(self, scope: ModelScope, level: int) -> ModelScope | None:
        owner: ModelScope | None = scope
        while owner is not None and owner.level > level:
            owner = owner.parent
        return owner if owner is not None and owner.level == level else None

    def below(self, index: int) -> list[int]:
        """What ``index`` needs, transitively, dependencies before dependents
        (depth first, in parameter order)."""
        found: list[int] = []

        def visit(i: int) -> None:
            for p in self.nodes[i].params:
                if p.target is not None and p.target not in found:
                    visit(p.target)
                    found.append(p.target)

        visit(index)
        return found

    def resolve_sync(self, index: int, scope: ModelScope) -> str:
        node = self.nodes[index]
        if any(self.nodes[i].kind in ASYNC_KINDS for i in [index, *self.below(index)]):
            level = _level(node)
            owner = self.root if level == 0 else None if level is None else self.owner(scope, level)
            if owner is not None and index in owner.cache:
                return owner.cache[index]
            raise ModelError("AsyncProviderError")
        return self.resolve(index, scope)

    def aresolve(self, index: int, scope: ModelScope) -> str:
        return self.resolve(index, scope)

    def resolve(self, index: int, scope: ModelScope) -> str:
        node = self.nodes[index]
        if node.lifetime == "value":
            return f"value:N{index}"
        level = _level(node)
        owner = scope if level is None else self.root if level == 0 else self.owner(scope, level)
        if owner is None:
            raise ModelError("NoActiveScopeError")
        if index in owner.cache or node.lifetime in CONTEXTS:
            return owner.cache[index]
        mine: list[str] = []
        handed: list[str] = []
        try:
            value = self.make(index, owner, mine, handed)
        except BaseException as exc:
            if level == 0:  # all it entered, unwound at once: taken back from the root
                for label in handed:
                    owner.exits.remove(label)
                self.unwind(handed + mine, exc)
            else:
                owner.exits += mine
            raise
        owner.exits += mine
        if level is not None:
            owner.cache[index] = value
        return value

    def make(self, index: int, scope: ModelScope, exits: list[str], handed: list[str]) -> str:
        node = self.nodes[index]
        args: list[tuple[str, str]] = []
        # How the call passes them: by position up to the first injected
        # keyword-only parameter, by name from there on; a kept default is
        # passed by position where an argument by position may follow it (it
        # keeps the slot), and left to Python where it goes by name.
        positional, by_name = 0, False
        for p in node.params:
            if p.target is not None:
                by_name = by_name or p.style == "keyword_only"
                positional += not by_name
            elif not (by_name or p.style == "keyword_only"):
                positional += 1
        keywords = tuple(p.name for p in node.params[positional:] if p.target is not None)
        for p in node.params:
            if p.target is None:
                args.append((p.name, p.default.label))
            elif self.nodes[p.target].lifetime == "transient":
                args.append((p.name, self.make(p.target, scope, exits, handed)))
            else:
                target = self.nodes[p.target]
                level = _level(target)
                owner = self.root if level == 0 else self.owner(scope, level)
                made_here = target.lifetime != "value" and target.lifetime not in CONTEXTS
                if made_here and owner is not None and p.target not in owner.cache:
                    # It is made here and hands its exits over itself: what
                    # this creation entered so far goes first (LIFO teardown
                    # in entering order, as nested `with` blocks).
                    scope.exits += exits
                    handed += exits
                    exits.clear()
                args.append((p.name, self.resolve(p.target, scope)))
        if node.kind == "callable":
            self.journal.append(("call", positional, keywords))
        label = f"N{index}#{self.count}"
        self.count += 1
        self.journal.append(("make", label, tuple(args)))
        self.counts[index] += 1
        if fails(self.failing, index, self.counts[index]):
            raise Boom(label)
        if node.kind in ("cm", "async_cm"):
            self.journal.append(("enter", label))
        if node.kind in EXITS:
            exits.append(label)
        return label


# -- the random tests ------------------------------------------------------------------


def describe(graph: Graph, sequence: list[Item]) -> str:
    lines = []
    for node in graph.nodes:
        params = ", ".join(
            f"{p.name}[{p.style}]: "
            + (f"N{p.target}" if p.target is not None else f"kept {p.annotation!r}")
            + ("" if p.default is NO_DEFAULT else " = default")
            for p in node.params
        )
        failing = f" FAILS {graph.failing[node.index]}" if node.index in graph.failing else ""
        lines.append(f"N{node.index} {node.lifetime} {node.kind} {node.key!r} ({params}){failing}")
    return "\n".join([*lines, f"sequence: {sequence!r}"])


def without_messages(journal: list[Entry]) -> list[Entry]:
    return [entry[:2] if entry[0] == "error" else entry for entry in journal]


def check(rng: random.Random, chain: bool = False) -> None:
    """One random graph and sequence: each run (sync, aresolve, mixed) in a
    fresh container against the model, and sync against aresolve."""
    graph = random_graph(rng, chain)
    sequence = random_sequence(rng, graph)
    how = describe(graph, sequence)
    runs: dict[str, list[Entry]] = {}
    if not graph.is_async:
        runs["sync"] = run_sync(graph, sequence)
    runs["aresolve"] = asyncio.run(run_async(graph, sequence, mixed=False))
    runs["mixed"] = asyncio.run(run_async(graph, sequence, mixed=True))
    for mode, journal in runs.items():
        expected = Model(graph, mode).run(sequence)
        assert without_messages(journal) == expected, (
            f"the {mode} run differs from the model\n{how}"
        )
    if "sync" in runs:
        assert runs["sync"] == runs["aresolve"], how  # error messages too


@pytest.mark.parametrize("seed", range(400))
def test_random_graphs_every_path_agrees(seed: int) -> None:
    check(random.Random(seed))


@pytest.mark.parametrize("seed", range(20))
def test_random_chains_every_path_agrees(seed: int) -> None:
    check(random.Random(seed), chain=True)


# -- differences the random tests found once, minimised ---------------------------------


class First:
    def __init__(self) -> None:
        MADE.append("First")


class Shared:
    def __init__(self) -> None:
        MADE.append("Shared")


class Root:
    def __init__(self, first: First, shared: Shared) -> None:
        MADE.append("Root")


MADE: list[str] = []


def test_aresolve_makes_singletons_where_their_parameter_comes() -> None:
    """``Root(first: First, shared: Shared)``, ``Shared`` a singleton not made
    yet: ``resolve`` and ``aresolve`` alike make First, Shared, Root, in
    parameter order, with nothing scoped or async below. (Once, ``aresolve``
    made every singleton first, then ran the sync plan: had First's factory
    raised, it would have kept a singleton ``resolve`` never makes.)"""
    reg = di.Registry()
    reg.provider(First)
    reg.provider(singleton=True)(Shared)
    reg.provider(Root)
    MADE.clear()
    with di.Container(reg) as container:
        container.resolve(Root)
    assert MADE == ["First", "Shared", "Root"]

    async def main() -> None:
        async with di.Container(reg) as container:
            await container.aresolve(Root)

    MADE.clear()
    asyncio.run(main())
    assert MADE == ["First", "Shared", "Root"]


class Pool:
    pass


async def pool() -> AsyncIterator[Pool]:
    yield Pool()


def test_a_scope_serves_a_singleton_aresolve_made() -> None:
    """A singleton with an async provider, made by ``aresolve``, is a value to
    sync code: ``container.resolve`` and ``scope.resolve`` alike serve it, as
    they serve a scoped instance made already. (Once, ``scope.resolve``
    raised AsyncProviderError.)"""
    reg = di.Registry()
    reg.provider(singleton=True)(pool)

    async def main() -> None:
        async with di.Container(reg) as container:
            made = await container.aresolve(Pool)
            assert container.resolve(Pool) is made
            async with container.scope("request") as scope:
                assert container.resolve(Pool) is made
                assert scope.resolve(Pool) is made

    asyncio.run(main())
