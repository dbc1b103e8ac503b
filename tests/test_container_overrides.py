"""override() mixed with resolves, other overrides, containers and a close.

White-box in one respect: thread interleavings are made deterministic with a
profile/trace hook that parks one thread at a named point of di/ until the main
thread has done its part (the hook changes no behaviour); every wait is bounded."""

from __future__ import annotations

import linecache
import logging
import sys
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

import di

WAIT = 5.0
logging.getLogger("di").setLevel(logging.CRITICAL)


class S:
    fake = False
    closed = False


class FakeS(S):
    fake = True


class D:
    def __init__(self, s: S) -> None:
        self.s = s


class U:
    fake = False


class FakeU(U):
    fake = True


def _registry(with_d: bool = True) -> di.Registry:
    reg = di.Registry()

    @reg.provider(singleton=True)
    def s() -> Iterator[S]:
        o = S()
        yield o
        o.closed = True

    if with_d:

        @reg.provider(singleton=True)
        def d(s: S) -> D:
            return D(s)

    @reg.provider(singleton=True)
    def u() -> U:
        return U()

    return reg


def _park_on_call(name: str, filename: str, paused: threading.Event, resume: threading.Event):
    """sys.setprofile hook: park this thread the first time ``name`` (in di/``filename``)
    is called or, for a generator expression, first yields."""

    def hook(frame, event, arg):
        code = frame.f_code
        if (
            not paused.is_set()
            and code.co_name == name
            and code.co_filename.endswith(filename)
            and (event == "call" if name != "<genexpr>" else event == "return")
        ):
            paused.set()
            resume.wait(WAIT)

    return hook


def _park_on_line(
    func: str, filename: str, text: str, paused: threading.Event, resume: threading.Event
):
    """sys.settrace hook: park this thread before the line of ``func`` containing ``text``."""

    def tracer(frame, event, arg):
        if frame.f_code.co_name != func or not frame.f_code.co_filename.endswith(filename):
            return None

        def local(frame, event, arg):
            if (
                event == "line"
                and not paused.is_set()
                and text in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
            ):
                paused.set()
                resume.wait(WAIT)
            return local

        return local

    return tracer


def _meanwhile(action, resume: threading.Event) -> None:
    """Run ``action`` in another thread while this thread's parked peer waits,
    give it time to get as far as it can, then let the peer go on and wait for
    both. (Without the override lock, ``action`` runs right through the peer's
    window: the interleaving these tests are about.)"""
    other = threading.Thread(target=action, daemon=True)
    other.start()
    other.join(0.05)
    resume.set()
    other.join(WAIT)
    assert not other.is_alive()


# -- 1. out-of-order override exit (no threads)


def test_out_of_order_override_exit_does_not_restore_singleton_built_under_the_fake() -> None:
    """override(S, fake); resolve D (built on the fake S); override(D, x); leave the S
    override first, then the D one. The D override had set aside the D built on the fake
    S, and restores it when it ends: after every override has ended, resolve(D).s is the
    fake. (Leaving them innermost first gives a real D.)"""
    container = di.Container(_registry())
    with container:
        outer = container.override(S, FakeS())
        outer.__enter__()
        assert container.resolve(D).s.fake  # D made under the fake S
        inner = container.override(D, D(S()))
        inner.__enter__()
        outer.__exit__(None, None, None)  # out of order: the S override ends first
        inner.__exit__(None, None, None)
        assert not container.resolve(S).fake
        assert not container.resolve(D).s.fake, "a D built on the ended fake S is cached"


# -- 2. two threads leaving overrides at once


def test_overrides_left_concurrently_from_two_threads() -> None:
    """Thread B leaves its override(U) while the main thread leaves override(S), entered
    earlier. _remove_override finds B's index (1), the main thread's removal shifts the
    list, and B's `del self._overrides[1]` raises IndexError out of the `with` block:
    B's override is never removed and FakeU is served for the rest of the container's
    life."""
    container = di.Container(_registry())
    paused, resume = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def b_thread() -> None:
        try:
            with container.override(U, FakeU()):
                sys.setprofile(_park_on_call("<genexpr>", "container.py", paused, resume))
        except BaseException as exc:
            errors.append(exc)
        finally:
            sys.setprofile(None)

    with container:
        outer = container.override(S, FakeS())
        outer.__enter__()
        th = threading.Thread(target=b_thread, daemon=True)
        th.start()
        assert paused.wait(WAIT)  # B is leaving: it has found its entry's index
        _meanwhile(lambda: outer.__exit__(None, None, None), resume)
        th.join(WAIT)
        assert not th.is_alive()
        assert errors == [], errors
        assert not container.resolve(U).fake, "B's override outlived its block"


# -- 3. value override cached after it ended


def test_value_override_is_not_cached_by_a_resolve_racing_its_end() -> None:
    """A scope's resolve of a singleton always misses the scope dict and runs the key's
    plan. Under override(S, fake) that plan is `plan_value`, which stores the fake in the
    root unconditionally: one started before the override ends and finishing after it
    leaves the fake cached for good."""
    container = di.Container(_registry(with_d=False))
    paused, resume = threading.Event(), threading.Event()

    def worker() -> None:
        with container.scope("request") as scope:
            sys.setprofile(_park_on_call("plan_value", "compiler.py", paused, resume))
            try:
                scope.resolve(S)
            finally:
                sys.setprofile(None)

    with container:
        container.resolve(S)
        with container.override(S, FakeS()):
            th = threading.Thread(target=worker, daemon=True)
            th.start()
            assert paused.wait(WAIT)  # the worker is about to serve the fake
        resume.set()
        th.join(WAIT)
        assert not th.is_alive()
        assert not container.resolve(S).fake, "the fake S outlived its override"


# -- 4. generation check then store


def test_singleton_made_under_override_is_not_cached_when_it_ends_between_check_and_store() -> None:
    """The sync singleton plan checks `_generation` and then stores the value, with no
    lock shared with override(): an override ending between the two leaves the D built
    on the fake S cached (it ends before the check is handled by the generation alone)."""
    container = di.Container(_registry())
    paused, resume = threading.Event(), threading.Event()

    def worker() -> None:
        sys.settrace(
            _park_on_line(
                "_keep", "compiler.py", "dict.__setitem__(root, key, value)", paused, resume
            )
        )
        try:
            container.resolve(D)
        finally:
            sys.settrace(None)

    with container:
        container.resolve(S)
        override = container.override(S, FakeS())
        override.__enter__()
        th = threading.Thread(target=worker, daemon=True)
        th.start()
        assert paused.wait(WAIT)  # D made on the fake S, about to be stored
        _meanwhile(lambda: override.__exit__(None, None, None), resume)
        th.join(WAIT)
        assert not th.is_alive()
        assert not container.resolve(D).s.fake, "a D built on the ended fake S is cached"


# -- 5. override entered while the container closes


def test_override_entered_during_close_does_not_bring_back_a_finalized_singleton() -> None:
    """override() records the close count *after* setting aside the cached singletons.
    A close that completes in between finalizes them, yet the count the override keeps
    is the new one, so when the override ends it puts the finalized S back into the
    (re-opened) container's root: it is served, already torn down."""
    container = di.Container(_registry(with_d=False))
    paused, resume, leave = threading.Event(), threading.Event(), threading.Event()

    def overrider() -> None:
        sys.setprofile(_park_on_call("_fill_values", "container.py", paused, resume))
        try:
            with container.override(S, FakeS()):
                sys.setprofile(None)
                leave.wait(WAIT)
        finally:
            sys.setprofile(None)

    real = container.resolve(S)
    th = threading.Thread(target=overrider, daemon=True)
    th.start()
    assert paused.wait(WAIT)  # the override has set the real S aside
    _meanwhile(container.close, resume)
    assert real.closed  # the container closed and finalized it
    with container:
        leave.set()
        th.join(WAIT)
        assert not th.is_alive()
        got = container.resolve(S)
        assert not got.closed, "a singleton finalized by an earlier close is served again"


# -- 6. containers left out of order in one thread


def test_containers_left_out_of_order_leave_no_active_container_behind() -> None:
    """Two containers entered a, b and left a, b in one thread (a worker thread that
    serves two apps): a's exit finds b at the head of the entered list and pops nothing,
    b's pops b, and a stays the thread's active container after both blocks ended. A
    later @di.inject call in that (pool) thread resolves from the closed container
    instead of raising NoActiveScopeError, re-creating singletons nobody will close."""
    made: list[Engine] = []
    reg = di.Registry()

    @reg.provider(singleton=True)
    def s() -> S:
        made.append(S())
        return made[-1]

    a, b = di.Container(reg), di.Container(di.Registry())

    @di.inject
    def handler(s: di.Injected[S]) -> S:
        return s

    def thread_body(out: list[object]) -> None:
        a.__enter__()
        b.__enter__()
        a.__exit__(None, None, None)
        b.__exit__(None, None, None)
        try:
            out.append(handler())
        except di.NoActiveScopeError as exc:
            out.append(exc)

    out: list[object] = []
    th = threading.Thread(target=thread_body, args=(out,), daemon=True)
    th.start()
    th.join(WAIT)
    assert not a.is_open and not b.is_open
    assert isinstance(out[0], di.NoActiveScopeError), (out, made)


# -- an unrelated override while a singleton is being made


class Engine:
    pass


def test_an_unrelated_override_during_creation_does_not_make_a_singleton_twice() -> None:
    """Only an override of the key, or of something it depends on, keeps a
    singleton made across it out of the cache; any other is no reason to make
    it twice."""
    started, release = threading.Event(), threading.Event()
    made: list[S] = []
    reg = _registry(with_d=False)

    @reg.provider(singleton=True)
    def engine() -> Engine:
        started.set()
        release.wait(WAIT)
        return Engine()

    container = di.Container(reg)
    with container:
        worker = threading.Thread(target=lambda: made.append(container.resolve(Engine)))
        worker.start()
        assert started.wait(WAIT)
        with container.override(U, FakeU()):  # U has nothing to do with Engine
            pass
        release.set()
        worker.join(WAIT)
        assert container.resolve(Engine) is made[0]


# -- a forced close between a singleton's creation and its store


class Closable:
    closed = False


def test_a_forced_close_while_a_made_singleton_is_being_stored_does_not_keep_it() -> None:
    """The close swaps the root's exit list under the same lock as the store: a
    close landing there either finds the singleton's exits (and tears it down)
    or makes the store refuse it (torn down at once); never a stored singleton
    whose teardown nobody runs, served by the next open."""
    reg = di.Registry()

    @reg.provider(singleton=True)
    def closable() -> Iterator[Closable]:
        made = Closable()
        yield made
        made.closed = True

    container = di.Container(reg)
    paused, resume = threading.Event(), threading.Event()
    out: list[object] = []

    def creator() -> None:
        sys.settrace(_park_on_line("_keep", "compiler.py", "began.extend", paused, resume))
        try:
            out.append(container.resolve(Closable))
        except di.DIError as exc:
            out.append(exc)
        finally:
            sys.settrace(None)

    worker = threading.Thread(target=creator, daemon=True)
    worker.start()
    assert paused.wait(WAIT)  # made, about to be handed to the root
    _meanwhile(lambda: container.close(force=True), resume)
    worker.join(WAIT)
    assert not worker.is_alive()
    first = out[0]
    assert isinstance(first, Closable) and first.closed  # handed over, then torn down
    with container:
        again = container.resolve(Closable)
        assert again is not first and not again.closed
    assert again.closed


# -- finalizers that resolve, run by values an override or a close drops


class OnS:
    def __init__(self, s: S) -> None:
        self.s = s


class Later:
    pass


@pytest.mark.parametrize("dropped_by", ["an override ending", "a close"])
def test_a_finalizer_that_resolves_while_its_value_is_dropped_does_not_deadlock(
    dropped_by: str,
) -> None:
    """Values dropped by an override's end or by a close are freed outside the
    override lock (which is reentrant besides): a finalizer that resolves a key
    not compiled yet must not hang the thread."""
    reg = _registry(with_d=False)
    reg.register(OnS, OnS, singleton=True)
    reg.register(Later, Later)
    container = di.Container(reg)
    seen: list[object] = []

    def watch(value: object) -> None:
        weakref.finalize(value, lambda: seen.append(container.resolve(Later)))

    def body() -> None:
        with container:
            if dropped_by == "an override ending":
                with container.override(S, FakeS()):
                    watch(container.resolve(OnS))  # dropped when the override ends
                assert seen
            else:
                watch(container.resolve(OnS))  # dropped by the close

    worker = threading.Thread(target=body, daemon=True)
    worker.start()
    worker.join(WAIT)
    assert not worker.is_alive(), "a finalizer resolving under the override lock hung"
    assert len(seen) == 1 and isinstance(seen[0], Later)


# -- a first resolve racing overrides toggled in another thread


class Dep:
    fake = False


class OnDep:
    def __init__(self, dep: Dep) -> None:
        self.dep = dep


def test_a_first_resolve_racing_toggled_overrides_never_caches_a_fake() -> None:
    """Plans compile against one graph (under the override lock) and know its
    generation, so a singleton compiled and made while another thread keeps
    overriding its dependency is never cached with the fake, and the compile
    never sees two graphs. Bounded in time: 300 containers or 10 s, whichever
    comes first; the old code failed a few percent of them."""
    fake = Dep()
    fake.fake = True
    stale = 0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    deadline = time.monotonic() + 10
    try:
        for _ in range(300):
            if time.monotonic() > deadline:
                break
            reg = di.Registry()
            reg.register(Dep, Dep, singleton=True)
            reg.register(OnDep, OnDep, singleton=True)
            container = di.Container(reg)
            stop = threading.Event()

            def toggle(c: di.Container = container, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    with c.override(Dep, fake):
                        pass

            with container:
                toggler = threading.Thread(target=toggle, daemon=True)
                toggler.start()
                time.sleep(0.0002)
                container.resolve(OnDep)
                stop.set()
                toggler.join(WAIT)
                if container.resolve(OnDep).dep.fake:  # no override in force any more
                    stale += 1
    finally:
        sys.setswitchinterval(interval)
    assert stale == 0
