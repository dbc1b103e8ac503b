"""``resolve(T) -> T`` under mypy --strict and pyright: tests/typing/ is checked
by both (as subprocesses) and executed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPING_DIR = ROOT / "tests" / "typing"


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)


@pytest.mark.timeout(180)
def test_mypy_strict_accepts_typing_checks() -> None:
    proc = run([sys.executable, "-m", "mypy", "--strict", "tests/typing/"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(180)
def test_pyright_accepts_typing_checks() -> None:
    pyright = shutil.which("pyright")
    if pyright is None:
        if os.environ.get("CI"):
            pytest.fail("pyright is not installed, and CI requires it")
        pytest.skip("pyright is not installed")
    proc = run([pyright, "tests/typing"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(60)
def test_typing_checks_run() -> None:
    proc = run([sys.executable, str(TYPING_DIR / "check_resolve.py")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
