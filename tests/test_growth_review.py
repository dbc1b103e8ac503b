"""Review: what grows in a long-running service, and what is kept alive.

Each pattern runs many times (thousands of requests, overrides, containers)
and is checked by counts, not timing: the lengths of the container's and the
compiler's internal collections, ``tracemalloc`` growth, and ``weakref``s
taken with the cyclic GC disabled (``no_gc``), which tells "freed when the
last reference goes" from "freed at the next collection pass".

They pin what holds (bounded, freed). Four pinned defects the review found, all
fixed: recursive closures (the graph walk, the interpreter) and compiled plans
left in their own globals were reference cycles that kept an ended override's
value or a closed container's singletons alive until a GC pass, and a teardown
that raised left exception-frame cycles holding its checkpoint.

Documented, so not a defect here: a `Container` refers to itself through its
root (Container docstring), so a container is freed by a collection pass,
not by ``del`` alone; and a singleton with teardown made under an override
keeps its teardown registered with the root until the container closes
(docs/design.md, overrides) -- `test_override_built_singleton_teardown_stays_until_close`
pins that it grows by exactly one per override and is all released at close.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import sys
import threading
import time
import tracemalloc
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio

import di
from di.container import _entered
from di.scopes import _background

# -- helpers ------------------------------------------------------------------


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Run with the cyclic GC off, after a full collection: what is freed
    inside is freed by reference counting alone."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def alive(refs: list[weakref.ref[Any]]) -> int:
    return sum(1 for r in refs if r() is not None)


def sizes(c: di.Container) -> dict[str, int]:
    """Every internal collection a long-running container could grow."""
    comp = c._compiler
    return {
        "plans": len(c._plans),
        "aplans": len(c._aplans),
        "made": sum(len(v) for v in c._made.values()),
        "made_keys": len(c._made),
        "dropped": len(c._dropped),
        "scoped": len(c._scoped),
        "baked": len(c._baked),
        "live": len(c._live),
        "overrides": len(c._overrides),
        "waiters": len(comp.waiters),
        "locks": len(comp.locks),
        "marker_keys": len(comp.marker_keys),
        "root_exits": len(c._root._exits or []),
        "root": len(c._root),
        "background": len(_background),
    }


def traced_growth(step: Callable[[], None], n: int) -> int:
    """Bytes still allocated after ``n`` more runs of ``step`` (warmed up):
    the least of three windows, as a leak grows in every one while a cache
    filling or the allocator's noise (up to megabytes, once in a while, on
    3.10 in a long session) does not."""
    for _ in range(50):
        step()
    gc.collect()
    grown = []
    tracemalloc.start()
    try:
        for _ in range(3):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                step()
            gc.collect()
            grown.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    return min(grown)


# Below one small object per iteration (a leaked dict or instance costs 100+
# bytes, and the loops run hundreds to thousands of times); 3.10's allocator
# noise reaches some 20 KiB.
SMALL = 32 * 1024


# -- the registry under test --------------------------------------------------


class Settings:
    pass


class Repo:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


class Session:
    pass


class ASession:
    pass


class Bad:
    pass


class BadTeardown:
    pass


class Handler:
    def __init__(self, repo: Repo, session: Session) -> None:
        self.repo = repo
        self.session = session


class Dep:
    pass


class FakeDep(Dep):
    pass


class Single:
    def __init__(self, dep: Dep) -> None:
        self.dep = dep


class GenSingle:
    pass


class Plain:
    pass


class Uses:
    def __init__(self, single: Single, plain: Plain) -> None:
        self.single = single
        self.plain = plain


class Tmp:
    pass


class Slow:
    pass


class SlowSingle:
    pass


TEARDOWNS: list[str] = []


def make_registry() -> di.Registry:
    reg = di.Registry()
    reg.register(Settings, Settings, singleton=True)
    reg.register(Repo, Repo)
    reg.register(Handler, Handler)
    reg.register(Dep, Dep)
    reg.register(Single, Single, singleton=True)
    reg.register(Plain, Plain, singleton=True)
    reg.register(Uses, Uses)

    @reg.provider(scope="request")
    def session() -> Iterator[Session]:
        yield Session()

    @reg.provider(scope="request")
    async def asession() -> AsyncIterator[ASession]:
        yield ASession()

    @reg.provider(scope="request")
    def bad() -> Bad:
        raise ValueError("factory failed")

    @reg.provider(scope="request")
    def bad_teardown() -> Iterator[BadTeardown]:
        yield BadTeardown()
        raise ValueError("teardown failed")

    @reg.provider(singleton=True)
    def gen_single(dep: Dep) -> Iterator[GenSingle]:
        yield GenSingle()
        TEARDOWNS.append("gen_single")

    @reg.provider
    def tmp() -> Iterator[Tmp]:
        yield Tmp()

    @reg.provider(scope="request")
    def slow() -> Slow:
        time.sleep(0.001)
        return Slow()

    @reg.provider(singleton=True)
    def slow_single() -> SlowSingle:
        time.sleep(0.002)
        return SlowSingle()

    return reg


REG = make_registry()


def fake_dep_gen() -> Iterator[Dep]:
    yield FakeDep()


# -- request scopes -----------------------------------------------------------


def test_sync_request_scopes_stay_bounded() -> None:
    """Plain, failing factory, failing body, held and released late, and
    exited out of order (refused) then properly: 10,000 rounds leave every
    internal collection as it was and no traced memory behind."""
    c = di.Container(REG)

    def step() -> None:
        with c.scope("request") as s:
            s.resolve(Handler)
            s.resolve(Handler)
        with contextlib.suppress(ValueError), c.scope("request") as s:
            s.resolve(Bad)
        with contextlib.suppress(KeyError), c.scope("request") as s:
            s.resolve(Session)
            raise KeyError
        with c.scope("request") as s:
            hold = s.hold()
            hold.__enter__()
            s.resolve(Session)
        hold.__exit__(None, None, None)  # released after the block ended
        outer = c.scope("request")
        outer.__enter__()
        outer.resolve(Session)
        inner = c.scope("step")
        inner.__enter__()
        with contextlib.suppress(di.ScopeError):
            outer.__exit__(None, None, None)  # out of order: refused
        inner.__exit__(None, None, None)
        outer.__exit__(None, None, None)

    with c:
        for _ in range(20):
            step()
        before = sizes(c)
        grown = traced_growth(step, 2000)  # x5 scopes: 10,000 scopes
        assert sizes(c) == before
        assert before["live"] == before["waiters"] == before["root_exits"] == 0
        assert c.lingering_checkpoints() == 0 and c.held_checkpoints() == 0
    assert grown < SMALL, grown
    assert _entered.get() is None


def test_sync_request_scopes_freed_without_gc() -> None:
    """Each of those checkpoints and its instances is freed by reference
    counting alone when its block ends (no cycle), failures included."""
    c = di.Container(REG)
    refs: list[weakref.ref[Any]] = []
    with c, no_gc():
        for _ in range(300):
            with c.scope("request") as s:
                v = s.resolve(Session)
            refs += [weakref.ref(s), weakref.ref(v)]
            with contextlib.suppress(ValueError), c.scope("request") as s:
                s.resolve(Bad)
            refs.append(weakref.ref(s))
            with c.scope("request") as s:
                hold = s.hold()
                hold.__enter__()
                v = s.resolve(Session)
            hold.__exit__(None, None, None)
            refs += [weakref.ref(s), weakref.ref(v)]
            outer = c.scope("request")
            outer.__enter__()
            inner = c.scope("step")
            inner.__enter__()
            with contextlib.suppress(di.ScopeError):
                outer.__exit__(None, None, None)
            inner.__exit__(None, None, None)
            outer.__exit__(None, None, None)
            refs += [weakref.ref(outer), weakref.ref(inner)]
            del s, v, hold, outer, inner
        # (a ContextVar keeps its last value cached: at most the last one)
        assert alive(refs) <= 2


def test_asyncio_request_scopes_and_spawn_stay_bounded() -> None:
    c = di.Container(REG)

    async def main() -> tuple[dict[str, int], dict[str, int]]:
        async def step() -> None:
            async with c.scope("request") as s:
                await s.aresolve(ASession)
                await s.aresolve(Handler)
            with contextlib.suppress(ValueError):
                async with c.scope("request") as s:
                    await s.aresolve(Bad)
            async with c.scope("request") as s:

                async def work() -> None:
                    await asyncio.sleep(0)
                    await s.aresolve(ASession)

                task = s.spawn(work())  # outlives the block
            await task

        async with c:
            for _ in range(20):
                await step()
            before = sizes(c)
            for _ in range(3000):  # 9,000 scopes, 3,000 spawned tasks
                await step()
            gc.collect()
            return before, sizes(c)

    before, after = asyncio.run(main())
    assert after == before
    assert after["live"] == after["background"] == after["waiters"] == 0


def test_asyncio_checkpoints_freed_without_gc() -> None:
    c = di.Container(REG)

    async def main() -> int:
        refs: list[weakref.ref[Any]] = []
        async with c:
            with no_gc():
                for _ in range(300):
                    async with c.scope("request") as s:
                        v = await s.aresolve(ASession)

                        async def work(s: di.Checkpoint = s) -> None:
                            await asyncio.sleep(0)
                            await s.aresolve(ASession)

                        task = s.spawn(work())
                    await task
                    refs += [weakref.ref(s), weakref.ref(v), weakref.ref(task)]
                    with contextlib.suppress(ValueError):
                        async with c.scope("request") as s:
                            await s.aresolve(Bad)
                    refs.append(weakref.ref(s))
                    del s, v, task
                await asyncio.sleep(0)
                return alive(refs)

    assert asyncio.run(main()) <= 3  # the last round's, at most


def test_trio_request_scopes_with_holds_stay_bounded() -> None:
    c = di.Container(REG)

    async def main() -> tuple[dict[str, int], dict[str, int], int]:
        async with c:

            async def step(nursery: trio.Nursery) -> di.Checkpoint:
                async with c.scope("request") as s:
                    await s.aresolve(ASession)
                    held = trio.Event()

                    async def work() -> None:
                        async with s.hold():
                            held.set()
                            await trio.sleep(0)
                            await s.aresolve(ASession)

                    nursery.start_soon(work)
                    await held.wait()  # released after the block ends
                return s

            async with trio.open_nursery() as n:
                for _ in range(20):
                    await step(n)
            before = sizes(c)
            refs: list[weakref.ref[Any]] = []
            with no_gc():
                async with trio.open_nursery() as n:
                    for _ in range(2000):
                        refs.append(weakref.ref(await step(n)))
                left = alive(refs)
            return before, sizes(c), left

    before, after, left = trio.run(main)
    assert after == before and after["live"] == 0
    assert left <= 1


# -- overrides ----------------------------------------------------------------

OVERRIDES: dict[str, Callable[[di.Container], Any]] = {
    "value of a transient": lambda c: c.override(Dep, FakeDep()),
    "factory of a transient": lambda c: c.override(Dep, FakeDep),
    "generator factory of a transient": lambda c: c.override(Tmp, lambda: Tmp()),
    "value of a singleton": lambda c: c.override(Single, Single(FakeDep())),
    "factory of a singleton": lambda c: c.override(Plain, lambda: Plain()),
    "value of a scoped key": lambda c: c.override(Session, Session()),
    "factory of a scoped key": lambda c: c.override(Session, Session),
}


@pytest.mark.parametrize("kind", list(OVERRIDES))
def test_override_churn_stays_bounded(kind: str) -> None:
    """Begin and end an override 1,000 times (each rebuilds the graph twice),
    with singletons created under it and after it, plans compiled and a
    request in between: the override list, the cache of set-aside singletons
    (`_made`), `_dropped`, the plans and the root stay as they were
    (teardown-less singletons only: see
    `test_override_built_singleton_teardown_stays_until_close`)."""
    c = di.Container(REG)
    make = OVERRIDES[kind]

    def step() -> None:
        with make(c):
            c.resolve(Single)
            c.resolve(Uses)
            c.resolve(Uses)
            with c.scope("request") as s:
                s.resolve(Handler)
                s.resolve(Tmp)  # (at the root its teardown would wait for the close)
        c.resolve(Single)
        c.resolve(Uses)

    with c:
        for _ in range(20):
            step()
        gc.collect()
        before = sizes(c)
        grown = traced_growth(step, 300)
        for _ in range(700):
            step()
        gc.collect()
        assert sizes(c) == before
        assert before["overrides"] == 0 and before["made"] <= 3
    assert grown < SMALL, grown


def test_nested_and_out_of_order_override_churn_stays_bounded() -> None:
    c = di.Container(REG)
    with c:
        c.resolve(Single)
        before = None
        for i in range(1000):
            a = c.override(Dep, FakeDep())
            b = c.override(Plain, (lambda: Plain()) if i % 2 else Plain())
            d = c.override(Single, lambda: Single(FakeDep()))
            for o in (a, b, d):
                o.__enter__()
                c.resolve(Uses)
                c.resolve(Single)
            for o in (b, d, a) if i % 3 else (a, b, d):  # out of order, then in order
                o.__exit__(None, None, None)
            c.resolve(Uses)
            if i == 20:
                gc.collect()
                before = sizes(c)
        gc.collect()
        assert sizes(c) == before
        assert c._overrides == [] and c._broken is None


def test_override_built_singleton_teardown_stays_until_close() -> None:
    """Documented (design.md, overrides): a singleton with teardown made
    under an override is forgotten when the override ends, but its teardown
    stays registered with the root. Pinned: exactly one entry per override,
    no more, and a close runs and releases all of them."""
    c = di.Container(REG)
    TEARDOWNS.clear()
    n = 2000
    with c:
        c.resolve(GenSingle)
        base = len(c._root._exits)
        refs = []
        for _ in range(n):
            with c.override(Dep, FakeDep()):
                refs.append(weakref.ref(c.resolve(GenSingle)))
        assert len(c._root._exits) == base + n
        assert sum(len(v) for v in c._made.values()) == 1  # only the original is kept
    assert TEARDOWNS.count("gen_single") == n + 1
    assert c._root._exits == []
    gc.collect()
    assert alive(refs) == 0


def test_override_built_singleton_freed_at_end_without_plans() -> None:
    """Without plans in play, the singleton built under an override is freed
    by reference counting when the override ends (`_made` forgets it)."""
    c = di.Container(REG)
    with c:
        c.resolve(Single)
        with no_gc():
            with c.override(Dep, FakeDep()):
                built = c.resolve(Single)
            ref = weakref.ref(built)
            del built
            assert ref() is None


def test_override_value_freed_when_override_ends_without_gc() -> None:
    """A test's fake (it may hold a connection, a temp dir, a big fixture) is
    expected to go when its ``with c.override(...)`` ends. Each Graph built
    by ``_rebuild`` leaves ``_check``'s self-referencing ``visit`` closure as
    cyclic garbage whose cells hold the providers dict, so the ended
    override's value outlives the block until the collector runs (50 cyclic
    objects per begin/end). Fix: break the cycle at the end of
    ``Graph._check`` (``try: ... finally: del visit``, or an explicit stack)."""
    c = di.Container(REG)
    with c:
        c.resolve(Single)
        with no_gc():
            fake = FakeDep()
            with c.override(Dep, fake):
                pass
            ref = weakref.ref(fake)
            del fake
            assert ref() is None, "the override's value outlives its block"


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="before 3.11 a running frame does not hold its function: compiled plans keep "
    "themselves in their globals (a cycle, freed at a GC pass) so that one still running "
    "stays in Container._baked / _scoped",
)
def test_closed_container_releases_baked_singletons_without_gc() -> None:
    """A close empties the root and drops the plans, so the singletons are
    no longer the container's. But every generated plan is defined by
    ``exec(code, fn.ns)`` into the namespace it reads its constants from:
    ``ns[name]`` is the function and ``function.__globals__`` is ``ns``, a
    cycle that keeps every singleton baked into that plan alive (and the
    root, through ``_root``) until the collector runs. The same holds for a
    singleton built under an override once the override ends, if a plan
    was compiled for a key that uses it. Fix: no strong self-reference, e.g.
    ``fn.ns.pop(name)`` after the exec for plans whose code does not name
    itself (some async plans do: popping it blindly breaks them), and a
    weak or container-side lookup for those that do."""
    c = di.Container(REG)
    with no_gc():
        with c:
            single = c.resolve(Single)
            plain = c.resolve(Plain)
            c.resolve(Uses)
            c.resolve(Uses)  # second call: generated code, singletons baked in
            refs = [weakref.ref(single), weakref.ref(plain)]
            del single, plain
        # the container is still referenced, and holds neither
        assert c._plans == {} and len(c._root) == 0 and c._made == {}
        assert alive(refs) == 0, "singletons baked into a dropped plan are still alive"


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="before 3.11 a running frame does not hold its function: compiled plans keep "
    "themselves in their globals (a cycle, freed at a GC pass) so that one still running "
    "stays in Container._baked / _scoped",
)
def test_override_built_singleton_freed_at_end_with_plans_without_gc() -> None:
    c = di.Container(REG)
    with c:
        c.resolve(Single)
        gc.collect()
        with no_gc():
            with c.override(Dep, FakeDep()):
                built = c.resolve(Single)
                c.resolve(Uses)
                c.resolve(Uses)  # a plan that bakes `built` in
            ref = weakref.ref(built)
            del built
            assert ref() is None


# -- containers ---------------------------------------------------------------


def test_containers_created_used_closed_are_all_freed() -> None:
    """1,000 containers entered, used (scopes, overrides, compiled plans,
    async resolves) and closed: every container, its root and the singletons
    are freed by a collection pass (the container's self-reference through
    its root is documented), and nothing global grows."""
    refs: list[weakref.ref[Any]] = []
    ctx_before = len(contextvars.copy_context())
    for i in range(1000):
        c = di.Container(REG, storage="thread" if i % 2 else "contextvar")
        with c:
            with c.scope("request") as s:
                s.resolve(Handler)
                s.resolve(Handler)
            c.resolve(Uses)
            c.resolve(Uses)
            with c.override(Dep, FakeDep()):
                c.resolve(Single)
            refs += [weakref.ref(c), weakref.ref(c._root), weakref.ref(c.resolve(Single))]
        assert len(c._root) == 0 and c._made == {} and c._plans == {}
        del c, s
    gc.collect()
    assert alive(refs) == 0
    assert len(contextvars.copy_context()) <= ctx_before + 1  # `_entered`, set to None
    assert _entered.get() is None


def test_async_containers_are_freed() -> None:
    refs: list[weakref.ref[Any]] = []

    async def amain() -> None:
        for _ in range(300):
            c = di.Container(REG)
            async with c:
                async with c.scope("request") as s:
                    await s.aresolve(ASession)
                    await s.aresolve(Handler)
                refs.extend((weakref.ref(c), weakref.ref(await c.aresolve(Single))))
            del c, s

    asyncio.run(amain())
    trio.run(amain)
    gc.collect()
    assert alive(refs) == 0


def test_closed_container_keeps_no_singleton_resolved_once() -> None:
    """Resolved once (first-use interpreter, no generated code): a close
    frees the singletons by reference counting alone."""
    c = di.Container(REG)
    with no_gc():
        with c:
            refs = [weakref.ref(c.resolve(Single)), weakref.ref(c.resolve(GenSingle))]
        assert alive(refs) == 0


# -- inject -------------------------------------------------------------------


@di.inject
def handle(h: Handler = di.Depends(Handler)) -> int:
    return 1


@di.inject
def handle_bad(b: Bad = di.Depends(Bad)) -> int:  # pragma: no cover - never runs
    return 1


@di.inject
def handle_raising(t: Tmp = di.Depends(Tmp)) -> int:
    raise KeyError("handler failed")


@di.inject
def handle_gen(s: Settings = di.Depends(Settings), t: Tmp = di.Depends(Tmp)) -> Iterator[int]:
    yield 1
    yield 2


@di.inject
async def ahandle(s: ASession = di.Depends(ASession), t: Tmp = di.Depends(Tmp)) -> int:
    return 1


def test_inject_calls_stay_bounded_and_make_no_garbage() -> None:
    c = di.Container(REG)

    def step() -> None:
        with c.scope("request"):
            handle()
            with contextlib.suppress(ValueError):
                handle_bad()
            with contextlib.suppress(KeyError):
                handle_raising()
            list(handle_gen())
            g = handle_gen()
            next(g)
            g.close()  # closed early

    with c:
        for _ in range(20):
            step()
        before = sizes(c)
        grown = traced_growth(step, 2000)
        assert sizes(c) == before
        with no_gc():
            for _ in range(300):
                step()
            assert gc.collect() == 0
    assert grown < SMALL, grown


def test_async_inject_calls_stay_bounded() -> None:
    c = di.Container(REG)

    async def main() -> tuple[dict[str, int], dict[str, int], int]:
        async with c:

            async def step() -> None:
                async with c.scope("request"):
                    await ahandle()

            for _ in range(20):
                await step()
            before = sizes(c)
            with no_gc():
                for _ in range(3000):
                    await step()
                garbage = gc.collect()
            return before, sizes(c), garbage

    before, after, garbage = asyncio.run(main())
    assert after == before and garbage == 0


# -- RefCounted / ClientContext -----------------------------------------------


class Client:
    closed = False

    async def aclose(self) -> None:
        self.closed = True


class FailingClient:
    async def initialize(self) -> None:
        raise OSError("cannot connect")

    async def aclose(self) -> None:
        pass


def test_refcounted_cycles_release_the_resource() -> None:
    resources: list[weakref.ref[Any]] = []

    def open_() -> Plain:
        p = Plain()
        resources.append(weakref.ref(p))
        return p

    def fail() -> Plain:
        raise OSError("cannot open")

    rc = di.RefCounted(open_, lambda p: None)
    bad = di.RefCounted(fail, lambda p: None)
    with no_gc():
        for _ in range(5000):
            with rc, rc:
                pass
            with contextlib.suppress(di.ResourceOpenError), bad:
                pass  # pragma: no cover
        assert len(resources) == 5000 and alive(resources) == 0
        assert rc.ref_count == 0 and not rc.is_open and bad.ref_count == 0
        assert gc.collect() == 0
    # a RefCounted made per use is freed by reference counting too
    with no_gc():
        once = di.RefCounted(open_, lambda p: None)
        with once:
            pass
        ref = weakref.ref(once)
        del once
        assert ref() is None


def test_client_context_cycles_release_the_client() -> None:
    clients: list[weakref.ref[Any]] = []

    def make(conn: dict[str, Any], verify_ssl: bool) -> Client:
        client = Client()
        clients.append(weakref.ref(client))
        return client

    def make_failing(conn: dict[str, Any], verify_ssl: bool) -> FailingClient:
        client = FailingClient()
        clients.append(weakref.ref(client))
        return client

    shared = di.ClientContext(make)
    failing = di.ClientContext(make_failing)

    async def main() -> None:
        for _ in range(2000):
            async with shared, shared:
                pass
            with contextlib.suppress(di.ResourceOpenError):
                async with failing:
                    pass  # pragma: no cover

    with no_gc():
        asyncio.run(main())
        assert len(clients) == 4000 and alive(clients) == 0
    with no_gc():
        trio.run(main)
        assert alive(clients) == 0


# -- contention ---------------------------------------------------------------


def run_threads(n: int, target: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_contended_singleton_made_once_one_lock_per_key() -> None:
    """Threads racing for a singleton: made once per open, and the per-key
    lock is one per key (kept, not one per race or per reopen)."""
    c = di.Container(REG)
    for _ in range(5):
        with c:
            got: list[Any] = []
            barrier = threading.Barrier(4, timeout=10)

            def race(barrier: threading.Barrier = barrier, got: list[Any] = got) -> None:
                barrier.wait()
                got.append(c.resolve(SlowSingle))

            run_threads(4, race)
            assert len({id(x) for x in got}) == 1
            assert set(c._compiler.locks) <= {SlowSingle}


def test_contended_scoped_creation_leaves_no_waiters() -> None:
    c = di.Container(REG)
    refs: list[weakref.ref[Any]] = []
    waits = 0
    orig = c._compiler._register_waiter

    def counting(*args: Any) -> Any:
        nonlocal waits
        waits += 1
        return orig(*args)

    c._compiler._register_waiter = counting  # type: ignore[method-assign]
    with c:
        for _ in range(40):
            with c.scope("request") as s:
                barrier = threading.Barrier(4, timeout=10)

                def race(s: di.Checkpoint = s, barrier: threading.Barrier = barrier) -> None:
                    with s.hold():
                        barrier.wait()
                        s.resolve(Slow)

                run_threads(4, race)
            refs.append(weakref.ref(s))
            del s

        async def gathered() -> None:
            for _ in range(300):
                async with c.scope("request") as s:
                    await asyncio.gather(*(s.aresolve(Slow) for _ in range(4)))
                refs.append(weakref.ref(s))
                del s

        asyncio.run(gathered())
        assert waits > 0  # contention did happen
        assert c._compiler.waiters == {}
        assert len(c._live) == 0
    gc.collect()
    assert alive(refs) <= 1  # a ContextVar's cached last value


# -- exceptions through di ----------------------------------------------------


def test_exceptions_from_factories_do_not_outlive_themselves() -> None:
    """A failing factory's exception references the frames it went through
    (the checkpoint among them); once the caller drops it, the checkpoint
    goes too: no cycle through the exception."""
    c = di.Container(REG)
    with c, no_gc():
        refs: list[weakref.ref[Any]] = []
        for _ in range(300):
            with contextlib.suppress(ValueError), c.scope("request") as s:
                s.resolve(Bad)
            refs.append(weakref.ref(s))
            with contextlib.suppress(di.NoActiveScopeError):
                c.resolve(Session)
            del s
        assert alive(refs) <= 1
        assert gc.collect() == 0


@pytest.mark.parametrize("mode", ["sync", "asyncio"])
def test_failed_teardown_frees_checkpoint_without_gc(mode: str) -> None:
    """A generator provider whose teardown raises: the caller catches and
    drops the error, and the checkpoint (with every instance it made) should
    go with it, as with nested ``with`` blocks. But ``Checkpoint.__exit__``
    keeps the error in a local (``exc = new``) and re-raises it, and
    ``teardown.unwind`` / ``_reraise`` do the same, so the error's traceback
    holds those frames, whose locals hold the error: a cycle (18 objects per
    request) that keeps the checkpoint, its exits and instances, and the
    exception alive until a GC pass. (contextlib.ExitStack has the same
    cycle; a plain ``with`` does not.) Fix: clear the locals that hold the
    exception before it leaves (``try: ... finally: exc = new = None``)."""
    c = di.Container(REG)
    refs: list[weakref.ref[Any]] = []

    def sync_round() -> None:
        with contextlib.suppress(ValueError), c.scope("request") as s:
            v = s.resolve(BadTeardown)
        refs.extend((weakref.ref(s), weakref.ref(v)))

    async def async_round() -> None:
        with contextlib.suppress(ValueError):
            async with c.scope("request") as s:
                v = await s.aresolve(BadTeardown)
        refs.extend((weakref.ref(s), weakref.ref(v)))

    with c, no_gc():
        if mode == "sync":
            for _ in range(50):
                sync_round()
        else:

            async def main() -> None:
                for _ in range(50):
                    await async_round()

            asyncio.run(main())
        assert alive(refs) <= 2, f"{alive(refs)} of {len(refs)} still alive"
