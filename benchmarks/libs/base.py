"""What an adapter hands to the harness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.model import ColdGraph

NOARG: Any = object()  # Case.arg when the operation takes no argument

SCENARIOS: tuple[str, ...] = ("singleton", "transient", "request", "arequest", "cold")
TITLES: dict[str, str] = {
    "singleton": "singleton resolve",
    "transient": "transient graph A(B(D), C(D, S))",
    "request": "request scope (sync)",
    "arequest": "request scope (async)",
    "cold": "cold start, 50 providers",
}


@dataclass
class Case:
    """One timed operation: ``fn()`` or ``fn(arg)`` (for ``arequest``, a coroutine function).

    * singleton / transient: returns the resolved object.
    * request / arequest: enters a request scope, resolves ``R`` twice, exits; returns ``(r1, r2)``.
    """

    fn: Callable[..., Any]
    arg: Any = NOARG
    note: str = ""  # shown as a footnote: emulations, deviations


@dataclass
class ColdCase:
    """``fn(graph)`` registers ``graph``'s 50 classes, builds (validating where possible) and
    resolves the root once, returning it. ``cleanup()`` runs after each sample, untimed."""

    fn: Callable[[ColdGraph], Any]
    note: str = ""
    cleanup: Callable[[], None] | None = None


@dataclass
class Unsupported:
    reason: str


@dataclass
class Bench:
    name: str
    singleton: Case | Unsupported
    transient: Case | Unsupported
    request: Case | Unsupported
    arequest: Case | Unsupported
    cold: ColdCase | Unsupported
    close: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def case(self, scenario: str) -> Case | ColdCase | Unsupported:
        return getattr(self, scenario)  # type: ignore[no-any-return]


# Every adapter module defines:
#   NAME: str          the column name
#   DIST: str | None   the distribution whose version is reported (None for manual)
#   def build(loop: asyncio.AbstractEventLoop) -> Bench
BuildFn = Callable[[asyncio.AbstractEventLoop], Bench]
