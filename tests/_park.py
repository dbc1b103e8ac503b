"""Park a worker thread at a chosen point inside di, to force one interleaving.

The races the review tests pin sit between two bytecodes of di: a hook parks the
thread there until the test has done what another thread could do meanwhile.
Imported as ``from _park import ...`` (tests/ is on the path, as for _cut_short).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

WAIT = 5.0  # seconds: a safety net only, never a timing assertion


def is_di(filename: str, module: str) -> bool:
    """Whether ``filename`` is di's ``module`` (``"compiler.py"``)."""
    return filename.replace("\\", "/").endswith(f"di/{module}")


def park_when_called(
    name: str,
    paused: threading.Event,
    resume: threading.Event,
    module: str = "compiler.py",
) -> Callable[[FrameType, str, object], None]:
    """sys.setprofile hook: park this thread the first time di/<module>'s
    ``name`` is called, until ``resume`` is set."""

    def hook(frame: FrameType, event: str, arg: object) -> None:
        code = frame.f_code
        if (
            event == "call"
            and not paused.is_set()
            and code.co_name == name
            and is_di(code.co_filename, module)
        ):
            paused.set()
            resume.wait(WAIT)

    return hook


def park_at_line(
    func: Any, text: str, paused: threading.Event, resume: threading.Event
) -> Callable[[FrameType, str, object], Any]:
    """sys.settrace hook: park this thread the first time it is about to run the
    line of ``func`` (a function of di) that contains ``text``, until ``resume``.
    (A line event: no profile event falls between the two bytecodes.)"""
    lines, start = inspect.getsourcelines(func)
    target = start + next(i for i, line in enumerate(lines) if text in line)
    code = func.__code__

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and frame.f_lineno == target and not paused.is_set():
            paused.set()
            resume.wait(WAIT)
        return local

    def hook(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code is code else None

    return hook
