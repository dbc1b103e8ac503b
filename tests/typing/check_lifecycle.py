"""Static typing of RefCounted and ClientContext, checked by ``mypy --strict``
and pyright (strict) from tests/test_typing.py: the resource and client types
flow from ``open`` / ``factory`` to ``with`` targets and accessors, for sync
and async callables alike (never ``Any``)."""

# pyright: strict, reportUnnecessaryTypeIgnoreComment=true

import asyncio
from typing import Any

from typing_extensions import assert_type

import di


class Pool:
    def close(self) -> None:
        return None


class Client:
    async def aclose(self) -> None:
        return None


def make_pool() -> Pool:
    return Pool()


async def amake_pool() -> Pool:
    return Pool()


def close_pool(pool: Pool) -> None:
    pool.close()


async def aclose_pool(pool: Pool) -> None:
    pool.close()


def make_client(conn: dict[str, Any], verify_ssl: bool) -> Client:
    return Client()


async def amake_client(conn: dict[str, Any], verify_ssl: bool) -> Client:
    return Client()


sync_rc = di.RefCounted(make_pool, close_pool)
async_rc = di.RefCounted(amake_pool, aclose_pool)
mixed_rc = di.RefCounted(amake_pool, close_pool)
assert_type(sync_rc, di.RefCounted[Pool])
assert_type(async_rc, di.RefCounted[Pool])
assert_type(mixed_rc, di.RefCounted[Pool])

ctx = di.ClientContext(make_client, {"host": "h"})
actx = di.ClientContext(amake_client, verify_ssl="no")
assert_type(ctx, di.ClientContext[Client])
assert_type(actx, di.ClientContext[Client])


async def main() -> None:
    with sync_rc as pool:
        assert_type(pool, Pool)
        assert_type(sync_rc.resource, Pool)
    async with async_rc as apool:
        assert_type(apool, Pool)
    async with ctx as client:
        assert_type(client, Client)
        assert_type(ctx.client, Client)
        assert_type(ctx.interface, Client)
    assert_type(await actx.get_client(), Client)
    assert_type(actx.ref_count, int)
    await actx.close(force=True)
    sync_rc.close()
    await async_rc.aclose(force=False)
    not_a_client: str = await actx.get_client()  # type: ignore[assignment]
    del not_a_client


if __name__ == "__main__":
    asyncio.run(main())
    print("ok")
