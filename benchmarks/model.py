"""The object graph every adapter wires, identical for all libraries.

Scenario classes (all plain classes, dependencies declared by ``__init__`` hints):

* ``S``: the singleton.
* ``D``, ``B(D)``, ``C(D, S)``, ``A(B, C)``: the transient graph.
* ``T``: a transient needed by the scoped ``R(S, T)``.
* ``R``: request-scoped, made by a generator (``r_gen``) or async generator (``r_agen``)
  whose code after ``yield`` is the finalizer; it counts its runs in ``R.closes``.

Cold start uses ``make_cold_graph()``: 50 fresh classes per call, a binary tree whose
root is ``classes[0]`` (node ``i`` depends on nodes ``2i+1`` and ``2i+2``).
"""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass


class S:
    def __init__(self) -> None:
        pass


class T:
    def __init__(self) -> None:
        pass


class D:
    def __init__(self) -> None:
        pass


class B:
    def __init__(self, d: D) -> None:
        self.d = d


class C:
    def __init__(self, d: D, s: S) -> None:
        self.d = d
        self.s = s


class A:
    def __init__(self, b: B, c: C) -> None:
        self.b = b
        self.c = c


class R:
    def __init__(self, s: S, t: T) -> None:
        self.s = s
        self.t = t
        self.closes = 0


def r_gen(s: S, t: T) -> Iterator[R]:
    """Generator factory of the request-scoped ``R``; the ``finally`` block is its finalizer."""
    r = R(s, t)
    try:
        yield r
    finally:
        r.closes += 1


async def r_agen(s: S, t: T) -> AsyncIterator[R]:
    """Async-generator factory of the request-scoped ``R``."""
    r = R(s, t)
    try:
        yield r
    finally:
        r.closes += 1


COLD_SIZE = 50


@dataclass
class ColdGraph:
    """Fresh classes for one cold start. ``deps[i]`` are the indices node ``i`` needs,
    in ``__init__`` parameter order, for libraries (and ``manual``) that wire explicitly."""

    classes: list[type]
    deps: list[tuple[int, ...]]

    @property
    def root(self) -> type:
        return self.classes[0]

    def leaves_first(self) -> range:
        """Indices in an order where every dependency comes before its dependents."""
        return range(len(self.classes) - 1, -1, -1)


def make_init(kids: tuple[type, ...]) -> object:
    """An ``__init__`` taking one instance of each of ``kids`` (as ``left``, ``right``),
    annotated with them: a fresh function, so each class has its own annotations."""
    if len(kids) == 2:

        def __init__(self: object, left: object, right: object) -> None:
            self.left = left  # type: ignore[attr-defined]
            self.right = right  # type: ignore[attr-defined]

        __init__.__annotations__ = {"left": kids[0], "right": kids[1], "return": None}
    elif len(kids) == 1:

        def __init__(self: object, left: object) -> None:  # type: ignore[misc]
            self.left = left  # type: ignore[attr-defined]

        __init__.__annotations__ = {"left": kids[0], "return": None}
    else:

        def __init__(self: object) -> None:  # type: ignore[misc]
            pass

        __init__.__annotations__ = {"return": None}
    return __init__


def make_cold_graph(n: int = COLD_SIZE) -> ColdGraph:
    classes: list[type] = [object] * n
    deps: list[tuple[int, ...]] = [()] * n
    for i in range(n - 1, -1, -1):
        kid_ids = tuple(j for j in (2 * i + 1, 2 * i + 2) if j < n)
        kids = tuple(classes[j] for j in kid_ids)
        classes[i] = type(f"Node{i}", (), {"__init__": make_init(kids), "__module__": __name__})
        deps[i] = kid_ids
    return ColdGraph(classes, deps)


def check_cold_root(graph: ColdGraph, root: object) -> None:
    """Assert that ``root`` is a complete, correctly typed instance tree of ``graph``."""
    stack = [(0, root)]
    seen = 0
    while stack:
        i, obj = stack.pop()
        assert type(obj) is graph.classes[i], (type(obj), graph.classes[i])
        seen += 1
        for attr, j in zip(("left", "right"), graph.deps[i], strict=False):
            stack.append((j, getattr(obj, attr)))
    assert seen == len(graph.classes), seen
