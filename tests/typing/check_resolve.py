"""Static typing of resolution, checked by ``mypy --strict`` and pyright (strict)
from tests/test_typing.py; also executed there, so it is real code.

``resolve(T) -> T`` must hold for class keys, Protocol keys, ABC keys and
``Annotated[T, di.Named(...)]`` keys, on the container and on checkpoints,
sync and async. ``assert_type`` fails if the result is ``Any`` or anything
else; the last lines prove the result is not ``Any`` a second way (an
assignment error that must be reported, silenced by an ignore comment that
both checkers flag as unused if it is not needed).
"""

# pyright: strict, reportUnnecessaryTypeIgnoreComment=true

import abc
import asyncio
from typing import Annotated, Protocol

from typing_extensions import assert_type

import di


class Settings:
    debug = False


class SupportsClose(Protocol):
    def close(self) -> None: ...


class Closer:
    def close(self) -> None:
        return None


class Store(abc.ABC):
    @abc.abstractmethod
    def get(self, key: str) -> str: ...


class MemoryStore(Store):
    def get(self, key: str) -> str:
        return key


class Engine:
    url = "sqlite://"


Replica = Annotated[Engine, di.Named("replica")]

registry = di.Registry()


@registry.provider(singleton=True)
def settings() -> Settings:
    return Settings()


@registry.provider(scope="request")
def closer() -> SupportsClose:
    return Closer()


registry.register(Store, MemoryStore)
registry.value(Replica, Engine())


def check_sync(container: di.Container) -> None:
    assert_type(container.resolve(Settings), Settings)
    assert_type(container.resolve(Store), Store)
    assert_type(container.resolve(Replica), Engine)
    assert_type(container.resolve(Annotated[Engine, di.Named("replica")]), Engine)
    with container.scope("request") as scope:
        assert_type(scope, di.Checkpoint)
        assert_type(scope.resolve(Settings), Settings)
        assert_type(scope.resolve(SupportsClose), SupportsClose)
        assert_type(scope.resolve(Store), Store)
        assert_type(scope.resolve(Replica), Engine)
        assert_type(container.resolve(SupportsClose), SupportsClose)
        scope.resolve(SupportsClose).close()
    assert container.resolve(Store).get("k") == "k"
    assert container.resolve(Replica).url == "sqlite://"

    got = container.resolve(Settings)
    wrong: int = got  # type: ignore[assignment]
    del wrong


async def check_async(container: di.Container) -> None:
    assert_type(await container.aresolve(Settings), Settings)
    assert_type(await container.aresolve(Store), Store)
    assert_type(await container.aresolve(Replica), Engine)
    async with container.scope("request") as scope:
        assert_type(await scope.aresolve(SupportsClose), SupportsClose)
        assert_type(await scope.aresolve(Store), Store)
        assert_type(await scope.aresolve(Annotated[Engine, di.Named("replica")]), Engine)

    store = await container.aresolve(Store)
    wrong: str = store  # type: ignore[assignment]
    del wrong


def main() -> None:
    container = di.Container(registry)
    with container:
        check_sync(container)

    async def run() -> None:
        async with container:
            await check_async(container)

    asyncio.run(run())
    print("ok")


if __name__ == "__main__":
    main()


def returns_from_inside_a_scope(container: di.Container) -> int:
    # Checkpoint.__exit__ is typed like contextlib's generator managers
    # (bool | None), so returning from inside the block needs no trailing return.
    with container.scope("request") as scope:
        return scope.resolve(int)


async def returns_from_inside_an_async_scope(container: di.Container) -> int:
    async with container.scope("request") as scope:
        return await scope.aresolve(int)
