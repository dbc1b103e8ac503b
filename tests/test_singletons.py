"""Singletons exactly once (threads, several event loops, trio, mixed sync +
async), retry after failure or cancellation, re-entrant resolution, and
scoped instances created once under gathered child tasks.

Every concurrent test is bounded: barriers and joins carry timeouts and the
test asserts that no thread is still alive, so a deadlock fails instead of
hanging."""

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import di


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Shared:
    pass


class Other:
    pass


class Conn:
    pass


class Boom(Exception):
    pass


def run_threads(targets: list[Any], timeout: float = 20) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running: deadlock?"
    return errors


# -------------------------------------------------------------- exactly once


@pytest.mark.timeout(30)
def test_sixteen_threads_create_one_singleton() -> None:
    reg = di.Registry()
    calls = 0
    calls_lock = threading.Lock()

    @reg.provider(singleton=True)
    def shared() -> Shared:
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.05)  # slow: everyone else arrives while this one is creating
        return Shared()

    c = di.Container(reg)
    n = 16
    barrier = threading.Barrier(n, timeout=10)
    results: list[Shared] = []

    def worker() -> None:
        barrier.wait()
        results.append(c.resolve(Shared))

    with c:
        errors = run_threads([worker] * n)
    assert errors == []
    assert len(results) == n
    assert len({id(r) for r in results}) == 1
    assert calls == 1


@pytest.mark.timeout(30)
def test_several_event_loops_in_several_threads_create_one_singleton() -> None:
    reg = di.Registry()
    calls = 0
    calls_lock = threading.Lock()

    @reg.provider(singleton=True)
    async def shared() -> Shared:
        nonlocal calls
        with calls_lock:
            calls += 1
        await asyncio.sleep(0.05)  # suspends inside the creating loop
        return Shared()

    c = di.Container(reg)
    loops, tasks_per_loop = 4, 8
    barrier = threading.Barrier(loops, timeout=10)
    results: list[Shared] = []

    async def one_loop() -> None:
        got = await asyncio.wait_for(
            asyncio.gather(*(c.aresolve(Shared) for _ in range(tasks_per_loop))), 10
        )
        results.extend(got)

    def worker() -> None:
        barrier.wait()
        asyncio.run(one_loop())

    with c:
        errors = run_threads([worker] * loops)
    assert errors == []
    assert len(results) == loops * tasks_per_loop
    assert len({id(r) for r in results}) == 1
    assert calls == 1


@pytest.mark.timeout(30)
def test_trio_nursery_creates_one_singleton() -> None:
    import trio

    reg = di.Registry()
    calls = 0

    @reg.provider(singleton=True)
    async def shared() -> Shared:
        nonlocal calls
        calls += 1
        await trio.sleep(0.05)
        return Shared()

    c = di.Container(reg)
    results: list[Shared] = []

    async def one() -> None:
        results.append(await c.aresolve(Shared))

    async def main() -> None:
        with trio.fail_after(10):
            async with c, trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(one)

    trio.run(main)
    assert len(results) == 16
    assert len({id(r) for r in results}) == 1
    assert calls == 1


@pytest.mark.timeout(30)
def test_mixed_sync_asyncio_and_trio_first_access_create_one_singleton() -> None:
    import trio

    reg = di.Registry()
    calls = 0
    calls_lock = threading.Lock()

    @reg.provider(singleton=True)
    def shared() -> Shared:  # sync factory: usable from resolve and aresolve alike
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.05)
        return Shared()

    c = di.Container(reg)
    sync_threads, asyncio_threads, trio_threads = 4, 2, 2
    barrier = threading.Barrier(sync_threads + asyncio_threads + trio_threads, timeout=10)
    results: list[Shared] = []

    def sync_worker() -> None:
        barrier.wait()
        results.append(c.resolve(Shared))

    def asyncio_worker() -> None:
        async def main() -> None:
            gathered = asyncio.gather(*(c.aresolve(Shared) for _ in range(4)))
            got = await asyncio.wait_for(gathered, 10)
            results.extend(got)

        barrier.wait()
        asyncio.run(main())

    def trio_worker() -> None:
        async def one() -> None:
            results.append(await c.aresolve(Shared))

        async def main() -> None:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(one)

        barrier.wait()
        trio.run(main)

    with c:
        errors = run_threads(
            [sync_worker] * sync_threads
            + [asyncio_worker] * asyncio_threads
            + [trio_worker] * trio_threads
        )
    assert errors == []
    assert len(results) == sync_threads + 4 * asyncio_threads + 4 * trio_threads
    assert len({id(r) for r in results}) == 1
    assert calls == 1


# ------------------------------------------------------ failure and retrying


def test_failed_creation_caches_nothing_and_next_caller_retries() -> None:
    reg = di.Registry()
    calls = 0

    @reg.provider(singleton=True)
    def shared() -> Shared:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Boom("first attempt fails")
        return Shared()

    c = di.Container(reg)
    with c:
        with pytest.raises(Boom):
            c.resolve(Shared)
        first = c.resolve(Shared)
        assert isinstance(first, Shared)
        assert c.resolve(Shared) is first
    assert calls == 2


@pytest.mark.timeout(30)
def test_failed_creation_with_waiting_threads() -> None:
    reg = di.Registry()
    calls = 0
    calls_lock = threading.Lock()

    @reg.provider(singleton=True)
    def shared() -> Shared:
        nonlocal calls
        with calls_lock:
            calls += 1
            mine = calls
        time.sleep(0.05)
        if mine == 1:
            raise Boom("first attempt fails")
        return Shared()

    c = di.Container(reg)
    n = 8
    barrier = threading.Barrier(n, timeout=10)
    results: list[Shared] = []

    def worker() -> None:
        barrier.wait()
        results.append(c.resolve(Shared))

    with c:
        errors = run_threads([worker] * n)
    # the one whose attempt failed sees Boom; everyone else gets the one instance
    assert len(errors) == 1 and isinstance(errors[0], Boom), errors
    assert len(results) == n - len(errors)
    assert len({id(r) for r in results}) == 1
    assert calls == 2


@pytest.mark.anyio
async def test_failed_async_creation_retried() -> None:
    reg = di.Registry()
    calls = 0

    @reg.provider(singleton=True)
    async def shared() -> Shared:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Boom()
        return Shared()

    c = di.Container(reg)
    async with c:
        with pytest.raises(Boom):
            await c.aresolve(Shared)
        first = await c.aresolve(Shared)
        assert await c.aresolve(Shared) is first
    assert calls == 2


@pytest.mark.anyio
async def test_cancelled_async_creation_caches_nothing_and_next_caller_retries() -> None:
    import anyio

    reg = di.Registry()
    calls = 0
    started = anyio.Event()

    @reg.provider(singleton=True)
    async def shared() -> Shared:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await anyio.sleep_forever()
        return Shared()

    c = di.Container(reg)
    results: list[Shared] = []
    async with c:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def first() -> None:
                    results.append(await c.aresolve(Shared))

                tg.start_soon(first)
                await started.wait()
                tg.cancel_scope.cancel()  # cancel the creation mid-way
            assert results == []
            got = await c.aresolve(Shared)
            assert await c.aresolve(Shared) is got
    assert calls == 2


@pytest.mark.anyio
async def test_cancelled_creation_hands_over_to_a_waiting_task() -> None:
    import anyio

    reg = di.Registry()
    calls = 0
    started = anyio.Event()

    @reg.provider(singleton=True)
    async def shared() -> Shared:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await anyio.sleep_forever()
        return Shared()

    c = di.Container(reg)
    waiter_got: list[Shared] = []
    creator_scope = anyio.CancelScope()

    async def creator() -> None:
        with creator_scope:
            await c.aresolve(Shared)

    async def waiter() -> None:
        waiter_got.append(await c.aresolve(Shared))

    async with c:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(creator)
                await started.wait()
                tg.start_soon(waiter)
                for _ in range(5):
                    await anyio.sleep(0)  # let the waiter queue up behind the creator
                creator_scope.cancel()
        assert creator_scope.cancelled_caught
        assert len(waiter_got) == 1
        assert await c.aresolve(Shared) is waiter_got[0]
    assert calls == 2


# ------------------------------------------------------------ re-entrancy


@pytest.mark.timeout(30)
def test_factory_resolving_its_own_key_raises_circular_not_deadlock() -> None:
    reg = di.Registry()
    box: dict[str, di.Container] = {}

    @reg.provider(singleton=True)
    def shared() -> Shared:
        return box["c"].resolve(Shared)

    c = di.Container(reg)
    box["c"] = c
    outcome: list[BaseException] = []

    def worker() -> None:
        try:
            c.resolve(Shared)
        except BaseException as e:
            outcome.append(e)

    with c:
        errors = run_threads([worker], timeout=10)
    assert errors == []
    assert len(outcome) == 1
    assert isinstance(outcome[0], di.CircularDependencyError), outcome
    assert "Shared" in str(outcome[0])


@pytest.mark.anyio
async def test_async_factory_resolving_its_own_key_raises_circular_not_deadlock() -> None:
    import anyio

    reg = di.Registry()
    box: dict[str, di.Container] = {}

    @reg.provider(singleton=True)
    async def shared() -> Shared:
        return await box["c"].aresolve(Shared)

    c = di.Container(reg)
    box["c"] = c
    async with c:
        with anyio.fail_after(10), pytest.raises(di.CircularDependencyError):
            await c.aresolve(Shared)


@pytest.mark.timeout(30)
def test_factory_resolving_a_different_singleton_from_its_container_works() -> None:
    reg = di.Registry()
    box: dict[str, di.Container] = {}
    calls = {"shared": 0, "other": 0}

    @reg.provider(singleton=True)
    def other() -> Other:
        calls["other"] += 1
        return Other()

    @reg.provider(singleton=True)
    def shared() -> Shared:
        calls["shared"] += 1
        s = Shared()
        s.other = box["c"].resolve(Other)  # type: ignore[attr-defined]
        return s

    c = di.Container(reg)
    box["c"] = c
    out: list[Shared] = []
    with c:
        errors = run_threads([lambda: out.append(c.resolve(Shared))], timeout=10)
        assert errors == []
        assert out[0].other is c.resolve(Other)  # type: ignore[attr-defined]
        assert c.resolve(Shared) is out[0]
    assert calls == {"shared": 1, "other": 1}


@pytest.mark.anyio
async def test_async_factory_resolving_a_different_singleton_works() -> None:
    import anyio

    reg = di.Registry()
    box: dict[str, di.Container] = {}

    @reg.provider(singleton=True)
    async def other() -> Other:
        return Other()

    @reg.provider(singleton=True)
    async def shared() -> Shared:
        s = Shared()
        s.other = await box["c"].aresolve(Other)  # type: ignore[attr-defined]
        return s

    c = di.Container(reg)
    box["c"] = c
    async with c:
        with anyio.fail_after(10):
            s = await c.aresolve(Shared)
        assert s.other is await c.aresolve(Other)  # type: ignore[attr-defined]


# ---------------------------------------------------------- scoped, gathered


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_scoped_created_once_under_asyncio_gather() -> None:
    reg = di.Registry()
    calls = 0

    @reg.provider(scope="request")
    async def conn() -> Conn:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return Conn()

    c = di.Container(reg)
    async with c, c.scope("request"):
        got = await asyncio.wait_for(asyncio.gather(*(c.aresolve(Conn) for _ in range(10))), 10)
    assert len({id(g) for g in got}) == 1
    assert calls == 1


@pytest.mark.anyio
async def test_scoped_created_once_under_task_group_children() -> None:
    import anyio

    reg = di.Registry()
    calls = 0

    @reg.provider(scope="request")
    async def conn() -> Conn:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.01)
        return Conn()

    c = di.Container(reg)
    got: list[Conn] = []

    async def child(s: di.Checkpoint) -> None:
        got.append(await s.aresolve(Conn))
        got.append(await c.aresolve(Conn))  # through the inherited current checkpoint

    async with c, c.scope("request") as s:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(child, s)
        assert await s.aresolve(Conn) is got[0]
    assert len(got) == 16
    assert len({id(g) for g in got}) == 1
    assert calls == 1


def test_a_contended_scoped_creation_leaves_no_reference_to_its_checkpoint() -> None:
    """Tasks that waited for a scoped instance another task was creating must
    not leave anything behind that keeps the checkpoint alive."""
    import gc
    import weakref

    class Conn:
        pass

    reg = di.Registry()

    @reg.provider(scope="request")
    async def conn() -> Conn:
        for _ in range(3):
            await asyncio.sleep(0)
        return Conn()

    container = di.Container(reg)

    async def main() -> weakref.ref[di.Checkpoint]:
        async with container, container.scope("request") as scope:
            got = await asyncio.gather(*(scope.aresolve(Conn) for _ in range(8)))
            # and later ones hit the cached instance
            got += await asyncio.gather(*(scope.aresolve(Conn) for _ in range(8)))
            assert len({id(c) for c in got}) == 1
        return weakref.ref(scope)

    ref = asyncio.run(asyncio.wait_for(main(), 10))
    gc.collect()
    assert ref() is None, "the torn-down checkpoint is still referenced"


# ------------------------------------------------- scoped: cycles, threads, retries


def test_scoped_factory_resolving_itself_raises_instead_of_hanging() -> None:
    reg = di.Registry()
    container: di.Container

    @reg.provider(scope="request")
    def conn() -> Conn:
        container.resolve(Other)  # Other's factory asks for Conn again
        return Conn()

    @reg.provider(scope="request")
    def other() -> Other:
        container.resolve(Conn)
        return Other()

    container = di.Container(reg)
    outcome: list[BaseException] = []

    def run() -> None:
        with container, container.scope("request") as scope:
            with pytest.raises(di.CircularDependencyError, match="Conn") as info:
                scope.resolve(Conn)
            outcome.append(info.value)
            # the failed creation left nothing behind: a later resolve tries again
            with pytest.raises(di.CircularDependencyError):
                scope.resolve(Conn)

    assert run_threads([run]) == []
    assert len(outcome) == 1


@pytest.mark.anyio
async def test_async_scoped_factory_resolving_itself_raises_instead_of_hanging() -> None:
    import anyio

    reg = di.Registry()
    container: di.Container

    @reg.provider(scope="request")
    async def conn() -> Conn:
        await anyio.sleep(0)
        await container.aresolve(Conn)
        return Conn()

    container = di.Container(reg)
    async with container, container.scope("request") as scope:
        with anyio.fail_after(10), pytest.raises(di.CircularDependencyError, match="Conn"):
            await scope.aresolve(Conn)


def test_scoped_created_once_by_threads_sharing_a_held_checkpoint() -> None:
    reg = di.Registry()
    calls = 0
    inside = threading.Barrier(8, timeout=10)

    @reg.provider(scope="request")
    def conn() -> Conn:
        nonlocal calls
        calls += 1
        time.sleep(0.05)  # the other threads arrive while this one creates
        return Conn()

    container = di.Container(reg)
    got: list[Conn] = []
    with container, container.scope("request") as scope:

        def worker() -> None:
            with scope.hold():
                inside.wait()
                got.append(scope.resolve(Conn))

        assert run_threads([worker] * 8) == []
    assert len(got) == 8 and len({id(g) for g in got}) == 1
    assert calls == 1


@pytest.mark.anyio
async def test_waiters_retry_after_a_failed_scoped_creation() -> None:
    import anyio

    reg = di.Registry()
    calls = 0

    @reg.provider(scope="request")
    async def conn() -> Conn:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.02)
        if calls == 1:
            raise Boom("first try fails")
        return Conn()

    container = di.Container(reg)
    results: list[object] = []

    async def ask(scope: di.Checkpoint) -> None:
        try:
            results.append(await scope.aresolve(Conn))
        except Boom as exc:
            results.append(exc)

    async with container, container.scope("request") as scope:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(ask, scope)
    failures = [r for r in results if isinstance(r, Boom)]
    made = [r for r in results if isinstance(r, Conn)]
    assert len(failures) == 1, results
    assert len(made) == 4 and len({id(m) for m in made}) == 1
    assert calls == 2


def test_sync_factory_resolving_its_own_key_under_aresolve_raises_circular() -> None:
    """The async path holds the key's lock in a task; the factory's sync
    resolve must name the cycle, not surface aiologic's RuntimeError."""
    reg = di.Registry()
    box: dict[str, di.Container] = {}

    @reg.provider(singleton=True)
    def shared() -> Shared:
        return box["c"].resolve(Shared)  # type: ignore[no-any-return]

    c = di.Container(reg)
    box["c"] = c

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(di.CircularDependencyError, match=r"Shared.*aresolve"):
                await c.aresolve(Shared)

    asyncio.run(main())


class Made:
    pass


class UsesMade:
    def __init__(self, made: Made) -> None:
        self.made = made


@pytest.mark.parametrize("key", [Made, UsesMade], ids=["scoped", "transient over scoped"])
def test_aresolve_waiting_for_a_thread_keeps_the_event_loop_running(key: type) -> None:
    """A thread is creating the request's Made (a sync factory); aresolve of
    Made, or of a transient that needs it, waits for that creation by
    awaiting, so the loop goes on running, and gets the thread's instance."""
    started, release = threading.Event(), threading.Event()
    released_in_time: list[bool] = []
    reg = di.Registry()

    @reg.provider(scope="request")
    def made() -> Made:
        started.set()
        # Set by a task of the event loop: only if that loop is not blocked.
        released_in_time.append(release.wait(5))
        return Made()

    reg.register(UsesMade, UsesMade)
    c = di.Container(reg)

    async def main() -> None:
        async with c, c.scope("request") as scope:

            def in_thread() -> Made:
                with scope.hold():
                    return scope.resolve(Made)

            thread = asyncio.ensure_future(asyncio.to_thread(in_thread))
            await asyncio.to_thread(started.wait, 5)
            waiter = asyncio.ensure_future(scope.aresolve(key))
            for _ in range(3):
                await asyncio.sleep(0)  # the waiter is now waiting, by awaiting
            release.set()
            from_thread, got = await asyncio.gather(thread, waiter)
            assert (got if key is Made else got.made) is from_thread

    asyncio.run(main())
    assert released_in_time == [True]


def test_a_creation_cut_short_by_a_forced_teardown_is_unwound_and_its_waiters_woken() -> None:
    """A forced shutdown tears a held checkpoint down while a holder is still
    making a scoped instance: the instance is unwound as soon as it is made,
    never stored, and a second holder waiting for it wakes to
    CheckpointClosedError instead of hanging."""
    log: list[str] = []
    reg = di.Registry()

    @reg.provider(scope="request")
    async def made() -> AsyncIterator[Made]:
        await release.wait()
        try:
            yield Made()
        finally:
            log.append("closed")

    release: asyncio.Event
    c = di.Container(reg, shutdown_timeout=0.05)

    async def main() -> None:
        nonlocal release
        release = asyncio.Event()
        results: list[Any] = []

        async def holder() -> None:
            async with scope.hold():
                try:
                    results.append(await scope.aresolve(Made))
                except di.DIError as exc:
                    results.append(exc)

        async with c, c.scope("request") as scope:
            creator = asyncio.create_task(holder())
            await asyncio.sleep(0.01)
            waiter = asyncio.create_task(holder())
            await asyncio.sleep(0.01)
        # The last exit waited shutdown_timeout, then tore the scope down.
        assert scope.closed
        release.set()
        await asyncio.wait_for(asyncio.gather(creator, waiter), 5)
        assert len(results) == 2
        assert all(isinstance(r, di.CheckpointClosedError) for r in results)
        assert log == ["closed"]
        with pytest.raises(di.CheckpointClosedError):
            scope.resolve(Made)

    asyncio.run(main())


def test_a_made_singleton_resolved_from_a_scope_takes_no_lock_under_trio() -> None:
    """From a scope a singleton misses the scope's dict and reaches its plan;
    once made, the plan must answer without its lock. Under trio an aresolve
    suspended inside `async with lock` made every sync resolve in another task
    a 'cycle' (CircularDependencyError)."""
    trio = pytest.importorskip("trio")

    class Settings:
        pass

    reg = di.Registry()
    reg.register(Settings, Settings, singleton=True)
    c = di.Container(reg)
    made = c.resolve(Settings)
    seen: list[object] = []

    async def main() -> None:
        with trio.fail_after(10), c.scope("request") as scope:

            async def async_side() -> None:
                for _ in range(200):
                    seen.append(await scope.aresolve(Settings))
                    await trio.sleep(0)

            async def sync_side() -> None:
                for _ in range(200):
                    seen.append(scope.resolve(Settings))
                    await trio.sleep(0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(async_side)
                nursery.start_soon(sync_side)

    trio.run(main)
    assert len(seen) == 400 and all(s is made for s in seen)


def test_a_sync_resolve_in_an_event_loop_refuses_to_wait_for_a_task_of_that_loop() -> None:
    """Task A is creating the request's UsesPool (awaiting its pool's async
    open); task B of the same loop resolves UsesPool with the sync API. Blocking
    the loop's thread until A finishes would wait for ever: B is told to await."""

    class Pool:
        pass

    class UsesPool:
        def __init__(self, pool: di.RefCounted[Pool]) -> None:
            self.pool = pool

    async def open_pool() -> Pool:
        await asyncio.sleep(0.01)
        return Pool()

    reg = di.Registry()

    @reg.provider(singleton=True)
    def pool() -> di.RefCounted[Pool]:
        return di.RefCounted(open_pool, lambda p: None)

    reg.register(UsesPool, UsesPool, scope="request")
    c = di.Container(reg)
    outcome: list[Any] = []

    async def main() -> None:
        async with c, c.scope("request") as scope:
            creating = asyncio.create_task(scope.aresolve(UsesPool))
            await asyncio.sleep(0)  # A holds the creation marker, awaiting the open
            with pytest.raises(di.CircularDependencyError, match=r"await scope\.aresolve"):
                scope.resolve(UsesPool)
            made = await creating
            outcome.append(scope.resolve(UsesPool) is made)  # made now: a plain hit

    worker = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the event loop hung in a sync resolve"
    assert outcome == [True]


# ------------------------------------- waiters whose plan went stale meanwhile


class Flavour:
    def __init__(self, name: str = "real") -> None:
        self.name = name


class Flavoured:
    def __init__(self, flavour: Flavour) -> None:
        self.flavour = flavour


def _signal_at_lock(reached: threading.Event) -> None:
    """White-box, for ordering only: set ``reached`` when the calling thread
    first calls a lock's ``green_acquire``, i.e. a resolve has found the
    singleton missing and is about to wait for its creator. Nothing else
    changes; the hook removes itself."""

    def hook(frame: Any, kind: str, arg: Any) -> None:
        if kind == "call" and frame.f_code.co_name == "green_acquire":
            sys.setprofile(None)
            reached.set()

    sys.setprofile(hook)


def test_thread_waiting_on_a_singleton_as_an_override_ends_builds_the_restored_graph() -> None:
    """Thread A is making Flavoured under an override of Flavour; thread B
    already waits for it. The override ends, then A finishes: A's instance is
    built on the fake, goes to A, and is not kept. B, taking the lock after the
    override ended, must build from the restored graph (the real Flavour) and
    that instance is the one kept, not another copy built on the ended fake."""
    made: list[str] = []
    inside, finish = threading.Event(), threading.Event()
    reg = di.Registry()
    reg.register(Flavour, Flavour, singleton=True)

    @reg.provider(singleton=True)
    def flavoured(flavour: Flavour) -> Flavoured:
        made.append(flavour.name)
        if flavour.name == "fake":
            inside.set()
            assert finish.wait(10)
        return Flavoured(flavour)

    c = di.Container(reg)
    got: dict[str, Flavoured] = {}
    waiting = threading.Event()

    def creator() -> None:
        got["creator"] = c.resolve(Flavoured)

    def waiter() -> None:
        _signal_at_lock(waiting)
        got["waiter"] = c.resolve(Flavoured)

    with c:
        with c.override(Flavour, Flavour("fake")):
            a = threading.Thread(target=creator, daemon=True)
            a.start()
            assert inside.wait(10)
            b = threading.Thread(target=waiter, daemon=True)
            b.start()
            assert waiting.wait(10)  # B has the plan of the overridden graph
        finish.set()
        a.join(10)
        b.join(10)
        assert not a.is_alive() and not b.is_alive(), "deadlock?"
        assert made == ["fake", "real"]
        assert got["creator"].flavour.name == "fake"  # made across the override: A's alone
        assert got["waiter"].flavour.name == "real"
        assert c.resolve(Flavoured) is got["waiter"]  # kept: made once for the restored graph


@pytest.mark.anyio
async def test_task_waiting_on_a_singleton_as_an_override_ends_builds_the_restored_graph() -> None:
    """The aresolve twin: task B waits for Flavoured while task A makes it
    under an override of Flavour that then ends."""
    import anyio

    made: list[str] = []
    inside, finish = anyio.Event(), anyio.Event()
    reg = di.Registry()
    reg.register(Flavour, Flavour, singleton=True)

    @reg.provider(singleton=True)
    async def flavoured(flavour: Flavour) -> Flavoured:
        made.append(flavour.name)
        if flavour.name == "fake":
            inside.set()
            await finish.wait()
        return Flavoured(flavour)

    c = di.Container(reg)
    got: dict[str, Flavoured] = {}

    async def resolve(who: str) -> None:
        got[who] = await c.aresolve(Flavoured)

    async with c:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                with c.override(Flavour, Flavour("fake")):
                    tg.start_soon(resolve, "creator")
                    await inside.wait()
                    tg.start_soon(resolve, "waiter")
                    for _ in range(5):
                        await anyio.sleep(0)  # B queues up behind A's lock
                finish.set()
        assert made == ["fake", "real"]
        assert got["creator"].flavour.name == "fake"
        assert got["waiter"].flavour.name == "real"
        assert await c.aresolve(Flavoured) is got["waiter"]


class Pooled:
    def __init__(self) -> None:
        self.closed = False


class UsesPooled:
    def __init__(self, pooled: Pooled) -> None:
        self.pooled = pooled


def test_thread_waiting_on_a_singleton_across_a_forced_close_builds_on_fresh_ones() -> None:
    """Pooled exists, so UsesPooled's plan has it baked in. Thread A is making
    UsesPooled, thread B waits for it, and close(force=True) tears Pooled down.
    A's instance is refused (the container closed meanwhile); B, taking the
    lock after the close, must build on a fresh Pooled, and the container must
    keep that, not an instance holding the torn-down Pooled."""
    log: list[str] = []
    inside, finish = threading.Event(), threading.Event()
    reg = di.Registry()

    @reg.provider(singleton=True)
    def pooled() -> Iterator[Pooled]:
        p = Pooled()
        log.append("pooled open")
        yield p
        p.closed = True
        log.append("pooled closed")

    calls: list[None] = []

    @reg.provider(singleton=True)
    def uses_pooled(pooled: Pooled) -> UsesPooled:
        calls.append(None)
        if len(calls) == 1:
            inside.set()
            assert finish.wait(10)
        return UsesPooled(pooled)

    c = di.Container(reg)
    got: dict[str, Any] = {}
    waiting = threading.Event()

    def run(who: str) -> None:
        if who == "waiter":
            _signal_at_lock(waiting)
        try:
            got[who] = c.resolve(UsesPooled)
        except di.DIError as exc:
            got[who] = exc

    with c:
        first = c.resolve(Pooled)
        a = threading.Thread(target=run, args=("creator",), daemon=True)
        a.start()
        assert inside.wait(10)
        b = threading.Thread(target=run, args=("waiter",), daemon=True)
        b.start()
        assert waiting.wait(10)
        c.close(force=True)
        assert first.closed
        finish.set()
        a.join(10)
        b.join(10)
        assert not a.is_alive() and not b.is_alive(), "deadlock?"
        assert isinstance(got["creator"], di.CheckpointClosedError)
        made = got["waiter"]
        assert isinstance(made, UsesPooled)
        assert not made.pooled.closed and made.pooled is not first
        assert c.resolve(UsesPooled) is made
        assert c.resolve(Pooled) is made.pooled
    assert log == ["pooled open", "pooled closed", "pooled open", "pooled closed"]


@pytest.mark.anyio
async def test_task_waiting_on_a_singleton_across_a_forced_close_builds_on_fresh_ones() -> None:
    """The aresolve twin, closed by aclose(force=True)."""
    import anyio

    log: list[str] = []
    inside, finish = anyio.Event(), anyio.Event()
    reg = di.Registry()

    @reg.provider(singleton=True)
    def pooled() -> Iterator[Pooled]:
        p = Pooled()
        log.append("pooled open")
        yield p
        p.closed = True
        log.append("pooled closed")

    calls: list[None] = []

    @reg.provider(singleton=True)
    async def uses_pooled(pooled: Pooled) -> UsesPooled:
        calls.append(None)
        if len(calls) == 1:
            inside.set()
            await finish.wait()
        return UsesPooled(pooled)

    c = di.Container(reg)
    got: dict[str, Any] = {}

    async def resolve(who: str) -> None:
        try:
            got[who] = await c.aresolve(UsesPooled)
        except di.DIError as exc:
            got[who] = exc

    async with c:
        first = await c.aresolve(Pooled)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(resolve, "creator")
                await inside.wait()
                tg.start_soon(resolve, "waiter")
                for _ in range(5):
                    await anyio.sleep(0)  # B queues up behind A's lock
                await c.aclose(force=True)
                assert first.closed
                finish.set()
        assert isinstance(got["creator"], di.CheckpointClosedError)
        made = got["waiter"]
        assert isinstance(made, UsesPooled)
        assert not made.pooled.closed and made.pooled is not first
        assert await c.aresolve(UsesPooled) is made
        assert await c.aresolve(Pooled) is made.pooled
    assert log == ["pooled open", "pooled closed", "pooled open", "pooled closed"]


# ------------------------------------- waiters under steady override churn


class Churned:
    pass


class FakeChurned(Churned):
    pass


class UsesChurned:
    def __init__(self, dep: Churned) -> None:
        time.sleep(0.01)  # a creation that takes a moment: waiters queue behind it
        self.dep = dep


@pytest.mark.timeout(30)
def test_waiters_under_steady_override_churn_hand_over_without_recursing() -> None:
    """16 threads resolve a singleton while another keeps entering and leaving
    an override of its dependency: a waiter whose plan went out of date while
    it waited for the lock hands over to the current plan, again and again
    under the churn. Each hand-over must loop, not recurse: no GraphError
    ("deeper than Python's recursion limit"), CircularDependencyError or
    RecursionError, and no key lock left wedged.

    A stress test, bounded to 1.5 s of churn; the recursion limit is lowered
    (and restored) so that a recursive hand-over reaches it within that time."""
    reg = di.Registry()
    reg.provider(Churned)
    reg.provider(UsesChurned, singleton=True)
    c = di.Container(reg)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        while not stop.is_set():
            with c.override(Churned, FakeChurned()):
                time.sleep(0.0002)  # pacing only: the override stays in force a moment
            time.sleep(0.0002)

    def user() -> None:
        while not stop.is_set():
            try:
                c.resolve(UsesChurned)
            except BaseException as exc:
                errors.append(exc)
                stop.set()

    threads = [threading.Thread(target=user, daemon=True) for _ in range(16)]
    threads.append(threading.Thread(target=churn, daemon=True))
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(250)
    try:
        for t in threads:
            t.start()
        stop.wait(1.5)  # the churn's time bound (or the first error)
        stop.set()
        deadline = time.monotonic() + 10
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    finally:
        sys.setrecursionlimit(saved)
    stuck = sum(t.is_alive() for t in threads)
    assert errors == [], [f"{type(e).__name__}: {e}" for e in errors[:3]]
    assert not stuck, f"{stuck} thread(s) still blocked after the churn stopped"
    # The key's lock is free: with the churn over, a fresh resolve gets through.
    got: list[UsesChurned] = []
    probe = threading.Thread(target=lambda: got.append(c.resolve(UsesChurned)), daemon=True)
    probe.start()
    probe.join(10)
    assert not probe.is_alive() and type(got[0].dep) is Churned
    assert c.resolve(UsesChurned) is got[0]
    c.close()
