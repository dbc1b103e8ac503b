"""One adapter module per library; each defines NAME, DIST and build(loop) -> Bench."""

from __future__ import annotations

import importlib
from types import ModuleType

# Column order of the results table; manual first (the baseline), then its contextlib
# variant (a reference row), the peers, di last.
ADAPTERS: dict[str, str] = {
    "manual": "benchmarks.libs.manual",
    "manual-contextlib": "benchmarks.libs.manual_contextlib",
    "dependency-injector": "benchmarks.libs.dependency_injector_",
    "dishka": "benchmarks.libs.dishka_",
    "diwire": "benchmarks.libs.diwire_",
    "modern-di": "benchmarks.libs.modern_di_",
    "svcs": "benchmarks.libs.svcs_",
    "that-depends": "benchmarks.libs.that_depends_",
    "wireup": "benchmarks.libs.wireup_",
    "di": "benchmarks.libs.di_",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(ADAPTERS[name])
