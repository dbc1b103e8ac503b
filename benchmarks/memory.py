"""``python -m benchmarks --memory``: many request-scope cycles under ``tracemalloc``.

Traced memory is read after a warm-up (caches filled, code specialised), then at ten
checkpoints through the run, and at the end after ``gc.collect()``. A scope cycle that
leaks anything (a cached instance, a finalizer, a context token, a lock) shows as a
steady climb; "no growth" means the end figure is within a small tolerance of the start.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Callable
from itertools import repeat
from pathlib import Path
from typing import Any

from benchmarks import libs
from benchmarks.checks import check
from benchmarks.libs.base import Case

WARMUP = 10_000
TOLERANCE = 16 * 1024  # bytes: allocator noise, interned strings, specialisation caches


def _runner(scenario: str, case: Case, loop: asyncio.AbstractEventLoop) -> Callable[[int], None]:
    fn = case.fn
    if scenario == "arequest":

        async def many(n: int) -> None:
            for _ in repeat(None, n):
                await fn()

        return lambda n: loop.run_until_complete(many(n))

    def run(n: int) -> None:
        for _ in repeat(None, n):
            fn()

    return run


_EXCLUDE = (
    tracemalloc.Filter(False, __file__),  # this module's own bookkeeping (the points list)
    tracemalloc.Filter(False, tracemalloc.__file__),
)


def _traced() -> int:
    """Bytes traced now, excluding what the measuring code itself holds."""
    snapshot = tracemalloc.take_snapshot().filter_traces(_EXCLUDE)
    return sum(stat.size for stat in snapshot.statistics("filename"))


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def run_memory(lib: str, scenario: str, cycles: int, results: Path | None = None) -> int:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    bench = libs.load(lib).build(loop)
    failure = check(bench, scenario, loop)
    if failure is not None:
        print(f"{lib}, {scenario}: check failed: {failure}")
        return 1
    case: Any = bench.case(scenario)
    run = _runner(scenario, case, loop)
    run(WARMUP)
    gc.collect()

    tracemalloc.start()
    _traced()  # the first call fills fnmatch's pattern cache: not the library's memory
    start = _traced()
    tracemalloc.reset_peak()
    points: list[tuple[int, int]] = [(0, start)]
    step = max(1, cycles // 10)
    t0 = time.perf_counter()
    done = 0
    while done < cycles:
        n = min(step, cycles - done)
        run(n)
        done += n
        points.append((done, _traced()))
    elapsed = time.perf_counter() - t0
    gc.collect()
    end, peak = _traced(), tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if bench.close is not None:
        bench.close()
    loop.close()

    growth = end - start
    ok = growth <= TOLERANCE
    low = 0  # bars from zero: a flat line is flat, a tiny wobble stays tiny
    high = max(max(p[1] for p in points), 1)
    text: list[str] = []
    out = text.append
    out(f"## Memory: {cycles:,} {scenario} cycles of {lib} under tracemalloc\n")
    out(f"- traced before: {_kib(start)} (after {WARMUP:,} warm-up cycles)")
    out(f"- traced after:  {_kib(end)} (after gc.collect())")
    out(f"- growth:        {growth:+,} bytes ({growth / cycles:+.4f} bytes per cycle)")
    out(f"- peak:          {_kib(peak)} (peak - before: {_kib(peak - start)})")
    out(f"- time:          {elapsed:.1f} s traced ({elapsed / cycles * 1e9:,.0f} ns per cycle)")
    out(f"- verdict:       {'no growth' if ok else 'GROWTH'} (tolerance {TOLERANCE:,} bytes)\n")
    out("```")
    out(f"{'cycles':>10}  {'traced':>12}  (scale {_kib(low)} .. {_kib(high)})")
    width = 40
    for n, current in points:
        bar = 1 + round((current - low) / max(high - low, 1) * (width - 1))
        out(f"{n:>10,}  {_kib(current):>12}  {'#' * bar}")
    out("```")
    print("\n".join(text))
    if results is not None:
        results.write_text("\n".join(text) + "\n")
    return 0 if ok else 1
