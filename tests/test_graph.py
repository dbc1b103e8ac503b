"""di/graph.py: build-time validation. ``di.Container(registry)`` raises ONE
``di.GraphError`` whose ``.problems`` lists every problem in the graph."""

import random
import re
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Generic, TypeVar

import pytest

import di

T = TypeVar("T")


class Engine:
    pass


class Repo:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine


class Handler:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo


class CycA:
    pass


class CycB:
    pass


class CycC:
    pass


class Cache:
    pass


class RequestConn:
    pass


class SessionState:
    pass


class Request:
    pass


def build_errors(reg: di.Registry, **kw: object) -> list[str]:
    with pytest.raises(di.GraphError) as ei:
        di.Container(reg, **kw)  # type: ignore[arg-type]
    err = ei.value
    assert isinstance(err, di.DIError)
    assert isinstance(err.problems, list)
    assert err.problems, "GraphError raised with an empty problem list"
    text = str(err)
    for p in err.problems:
        assert isinstance(p, str)
        assert p in text  # every problem is rendered in the message
    return err.problems


def matching(problems: list[str], *needles: str) -> list[str]:
    return [p for p in problems if all(n in p for n in needles)]


# ------------------------------------------------------------------- missing


def test_missing_provider_names_the_chain() -> None:
    reg = di.Registry()
    reg.provider()(Repo)
    reg.provider()(Handler)
    problems = build_errors(reg)
    assert len(problems) == 1, problems
    p = problems[0]
    assert "Engine" in p
    # the chain that needed it: Handler -> Repo (-> Engine)
    assert "Handler -> Repo" in p, p


def test_missing_provider_chain_through_function_providers() -> None:
    reg = di.Registry()

    @reg.provider()
    def make_repo(engine: Engine) -> Repo:
        return Repo(engine)

    @reg.provider(scope="request")
    def make_handler(repo: Repo) -> Handler:
        return Handler(repo)

    problems = build_errors(reg)
    assert len(problems) == 1, problems
    assert "Engine" in problems[0]
    # keyed by types: the chain is rendered with what providers provide
    assert "Handler -> Repo" in problems[0], problems[0]


def test_missing_provider_needed_by_two_providers_lists_each_chain_or_once() -> None:
    class Other:
        def __init__(self, engine: Engine) -> None:
            pass

    reg = di.Registry()
    reg.provider()(Repo)
    reg.provider()(Other)
    problems = build_errors(reg)
    engine_problems = matching(problems, "Engine")
    assert engine_problems, problems
    rendered = "\n".join(engine_problems)
    assert "Repo" in rendered and "Other" in rendered, rendered


def test_missing_named_qualifier_is_reported_with_its_name() -> None:
    from typing import Annotated

    reg = di.Registry()
    reg.value(Engine, Engine())  # the unnamed one exists, the named one does not

    @reg.provider()
    def make_repo(engine: Annotated[Engine, di.Named("replica")]) -> Repo:
        return Repo(engine)

    problems = build_errors(reg)
    assert len(problems) == 1, problems
    assert "replica" in problems[0]


class Box(Generic[T]):  # a user generic, for how keys render
    pass


def test_missing_named_key_is_rendered_as_written() -> None:
    """Classes by their short names, `Named` as ``Named('x')``: never the
    module path or the dataclass repr (``Named(name='x')``)."""
    reg = di.Registry()

    @reg.provider()
    def make_repo(
        engine: Annotated[Engine, di.Named("replica")],
        boxes: Annotated[Box[Engine], di.Named("spare")],
        engines: list[Engine],
    ) -> Repo:
        return Repo(engine)

    text = "\n".join(build_errors(reg))
    assert "no provider for Annotated[Engine, Named('replica')] (needed by " in text, text
    assert "registry.register(Annotated[Engine, Named('replica')], Impl)" in text, text
    assert "no provider for Annotated[Box[Engine], Named('spare')] (needed by " in text, text
    assert "no provider for list[Engine] (needed by Repo -> list[Engine])" in text, text
    assert __name__ not in text and "name=" not in text, text


def test_provider_not_found_renders_a_named_key_as_written() -> None:
    c = di.Container(di.Registry())
    with c, pytest.raises(di.ProviderNotFoundError) as ei:
        c.resolve(Annotated[Box[Engine], di.Named("replica")])
    text = str(ei.value)
    assert text.startswith("no provider for Annotated[Box[Engine], Named('replica')];"), text
    assert "registry.value(Annotated[Box[Engine], Named('replica')], instance)" in text, text
    assert __name__ not in text, text


def test_describe_key_renders_keys_as_written() -> None:
    from collections.abc import Callable
    from typing import Optional, Union

    from di.errors import describe_key

    assert repr(di.Named("replica")) == "Named('replica')"
    cases: list[tuple[Any, str]] = [
        (Engine, "Engine"),
        (Annotated[Engine, di.Named("replica")], "Annotated[Engine, Named('replica')]"),
        (dict[str, list[Box[Engine]]], "dict[str, list[Box[Engine]]]"),
        (Optional[Engine], "Optional[Engine]"),  # noqa: UP045 - how it renders is the point
        (Union[Engine, Repo], "Union[Engine, Repo]"),  # noqa: UP007
        (Engine | None, "Engine | None"),
        (Callable[[Engine], Repo], "Callable[[Engine], Repo]"),
        (Callable[..., Engine], "Callable[..., Engine]"),
        (tuple[Engine, ...], "tuple[Engine, ...]"),
    ]
    for key, expected in cases:
        assert describe_key(key) == expected, key


def test_missing_but_defaulted_is_not_a_problem() -> None:
    reg = di.Registry()

    @reg.provider()
    def make_repo(engine: Engine = Engine()) -> Repo:  # noqa: B008
        return Repo(engine)

    c = di.Container(reg)  # no GraphError
    with c:
        assert isinstance(c.resolve(Repo).engine, Engine)


# --------------------------------------------------------------------- cycle


def test_cycle_reported_with_path() -> None:
    reg = di.Registry()

    @reg.provider()
    def a(b: CycB) -> CycA:
        return CycA()

    @reg.provider()
    def b(c: CycC) -> CycB:
        return CycB()

    @reg.provider()
    def c(a: CycA) -> CycC:
        return CycC()

    problems = build_errors(reg)
    cycles = [p for p in problems if "cycl" in p.lower() or "circular" in p.lower()]
    assert cycles, problems
    text = "\n".join(cycles)
    # the path, in dependency order, starting anywhere on the loop
    assert re.search(
        r"CycA -> CycB -> CycC -> CycA|CycB -> CycC -> CycA -> CycB|CycC -> CycA -> CycB -> CycC",
        text,
    ), text


def test_self_cycle() -> None:
    reg = di.Registry()

    @reg.provider()
    def a(x: CycA) -> CycA:
        return x

    problems = build_errors(reg)
    assert any("CycA -> CycA" in p for p in problems), problems


class Left:
    def __init__(self, right: "Right") -> None:
        pass


class Right:
    def __init__(self, left: Left) -> None:
        pass


def test_cycle_between_classes() -> None:
    reg = di.Registry()
    reg.provider()(Left)
    reg.provider()(Right)
    problems = build_errors(reg)
    assert any("Left -> Right -> Left" in p or "Right -> Left -> Right" in p for p in problems), (
        problems
    )


# --------------------------------------------------------------------- scope


def test_singleton_depending_on_request_scoped() -> None:
    reg = di.Registry()
    reg.provider(scope="request")(RequestConn)

    @reg.provider(singleton=True)
    def cache(conn: RequestConn) -> Cache:
        return Cache()

    problems = build_errors(reg)
    assert len(problems) == 1, problems
    p = problems[0]
    assert "Cache" in p and "RequestConn" in p, p
    assert "request" in p, p


def test_session_scoped_depending_on_request_scoped() -> None:
    reg = di.Registry()
    reg.provider(scope="request")(RequestConn)

    @reg.provider(scope="session")
    def state(conn: RequestConn) -> SessionState:
        return SessionState()

    problems = build_errors(reg)
    assert len(problems) == 1, problems
    assert "SessionState" in problems[0] and "RequestConn" in problems[0], problems


def test_app_scope_counts_as_singleton_for_scope_rules() -> None:
    reg = di.Registry()
    reg.provider(scope="request")(RequestConn)

    @reg.provider(scope="app")
    def cache(conn: RequestConn) -> Cache:
        return Cache()

    problems = build_errors(reg)
    assert matching(problems, "Cache", "RequestConn"), problems


def test_singleton_depending_on_request_context_value() -> None:
    reg = di.Registry()
    reg.context(Request, scope="request")

    @reg.provider(singleton=True)
    def cache(req: Request) -> Cache:
        return Cache()

    problems = build_errors(reg)
    assert matching(problems, "Cache", "Request"), problems


def test_scope_violation_through_a_transient() -> None:
    """A transient in between does not launder a shorter lifetime: the singleton
    would capture one request's connection for ever."""

    class Middle:
        def __init__(self, conn: RequestConn) -> None:
            pass

    reg = di.Registry()
    reg.provider(scope="request")(RequestConn)
    reg.provider()(Middle)  # transient

    @reg.provider(singleton=True)
    def cache(m: Middle) -> Cache:
        return Cache()

    problems = build_errors(reg)
    assert matching(problems, "Cache", "Middle", "request"), problems


def test_a_scope_violation_is_reported_once_not_passed_on_to_dependents() -> None:
    """The singleton holding a request-scoped value is the one problem: a
    session-scoped key may hold that singleton (or a transient over it), and
    is not reported for it."""

    class Middle:
        def __init__(self, cache: Cache) -> None:
            pass

    reg = di.Registry()
    reg.context(Request, scope="request")

    @reg.provider(singleton=True)
    def cache(req: Request) -> Cache:  # the real violation
        return Cache()

    reg.provider()(Middle)  # transient over the singleton

    @reg.provider(scope="session")
    def state(c: Cache, m: Middle) -> SessionState:  # legal: holds a singleton
        return SessionState()

    @reg.provider(singleton=True)
    def engine(m: Middle) -> Engine:  # legal too, Middle needs the container only
        return Engine()

    problems = build_errors(reg)
    assert len(problems) == 1, problems
    assert problems[0].startswith("scope violation: singleton Cache depends on request-scoped"), (
        problems
    )


def test_longer_lived_dependencies_are_fine() -> None:
    reg = di.Registry()
    reg.provider(singleton=True)(Engine)

    @reg.provider(scope="session")
    def state(engine: Engine) -> SessionState:
        return SessionState()

    @reg.provider(scope="request")
    def conn(state: SessionState, engine: Engine) -> RequestConn:
        return RequestConn()

    @reg.provider(scope="action")
    def handler(conn: RequestConn) -> Handler:
        return Handler(Repo(Engine()))

    @reg.provider()  # transient depending on anything
    def repo(conn: RequestConn, engine: Engine) -> Repo:
        return Repo(engine)

    di.Container(reg)  # no GraphError


# -------------------------------------------------------------- sync=True


def test_sync_container_lists_every_async_provider_a_path_needs() -> None:
    class AsyncEngine:
        pass

    class AsyncConn:
        pass

    class UsesBoth:
        pass

    reg = di.Registry()

    @reg.provider(singleton=True)
    async def engine() -> AsyncEngine:
        return AsyncEngine()

    @reg.provider(scope="request")
    async def conn() -> AsyncIterator[AsyncConn]:
        yield AsyncConn()

    @reg.provider()
    def uses_both(e: AsyncEngine, c: AsyncConn) -> UsesBoth:
        return UsesBoth()

    # without the sync promise the same graph is fine (aresolve handles it)
    di.Container(reg)

    problems = build_errors(reg, sync=True)
    assert matching(problems, "AsyncEngine"), problems
    assert matching(problems, "AsyncConn"), problems
    # each names what kind of provider it is, in plain English
    assert any("AsyncEngine is provided by a coroutine function (" in p for p in problems)
    assert any("AsyncConn is provided by an async generator (" in p for p in problems)


def test_sync_container_accepts_a_sync_graph() -> None:
    reg = di.Registry()
    reg.provider(singleton=True)(Engine)

    @reg.provider(scope="request")
    def conn(engine: Engine) -> Iterator[RequestConn]:
        yield RequestConn()

    c = di.Container(reg, sync=True)  # type: ignore[call-arg]
    with c, c.scope("request") as s:
        assert isinstance(s.resolve(RequestConn), RequestConn)


def test_sync_container_flags_async_context_manager_provider() -> None:
    class AConn:
        pass

    class ACM:
        async def __aenter__(self) -> AConn:
            return AConn()

        async def __aexit__(self, *exc: object) -> None:
            return None

    reg = di.Registry()

    @reg.provider(scope="request", cm=True, provides=AConn)
    def conn() -> ACM:
        return ACM()

    problems = build_errors(reg, sync=True)
    assert matching(problems, "AConn"), problems


# ------------------------------------------------------------------ several


def test_every_problem_is_listed_at_once() -> None:
    class NeedsMissing:
        def __init__(self, engine: Engine) -> None:
            pass

    class AsyncThing:
        pass

    reg = di.Registry()
    reg.provider()(NeedsMissing)  # missing Engine

    @reg.provider()
    def a(b: CycB) -> CycA:  # cycle A -> B -> A
        return CycA()

    @reg.provider()
    def b(a: CycA) -> CycB:
        return CycB()

    reg.provider(scope="request")(RequestConn)

    @reg.provider(singleton=True)
    def cache(conn: RequestConn) -> Cache:  # scope violation
        return Cache()

    @reg.provider(scope="session")
    def state(conn: RequestConn) -> SessionState:  # scope violation
        return SessionState()

    @reg.provider()
    async def thing() -> AsyncThing:  # async on a sync container
        return AsyncThing()

    problems = build_errors(reg, sync=True)
    assert matching(problems, "Engine", "NeedsMissing"), problems
    assert any("CycA -> CycB" in p or "CycB -> CycA" in p for p in problems), problems
    assert matching(problems, "Cache", "RequestConn"), problems
    assert matching(problems, "SessionState", "RequestConn"), problems
    assert matching(problems, "AsyncThing"), problems
    assert len(problems) >= 5, problems


def test_graph_error_message_counts_problems() -> None:
    reg = di.Registry()
    reg.provider()(Repo)  # missing Engine

    class Other:
        def __init__(self, cache: Cache) -> None:
            pass

    reg.provider()(Other)  # missing Cache
    problems = build_errors(reg)
    assert len(problems) == 2, problems
    assert matching(problems, "Engine", "Repo")
    assert matching(problems, "Cache", "Other")


# -- random graphs against an independent oracle --------------------------------
#
# The container validates in a lean walk that stops at the first problem and
# re-walks for the report only then; these graphs check that the two agree
# with each other and with a plain fixpoint oracle: a graph is rejected
# exactly when some problem exists, a rejection always names one, and a
# graph accepted resolves every key where its level says it can.

_LEVELS = ("app", "session", "request")


Spec = dict[type, tuple[int | None, list[tuple[type, bool]]]]  # key: (level, [(dep, has default)])


def _random_graph(rng: random.Random) -> tuple[di.Registry, Spec]:
    n = rng.randint(1, 7)
    keys = [type(f"K{i}", (), {}) for i in range(n + 1)]  # keys[n] is never registered
    spec: Spec = {}
    reg = di.Registry()
    levels = [rng.choice([None, None, 0, 1, 2]) for _ in range(n)]
    if rng.random() < 0.7:
        # Deeper levels first, so edges to later keys mostly respect lifetimes;
        # the rest of the graphs have their levels anywhere (violations).
        scoped = iter(sorted((lv for lv in levels if lv is not None), reverse=True))
        levels = [None if lv is None else next(scoped) for lv in levels]
    for i, key in enumerate(keys[:n]):
        level = levels[i]
        deps = []
        for _ in range(rng.randint(0, 3)):
            # Mostly edges to later keys (a DAG); now and then any key (maybe a
            # cycle) or the unregistered one (missing, unless defaulted).
            roll = rng.random()
            later = keys[i + 1 : n]
            dep = (
                keys[n]
                if roll < 0.07
                else rng.choice(keys)
                if roll < 0.15 or not later
                else rng.choice(later)
            )
            deps.append((dep, rng.random() < 0.2))
        spec[key] = (level, deps)
        # Defaults last, as Python requires: sort so defaulted parameters follow.
        deps.sort(key=lambda dep: dep[1])
        params = ", ".join(
            f"p{j}" + (" = None" if default else "") for j, (_, default) in enumerate(deps)
        )
        ns: dict[str, object] = {"key": key}
        exec(f"def make({params}):\n    return key()", ns)
        make = ns["make"]
        make.__annotations__ = {f"p{j}": d for j, (d, _) in enumerate(deps)} | {"return": key}  # type: ignore[attr-defined]
        scope = None if level is None else _LEVELS[level]
        reg.provider(scope=scope)(make) if scope else reg.provider(make)  # type: ignore[arg-type]
    return reg, spec


def _oracle(spec: Spec) -> dict[type, int] | None:
    """needs-level of every key by fixpoint iteration, or None if the graph is invalid."""
    used = {
        k: [d for d, default in deps if d in spec or not default] for k, (_, deps) in spec.items()
    }
    if any(d not in spec for deps in used.values() for d in deps):
        return None  # missing, no default
    # cycle: a key reachable from itself
    for start in spec:
        seen, todo = set(), list(used[start])
        while todo:
            k = todo.pop()
            if k == start:
                return None
            if k not in seen:
                seen.add(k)
                todo.extend(used[k])
    needs = {k: spec[k][0] or 0 for k in spec}
    changed = True
    while changed:
        changed = False
        for k in spec:
            deepest = max([needs[k], *(needs[d] for d in used[k])])
            if deepest != needs[k]:
                needs[k], changed = deepest, True
    for k, (level, _) in spec.items():
        if level is not None and needs[k] > level:
            return None  # a longer-lived provider holding a shorter-lived one
    return needs


@pytest.mark.parametrize("seed", range(300))
def test_random_graphs_agree_with_an_oracle(seed: int) -> None:
    reg, spec = _random_graph(random.Random(seed))
    expected = _oracle(spec)
    if expected is None:
        build_errors(reg)
        return
    container = di.Container(reg)
    with container:
        for key, deepest in expected.items():
            if deepest == 0:
                assert isinstance(container.resolve(key), key)
                continue
            with container.scope("session") as session:
                if deepest == 1:
                    assert isinstance(session.resolve(key), key)
                    continue
                with container.scope("request") as request:
                    assert isinstance(request.resolve(key), key)
                with pytest.raises(di.NoActiveScopeError):
                    session.resolve(key)


_VIOLATION = re.compile(r"scope violation: \S+ (K\d+) depends on (?:transient |\S+ )?(K\d+)")


@pytest.mark.parametrize("seed", range(300))
def test_random_graphs_report_only_real_scope_violations(seed: int) -> None:
    """Every scope violation reported is an edge from a key with a level to a
    dependency that needs a deeper one, where a scoped dependency needs just
    its own level (its own violations are reported on their own), and a
    transient what its dependencies need; and every such edge is reported.
    Graphs with a cycle are left out: there a needed level is not defined."""
    reg, spec = _random_graph(random.Random(seed))
    used = {k: [d for d, default in deps if d in spec] for k, (_, deps) in spec.items()}
    for start in spec:  # skip graphs with a cycle
        seen, todo = set(), list(used[start])
        while todo:
            k = todo.pop()
            if k == start:
                return
            if k not in seen:
                seen.add(k)
                todo.extend(used[k])
    needs: dict[type, int] = {}

    def needed(k: type) -> int:
        if k not in needs:
            level = spec[k][0]
            needs[k] = level if level is not None else max(map(needed, used[k]), default=0)
        return needs[k]

    expected = {
        (k.__name__, d.__name__)
        for k, (level, _) in spec.items()
        if level is not None
        for d in used[k]
        if needed(d) > level
    }
    try:
        di.Container(reg)
        problems: list[str] = []
    except di.GraphError as error:
        problems = error.problems
    reported = {m.groups() for p in problems if (m := _VIOLATION.match(p))}
    assert reported == expected, problems


# -- deep chains ------------------------------------------------------------------


def _chain(
    n: int, *, top_first: bool = False, async_bottom: bool = False
) -> tuple[di.Registry, list[type]]:
    """n classes, each needing the one before it; the last one needs them all.
    With ``async_bottom`` the first comes from a coroutine, so the whole chain
    takes the generated async plan (no first-use interpretation)."""
    classes: list[type] = []
    for i in range(n):
        if classes:

            def init(self: Any, below: Any) -> None:
                self.below = below

            init.__annotations__ = {"below": classes[-1], "return": None}
            classes.append(type(f"Link{i}", (), {"__init__": init}))
        else:
            classes.append(type("Link0", (), {}))
    reg = di.Registry()
    for cls in reversed(classes) if top_first else classes:
        if cls is classes[0] and async_bottom:
            reg.provider(provides=cls)(_async_maker(cls))
        else:
            reg.provider(cls)
    return reg, classes


def _async_maker(cls: type) -> Any:
    async def make() -> Any:
        return cls()

    return make


def _depth(obj: Any) -> int:
    n = 1
    while hasattr(obj, "below"):
        obj, n = obj.below, n + 1
    return n


def test_a_chain_deeper_than_the_parser_nests_is_compiled_in_pieces() -> None:
    # Python's parser stops at 200 nested parentheses; the generated plan of a
    # 300-long transient chain must still compile (the second resolve).
    reg, classes = _chain(300)
    top = classes[-1]
    reg.provider(singleton=True, provides=Annotated[object, di.Named("single")])(_needs(top))
    c = di.Container(reg)
    with c:
        first, second = c.resolve(top), c.resolve(top)
        assert _depth(first) == _depth(second) == 300 and first is not second
        held = c.resolve(Annotated[object, di.Named("single")])
        assert _depth(held) == 300


@pytest.mark.anyio
async def test_a_long_chain_resolves_through_the_async_plan() -> None:
    reg, classes = _chain(300, async_bottom=True)
    async with di.Container(reg) as c:
        assert _depth(await c.aresolve(classes[-1])) == 300


def _needs(top: type) -> Any:
    def make(value: Any) -> object:
        return value

    make.__annotations__ = {"value": top, "return": object}
    return make


def test_a_chain_deeper_than_the_recursion_limit_is_a_clear_graph_error() -> None:
    depth = sys.getrecursionlimit() + 100
    # Registered top first: validation follows the whole chain at once.
    reg, _ = _chain(depth, top_first=True)
    errors = build_errors(reg)
    assert len(errors) == 1
    assert "deeper than Python's recursion limit" in errors[0]
    assert "sys.setrecursionlimit()" in errors[0]


def test_a_deep_chain_validated_in_pieces_fails_clearly_at_resolve() -> None:
    # Registered bottom first, validation never nests deeply; making the top
    # does, and says so, naming the key.
    depth = sys.getrecursionlimit() + 100
    reg, classes = _chain(depth)
    c = di.Container(reg)
    with pytest.raises(di.GraphError) as info:
        c.resolve(classes[-1])
    assert f"the dependency chain of {classes[-1].__qualname__}" in str(info.value)
    assert isinstance(info.value.__cause__, RecursionError)


@pytest.mark.anyio
async def test_a_deep_chain_fails_clearly_when_its_async_plan_is_generated() -> None:
    depth = sys.getrecursionlimit() + 100
    reg, classes = _chain(depth, async_bottom=True)
    c = di.Container(reg)
    with pytest.raises(di.GraphError, match="deeper than Python's recursion limit") as info:
        await c.aresolve(classes[-1])
    assert isinstance(info.value.__cause__, RecursionError)
