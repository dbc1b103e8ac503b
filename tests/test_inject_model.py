"""di.inject against a model: random registries, random injected callables.

Each seed builds a small registry (singleton, "session"- and "request"-scoped
and transient providers: classes, functions, coroutines, generators and async
generators whose code after ``yield`` records the exception it received; a few
fail on some making, a few generators suppress what they receive), a handful of
``@di.inject`` callables (``def``, ``async def``, generator and async generator
functions) with a random mix of ``di.Injected[T]`` parameters, ``= di.Depends(T)``
defaults and plain parameters, positional-only, positional and keyword-only, and
a program of calls: before the container is entered, at the app level, inside
``session`` / ``request`` scopes (nested or not), after the container is left,
and in a second container block. Calls pass some marked parameters explicitly
(by position or by name), bodies sometimes raise, generator callables are run
out, closed early, thrown into or never started, and some are called in one
place and started inside container / scope blocks entered after the call. A
few callables are static or class methods (``inject`` on top of
``@staticmethod`` / ``@classmethod``, read off the class or an instance). Sync
seeds run plain (contextvar or thread storage, ``sync=True`` or not); async
seeds run under asyncio or trio, with sync callables among the async ones.

Everything records into one journal (factory bodies, teardowns with the
exception they got, callable bodies with what they were passed, outcomes, scope
and container blocks), compared with a plain model of docs/api.md,
docs/design.md and ../shared/DESIGN.md:

- marked parameters not passed are resolved in signature order from the
  current checkpoint of the container entered in this task, when the call
  runs (a generator callable: at its first iteration, not at the call)
  (``NoActiveScopeError`` when none is: nothing runs); explicit arguments win
  and their providers are not called; a call that injects nothing needs no
  container;
- a singleton is made once per container block and torn down when the
  container closes, LIFO, with no exception (a close never hands its
  teardowns one); a failed singleton's own exits are unwound at once;
- a scoped instance is made once per checkpoint of its level and torn down at
  that scope's exit, LIFO, with the exception that ended the block (a
  suppressing teardown swallows it); a scoped key with no checkpoint of its
  level current is ``NoActiveScopeError`` where it is reached, depth first;
- a transient is made on every resolve; what a call opens for itself is
  closed when the call returns (a generator callable: when it finishes, raises
  or is closed), LIFO, with the exception that ended the call (the body's, a
  failed resolution's, the thrown one, ``GeneratorExit``) exactly like
  ``with`` blocks around the call: a suppressed one makes the call return
  ``None`` (a generator stops);
- a sync callable needing a key with an async provider in its subtree gets
  ``AsyncProviderError``, unless the key is a scoped or singleton instance
  already made (a plain value to sync code).

Instances are compared by label (each making gets a fresh one) and, in the
callable bodies, by identity with the object the factory made.

``python tests/test_inject_model.py 5000`` checks more seeds by hand.
"""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

import di

SEEDS = 300

LEVEL = {"singleton": 0, "session": 1, "request": 2, "transient": None}
SYNC_KINDS = ("class", "function", "generator")
ASYNC_KINDS = ("coroutine", "async_generator")
GENERATOR_KINDS = ("generator", "async_generator")

Entry = tuple[Any, ...]


class Boom(Exception):
    """Raised by failing factories, raising bodies, thrown into generators and
    raised at the end of scope and container blocks; its message says which."""


class Thing:
    label = "?"


_END = object()


@dataclass(frozen=True)
class Marker:
    """A value the caller passes (plain or explicit)."""

    label: str


def label_of(value: Any) -> Any:
    label = getattr(value, "label", None)
    return label if isinstance(label, str) else value


def describe(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    if isinstance(exc, Boom):
        return f"Boom:{exc}"
    return type(exc).__name__


# -- the random world ---------------------------------------------------------------


@dataclass
class Node:
    index: int
    lifetime: str  # "singleton" | "session" | "request" | "transient"
    kind: str  # "class" | "function" | "generator" | "coroutine" | "async_generator"
    deps: list[int]
    fails: int | None  # None: never; 0: every making; n: its n-th making
    suppress: bool  # a generator whose teardown swallows an Exception
    key: type = Thing


@dataclass
class Param:
    name: str
    mode: str  # "plain" | "injected" | "depends"
    key: int
    style: str  # "posonly" | "pos" | "kwonly"
    annotation: str


@dataclass
class Fn:
    name: str
    kind: str  # "def" | "async" | "gen" | "asyncgen"
    params: list[Param]
    yields: int
    wrap: str  # "function" | "staticmethod" | "classmethod" (inject on top of it, read off a class)
    fn: Any = None


@dataclass
class Call:
    id: str
    fn: int
    positional: list[str]  # passed by position, in order
    keywords: list[str]  # passed by name
    raises: bool
    drive: tuple[Any, ...]  # ("call",) / ("all",) / ("close", k) / ("throw", k) / ("unstarted",)


# A program is a list of steps: ("call", Call), ("scope", level, steps, raises),
# ("container", steps, raises).
Step = tuple[Any, ...]


@dataclass
class World:
    mode: str  # "sync" | "asyncio" | "trio"
    nodes: list[Node]
    fns: list[Fn]
    program: list[Step]
    needs: list[int] = field(default_factory=list)
    async_below: list[bool] = field(default_factory=list)


def _nodes(rng: random.Random, asynchronous: bool) -> tuple[list[Node], list[int], list[bool]]:
    nodes: list[Node] = []
    needs: list[int] = []  # the deepest level a key needs (0: none)
    async_below: list[bool] = []
    kinds = SYNC_KINDS + (ASYNC_KINDS if asynchronous else ())
    for i in range(rng.randint(3, 7)):
        lifetime = rng.choices(["singleton", "session", "request", "transient"], [3, 2, 3, 4])[0]
        own = LEVEL[lifetime] or 0
        limit = 2 if lifetime == "transient" else own
        eligible = [j for j in range(i) if needs[j] <= limit]
        count = rng.randint(0, min(3, len(eligible)))
        deps = [rng.choice(eligible) for _ in range(count)]
        kind = rng.choice(kinds + tuple(k for k in GENERATOR_KINDS if k in kinds))
        fails = rng.choice([0, 1, 1, 2, 3]) if rng.random() < 0.12 else None
        suppress = kind in GENERATOR_KINDS and lifetime != "singleton" and rng.random() < 0.2
        nodes.append(Node(i, lifetime, kind, deps, fails, suppress))
        needs.append(max([own, *(needs[d] for d in deps)]))
        async_below.append(kind in ASYNC_KINDS or any(async_below[d] for d in deps))

    # A singleton's failed creation unwinds what it entered at once: keep the
    # transients it makes from suppressing (that would leave it with no value).
    def clear(i: int) -> None:
        for d in nodes[i].deps:
            if nodes[d].lifetime == "transient":
                nodes[d].suppress = False
                clear(d)

    for node in nodes:
        if node.lifetime == "singleton":
            clear(node.index)
    return nodes, needs, async_below


def _fns(rng: random.Random, n: int, asynchronous: bool) -> list[Fn]:
    fns = []
    kinds = ["def", "gen"] + (["async", "asyncgen"] * 3 if asynchronous else [])
    for f in range(rng.randint(2, 5)):
        params = []
        for p in range(rng.randint(0, 5)):
            mode = rng.choices(["plain", "injected", "depends"], [1, 2, 2])[0]
            key = rng.randrange(n)
            if mode == "plain":
                annotation = rng.choice(["", "int", f"K{key}"])  # not marked: not injected
            elif mode == "injected":
                annotation = f"di.Injected[K{key}]"
            else:
                annotation = rng.choice(["", f"K{key}", "object"])
            style = "kwonly" if rng.random() < 0.3 else "pos"
            params.append(Param(f"a{p}", mode, key, style, annotation))
        positional = sorted(
            (p for p in params if p.style == "pos"), key=lambda p: p.mode == "depends"
        )
        if positional and rng.random() < 0.35:
            for p in positional[: rng.randint(1, len(positional))]:
                p.style = "posonly"
        keyword = [p for p in params if p.style == "kwonly"]
        wrap = rng.choices(["function", "staticmethod", "classmethod"], [6, 1, 1])[0]
        fns.append(Fn(f"f{f}", rng.choice(kinds), positional + keyword, rng.randint(1, 3), wrap))
    return fns


def _call(rng: random.Random, fns: list[Fn], number: int, index: int | None = None) -> Call:
    if index is None:
        index = rng.randrange(len(fns))
    fn = fns[index]
    positional = [p for p in fn.params if p.style != "kwonly"]
    least = max(
        (k + 1 for k, p in enumerate(positional) if p.style == "posonly" and p.mode == "plain"),
        default=0,
    )
    count = rng.randint(least, len(positional)) if rng.random() < 0.5 else least
    keywords = [
        p.name
        for p in positional[count:] + [p for p in fn.params if p.style == "kwonly"]
        if p.mode == "plain" or (p.style != "posonly" and rng.random() < 0.25)
    ]
    rng.shuffle(keywords)
    drive: tuple[Any, ...] = ("call",)
    if fn.kind in ("gen", "asyncgen"):
        how = rng.choices(["all", "close", "throw", "unstarted"], [4, 2, 2, 1])[0]
        drive = (how, rng.randint(1, fn.yields)) if how in ("close", "throw") else (how,)
    return Call(
        f"c{number}",
        index,
        [p.name for p in positional[:count]],
        keywords,
        rng.random() < 0.25,
        drive,
    )


def _program(rng: random.Random, fns: list[Fn]) -> list[Step]:
    numbers = iter(range(10_000))

    def calls(low: int, high: int) -> list[Step]:
        return [("call", _call(rng, fns, next(numbers))) for _ in range(rng.randint(low, high))]

    def scope(level: str, inner: list[Step]) -> Step:
        return ("scope", level, inner, rng.random() < 0.25)

    generators = [k for k, fn in enumerate(fns) if fn.kind in ("gen", "asyncgen")]

    def deferred(levels: list[str]) -> list[Step]:
        """A generator callable called here and started inside new blocks, the
        outermost first (the container is "app")."""
        if not generators or rng.random() < 0.6:
            return []
        call = _call(rng, fns, next(numbers), rng.choice(generators))
        block: Step = ("drive", call)
        chosen = [lv for lv in levels if lv == "app" or rng.random() < 0.6] or levels[:1]
        for level in reversed(chosen):
            block = ("container", [block], False) if level == "app" else scope(level, [block])
        return [("deferred", call, block)]

    def container() -> Step:
        steps: list[Step] = []
        for _ in range(rng.randint(1, 4)):
            shape = rng.choice(["app", "request", "request", "session"])
            if shape == "app":
                steps += calls(1, 2) + deferred(["session", "request"])
            elif shape == "request":
                steps.append(scope("request", calls(1, 4)))
            else:
                inner = calls(0, 2) + deferred(["request"])
                if rng.random() < 0.6:
                    inner.append(scope("request", calls(1, 3)))
                steps.append(scope("session", inner + calls(0, 1)))
        return ("container", steps, rng.random() < 0.2)

    program = [*calls(0, 1), *deferred(["app", "session", "request"]), container(), *calls(0, 1)]
    if rng.random() < 0.3:
        program.append(container())
    return program


def random_world(seed: int) -> World:
    rng = random.Random(seed)
    mode = rng.choice(["sync", "asyncio", "trio"])
    nodes, needs, async_below = _nodes(rng, mode != "sync")
    fns = _fns(rng, len(nodes), mode != "sync")
    return World(mode, nodes, fns, _program(rng, fns), needs, async_below)


# -- the real run -------------------------------------------------------------------


class Recorder:
    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.journal: list[Entry] = []
        self.count = 0
        self.made_count = [0] * len(nodes)
        self.objects: dict[str, Any] = {}
        self.raising = False
        self.call = "?"

    def made(self, thing: Any, node: int, args: dict[str, Any]) -> Any:
        thing.label = label = f"K{node}#{self.count}"
        self.count += 1
        self.objects[label] = thing
        self.journal.append(("make", label, tuple(label_of(v) for v in args.values())))
        self.made_count[node] += 1
        fails = self.nodes[node].fails
        if fails is not None and fails in (0, self.made_count[node]):
            raise Boom(f"factory {label}")
        return thing

    def new(self, node: int, args: dict[str, Any]) -> Any:
        return self.made(object.__new__(self.nodes[node].key), node, args)

    def close(self, thing: Any, exc: BaseException | None) -> None:
        self.journal.append(("close", thing.label, describe(exc)))

    def body(self, name: str, args: dict[str, Any]) -> None:
        for value in args.values():
            label = label_of(value)
            if isinstance(value, Thing) and self.objects.get(label) is not value:
                self.journal.append(("NOT THE OBJECT MADE", label))
        self.journal.append(("body", name, tuple(label_of(v) for v in args.values())))


def _factory(node: Node, rec: Recorder, namespace: dict[str, Any]) -> Any:
    names = [f"d{k}" for k in range(len(node.deps))]
    args = "{" + ", ".join(f"{n!r}: {n}" for n in names) + "}"
    made = f"_rec.new({node.index}, {args})"
    signature = ", ".join(names)
    if node.kind == "class":
        source = f"def __init__(self, {signature}):\n    _rec.made(self, {node.index}, {args})\n"
    elif node.kind == "function":
        source = f"def make({signature}):\n    return {made}\n"
    elif node.kind == "coroutine":
        source = f"async def make({signature}):\n    await _sleep0()\n    return {made}\n"
    else:
        asynchronous = node.kind in ASYNC_KINDS
        prefix, pause = ("async ", "        await _sleep0()\n") if asynchronous else ("", "")
        caught = (
            f"    except Exception as exc:\n{pause}        _rec.close(thing, exc)\n        return\n"
            if node.suppress
            else ""
        )
        source = (
            f"{prefix}def make({signature}):\n"
            f"    thing = {made}\n"
            "    try:\n"
            "        yield thing\n"
            f"{caught}"
            "    except BaseException as exc:\n"
            f"{pause}"
            "        _rec.close(thing, exc)\n"
            "        raise\n"
            f"{pause.replace('    ', '', 1)}"
            "    _rec.close(thing, None)\n"
        )
    ns = dict(namespace)
    exec(source, ns)
    annotations = {n: namespace[f"K{d}"] for n, d in zip(names, node.deps, strict=True)}
    if node.kind == "class":
        init = ns["__init__"]
        init.__annotations__ = {**annotations, "return": None}
        node.key.__init__ = init  # type: ignore[misc]
        return node.key
    make = ns["make"]
    make.__annotations__ = annotations
    return make


def _registry(world: World, rec: Recorder, namespace: dict[str, Any], seed: int) -> di.Registry:
    rng = random.Random(seed * 7 + 1)
    reg = di.Registry()
    for node in world.nodes:
        node.key = type(f"K{node.index}", (Thing,), {})
        namespace[f"K{node.index}"] = node.key
    for node in sorted(world.nodes, key=lambda _: rng.random()):
        factory = _factory(node, rec, namespace)
        options: dict[str, Any] = {}
        if node.lifetime == "singleton":
            options = rng.choice([{"singleton": True}, {"scope": "app"}])
        elif node.lifetime != "transient":
            options = {"scope": node.lifetime}
        if node.kind == "class" and rng.random() < 0.5:
            reg.register(node.key, factory, **options)
        else:
            reg.provider(provides=node.key, **options)(factory)
    return reg


def _callable(fn: Fn, namespace: dict[str, Any], via_class: bool) -> Any:
    parts: list[str] = []
    for k, p in enumerate(fn.params):
        if p.style == "kwonly" and (k == 0 or fn.params[k - 1].style != "kwonly"):
            parts.append("*")
        text = p.name + (f": {p.annotation}" if p.annotation else "")
        if p.mode == "depends":
            text += f" = di.Depends(K{p.key})"
        parts.append(text)
        following = fn.params[k + 1].style if k + 1 < len(fn.params) else "kwonly"
        if p.style == "posonly" and following != "posonly":
            parts.append("/")
    prefix = "async " if fn.kind in ("async", "asyncgen") else ""
    pause = "    await _sleep0()\n" if prefix else ""
    args = "{" + ", ".join(f"{p.name!r}: {p.name}" for p in fn.params) + "}"
    if fn.wrap == "classmethod":
        parts.insert(0, "cls")
    lines = f"{prefix}def {fn.name}({', '.join(parts)}):\n"
    if fn.wrap == "classmethod":
        lines += "    assert cls.__name__ == 'Holder', cls\n"
    lines += f"    _rec.body({fn.name!r}, {args})\n{pause}"
    if fn.kind in ("gen", "asyncgen"):
        lines += (
            f"    for _i in range({fn.yields}):\n"
            f"        _rec.journal.append(('yield', {fn.name!r}, _i))\n"
            "        yield _i\n"
            f"{'    ' + pause if pause else ''}"
        )
    lines += "    if _rec.raising:\n        raise _Boom('body ' + _rec.call)\n"
    if fn.kind != "asyncgen":
        lines += f"    return 'ret {fn.name}'\n"
    ns = dict(namespace)
    exec(lines, ns)
    if fn.wrap == "function":
        return di.inject(ns[fn.name])
    wrapper = staticmethod if fn.wrap == "staticmethod" else classmethod
    holder = type("Holder", (), {fn.name: di.inject(wrapper(ns[fn.name]))})
    return getattr(holder if via_class else holder(), fn.name)


def _arguments(call: Call) -> tuple[list[Marker], dict[str, Marker]]:
    args = [Marker(f"x:{call.id}.{name}") for name in call.positional]
    kwargs = {name: Marker(f"x:{call.id}.{name}") for name in call.keywords}
    return args, kwargs


class Runner:
    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        self.rec = rec = Recorder(world.nodes)
        self.journal = rec.journal
        namespace: dict[str, Any] = {"_rec": rec, "_Boom": Boom, "di": di}
        if world.mode == "asyncio":
            namespace["_sleep0"] = lambda: asyncio.sleep(0)
        elif world.mode == "trio":
            namespace["_sleep0"] = lambda: trio.sleep(0)
        registry = _registry(world, rec, namespace, seed)
        rng = random.Random(seed * 7 + 2)
        options: dict[str, Any] = {}
        if world.mode == "sync":
            options = rng.choice([{}, {"sync": True}, {"storage": "thread"}])
        self.container = di.Container(registry, **options)
        for fn in world.fns:
            fn.fn = _callable(fn, namespace, rng.random() < 0.5)
        self.blocks = iter(range(10_000))
        self.pending: dict[str, tuple[Fn, Any]] = {}

    def _start(self, call: Call) -> tuple[Fn, Any]:
        """Journal the call and make what ``drive_*`` runs: the generator
        object of a generator callable (its body, injection included, has not
        started), else the arguments."""
        self.journal.append(("call", call.id))
        fn = self.world.fns[call.fn]
        args, kwargs = _arguments(call)
        if fn.kind in ("gen", "asyncgen"):
            return fn, fn.fn(*args, **kwargs)
        return fn, (args, kwargs)

    def drive_sync(self, call: Call, fn: Fn, made: Any) -> None:
        self.rec.raising, self.rec.call = call.raises, call.id
        journal = self.journal
        try:
            if fn.kind == "def":
                args, kwargs = made
                journal.append(("returned", call.id, label_of(fn.fn(*args, **kwargs))))
                return
            gen = made
            how = call.drive[0]
            if how == "all":
                for _ in gen:
                    pass
                journal.append(("done", call.id))
                return
            if how in ("close", "throw"):
                for _ in range(call.drive[1]):
                    if next(gen, _END) is _END:  # stopped at once: an injection error suppressed
                        journal.append(("stopped early", call.id))
                        return
            if how == "throw":
                try:
                    gen.throw(Boom(f"thrown {call.id}"))
                except StopIteration:
                    journal.append(("stopped", call.id))
                else:
                    journal.append(("yielded after a throw", call.id))
                    gen.close()
                return
            gen.close()
            journal.append(("closed", call.id))
        except Exception as exc:
            journal.append(("error", call.id, describe(exc)))

    async def drive(self, call: Call, fn: Fn, made: Any) -> None:
        if fn.kind in ("def", "gen"):
            self.drive_sync(call, fn, made)
            return
        self.rec.raising, self.rec.call = call.raises, call.id
        journal = self.journal
        try:
            if fn.kind == "async":
                args, kwargs = made
                journal.append(("returned", call.id, label_of(await fn.fn(*args, **kwargs))))
                return
            agen = made
            how = call.drive[0]
            if how == "all":
                async for _ in agen:
                    pass
                journal.append(("done", call.id))
                return
            if how in ("close", "throw"):
                for _ in range(call.drive[1]):
                    try:
                        await agen.__anext__()
                    except StopAsyncIteration:  # an injection error suppressed
                        journal.append(("stopped early", call.id))
                        return
            if how == "throw":
                try:
                    await agen.athrow(Boom(f"thrown {call.id}"))
                except StopAsyncIteration:
                    journal.append(("stopped", call.id))
                else:
                    journal.append(("yielded after a throw", call.id))
                    await agen.aclose()
                return
            await agen.aclose()
            journal.append(("closed", call.id))
        except Exception as exc:
            journal.append(("error", call.id, describe(exc)))

    def run_sync(self, steps: list[Step]) -> None:
        for step in steps:
            if step[0] == "call":
                self.drive_sync(step[1], *self._start(step[1]))
                continue
            if step[0] == "deferred":  # made here, started in the block that follows
                self.pending[step[1].id] = self._start(step[1])
                self.run_sync([step[2]])
                continue
            if step[0] == "drive":
                self.drive_sync(step[1], *self.pending.pop(step[1].id))
                continue
            number = next(self.blocks)
            inner, raises = step[-2], step[-1]
            block = self.container if step[0] == "container" else self.container.scope(step[1])
            try:
                with block:
                    self.journal.append(("in", number, step[0]))
                    self.run_sync(inner)
                    if raises:
                        raise Boom(f"block {number}")
            except Boom as exc:
                self.journal.append(("block error", number, describe(exc)))
            self.journal.append(("out", number))

    async def run_async(self, steps: list[Step]) -> None:
        for step in steps:
            if step[0] == "call":
                await self.drive(step[1], *self._start(step[1]))
                continue
            if step[0] == "deferred":
                self.pending[step[1].id] = self._start(step[1])
                await self.run_async([step[2]])
                continue
            if step[0] == "drive":
                await self.drive(step[1], *self.pending.pop(step[1].id))
                continue
            number = next(self.blocks)
            inner, raises = step[-2], step[-1]
            block = self.container if step[0] == "container" else self.container.scope(step[1])
            try:
                async with block:
                    self.journal.append(("in", number, step[0]))
                    await self.run_async(inner)
                    if raises:
                        raise Boom(f"block {number}")
            except Boom as exc:
                self.journal.append(("block error", number, describe(exc)))
            self.journal.append(("out", number))

    def run(self) -> list[Entry]:
        program = self.world.program
        if self.world.mode == "asyncio":
            asyncio.run(self.run_async(program))
        elif self.world.mode == "trio":
            trio.run(self.run_async, program)
        else:
            self.run_sync(program)
        return self.journal


# -- the model ----------------------------------------------------------------------


class Raised(Exception):
    """An exception the model expects, by its description."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Scope:
    def __init__(self, level: float, parent: Scope | None) -> None:
        self.level, self.parent = level, parent
        self.cache: dict[int, str] = {}
        self.exits: list[tuple[str, bool]] = []  # (label, suppresses an Exception)


class Model:
    def __init__(self, world: World) -> None:
        self.world = world
        self.nodes = world.nodes
        self.journal: list[Entry] = []
        self.count = 0
        self.made_count = [0] * len(self.nodes)
        self.root = Scope(0, None)
        self.current: Scope | None = None  # None: no container entered
        self.blocks = iter(range(10_000))

    def run(self) -> list[Entry]:
        self.steps(self.world.program)
        return self.journal

    def steps(self, steps: list[Step]) -> None:
        for step in steps:
            if step[0] in ("call", "deferred"):
                self.journal.append(("call", step[1].id))
            if step[0] in ("call", "drive"):
                self.call(step[1])
                continue
            if step[0] == "deferred":
                self.steps([step[2]])
                continue
            number = next(self.blocks)
            inner, raises = step[-2], step[-1]
            self.journal.append(("in", number, step[0]))
            if step[0] == "container":
                self.root = self.current = Scope(0, None)
                self.steps(inner)
                self.unwind(self.root.exits, None)  # a close hands its teardowns nothing
                if raises:
                    self.journal.append(("block error", number, f"Boom:block {number}"))
                self.current = None
            else:
                assert self.current is not None
                scope = self.current = Scope(LEVEL[step[1]] or 0, self.current)
                self.steps(inner)
                left = self.unwind(scope.exits, f"Boom:block {number}" if raises else None)
                if left is not None:
                    self.journal.append(("block error", number, left))
                self.current = scope.parent
            self.journal.append(("out", number))

    def unwind(self, exits: list[tuple[str, bool]], exc: str | None) -> str | None:
        while exits:
            label, suppress = exits.pop()
            self.journal.append(("close", label, exc))
            if exc is not None and suppress and exc != "GeneratorExit":
                exc = None
        return exc

    def owner(self, scope: Scope, level: int) -> Scope | None:
        owner: Scope | None = scope
        while owner is not None and owner.level > level:
            owner = owner.parent
        return owner if owner is not None and owner.level == level else None

    def inject(self, index: int, frame: Scope, sync: bool) -> str:
        if sync and self.world.async_below[index]:
            level = LEVEL[self.nodes[index].lifetime]
            owner = None if level is None else self.owner(frame, level)
            if owner is not None and index in owner.cache:
                return owner.cache[index]
            raise Raised("AsyncProviderError")
        return self.get(index, frame)

    def get(self, index: int, scope: Scope) -> str:
        level = LEVEL[self.nodes[index].lifetime]
        owner = scope if level is None else self.owner(scope, level)
        if owner is None:
            raise Raised("NoActiveScopeError")
        if index in owner.cache:
            return owner.cache[index]
        mine: list[tuple[str, bool]] = []
        handed: list[tuple[str, bool]] = []
        try:
            value = self.make(index, owner, mine, handed)
        except Raised as exc:
            if level == 0:  # all it entered, unwound at once: taken back from the root
                for entry in handed:
                    owner.exits.remove(entry)
                assert self.unwind(handed + mine, exc.what) is not None
            else:
                owner.exits += mine
            raise
        owner.exits += mine
        if level is not None:
            owner.cache[index] = value
        return value

    def make(
        self,
        index: int,
        scope: Scope,
        exits: list[tuple[str, bool]],
        handed: list[tuple[str, bool]],
    ) -> str:
        node = self.nodes[index]
        args = []
        for dep in node.deps:
            if self.nodes[dep].lifetime == "transient":
                args.append(self.make(dep, scope, exits, handed))
                continue
            level = LEVEL[self.nodes[dep].lifetime]
            owner = None if level is None else self.owner(scope, level)
            if owner is not None and dep not in owner.cache:
                # Made here, handing over its own exits: what this creation
                # entered so far goes first (teardown in entering order).
                scope.exits += exits
                handed += exits
                exits.clear()
            args.append(self.get(dep, scope))
        label = f"K{index}#{self.count}"
        self.count += 1
        self.journal.append(("make", label, tuple(args)))
        self.made_count[index] += 1
        if node.fails is not None and node.fails in (0, self.made_count[index]):
            raise Raised(f"Boom:factory {label}")
        if node.kind in GENERATOR_KINDS:
            exits.append((label, node.suppress))
        return label

    def call(self, call: Call) -> None:
        fn = self.world.fns[call.fn]
        journal = self.journal
        how = call.drive[0]
        if how == "unstarted":
            journal.append(("closed", call.id))
            return
        explicit = {*call.positional, *call.keywords}
        todo = [p for p in fn.params if p.mode != "plain" and p.name not in explicit]
        frame = None
        exc: str | None = None
        try:
            values: dict[str, str] = {}
            if todo:
                if self.current is None:
                    raise Raised("NoActiveScopeError")
                frame = Scope(self.current.level + 0.5, self.current)
                for p in todo:
                    values[p.name] = self.inject(p.key, frame, fn.kind in ("def", "gen"))
        except Raised as failed:
            exc = failed.what
            if how in ("close", "throw"):  # the first next() runs the injection
                how = "early"
        else:
            args = tuple(values.get(p.name, f"x:{call.id}.{p.name}") for p in fn.params)
            journal.append(("body", fn.name, args))
            if how in ("close", "throw"):
                journal += [("yield", fn.name, i) for i in range(call.drive[1])]
                exc = "GeneratorExit" if how == "close" else f"Boom:thrown {call.id}"
            else:
                journal += [("yield", fn.name, i) for i in range(fn.yields if how == "all" else 0)]
                exc = f"Boom:body {call.id}" if call.raises else None
        left = exc if frame is None else self.unwind(frame.exits, exc)
        if left == "GeneratorExit":
            journal.append(("closed", call.id))  # close() takes it back
        elif left is not None:
            journal.append(("error", call.id, left))
        elif how == "call":
            journal.append(("returned", call.id, None if exc else f"ret {fn.name}"))
        else:
            outcome = {
                "all": "done",
                "close": "closed",
                "throw": "stopped",
                "early": "stopped early",
            }
            journal.append((outcome[how], call.id))


# -- checking -----------------------------------------------------------------------


def explain(world: World) -> str:
    lines = [f"mode {world.mode}"]
    for node in world.nodes:
        extra = (" fails@" + str(node.fails) if node.fails is not None else "") + (
            " suppresses" if node.suppress else ""
        )
        lines.append(f"K{node.index}: {node.lifetime} {node.kind} deps={node.deps}{extra}")
    for fn in world.fns:
        params = ", ".join(f"{p.name}[{p.style} {p.mode} K{p.key}]" for p in fn.params)
        lines.append(f"{fn.name}: {fn.wrap} {fn.kind}({params}) yields={fn.yields}")

    def show(steps: list[Step], pad: str) -> None:
        for step in steps:
            if step[0] in ("call", "deferred", "drive"):
                c = step[1]
                lines.append(
                    f"{pad}{step[0]} {c.id}: f{c.fn}(pos={c.positional} kw={c.keywords}) "
                    f"raises={c.raises} {c.drive}"
                )
                if step[0] == "deferred":
                    show([step[2]], pad + "  ")
            else:
                level = step[1] if step[0] == "scope" else ""
                lines.append(f"{pad}{step[0]} {level} raises={step[-1]}")
                show(step[-2], pad + "  ")

    show(world.program, "  ")
    return "\n".join(lines)


def check(seed: int) -> None:
    world = random_world(seed)
    got = Runner(world, seed).run()
    want = Model(world).run()
    if got != want:
        first = next(
            (k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )
        raise AssertionError(
            f"seed {seed}: di and the model part at entry {first}\n{explain(world)}\n"
            f"common: {got[max(0, first - 8) : first]}\n"
            f"di:     {got[first : first + 6]}\nmodel:  {want[first : first + 6]}"
        )


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_injected_calls_match_the_model(seed: int) -> None:
    check(seed)


def _main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 5000
    start = int(argv[2]) if len(argv) > 2 else 0
    failed = 0
    for seed in range(start, start + count):
        try:
            check(seed)
        except Exception as exc:
            failed += 1
            if failed <= 3:
                print(exc, file=sys.stderr)
    print(f"{count - failed}/{count} seeds agree", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
