"""di/graph.py: build-time validation. ``di.Container(registry)`` raises ONE
``di.GraphError`` whose ``.problems`` lists every problem in the graph."""

import re
from collections.abc import AsyncIterator, Iterator

import pytest

import di


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
