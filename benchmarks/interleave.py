"""Interleaved rounds for the side scripts (``floor``, ``wide``): each round times every
candidate once, in a new random order, and keeps each one's ratio to ``manual`` from
the same round; the median over rounds is printed. The main harness (``run.py``) does the
same with per-library calibration and a report."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any


def compare(
    title: str, fns: dict[str, Any], sample: Callable[[Any, int], int], rounds: int, n: int
) -> dict[str, float]:
    """Print and return the median ratio to ``fns["manual"]`` of every entry of ``fns``."""
    for fn in fns.values():
        sample(fn, n // 10)  # warm-up: specialisation
    ratios: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        order = list(fns)
        random.shuffle(order)
        times = {name: sample(fns[name], n) for name in order}
        for name in fns:
            ratios[name].append(times[name] / times["manual"])
    medians = {name: statistics.median(values) for name, values in ratios.items()}
    print(f"{title}, median ratio to manual over {rounds} interleaved rounds:")
    for name, median in medians.items():
        print(f"  {name:10s} x{median:.2f}")
    return medians
