"""Hand-written request scopes with the standard library's own tools: a reference row.

``manual`` is the leanest correct code for each scenario. A programmer who wants the
teardown guarantees a container gives (the finalizer runs, and sees the error, even
when the request body raises) would more likely reach for ``contextlib``: an
``ExitStack`` per request and the generator factory wrapped by ``contextmanager``.
This row times that, for the two scope scenarios only; it is a second baseline to read
the ratios against, not a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from benchmarks.libs.base import Bench, Case, Unsupported
from benchmarks.libs.manual import get_s
from benchmarks.model import R, T, r_agen, r_gen

NAME = "manual-contextlib"
DIST = None

_cm = contextlib.contextmanager(r_gen)
_acm = contextlib.asynccontextmanager(r_agen)


def request_cycle() -> tuple[Any, Any]:
    """An ``ExitStack`` per request; R entered through ``contextmanager``, cached in a dict."""
    with contextlib.ExitStack() as stack:
        cache: dict[type, Any] = {}
        r1 = cache[R] = stack.enter_context(_cm(get_s(), T()))
        r2 = cache[R]
    return r1, r2


async def arequest_cycle() -> tuple[Any, Any]:
    """The same with ``AsyncExitStack`` and ``asynccontextmanager``."""
    async with contextlib.AsyncExitStack() as stack:
        cache: dict[type, Any] = {}
        r1 = cache[R] = await stack.enter_async_context(_acm(get_s(), T()))
        r2 = cache[R]
    return r1, r2


def build(loop: asyncio.AbstractEventLoop) -> Bench:
    only_scopes = Unsupported("a reference for the scope scenarios only (same code as manual)")
    return Bench(
        name=NAME,
        singleton=only_scopes,
        transient=only_scopes,
        request=Case(request_cycle, note="ExitStack + contextmanager, a reference, not a peer"),
        arequest=Case(
            arequest_cycle, note="AsyncExitStack + asynccontextmanager, a reference, not a peer"
        ),
        cold=only_scopes,
    )
