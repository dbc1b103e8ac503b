"""``python -m benchmarks.floor``: what any container with di's request-scope shape costs.

The request-scope targets (x1.35 of ``manual``) are measured against a hand-written cycle
that has no ``with``, no current-scope variable and no scope object. This script times,
in the same interleaved way as the harness, three request cycles, sync and async:

* ``manual``: the harness's baseline (``libs/manual.py``);
* ``minimal``: the smallest checkpoint with di's *shape* and none of its checks: a
  ``dict`` subclass entered with ``with`` (``async with``), made current through a
  ``ContextVar``, a miss going through ``__missing__`` (``aresolve``: a dict hit, else
  the key's plan coroutine) to a per-key plan, the generator finished at exit. No level
  or exit-order check, no hold claim, no creation marker, no closed check;
* ``di``: the real thing (``libs/di_.py``).

``minimal`` is the floor of the shape: what is left over it is the price of di's
semantics (exit-order and level checks, holds, exactly-once creation under
concurrency, refusing to serve a torn-down checkpoint).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from itertools import repeat
from typing import Any

from benchmarks.interleave import compare
from benchmarks.libs import di_, manual
from benchmarks.model import R, S, T, r_agen, r_gen

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("floor.current", default=None)
_s = S()


class _Minimal(dict[Any, Any]):
    __slots__ = ("_exits", "_parent", "_token")
    _exits: list[Iterator[Any]]

    def __enter__(self) -> _Minimal:
        self._parent = _current.get(None)
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
        exits = self._exits
        while exits:
            for _ in exits.pop():
                pass
        self.clear()

    def __missing__(self, key: Any) -> Any:
        return _plans[key](self)

    def aresolve(self, key: Any) -> Coroutine[Any, Any, Any]:
        value = dict.get(self, key, _MISSING)
        if value is not _MISSING:
            return _ready(value)
        return _aplans[key](self)

    async def __aenter__(self) -> _Minimal:
        self._parent = _current.get(None)
        self._token = _current.set(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        _current.reset(self._token)
        exits = self._exits
        while exits:
            async for _ in exits.pop():  # type: ignore[attr-defined]
                pass
        self.clear()


_MISSING: Any = object()


async def _ready(value: Any) -> Any:
    return value


def _plan_r(cp: _Minimal) -> R:
    gen = r_gen(_s, T())
    value = next(gen)
    cp._exits.append(gen)
    cp[R] = value
    return value


async def _aplan_r(cp: _Minimal) -> R:
    agen: AsyncIterator[R] = r_agen(_s, T())
    value = await agen.__anext__()
    cp._exits.append(agen)  # type: ignore[arg-type]
    cp[R] = value
    return value


_plans: dict[Any, Callable[[_Minimal], Any]] = {R: _plan_r}
_aplans: dict[Any, Callable[[_Minimal], Coroutine[Any, Any, Any]]] = {R: _aplan_r}


def minimal_cycle() -> tuple[Any, Any]:
    cp = _Minimal()  # no __init__: a Python __init__ would be one more C-to-Python call
    cp._exits = []
    with cp as req:
        r1, r2 = req[R], req[R]
    return r1, r2


async def aminimal_cycle() -> tuple[Any, Any]:
    cp = _Minimal()
    cp._exits = []
    async with cp as req:
        r1, r2 = await req.aresolve(R), await req.aresolve(R)
    return r1, r2


async def _many(fn: Callable[[], Awaitable[Any]], n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        await fn()
    return time.perf_counter_ns() - t0


def _sampler(loop: asyncio.AbstractEventLoop, is_async: bool) -> Callable[[Any, int], int]:
    def sample(fn: Any, n: int) -> int:
        gc.disable()
        try:
            if is_async:
                return loop.run_until_complete(_many(fn, n))
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                fn()
            return time.perf_counter_ns() - t0
        finally:
            gc.enable()

    return sample


def main(rounds: int = 21, n: int = 50_000) -> None:
    loop = asyncio.new_event_loop()
    baseline, di = manual.build(loop), di_.build(loop)
    for cycle in (minimal_cycle(), loop.run_until_complete(aminimal_cycle())):
        r1, r2 = cycle
        assert r1 is r2 and r1.closes == 1, "the minimal cycle must do the same work"
    sync = {"manual": baseline.request, "minimal": minimal_cycle, "di": di.request}
    compare(
        "request cycle",
        {name: getattr(case, "fn", case) for name, case in sync.items()},
        _sampler(loop, is_async=False),
        rounds,
        n,
    )
    asyn = {"manual": baseline.arequest, "minimal": aminimal_cycle, "di": di.arequest}
    compare(
        "async request cycle",
        {name: getattr(case, "fn", case) for name, case in asyn.items()},
        _sampler(loop, is_async=True),
        rounds,
        n // 2,
    )


if __name__ == "__main__":
    main()
