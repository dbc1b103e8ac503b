"""Semantic assertions run on every adapter before anything is timed.

A library that fails them is not timed in that scenario (the failure is reported),
so no ratio in the table comes from code doing less work than ``manual``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.libs.base import NOARG, Bench, Case, ColdCase, Unsupported
from benchmarks.model import A, B, C, D, R, S, T, check_cold_root, make_cold_graph


def call(case: Case) -> Any:
    return case.fn() if case.arg is NOARG else case.fn(case.arg)


def _singleton(bench: Bench) -> S | None:
    case = bench.singleton
    return call(case) if isinstance(case, Case) else None


def check_singleton(bench: Bench, loop: asyncio.AbstractEventLoop) -> None:
    case = bench.singleton
    assert isinstance(case, Case)
    s1, s2 = call(case), call(case)
    assert type(s1) is S, type(s1)
    assert s1 is s2, "singleton: two resolves gave two objects"


def check_transient(bench: Bench, loop: asyncio.AbstractEventLoop) -> None:
    case = bench.transient
    assert isinstance(case, Case)
    a1, a2 = call(case), call(case)
    assert type(a1) is A and type(a1.b) is B and type(a1.c) is C, "transient: wrong types"
    assert type(a1.b.d) is D and type(a1.c.d) is D and type(a1.c.s) is S, "transient: wrong types"
    assert a1 is not a2 and a1.b is not a2.b and a1.c is not a2.c, "transient: A/B/C reused"
    assert a1.b.d is not a1.c.d and a1.b.d is not a2.b.d, "transient: D reused"
    assert a1.c.s is a2.c.s, "transient: S is not a singleton"
    s = _singleton(bench)
    if s is not None:
        assert a1.c.s is s, "transient: S differs from the resolved singleton"


def _check_request_pair(
    bench: Bench, first: tuple[Any, Any], second: tuple[Any, Any], same_container: bool
) -> None:
    r1, r1b = first
    r2, r2b = second
    assert type(r1) is R, type(r1)
    assert r1 is r1b and r2 is r2b, "request: two resolves in one scope gave two objects"
    assert r1 is not r2, "request: the scoped instance leaked into the next scope"
    assert r1.closes == 1 and r2.closes == 1, (
        f"request: finalizer ran {r1.closes} and {r2.closes} times, expected once per scope"
    )
    assert type(r1.t) is T and r1.t is not r2.t, "request: T is not transient"
    assert type(r1.s) is S and r1.s is r2.s, "request: S is not a singleton"
    s = _singleton(bench) if same_container else None  # async scenarios use their own container
    if s is not None:
        assert r1.s is s, "request: S differs from the resolved singleton"


def check_request(bench: Bench, loop: asyncio.AbstractEventLoop) -> None:
    case = bench.request
    assert isinstance(case, Case)
    first = call(case)
    assert first[0].closes == 1, f"request: finalizer ran {first[0].closes} times at scope exit"
    _check_request_pair(bench, first, call(case), same_container=True)


def check_arequest(bench: Bench, loop: asyncio.AbstractEventLoop) -> None:
    case = bench.arequest
    assert isinstance(case, Case)
    first = loop.run_until_complete(case.fn())
    assert first[0].closes == 1, f"arequest: finalizer ran {first[0].closes} times at scope exit"
    _check_request_pair(bench, first, loop.run_until_complete(case.fn()), same_container=False)


def check_cold(bench: Bench, loop: asyncio.AbstractEventLoop) -> None:
    case = bench.cold
    assert isinstance(case, ColdCase)
    for _ in range(2):
        graph = make_cold_graph()
        check_cold_root(graph, case.fn(graph))
    if case.cleanup is not None:
        case.cleanup()


CHECKS = {
    "singleton": check_singleton,
    "transient": check_transient,
    "request": check_request,
    "arequest": check_arequest,
    "cold": check_cold,
}


def check(bench: Bench, scenario: str, loop: asyncio.AbstractEventLoop) -> str | None:
    """Run the assertions for one scenario; return an error text, or None when they hold."""
    if isinstance(bench.case(scenario), Unsupported):
        return None
    try:
        CHECKS[scenario](bench, loop)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
