"""Static typing of injection, checked by ``mypy --strict`` and pyright (strict)
from tests/test_typing.py; it also runs (``python tests/typing/check_inject.py``).

The documented form for a parameter the caller leaves out is a ``Depends``
default: ``repo: Repo = di.Depends(Repo)``. ``inject`` keeps the signature, so
a call that omits such a parameter checks, the parameter's type is the key's
type inside the function (class, Protocol and ``Annotated`` keys alike), and
arguments passed explicitly are still checked. A bare ``Injected[T]``
parameter stays required to a type checker: the last lines prove it (an error
that must be reported, silenced by an ignore comment that both checkers flag
as unused if it is not needed).
"""

# pyright: strict, reportUnnecessaryTypeIgnoreComment=true

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Protocol

from typing_extensions import assert_type

import di


class Repo:
    name = "repo"


class SupportsClose(Protocol):
    def close(self) -> None: ...


class Closer:
    def close(self) -> None:
        return None


class Engine:
    url = "sqlite://"


Replica = Annotated[Engine, di.Named("replica")]

registry = di.Registry()
registry.register(Repo, Repo)
registry.register(SupportsClose, Closer)
registry.value(Replica, Engine())


@di.inject
def handler(x: int, repo: Repo = di.Depends(Repo)) -> str:
    assert_type(repo, Repo)
    return f"{x} {repo.name}"


@di.inject
def keyed(
    *,
    closer: SupportsClose = di.Depends(SupportsClose),
    engine: Engine = di.Depends(Replica),
) -> str:
    assert_type(closer, SupportsClose)
    closer.close()
    return engine.url


@di.inject
async def ahandler(x: int, repo: Repo = di.Depends(Repo)) -> int:
    return x + len(repo.name)


@di.inject
def numbers(n: int, repo: Repo = di.Depends(Repo)) -> Iterator[str]:
    for i in range(n):
        yield f"{i} {repo.name}"


@di.inject
async def anumbers(n: int, repo: Repo = di.Depends(Repo)) -> AsyncIterator[str]:
    for i in range(n):
        yield f"{i} {repo.name}"


@di.inject
def marked(x: int, repo: di.Injected[Repo]) -> str:
    return f"{x} {repo.name}"


def check_sync() -> None:
    # the injected parameters left out: the documented way to call them
    assert_type(handler(1), str)
    assert_type(keyed(), str)
    assert_type(list(numbers(2)), list[str])
    assert handler(1) == "1 repo"
    assert keyed() == "sqlite://"
    assert list(numbers(2)) == ["0 repo", "1 repo"]

    # passed explicitly: still checked against the parameter's type
    assert_type(handler(2, Repo()), str)
    assert_type(handler(2, repo=Repo()), str)
    assert_type(marked(4, Repo()), str)


def rejected() -> None:
    """Type-checked, never run."""
    handler(3, repo="not a repo")  # type: ignore[arg-type]
    # a bare Injected[T] parameter is still required to a type checker
    marked(4)  # type: ignore[call-arg]


async def check_async() -> None:
    assert_type(await ahandler(1), int)
    assert await ahandler(1) == 5
    assert [item async for item in anumbers(1)] == ["0 repo"]


def main() -> None:
    container = di.Container(registry)
    with container:
        check_sync()

    async def run() -> None:
        async with container:
            await check_async()

    asyncio.run(run())
    print("ok")


if __name__ == "__main__":
    main()
