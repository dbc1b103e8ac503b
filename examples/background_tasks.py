"""Background work that outlives its request keeps the request's resources alive.

A request handler answers at once and leaves an audit write running in the
background. The write still needs the request's database session: with
``scope.spawn`` the task holds the request checkpoint, so the session stays
open after the handler returns and is closed exactly once, when the task ends.

Run it:  python examples/background_tasks.py
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import di

START = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - START:5.2f}s] {message}")


class DBSession:
    """A fake async database session."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.closed = False

    async def execute(self, sql: str) -> None:
        assert not self.closed, "used a closed session"
        await asyncio.sleep(0.05)  # pretend to talk to the database
        say(f"session {self.id}: used for {sql!r}")


registry = di.Registry()


@registry.provider(scope="request")
async def db_session() -> AsyncIterator[DBSession]:
    session = DBSession()
    say(f"session {session.id}: opened")
    try:
        yield session
    finally:
        await asyncio.sleep(0)  # pretend to return the connection to its pool
        session.closed = True
        say(f"session {session.id}: closed")


@di.inject
async def write_audit(event: str, session: DBSession = di.Depends(DBSession)) -> None:
    """Runs after the response was sent; the session is the request's own.

    The ``di.Depends`` default lets callers, type-checked ones included, leave
    ``session`` out: ``write_audit("...")``."""
    await asyncio.sleep(0.1)
    await session.execute(f"INSERT INTO audit VALUES ({event!r})")


async def handle_request(container: di.Container, user: str) -> asyncio.Task[None]:
    async with container.scope("request") as request:
        session = await request.aresolve(DBSession)
        await session.execute(f"SELECT * FROM orders WHERE user = {user!r}")
        task = request.spawn(write_audit(f"{user} listed orders"))
    say("request: response sent, handler returned (the session is still open)")
    return task


async def main() -> None:
    container = di.Container(registry)
    async with container:
        task = await handle_request(container, "alice")
        lingering = container.lingering_checkpoints("request")
        say(f"request checkpoints lingering after their block: {lingering}")
        await task
        await asyncio.sleep(0)  # let the released checkpoint finish its teardown
        lingering = container.lingering_checkpoints("request")
        say(f"request checkpoints lingering after their block: {lingering}")
    # leaving the container would also have waited (up to shutdown_timeout) for the task


if __name__ == "__main__":
    asyncio.run(main())
