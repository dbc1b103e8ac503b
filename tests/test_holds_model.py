"""Holds, nested scopes and shutdown, against a model of the documented rules.

Each seed drives three "actors" (each a ``contextvars.Context``, so each has a
current scope of its own) through a random interleaving of:

- entering and leaving scopes (``session``, then ``request``; a request may
  also be entered directly in the container, or inside a session another actor
  holds);
- ``hold()`` on any checkpoint (another actor's, its own, a parent or a child,
  one whose block has ended, one torn down) and releasing it later, before or
  after the block that entered the checkpoint ends;
- resolving scoped keys from checkpoints (``cp.resolve``) and from the current
  scope of an actor (``container.resolve``);
- refused misuse whose error is documented and changes nothing: entering a
  scope that is not deeper, entering a checkpoint or a ``Hold`` twice, leaving
  a scope or a hold while a scope entered inside it is current;
- finally leaving the container with ``shutdown_timeout=0``, which tears down
  whatever is still held (deepest first, with a warning naming each and its
  holders), then resolving from and leaving what is left.

Every step is one ``__enter__``/``__exit__``/``resolve`` run by hand in an
actor's context, so nothing depends on timing. After every step the journal of
opened and closed resources, ``checkpoint.closed`` / ``holds``, each actor's
``container.current_scope``, ``lingering_checkpoints()`` and
``held_checkpoints()`` are compared with the model.

The rules modelled (docs/design.md "What a checkpoint holds", "Teardown",
"Shutdown"; README "Background work that outlives the request"):

- a checkpoint is torn down exactly once, when its block has ended and its last
  holder has left; the resources it owns close LIFO;
- a held child holds its parent from its first holder until it is torn down
  itself, so children are torn down before their parents;
- a torn-down checkpoint serves nothing (``CheckpointClosedError``) and cannot
  be held again; a key deeper than the checkpoint, or whose level is not on its
  chain, is a ``NoActiveScopeError``;
- a checkpoint counts in ``lingering_checkpoints()`` once held (registered)
  while its block has ended and it is not torn down; ``held_checkpoints()``
  counts the ``hold()`` holders (not held children);
- a ``hold()`` entered where its checkpoint is current sets nothing, so the
  block that entered the checkpoint may end first;
- a forced shutdown tears down every registered checkpoint still open, warning
  once for each; after it, resolves there raise ``CheckpointClosedError`` and
  the blocks and holds still running leave quietly.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pytest

import di

pytestmark = pytest.mark.timeout(60)

SEEDS = 250
ACTORS = 3
MAX_DEPTH = 4  # frames (scopes and holds) per actor
SESSION, REQUEST = 1, 2
LEVEL_NAME = {SESSION: "session", REQUEST: "request"}


class Res:
    def __init__(self, serial: int, deps: tuple[Res, ...]) -> None:
        self.serial = serial
        self.deps = deps


class SessA(Res):
    pass


class SessB(Res):  # needs SessA
    pass


class ReqA(Res):
    pass


class ReqB(Res):  # needs SessB, then ReqA
    pass


class ReqC(Res):  # needs ReqA, then SessA (fails after ReqA without a session)
    pass


KEYS: tuple[type[Res], ...] = (SessA, SessB, ReqA, ReqB, ReqC)
LEVEL = {SessA: SESSION, SessB: SESSION, ReqA: REQUEST, ReqB: REQUEST, ReqC: REQUEST}
DEPS: dict[type[Res], tuple[type[Res], ...]] = {
    SessA: (),
    SessB: (SessA,),
    ReqA: (),
    ReqB: (SessB, ReqA),
    ReqC: (ReqA, SessA),
}

Entry = tuple[str, str, int]  # ("open" | "close", class name, serial)


def _life(cls: type[Res], journal: list[Entry], serials: Iterator[int], *deps: Res) -> Any:
    inst = cls(next(serials), deps)
    journal.append(("open", cls.__name__, inst.serial))
    yield inst
    journal.append(("close", cls.__name__, inst.serial))


def build(journal: list[Entry]) -> di.Container:
    serials = itertools.count()
    r = di.Registry()

    @r.provider(scope="session")
    def sess_a() -> Iterator[SessA]:
        yield from _life(SessA, journal, serials)

    @r.provider(scope="session")
    def sess_b(a: SessA) -> Iterator[SessB]:
        yield from _life(SessB, journal, serials, a)

    @r.provider(scope="request")
    def req_a() -> Iterator[ReqA]:
        yield from _life(ReqA, journal, serials)

    @r.provider(scope="request")
    def req_b(b: SessB, a: ReqA) -> Iterator[ReqB]:
        yield from _life(ReqB, journal, serials, b, a)

    @r.provider(scope="request")
    def req_c(a: ReqA, s: SessA) -> Iterator[ReqC]:
        yield from _life(ReqC, journal, serials, a, s)

    return di.Container(r, shutdown_timeout=0.0)


# -- the model ------------------------------------------------------------------


class Refused(Exception):
    """The model's expected error: ``kind`` is the exact di error type."""

    def __init__(self, kind: type[di.DIError]) -> None:
        super().__init__(kind.__name__)
        self.kind = kind


BLOCK = "block"  # the holder that is the block which entered the checkpoint


@dataclass(eq=False)
class MCp:
    name: str
    level: int
    parent: MCp | None  # None: the container's root
    real: di.Checkpoint
    block: bool = True  # the entering block is still inside
    registered: bool = False  # held at least once: in the container's live set
    closed: bool = False
    holds: dict[int, None] = field(default_factory=dict)  # hold() holders, by id
    children: list[MCp] = field(default_factory=list)  # held children holding it
    cache: dict[type[Res], int] = field(default_factory=dict)
    exits: list[tuple[str, int]] = field(default_factory=list)  # creation order

    def __repr__(self) -> str:
        return self.name

    def chain(self) -> Iterator[MCp]:
        cp: MCp | None = self
        while cp is not None:
            yield cp
            cp = cp.parent


class Model:
    def __init__(self) -> None:
        self.cps: list[MCp] = []
        self.live: list[MCp] = []  # registered and not torn down, in registration order
        self.journal: list[Entry] = []
        self.serial = 0
        self.deps: dict[int, tuple[int, ...]] = {}
        self.owner: dict[int, MCp] = {}

    # resolving
    def resolve(self, cp: MCp | None, key: type[Res]) -> int:
        if cp is None:
            raise Refused(di.NoActiveScopeError)
        if cp.closed:
            raise Refused(di.CheckpointClosedError)
        return self._get(cp, key)

    def _get(self, cp: MCp, key: type[Res]) -> int:
        owner = next((c for c in cp.chain() if c.level <= LEVEL[key]), None)
        if owner is None or owner.level != LEVEL[key]:
            raise Refused(di.NoActiveScopeError)
        assert not owner.closed, "an open checkpoint under a torn-down one"
        if key in owner.cache:
            return owner.cache[key]
        deps = tuple(self._get(owner, dep) for dep in DEPS[key])  # in parameter order
        serial, self.serial = self.serial, self.serial + 1
        self.journal.append(("open", key.__name__, serial))
        owner.cache[key] = serial
        owner.exits.append((key.__name__, serial))
        self.deps[serial] = deps
        self.owner[serial] = owner
        return serial

    # holding
    def hold(self, cp: MCp, hid: int) -> None:
        if cp.closed:
            raise Refused(di.CheckpointClosedError)
        cp.holds[hid] = None
        if not cp.registered:
            self._register(cp)

    def _register(self, cp: MCp) -> None:
        cp.registered = True
        self.live.append(cp)
        parent = cp.parent
        if parent is not None:  # a held checkpoint holds its parent
            assert not parent.closed, "a held child of a torn-down parent"
            parent.children.append(cp)
            if not parent.registered:
                self._register(parent)

    def release(self, cp: MCp, holder: int | MCp | str) -> None:
        if isinstance(holder, MCp):
            cp.children.remove(holder)
        elif isinstance(holder, int):
            del cp.holds[holder]
        else:
            assert holder == BLOCK
            cp.block = False
        if cp.closed:  # torn down already (by a forced shutdown): nothing runs
            return
        if not cp.registered:  # only its block ever held it
            assert holder == BLOCK
            self.teardown(cp)
        elif not cp.block and not cp.holds and not cp.children:
            self.teardown(cp)

    def teardown(self, cp: MCp) -> None:
        assert not cp.closed
        cp.closed = True
        cp.cache.clear()
        self.journal += [("close", name, serial) for name, serial in reversed(cp.exits)]
        cp.exits.clear()
        if cp.registered:
            self.live.remove(cp)
            if cp.parent is not None and not cp.parent.closed:
                self.release(cp.parent, cp)

    # what the container reports
    def lingering(self, level: int | None = None) -> int:
        return sum(1 for cp in self.live if not cp.block and level in (None, cp.level))

    def held(self, level: int | None = None) -> int:
        return sum(len(cp.holds) for cp in self.live if level in (None, cp.level))

    def holds_of(self, cp: MCp) -> int:
        return len(cp.holds) if cp.registered and not cp.closed else 0


# -- the actors ----------------------------------------------------------------


@dataclass(eq=False)
class Frame:
    kind: str  # "scope" | "hold"
    cp: MCp
    cm: Any  # the Checkpoint or the Hold
    already: bool = False  # a hold entered where its checkpoint was current: sets nothing
    hid: int = -1


@dataclass(eq=False)
class Actor:
    name: str
    ctx: contextvars.Context = field(default_factory=contextvars.Context)
    stack: list[Frame] = field(default_factory=list)

    def current(self) -> MCp | None:
        # A hold that set nothing (entered where its checkpoint was current)
        # leaves the current scope to the frames below it.
        for frame in reversed(self.stack):
            if frame.kind == "scope" or not frame.already:
                return frame.cp
        return None


class Run:
    def __init__(self, seed: int, caplog: pytest.LogCaptureFixture) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.caplog = caplog
        self.journal: list[Entry] = []
        self.container = build(self.journal)
        self.model = Model()
        self.actors = [Actor(f"a{i}") for i in range(ACTORS)]
        self.main = contextvars.Context()
        self.trace: list[str] = []
        self.hids = itertools.count()
        self.names = itertools.count()

    # -- checking
    def failure(self, what: str) -> str:
        steps = "\n  ".join(self.trace[-40:])
        return f"seed {self.seed}: {what}\n last steps:\n  {steps}"

    def fail(self, what: str) -> NoReturn:
        raise AssertionError(self.failure(what))

    def check(self) -> None:
        m, c = self.model, self.container
        if self.journal != m.journal:
            self.fail(f"journal\n actual   {self.journal}\n expected {m.journal}")
        for cp in m.cps:
            if cp.real.closed != cp.closed:
                self.fail(f"{cp}.closed is {cp.real.closed}, expected {cp.closed}")
            if cp.real.holds != m.holds_of(cp):
                self.fail(f"{cp}.holds is {cp.real.holds}, expected {m.holds_of(cp)}")
        for level in (None, SESSION, REQUEST):
            name = None if level is None else LEVEL_NAME[level]
            got, want = c.lingering_checkpoints(name), m.lingering(level)
            if got != want:
                self.fail(f"lingering_checkpoints({name!r}) is {got}, expected {want}")
            got, want = c.held_checkpoints(name), m.held(level)
            if got != want:
                self.fail(f"held_checkpoints({name!r}) is {got}, expected {want}")
        for actor in self.actors:
            got_cp = actor.ctx.run(lambda: c.current_scope)
            want_cp = actor.current()
            if got_cp is not (None if want_cp is None else want_cp.real):
                self.fail(f"{actor.name}: current_scope is {got_cp!r}, expected {want_cp}")

    def expect(self, what: str, call: Callable[[], Any], model: Callable[[], Any]) -> Any:
        """Run ``call`` (the real step) and ``model`` (the model's), and
        compare: both return, or both raise the same di error type."""
        self.trace.append(what)
        refused: Refused | None = None
        try:
            want = model()
        except Refused as exc:
            refused = exc
        try:
            got = call()
        except di.DIError as exc:
            if refused is None:
                raise AssertionError(self.failure(f"{what}: raised {exc!r}")) from exc
            if type(exc) is not refused.kind:
                expected = refused.kind.__name__
                raise AssertionError(
                    self.failure(f"{what}: raised {exc!r}, not {expected}")
                ) from exc
            return refused
        if refused is not None:
            self.fail(f"{what}: returned {got!r}, expected {refused.kind.__name__}")
        return got, want

    # -- steps
    def enter(self, actor: Actor, level: int) -> None:
        cur = actor.current()
        real = self.container.scope(LEVEL_NAME[level])
        cp = MCp(f"{actor.name}.{LEVEL_NAME[level][0]}{next(self.names)}", level, cur, real)

        def model() -> None:
            if cur is not None and cur.level >= level:
                raise Refused(di.ScopeError)

        result = self.expect(
            f"{actor.name}: enter {cp} in {cur}", lambda: actor.ctx.run(real.__enter__), model
        )
        if isinstance(result, Refused):
            return
        got, _ = result
        assert got is real
        parent = real.parent
        if cur is None:  # the container's own checkpoint, the first level
            right = parent is not None and parent.parent is None and parent.level == "app"
        else:
            right = parent is cur.real
        if not right or real.level != LEVEL_NAME[level]:
            self.fail(f"{cp}: level {real.level!r}, parent {parent!r}; expected parent {cur}")
        self.model.cps.append(cp)
        actor.stack.append(Frame("scope", cp, real))

    def reenter(self, actor: Actor, cp: MCp) -> None:
        def model() -> None:
            raise Refused(di.ScopeError)

        self.expect(
            f"{actor.name}: enter {cp} again", lambda: actor.ctx.run(cp.real.__enter__), model
        )

    def leave(self, actor: Actor, index: int) -> None:
        """Leave the frame at ``index``: the top one, or a scope with only
        holds that set nothing above it (its block ends first)."""
        frame = actor.stack[index]
        m = self.model
        if frame.kind == "scope":
            what = f"{actor.name}: leave {frame.cp}"
            if index != len(actor.stack) - 1:
                what += " (under holds of it that set nothing)"

            def model() -> None:
                m.release(frame.cp, BLOCK)

        else:
            what = f"{actor.name}: release hold #{frame.hid} of {frame.cp}"

            def model() -> None:
                m.release(frame.cp, frame.hid)

        got, _ = self.expect(
            what, lambda: actor.ctx.run(frame.cm.__exit__, None, None, None), model
        )
        if got:
            self.fail(f"{what}: returned {got!r} (suppressed nothing)")
        del actor.stack[index]

    def leave_out_of_order(self, actor: Actor, index: int) -> None:
        """Leave a frame while a scope entered inside it is current: refused."""
        frame = actor.stack[index]

        def model() -> None:
            raise Refused(di.ScopeError)

        self.expect(
            f"{actor.name}: leave {frame.kind} of {frame.cp} out of order",
            lambda: actor.ctx.run(frame.cm.__exit__, None, None, None),
            model,
        )

    def hold(self, actor: Actor, cp: MCp) -> None:
        hid = next(self.hids)
        already = actor.current() is cp
        hold = cp.real.hold()
        result = self.expect(
            f"{actor.name}: hold #{hid} of {cp}",
            lambda: actor.ctx.run(hold.__enter__),
            lambda: self.model.hold(cp, hid),
        )
        if isinstance(result, Refused):
            return
        got, _ = result
        assert got is cp.real
        actor.stack.append(Frame("hold", cp, hold, already, hid))

    def rehold(self, actor: Actor, frame: Frame) -> None:
        def model() -> None:
            raise Refused(di.ScopeError)

        self.expect(
            f"{actor.name}: enter hold #{frame.hid} of {frame.cp} again",
            lambda: actor.ctx.run(frame.cm.__enter__),
            model,
        )

    def resolve(self, actor: Actor, cp: MCp | None, key: type[Res], here: bool) -> None:
        if here:  # container.resolve in the actor's current scope
            what = f"{actor.name}: container.resolve({key.__name__}) in {cp}"
            resolve = self.container.resolve
        else:
            assert cp is not None
            what = f"{actor.name}: {cp}.resolve({key.__name__})"
            resolve = cp.real.resolve
        call = functools.partial(actor.ctx.run, resolve, key)
        result = self.expect(what, call, lambda: self.model.resolve(cp, key))
        if isinstance(result, Refused):
            return
        got, serial = result
        if type(got) is not key or got.serial != serial:
            self.fail(f"{what}: got {type(got).__name__} #{got.serial}, expected #{serial}")
        deps = tuple(d.serial for d in got.deps)
        if deps != self.model.deps[serial]:
            self.fail(f"{what}: built from {deps}, expected {self.model.deps[serial]}")

    def resolve_in(self, actor: Actor, cp: MCp) -> None:
        self.resolve(actor, cp, self.key_for(cp), False)

    # -- choosing a step
    def key_for(self, cp: MCp | None) -> type[Res]:
        """Mostly a key the checkpoint can serve, sometimes any."""
        fits = [k for k in KEYS if cp is not None and LEVEL[k] <= cp.level]
        return self.rng.choice(fits if fits and self.rng.random() < 0.7 else KEYS)

    def step(self) -> None:
        rng = self.rng
        actor = rng.choice(self.actors)
        cur = actor.current()
        stack = actor.stack
        room = len(stack) < MAX_DEPTH
        cps = self.model.cps
        options: list[tuple[float, Callable[[], None]]] = []

        def add(weight: float, fn: Callable[[], None]) -> None:
            options.append((weight, fn))

        if room:  # a scope that is not deeper than the current one is refused
            add(3.0 if cur is None else 0.2, lambda: self.enter(actor, SESSION))
            # (levels may be skipped: a request straight in the container, now and then)
            weight = 1.0 if cur is None else 4.0 if cur.level < REQUEST else 0.2
            add(weight, lambda: self.enter(actor, REQUEST))
        if stack:
            add(2.0 + len(stack), lambda: self.leave(actor, len(stack) - 1))
            for i, frame in enumerate(stack[:-1]):
                above = stack[i + 1 :]
                if frame.kind == "scope" and all(
                    f.kind == "hold" and f.already and f.cp is frame.cp for f in above
                ):
                    add(1.5, functools.partial(self.leave, actor, i))
                elif (
                    cur is not None
                    and cur is not frame.cp
                    and any(c is frame.cp for c in cur.chain())
                ):
                    add(0.4, functools.partial(self.leave_out_of_order, actor, i))
        if cps and room:
            open_cps = [cp for cp in cps if not cp.closed]
            closed_cps = [cp for cp in cps if cp.closed]
            requests = [cp for cp in open_cps if cp.level == REQUEST]
            if requests:  # a held child holds its parent: hold children often
                add(2.0, lambda: self.hold(actor, rng.choice(requests)))
            if open_cps:
                add(2.5, lambda: self.hold(actor, rng.choice(open_cps)))
            if closed_cps:
                add(0.5, lambda: self.hold(actor, rng.choice(closed_cps)))
        active = [f for a in self.actors for f in a.stack if f.kind == "hold"]
        if active:
            add(0.3, lambda: self.rehold(actor, rng.choice(active)))
        if cps:
            add(0.3, lambda: self.reenter(actor, rng.choice(cps)))
            add(3.0, lambda: self.resolve_in(actor, rng.choice(cps)))
        add(1.5, lambda: self.resolve(actor, cur, self.key_for(cur), True))

        weights = [w for w, _ in options]
        rng.choices(options, weights)[0][1]()
        self.check()

    # -- the end: shutdown with what is still held
    def wind_down(self, keep_blocks: bool, keep_holds: float) -> None:
        """Leave frames (the top ones, in random actor order) until no scope
        is left whose block the shutdown would not know of: every scope left
        must be registered (only with ``keep_blocks``). Holds on top are
        kept with probability ``keep_holds``."""
        rng = self.rng

        def must_pop(actor: Actor) -> bool:
            return any(
                f.kind == "scope" and not (keep_blocks and f.cp.registered) for f in actor.stack
            )

        def may_pop(actor: Actor) -> bool:
            return bool(actor.stack) and rng.random() > keep_holds

        while True:
            busy = [a for a in self.actors if must_pop(a)]
            if not busy:
                busy = [a for a in self.actors if may_pop(a)]
                if not busy:
                    break
            actor = rng.choice(busy)
            self.leave(actor, len(actor.stack) - 1)
            self.check()

    def shutdown(self) -> None:
        m = self.model
        stuck = list(m.live)
        for cp in stuck:  # every registered checkpoint still open is held by someone
            assert cp.block or cp.holds or cp.children
        before = len(self.journal)
        self.caplog.clear()
        self.trace.append(f"leave the container (stuck: {stuck})")
        try:
            self.main.run(self.container.__exit__, None, None, None)
        except di.DIError as exc:
            self.fail(f"container exit raised {exc!r}")

        # One warning for each stuck checkpoint, naming its holders.
        warned = [
            r
            for r in self.caplog.records
            if r.name == "di" and r.levelno == logging.WARNING and "shutdown:" in r.msg
        ]
        named = [r.args[0] for r in warned if isinstance(r.args, tuple)]
        if sorted(map(id, named)) != sorted(id(cp.real) for cp in stuck) or len(named) != len(
            warned
        ):
            self.fail(f"shutdown warned about {named}, expected {[cp.real for cp in stuck]}")
        for record in warned:
            assert isinstance(record.args, tuple)
            cp = next(cp for cp in stuck if cp.real is record.args[0])
            holders = str(record.args[1])
            counts = (
                holders.count("the block that entered it"),
                holders.count("hold() in thread"),
                holders.count("child <di.Checkpoint"),
            )
            if counts != (int(cp.block), len(cp.holds), len(cp.children)):
                self.fail(f"shutdown warning for {cp}: held by {holders!r}")

        # What it tore down: every stuck checkpoint, once, LIFO within each,
        # children before parents. ("Deepest first" is checked along each
        # chain only: a session whose last holder was a stuck child is torn
        # down with that child, possibly before an unrelated stuck request.)
        torn = self.journal[before:]
        order: list[MCp] = []
        runs: dict[MCp, list[Entry]] = {}
        for entry in torn:
            kind, _, serial = entry
            owner = m.owner.get(serial)
            if kind != "close" or owner is None or owner not in stuck:
                self.fail(f"shutdown journaled {entry}, not a close of a stuck checkpoint")
            assert owner is not None
            if owner not in runs:
                order.append(owner)
                runs[owner] = []
            elif order[-1] is not owner:
                self.fail(f"shutdown interleaved the teardown of {owner} with another: {torn}")
            runs[owner].append(entry)
        for cp in stuck:
            want = [("close", name, serial) for name, serial in reversed(cp.exits)]
            if runs.get(cp, []) != want:
                self.fail(f"shutdown tore {cp} down as {runs.get(cp)}, expected {want}")
        for i, cp in enumerate(order):
            if cp.parent is not None and cp.parent in order[:i]:
                self.fail(f"shutdown tore {cp.parent} down before its child {cp}: {order}")

        # The model's state after it (its journal: what really happened, checked above).
        for cp in sorted(stuck, key=lambda cp: -cp.level):
            if not cp.closed:
                m.teardown(cp)
        m.journal = list(self.journal)
        self.check()

    def after_shutdown(self) -> None:
        """Resolve from and hold what is left (all torn down), then leave it."""
        rng = self.rng
        m = self.model
        assert not m.live and all(cp.closed for cp in m.cps)
        for _ in range(rng.randrange(6)):
            actor = rng.choice(self.actors)
            key = rng.choice(KEYS)
            if m.cps and rng.random() < 0.6:
                self.resolve(actor, rng.choice(m.cps), key, False)
            elif m.cps and rng.random() < 0.5:
                self.hold(actor, rng.choice(m.cps))
            else:
                self.resolve(actor, actor.current(), key, True)
            self.check()
        while busy := [a for a in self.actors if a.stack]:
            actor = rng.choice(busy)
            self.leave(actor, len(actor.stack) - 1)
            self.check()
        for actor in self.actors:
            assert actor.ctx.run(lambda: self.container.current_scope) is None

    def run(self) -> None:
        rng = self.rng
        self.main.run(self.container.__enter__)
        self.check()
        for _ in range(rng.randrange(20, 80)):
            self.step()
        mode = rng.choice(["clean", "holds", "holds", "blocks"])
        self.trace.append(f"wind down ({mode})")
        if mode == "clean":
            self.wind_down(keep_blocks=False, keep_holds=0.0)
        else:
            self.wind_down(keep_blocks=mode == "blocks", keep_holds=0.7)
        self.shutdown()
        self.after_shutdown()


@pytest.mark.parametrize("seed", range(SEEDS))
def test_holds_follow_the_model(seed: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="di")
    Run(seed, caplog).run()
