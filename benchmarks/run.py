"""The benchmark harness: ``python -m benchmarks`` (see benchmarks/README.md).

For every scenario, each round times one sample per library in a freshly shuffled
order; a sample is N iterations of the library's operation timed with
``time.perf_counter_ns`` while the garbage collector is off. A library's result is the
median over rounds of (its sample time / manual's sample time in the same round), so
slow drifts of a noisy machine cancel out. Absolute times are printed for manual only,
as a reference: they are not comparable across runs, ratios from one run are.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from itertools import repeat
from pathlib import Path
from typing import Any

from benchmarks import libs
from benchmarks.checks import check
from benchmarks.libs.base import NOARG, SCENARIOS, TITLES, Bench, Case, ColdCase, Unsupported
from benchmarks.model import COLD_SIZE, make_cold_graph

BASELINE = "manual"
TIMES = "\N{MULTIPLICATION SIGN}"
RESULTS_MD = Path(__file__).with_name("RESULTS.md")


# --------------------------------------------------------------------------- timing


def sample_sync(case: Case, n: int) -> int:
    fn, arg, it = case.fn, case.arg, repeat(None, n)
    gc.collect()
    gc.disable()
    try:
        if arg is NOARG:
            t0 = time.perf_counter_ns()
            for _ in it:
                fn()
            t1 = time.perf_counter_ns()
        else:
            t0 = time.perf_counter_ns()
            for _ in it:
                fn(arg)
            t1 = time.perf_counter_ns()
    finally:
        gc.enable()
    return t1 - t0


async def _async_loop(fn: Callable[[], Any], n: int) -> int:
    it = repeat(None, n)
    t0 = time.perf_counter_ns()
    for _ in it:
        await fn()
    return time.perf_counter_ns() - t0


def sample_async(case: Case, n: int, loop: asyncio.AbstractEventLoop) -> int:
    gc.collect()
    gc.disable()
    try:
        return loop.run_until_complete(_async_loop(case.fn, n))
    finally:
        gc.enable()


def sample_cold(case: ColdCase, n: int) -> int:
    """Each cold start gets fresh classes made just before it, outside the timed region
    (so every library finds them equally warm in the CPU caches)."""
    fn = case.fn
    total = 0
    gc.collect()
    gc.disable()
    try:
        for _ in repeat(None, n):
            graph = make_cold_graph()
            t0 = time.perf_counter_ns()
            fn(graph)
            total += time.perf_counter_ns() - t0
    finally:
        gc.enable()
        if case.cleanup is not None:
            case.cleanup()
    return total


def sample(scenario: str, case: Case | ColdCase, n: int, loop: asyncio.AbstractEventLoop) -> int:
    if isinstance(case, ColdCase):
        return sample_cold(case, n)
    if scenario == "arequest":
        return sample_async(case, n, loop)
    return sample_sync(case, n)


def calibrate(
    scenario: str,
    case: Case | ColdCase,
    target_ns: int,
    minimum: int,
    loop: asyncio.AbstractEventLoop,
) -> int:
    """Iterations per sample so that one sample lasts about ``target_ns``."""
    n = minimum
    while True:
        elapsed = sample(scenario, case, n, loop)
        if elapsed >= target_ns / 4 or n >= 10_000_000:
            return max(minimum, round(n * target_ns / max(elapsed, 1)))
        n *= 4


# --------------------------------------------------------------------------- setup


@dataclass
class Lib:
    name: str
    version: str
    bench: Bench | None = None
    error: str | None = None  # could not be imported or built
    failed: dict[str, str] = field(default_factory=dict)  # scenario -> failed check


def _version(dist: str | None) -> str:
    if dist is None:
        return "-"
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_libs(names: Sequence[str], loop: asyncio.AbstractEventLoop) -> list[Lib]:
    loaded = []
    for name in names:
        try:
            module = libs.load(name)
        except Exception as exc:
            loaded.append(Lib(name, "?", error=f"import failed: {type(exc).__name__}: {exc}"))
            continue
        lib = Lib(name, _version(module.DIST))
        try:
            lib.bench = module.build(loop)
        except Exception as exc:
            lib.error = f"setup failed: {type(exc).__name__}: {exc}"
        loaded.append(lib)
    return loaded


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    ratios: list[float] = field(default_factory=list)
    ns_per_op: list[float] = field(default_factory=list)


@dataclass
class Run:
    libs: list[Lib]
    scenarios: list[str]
    rounds: dict[str, int]
    iterations: dict[tuple[str, str], int] = field(default_factory=dict)  # N per sample
    results: dict[tuple[str, str], Result] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=machine_info)
    quick: bool = False
    seconds: float = 0.0


def timed_libs(run: Run, scenario: str) -> list[Lib]:
    return [
        lib
        for lib in run.libs
        if lib.bench is not None
        and not isinstance(lib.bench.case(scenario), Unsupported)
        and scenario not in lib.failed
    ]


def run_benchmarks(
    run: Run,
    loop: asyncio.AbstractEventLoop,
    target_ms: dict[str, float],
    seed: int,
    log: Callable[[str], None],
) -> None:
    rng = random.Random(seed)
    for scenario in run.scenarios:
        todo = timed_libs(run, scenario)
        if not any(lib.name == BASELINE for lib in todo):
            log(f"{scenario}: skipped, the {BASELINE} baseline is not available")
            continue
        minimum = 3 if scenario == "cold" else 100
        target_ns = int(target_ms[scenario] * 1e6)
        cases: dict[str, Case | ColdCase] = {}
        for lib in todo:
            case = lib.bench.case(scenario)  # type: ignore[union-attr]
            assert not isinstance(case, Unsupported)
            cases[lib.name] = case
            # Calibrating twice: the first pass is the warm-up (caches, specialisation,
            # lazy compilation), the second measures warm code.
            calibrate(scenario, case, target_ns, minimum, loop)
            run.iterations[scenario, lib.name] = calibrate(scenario, case, target_ns, minimum, loop)
        rounds = run.rounds[scenario]
        counts = [run.iterations[scenario, lib.name] for lib in todo]
        log(
            f"{TITLES[scenario]}: {rounds} rounds x {len(todo)} libraries, "
            f"N={min(counts)}..{max(counts)} per sample"
        )
        for _ in range(rounds):
            order = list(todo)
            rng.shuffle(order)
            per_op = {}
            for lib in order:
                n = run.iterations[scenario, lib.name]
                per_op[lib.name] = sample(scenario, cases[lib.name], n, loop) / n
            for name, ns in per_op.items():
                res = run.results.setdefault((scenario, name), Result())
                res.ratios.append(ns / per_op[BASELINE])
                res.ns_per_op.append(ns)


# --------------------------------------------------------------------------- report


def _cell(run: Run, lib: Lib, scenario: str, notes: dict[str, int]) -> str:
    if lib.error is not None:
        return "error"
    assert lib.bench is not None
    case = lib.bench.case(scenario)
    if isinstance(case, Unsupported):
        return "n/a" + _mark(f"{lib.name}, {scenario}: n/a, {case.reason}", notes)
    if scenario in lib.failed:
        failure = lib.failed[scenario]
        return "FAIL" + _mark(f"{lib.name}, {scenario}: check failed: {failure}", notes)
    res = run.results.get((scenario, lib.name))
    if res is None or not res.ratios:
        return "-"
    text = f"{TIMES}{statistics.median(res.ratios):.2f}"
    if case.note:
        text += _mark(f"{lib.name}, {scenario}: {case.note}", notes)
    return text


def _mark(note: str, notes: dict[str, int]) -> str:
    number = notes.setdefault(note, len(notes) + 1)
    return f" [{number}]"


def _spread(run: Run, lib: Lib, scenario: str) -> str:
    res = run.results.get((scenario, lib.name))
    if res is None or len(res.ratios) < 2:
        return "-"
    q = (
        statistics.quantiles(res.ratios, n=4)
        if len(res.ratios) >= 4
        else [min(res.ratios), 0.0, max(res.ratios)]
    )
    return f"{q[0]:.2f} to {q[-1]:.2f}"


def _iterations(run: Run, scenario: str) -> str:
    counts = [n for (s, _), n in run.iterations.items() if s == scenario]
    if not counts:
        return f"{scenario}: not run"
    return f"{scenario}: {run.rounds[scenario]} rounds, N={min(counts):,}..{max(counts):,}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [
        line(header),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *(line(r) for r in rows),
    ]


SUBJECT = "di"


def _head_to_head(run: Run) -> list[str]:
    """di against the fastest peer of each scenario, round by round: a median lead of a
    few percent can be noise, the count of rounds won says how often it holds."""
    lines = []
    for s in run.scenarios:
        ours = run.results.get((s, SUBJECT))
        peers = [
            (statistics.median(res.ratios), name)
            for (scenario, name), res in run.results.items()
            if scenario == s and res.ratios and name != SUBJECT and not name.startswith(BASELINE)
        ]
        if ours is None or not peers:
            continue
        _, best = min(peers)
        theirs = run.results[s, best].ratios
        won = sum(a < b for a, b in zip(ours.ratios, theirs, strict=True))
        lines.append(
            f"- {TITLES[s]}: {SUBJECT} faster than {best} in {won} of {len(theirs)} rounds"
        )
    if not lines:
        return []
    return [
        f"Head to head, {SUBJECT} against the fastest peer of each scenario (same rounds):",
        "",
        *lines,
        "",
    ]


def report(run: Run, command: str) -> str:
    notes: dict[str, int] = {}
    header = ["library", *(TITLES[s] for s in run.scenarios)]
    rows = [[lib.name, *(_cell(run, lib, s, notes) for s in run.scenarios)] for lib in run.libs]
    manual_ns = []
    for s in run.scenarios:
        res = run.results.get((s, BASELINE))
        manual_ns.append(f"{statistics.median(res.ns_per_op):,.0f} ns" if res else "-")
    rows.append([f"*{BASELINE}, ns/op*", *manual_ns])

    m = run.machine
    out = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` in {run.seconds:.0f} s"
        + (" (quick smoke run: few rounds, not for publishing)." if run.quick else "."),
        "",
        f"- machine: {m['platform']}; CPU: {m['cpu']}; {m['cores']} cores",
        f"- {m['python']}; "
        + "; ".join(f"{lib.name} {lib.version}" for lib in run.libs if lib.version != "-"),
        "",
        "Each cell is the median over rounds of (library time per operation / manual time "
        f"per operation in the same round): {TIMES}1.00 is hand-written speed, lower is better. "
        "Rounds interleave the libraries in a random order; each sample is N iterations "
        "timed with the garbage collector off.",
        "",
        *_table(header, rows),
        "",
    ]
    if notes:
        out += [f"{number}. {text}" for text, number in notes.items()] + [""]
    out += [
        "Scenarios:",
        "",
        "- **singleton resolve**: resolve an already created singleton `S`.",
        "- **transient graph**: resolve `A(B(D), C(D, S))`, `A`, `B`, `C`, `D` transient, `S` "
        "a singleton.",
        "- **request scope**: enter a request scope, resolve the scoped `R(S, T)` twice "
        "(same object), exit; `R` comes from a generator factory whose finalizer runs at "
        "exit; `T` transient.",
        "- **request scope (async)**: the same through the async API with an async-generator "
        "factory.",
        f"- **cold start**: register {COLD_SIZE} providers (a binary tree of fresh classes "
        f"made by a class factory just before each cold start; class creation is *outside* "
        "timing for every library), "
        "build the container (validating where the library can), resolve the root once.",
        "",
        "Every library's semantics are asserted before timing: singleton identity, transient "
        "freshness, scoped identity within a scope and freshness across scopes, the finalizer "
        "run exactly once per scope.",
        "",
        "Rounds per scenario, and iterations per sample (calibrated per library so that "
        "every sample lasts about as long): "
        + "; ".join(_iterations(run, s) for s in run.scenarios)
        + ".",
        "",
        "Spread (interquartile range of the per-round ratios):",
        "",
        *_table(
            ["library", *run.scenarios],
            [
                [lib.name, *(_spread(run, lib, s) for s in run.scenarios)]
                for lib in run.libs
                if lib.name != BASELINE and lib.error is None
            ],
        ),
        "",
    ]
    out += _head_to_head(run)
    errors = [f"- {lib.name}: {lib.error}" for lib in run.libs if lib.error]
    if errors:
        out += ["Not benchmarked:", "", *errors, ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds, seconds")
    parser.add_argument(
        "--rounds", type=int, help="rounds per scenario (cold start: half); default 41, --quick 3"
    )
    parser.add_argument(
        "--sample-ms",
        type=float,
        help="target duration of one sample (cold start: twice that); default 10, --quick 0.5",
    )
    parser.add_argument(
        "--libs",
        nargs="+",
        choices=list(libs.ADAPTERS),
        default=list(libs.ADAPTERS),
        help="libraries (manual is always added)",
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--seed", type=int, default=None, help="seed of the round orders")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"markdown output (default: {RESULTS_MD.name} for full runs, none for --quick)",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="instead of timing: request-scope cycles under tracemalloc "
        "(see --memory-lib, --cycles)",
    )
    parser.add_argument("--memory-lib", default="di", choices=list(libs.ADAPTERS))
    parser.add_argument("--memory-scenario", default="request", choices=("request", "arequest"))
    parser.add_argument("--cycles", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    if args.memory:
        from benchmarks.memory import run_memory

        return run_memory(args.memory_lib, args.memory_scenario, args.cycles, args.results)

    started = time.perf_counter()
    names = [BASELINE, *(n for n in args.libs if n != BASELINE)]
    rounds = args.rounds or (3 if args.quick else 41)
    sample_ms = args.sample_ms or (0.5 if args.quick else 10.0)
    scenarios = [s for s in SCENARIOS if s in args.scenarios]
    seed = args.seed if args.seed is not None else random.randrange(2**32)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    log(f"loading {', '.join(names)}")
    run = Run(
        libs=load_libs(names, loop),
        scenarios=scenarios,
        rounds={s: max(2, rounds // 2) if s == "cold" else rounds for s in scenarios},
        quick=args.quick,
    )
    for lib in run.libs:
        if lib.error:
            log(f"  {lib.name}: {lib.error}")
            continue
        assert lib.bench is not None
        for scenario in scenarios:
            failure = check(lib.bench, scenario, loop)
            if failure is not None:
                lib.failed[scenario] = failure
                log(f"  {lib.name}, {scenario}: check failed: {failure}")
    gc.collect()
    gc.freeze()  # keep the imported libraries out of the per-sample collections
    targets = {s: sample_ms * 2 if s == "cold" else sample_ms for s in scenarios}
    log(f"seed {seed}")
    run_benchmarks(run, loop, targets, seed, log)
    for lib in run.libs:
        if lib.bench is not None and lib.bench.close is not None:
            lib.bench.close()
    loop.close()
    run.seconds = time.perf_counter() - started

    command = "python -m benchmarks" + (
        " " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""
    )
    text = report(run, command)
    print(text)
    out = args.results if args.results is not None else (None if args.quick else RESULTS_MD)
    if out is not None:
        out.write_text(text)
        log(f"written to {out}")
        if out == RESULTS_MD and set(run.scenarios) == set(SCENARIOS) and update_readme(text):
            log(f"results table written to {README_MD}")
    return 0


README_MD = Path(__file__).resolve().parent.parent / "README.md"
README_START = "<!-- results: from benchmarks/RESULTS.md -->"
README_END = "<!-- /results -->"


def update_readme(results: str, readme: Path = README_MD) -> bool:
    """Put the machine, the versions and the main table of a full run between
    the README's results markers (the footnotes stay in RESULTS.md)."""
    if not readme.exists():
        return False
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    lines = results.splitlines()
    machine = [line for line in lines if line.startswith(("- machine:", "- CPython"))]
    table_start = next(i for i, line in enumerate(lines) if line.startswith("| library"))
    table_end = next(i for i in range(table_start, len(lines)) if not lines[i].startswith("|"))
    block = "\n".join([README_START, *machine, "", *lines[table_start:table_end], README_END])
    readme.write_text(text[:start] + block + text[end + len(README_END) :])
    return True


if __name__ == "__main__":
    sys.exit(main())
