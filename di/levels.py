"""Scope levels: the ordered names a registry's lifetimes refer to."""

from __future__ import annotations

from enum import Enum
from typing import ClassVar


class Scope(str, Enum):
    """The default scope levels, outermost first.

    ``"app" < "session" < "request" < "action" < "step"``. Every value is a
    plain string, so ``scope="request"`` and ``scope=di.Scope.REQUEST`` mean
    the same. A registry may declare its own order:
    ``di.Registry(levels=("app", "tenant", "request"))``. The first level is
    the container itself: ``scope="app"`` is the same lifetime as
    ``singleton=True``.
    """

    APP = "app"
    SESSION = "session"
    REQUEST = "request"
    ACTION = "action"
    STEP = "step"

    ORDER: ClassVar[tuple[str, ...]]

    def __str__(self) -> str:
        return str(self.value)


DEFAULT_ORDER: tuple[str, ...] = tuple(level.value for level in Scope)
Scope.ORDER = DEFAULT_ORDER
