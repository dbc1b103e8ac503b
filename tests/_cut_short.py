"""A creation cut short by a forced teardown: the driver several teardown tests share.

A worker thread holds a request scope of ``container`` and resolves ``key`` there
(``resolve``, or ``aresolve`` on an event loop of its own); once the factory sets
``in_factory``, the container is closed with force (``shutdown_timeout=0`` tears the
held scope down at once), and ``closed`` lets the factory go on.
"""

import asyncio
import threading
from typing import Any

import di

WAIT = 5  # seconds: a safety net for events only, never a timing assertion


def cut_short(
    container: di.Container,
    key: Any,
    api: str,
    in_factory: threading.Event,
    closed: threading.Event,
) -> list[BaseException]:
    """What the worker's resolve raised (the interrupt too: it is the result)."""
    raised: list[BaseException] = []
    held = threading.Event()
    with container:
        with container.scope("request") as request:
            hold = request.hold()

            def work() -> None:
                try:
                    with hold:
                        held.set()
                        if api == "resolve":
                            request.resolve(key)
                        else:
                            asyncio.run(request.aresolve(key))
                except BaseException as exc:
                    raised.append(exc)
                finally:
                    held.set()

            thread = threading.Thread(target=work)
            thread.start()
            assert held.wait(WAIT)  # held before the block ends, or it would be refused
        try:
            assert in_factory.wait(WAIT)
            container.close(force=True)
        finally:
            closed.set()
            thread.join(WAIT)
    return raised
