"""Quickstart: the three lifetimes, serving three requests at once.

- a singleton (Settings): made once, shared by the whole container;
- a request-scoped async resource (a fake DB Session): one per request,
  closed when that request ends;
- a transient (Handler): a new one on every resolve.

Run it:  pip install -e . && python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import di

registry = di.Registry()
made = {"settings": 0, "sessions opened": 0, "sessions closed": 0, "handlers": 0}
session_ids = itertools.count(1)


@dataclass(frozen=True)
class Settings:
    dsn: str


@dataclass(frozen=True)
class Request:
    user: str


@dataclass
class Session:  # stands in for a database session: something that must be closed
    id: int
    user: str


# Singleton: di calls this once per container, however many requests ask.
@registry.provider(singleton=True)
def settings() -> Settings:
    made["settings"] += 1
    print("settings: created")
    return Settings(dsn="sqlite:///demo.db")


# Not built by di at all: the caller hands it in when a request scope starts.
registry.context(Request, scope="request")


# Request-scoped with teardown: everything in one request shares this session,
# and the code after `yield` runs when that request's scope exits, so a
# session can never leak into (or outlive) another request.
@registry.provider(scope="request")
async def session(settings: Settings, request: Request) -> AsyncIterator[Session]:
    s = Session(next(session_ids), request.user)
    await asyncio.sleep(0)  # pretend to connect to settings.dsn
    made["sessions opened"] += 1
    print(f"  session #{s.id}: opened for {request.user}")
    try:
        yield s
    finally:
        made["sessions closed"] += 1
        print(f"  session #{s.id}: closed")


# Transient (no lifetime given): a fresh Handler per resolve. It is a plain
# class; di reads the __init__ hints to know what to pass in.
@registry.provider
class Handler:
    def __init__(self, session: Session, settings: Settings) -> None:
        made["handlers"] += 1
        self.session, self.settings = session, settings

    async def handle(self) -> str:
        await asyncio.sleep(0)  # pretend to query
        return f"served {self.session.user} with session #{self.session.id}"


async def serve(container: di.Container, user: str) -> None:
    async with container.scope("request", context={Request: Request(user)}) as scope:
        first = await scope.aresolve(Handler)
        second = await scope.aresolve(Handler)
        print(f"  {user}: {await first.handle()}")
        # Two handlers (transient), one session (shared within the request).
        print(
            f"  {user}: new handler each time: {first is not second}, "
            f"same session: {first.session is second.session}"
        )
    # Leaving the block closed this request's session.


async def main() -> None:
    # Building the container validates the whole graph up front: a missing
    # provider or a scope mistake fails here, not halfway through a request.
    container = di.Container(registry)
    async with container:  # closes every singleton (LIFO) on the way out
        await asyncio.gather(*(serve(container, u) for u in ("alice", "bob", "carol")))
    print(", ".join(f"{what}: {n}" for what, n in made.items()))


if __name__ == "__main__":
    asyncio.run(main())
