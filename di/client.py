"""ClientContext: one API client shared, refcounted, by many concurrent tasks."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from aiologic.lowlevel import current_async_library, shield

from di.errors import AsyncProviderError
from di.lifecycle import RefCounted, describe_callable, on_behalf_of

__all__ = ["CANONICAL_CONN_KEYS", "ClientContext"]

C = TypeVar("C")

logger = logging.getLogger("di")

#: Connection keys `ClientContext` recognises. A key given in any case, with
#: or without ``_``, ``-`` or spaces (``host``, ``API_KEY``, ``api-key``), is
#: renamed to the canonical spelling here; any other key is passed through as
#: given.
CANONICAL_CONN_KEYS: tuple[str, ...] = (
    "Scheme",
    "Host",
    "Port",
    "Path",
    "BaseUrl",
    "ApiKey",
    "Token",
    "Username",
    "Password",
    "Timeout",
    "Headers",
    "Proxy",
    "Database",
)

_CANONICAL_BY_FOLDED = {key.lower(): key for key in CANONICAL_CONN_KEYS}

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _fold(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "").replace(" ", "")


def normalize_conn(conn: Mapping[str, Any] | None) -> dict[str, Any]:
    """Rename recognised keys to their canonical spelling; keep the rest.

    Two keys that mean the same thing (``host`` and ``HOST``) are a
    `ValueError`: silently picking one would hide a configuration mistake.
    """
    if conn is not None and not isinstance(conn, Mapping):
        raise TypeError(
            f"conn= takes a mapping of connection details, e.g. conn={{'Host': 'api', "
            f"'Port': 443}}; got a {type(conn).__qualname__}"
        )
    normalized: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in (conn or {}).items():
        canonical = _CANONICAL_BY_FOLDED.get(_fold(key), key) if isinstance(key, str) else key
        if canonical in given_as:
            raise ValueError(
                f"conn gives {canonical} twice, as {given_as[canonical]!r} and {key!r}; "
                f"keep one of them"
            )
        given_as[canonical] = key
        normalized[canonical] = value
    return normalized


def parse_verify_ssl(value: bool | str) -> bool:
    """``True``/``False``, or one of true/false/1/0/yes/no in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        folded = value.strip().lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
    raise ValueError(
        f"verify_ssl must be a bool or one of 'true', 'false', '1', '0', 'yes', 'no' "
        f"(any case), not {value!r}"
    )


async def _maybe_await(value: object) -> object:
    if inspect.isawaitable(value):
        return await value
    return value


class ClientContext(Generic[C]):
    """Share one API client among concurrent tasks, refcounted.

    ``factory(conn, verify_ssl)`` builds the client (sync or async). The
    client's own ``initialize()`` is called after it is built and its
    ``aclose()`` (or, failing that, ``close()``) when it is released; each may
    be sync or async, and is skipped when the client does not have it::

        def make_client(conn: dict[str, Any], verify_ssl: bool) -> httpx.AsyncClient:
            base = f"{conn['Scheme']}://{conn['Host']}:{conn['Port']}"
            return httpx.AsyncClient(base_url=base, verify=verify_ssl)

        ctx = di.ClientContext(make_client, {"scheme": "http", "HOST": "api", "port": 80})

        async def fetch(path: str) -> bytes:
            async with ctx as client:    # the first enter builds the client
                return (await client.get(path)).content
                                         # the last exit closes it

        await asyncio.gather(*(fetch(f"/items/{i}") for i in range(50)))

    Connection keys are matched case-insensitively (and ignoring ``_``/``-``)
    and renamed to the names in `CANONICAL_CONN_KEYS`; unknown keys are kept
    as given. ``verify_ssl`` takes a bool or true/false/1/0/yes/no.

    ``await ctx.get_client()`` builds the client lazily without taking a
    reference; it stays until ``await ctx.close()`` or until the last
    ``async with`` exits. Closing follows `di.RefCounted`: ``close()`` while
    blocks still hold the client warns and defers to the last exit,
    ``close(force=True)`` closes at once.
    """

    __slots__ = ("__weakref__", "_conn", "_factory", "_rc", "_verify_ssl")

    @overload
    def __init__(
        self,
        factory: Callable[[dict[str, Any], bool], Coroutine[Any, Any, C]],
        conn: Mapping[str, Any] | None = None,
        verify_ssl: bool | str = True,
    ) -> None: ...

    @overload
    def __init__(
        self,
        factory: Callable[[dict[str, Any], bool], C],
        conn: Mapping[str, Any] | None = None,
        verify_ssl: bool | str = True,
    ) -> None: ...

    def __init__(
        self,
        factory: Callable[[dict[str, Any], bool], Any],
        conn: Mapping[str, Any] | None = None,
        verify_ssl: bool | str = True,
    ) -> None:
        if not callable(factory):
            raise TypeError(
                f"ClientContext(factory, ...) takes a callable, factory(conn, verify_ssl), that "
                f"makes the client; got a {type(factory).__qualname__}"
            )
        self._factory = factory
        self._conn = normalize_conn(conn)
        self._verify_ssl = parse_verify_ssl(verify_ssl)
        name = describe_callable(factory)
        self._rc: RefCounted[C] = RefCounted(
            self._open_client, self._close_client, name=f"client from {name}"
        )

    # -- configuration ------------------------------------------------------

    @property
    def conn(self) -> dict[str, Any]:
        """A copy of the normalised connection details."""
        return dict(self._conn)

    @property
    def verify_ssl(self) -> bool:
        """Whether the factory is asked to verify TLS certificates."""
        return self._verify_ssl

    # -- the client ---------------------------------------------------------

    async def _open_client(self) -> Any:
        # The factory gets its own copy, so a factory that pops or sets keys
        # cannot change what the next open sees. (A shallow one: values are
        # the caller's own objects, and some, an SSLContext, cannot be copied.)
        client = self._factory(dict(self._conn), self._verify_ssl)
        # Await what an async factory returns, but never the client itself:
        # some clients are awaitable (``await redis.asyncio.Redis()``).
        if inspect.iscoroutine(client):
            client = await client
        initialize = getattr(client, "initialize", None)
        if callable(initialize):
            try:
                await _maybe_await(initialize())
            except BaseException as exc:
                # Nothing gets cached, so nobody else would ever close it.
                # The original error (or cancellation) is what the caller must
                # see; a failure of this best-effort cleanup is only logged.
                #
                # Shielded: after a cancellation the enclosing trio/anyio
                # scope is still cancelled, so an unshielded aclose() would be
                # cancelled at its first checkpoint and the client leaked (as
                # would an asyncio task cancelled again during the cleanup).
                # The shield lets the close finish; a cancellation that arrived
                # meanwhile is then re-raised (asyncio) or left pending for the
                # next checkpoint (trio).
                try:
                    await self._close_shielded(client)
                except Exception:
                    logger.warning(
                        "closing a client whose initialize() failed also failed",
                        exc_info=True,
                    )
                except BaseException:
                    # A cancellation or KeyboardInterrupt that arrived during
                    # the cleanup outranks a plain initialize() error, which
                    # stays visible as its __context__; otherwise the original
                    # cancellation (or interrupt) goes on unchanged.
                    if isinstance(exc, Exception):
                        raise
                raise
        return client

    async def _close_shielded(self, client: C) -> None:
        if current_async_library(failsafe=True) != "asyncio":
            await shield(self._close_client(client))  # trio: a shielded scope, this task
            return
        # asyncio can shield only by running the close in a task of its own.
        # That task is marked as working for this open (so a close that needs
        # this context again is a cycle, not a wait for ever), and is awaited
        # through asyncio.wait, which a cancellation of ours interrupts without
        # touching the task: the wait goes on, and the cancellation is
        # re-raised once the close is done. If the task itself is cancelled
        # (a shutdown cancelling every task), that ends the wait too.
        import asyncio

        token = on_behalf_of.set(self._rc)
        try:
            task = asyncio.ensure_future(self._close_client(client))
        finally:
            on_behalf_of.reset(token)
        interrupted: BaseException | None = None
        while not task.done():
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError as exc:
                interrupted = exc
        if interrupted is not None:
            if not task.cancelled():
                task.exception()  # retrieved: a close error is outranked, not "never retrieved"
            raise interrupted
        task.result()

    @staticmethod
    async def _close_client(client: C) -> None:
        closer = getattr(client, "aclose", None)
        if not callable(closer):
            closer = getattr(client, "close", None)
        if callable(closer):
            await _maybe_await(closer())

    @property
    def client(self) -> C:
        """The initialised client; `RuntimeError` before it is built."""
        try:
            return self._rc.resource
        except RuntimeError:
            if self._rc.ref_count:
                raise RuntimeError(
                    f"the {self._rc.name} was closed by close(force=True) while held; "
                    f"use the client your `async with` returned, or enter again for a "
                    f"fresh one"
                ) from None
            raise RuntimeError(
                f"the {self._rc.name} is not initialised; use `async with ctx as client` "
                f"or `client = await ctx.get_client()` first"
            ) from None

    @property
    def interface(self) -> C:
        """Alias of `client`."""
        return self.client

    @property
    def ref_count(self) -> int:
        """How many ``async with`` blocks currently hold the client."""
        return self._rc.ref_count

    @property
    def is_open(self) -> bool:
        """Whether a client is currently built and not yet closed."""
        return self._rc.is_open

    async def get_client(self) -> C:
        """The client, built and initialised on first call.

        Concurrent first callers wait for one build and all get the same
        fully initialised client. A failed build raises
        `di.ResourceOpenError` (a `RuntimeError`, with the original
        error as ``__cause__``) and caches nothing, so the next call retries.
        A client whose ``initialize()`` (or close) needs this context again,
        through ``get_client()``, ``async with ctx`` or ``close()``, gets
        `di.CircularDependencyError` there instead of waiting for ever for
        the build (or close) it is part of.
        """
        return await self._rc._enter_async(counted=False)

    async def close(self, force: bool = False) -> None:
        """Close the client; deferred with a warning while blocks hold it."""
        await self._rc.aclose(force)

    async def __aenter__(self) -> C:
        return await self._rc.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._rc.__aexit__(exc_type, exc, tb)

    # A plain `with` would otherwise fail with Python's bare "does not
    # support the context manager protocol".
    def __enter__(self) -> C:
        raise AsyncProviderError(
            f"{self!r} builds and closes its client asynchronously; use `async with` "
            f"instead of `with`"
        )

    def __exit__(self, *exc: object) -> None:  # pragma: no cover - __enter__ always raises
        return None

    def __repr__(self) -> str:
        state = "open" if self._rc.is_open else "closed"
        return f"<ClientContext {self._rc.name} {state} ref_count={self._rc.ref_count}>"
