"""Instruction counts with valgrind's callgrind: stable numbers on a noisy machine.

Two commands (run from the repository root):

``python -m benchmarks.callgrind run SCENARIO LIB N``
    Build LIB's adapter, assert its semantics, warm up, then run N iterations of
    SCENARIO. This is what runs under valgrind::

        valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
            python -m benchmarks.callgrind run request di 20000

``python -m benchmarks.callgrind compare [-n N] [--libs di manual] [--scenarios ...]``
    For each scenario and library, run the above under callgrind twice, with N and with
    0 iterations, and print (Ir(N) - Ir(0)) / N instructions per operation (start-up,
    imports, setup and warm-up cancel out) and the ratio to manual.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

SCENARIOS = ("singleton", "transient", "request", "arequest")
TIMES = "\N{MULTIPLICATION SIGN}"
WARMUP = 2_000  # iterations before the counted ones, in both runs: specialisation, caches


def run_iterations(scenario: str, lib: str, n: int) -> None:
    from benchmarks import libs
    from benchmarks.checks import check
    from benchmarks.libs.base import NOARG, Case

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    bench = libs.load(lib).build(loop)
    failure = check(bench, scenario, loop)
    if failure is not None:
        raise SystemExit(f"{lib}, {scenario}: check failed: {failure}")
    case: Any = bench.case(scenario)
    assert isinstance(case, Case), case
    fn, arg = case.fn, case.arg

    if scenario == "arequest":

        async def many(k: int) -> None:
            for _ in repeat(None, k):
                await fn()

        def run(k: int) -> None:
            loop.run_until_complete(many(k))

    elif arg is NOARG:

        def run(k: int) -> None:
            for _ in repeat(None, k):
                fn()

    else:

        def run(k: int) -> None:
            for _ in repeat(None, k):
                fn(arg)

    run(WARMUP)
    gc.collect()
    gc.disable()  # a collection triggered in one run and not the other would skew the count
    run(n)
    gc.enable()
    if bench.close is not None:
        bench.close()
    loop.close()


def count_instructions(scenario: str, lib: str, n: int, valgrind: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            valgrind,
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.callgrind",
            "run",
            scenario,
            lib,
            str(n),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        text = out.read_text()
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no instruction total in the callgrind output")
    return int(match.group(1))


def compare(scenarios: Sequence[str], names: Sequence[str], n: int) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    names = ["manual", *(x for x in names if x != "manual")]
    per_op: dict[tuple[str, str], float] = {}
    for scenario in scenarios:
        for lib in names:
            print(f"  callgrind: {scenario} / {lib} ...", file=sys.stderr, flush=True)
            full = count_instructions(scenario, lib, n, valgrind)
            empty = count_instructions(scenario, lib, 0, valgrind)
            per_op[scenario, lib] = (full - empty) / n
    print(f"Instructions per operation (callgrind Ir, (Ir(N={n:,}) - Ir(0)) / N):\n")
    header = [
        "scenario",
        *(f"{lib} Ir/op" for lib in names),
        *(f"{lib} / manual" for lib in names[1:]),
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for scenario in scenarios:
        base = per_op[scenario, "manual"]
        cells = [
            scenario,
            *(f"{per_op[scenario, lib]:,.0f}" for lib in names),
            *(f"{TIMES}{per_op[scenario, lib] / base:.2f}" for lib in names[1:]),
        ]
        print("| " + " | ".join(cells) + " |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.libs import ADAPTERS

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.callgrind",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run N iterations of one scenario (under valgrind)")
    run.add_argument("scenario", choices=SCENARIOS)
    run.add_argument("lib", choices=list(ADAPTERS))
    run.add_argument("n", type=int)
    cmp_ = sub.add_parser("compare", help="instructions per op of libraries vs manual")
    cmp_.add_argument("-n", type=int, default=20_000, help="counted iterations (default 20000)")
    cmp_.add_argument("--libs", nargs="+", choices=list(ADAPTERS), default=["di"])
    cmp_.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    args = parser.parse_args(argv)
    if args.command == "run":
        run_iterations(args.scenario, args.lib, args.n)
        return 0
    return compare(args.scenarios, args.libs, args.n)


if __name__ == "__main__":
    sys.exit(main())
