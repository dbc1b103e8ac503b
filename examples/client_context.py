"""Many concurrent tasks share one real HTTP client through di.ClientContext.

The program starts a tiny HTTP server on 127.0.0.1 (a free port), then 50
asyncio tasks each do ``async with ctx as client`` and fetch a page. The
first enter builds one ``httpx.AsyncClient``; the others join it; the last
exit closes it. The counts printed at the end show it was created once and
closed once.

Run it:  python examples/client_context.py      (needs httpx: pip install -e '.[dev]')
"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

import di

TASKS = 50


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the example's output to what it is about


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default of 5 makes 50 simultaneous connects wait for retries


class CountingClient(httpx.AsyncClient):
    """A real httpx.AsyncClient that counts how often it is built and closed."""

    created = 0
    closed = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        CountingClient.created += 1

    async def aclose(self) -> None:
        CountingClient.closed += 1
        await super().aclose()


def make_client(conn: dict[str, Any], verify_ssl: bool) -> CountingClient:
    # conn arrives with canonical keys, however the caller spelled them.
    base_url = f"{conn['Scheme']}://{conn['Host']}:{conn['Port']}"
    return CountingClient(base_url=base_url, timeout=conn["Timeout"], verify=verify_ssl)


async def main(port: int) -> None:
    ctx = di.ClientContext(
        make_client,
        {"scheme": "http", "HOST": "127.0.0.1", "port": port, "timeout": 10},
        verify_ssl="false",
    )
    peak = 0

    async def fetch(i: int) -> str:
        nonlocal peak
        async with ctx as client:
            peak = max(peak, ctx.ref_count)
            response = await client.get(f"/items/{i}")
            response.raise_for_status()
            return response.text

    bodies = await asyncio.gather(*(fetch(i) for i in range(TASKS)))

    assert bodies == [f"hello from /items/{i}" for i in range(TASKS)]
    print(f"{len(bodies)} concurrent requests answered; at most {peak} tasks held the client")
    print(
        f"client created {CountingClient.created} time(s), closed {CountingClient.closed} time(s)"
    )
    print(f"after the last exit: ref_count={ctx.ref_count}, open={ctx.is_open}")
    assert CountingClient.created == 1 and CountingClient.closed == 1
    assert ctx.ref_count == 0 and not ctx.is_open


if __name__ == "__main__":
    server = Server(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        asyncio.run(asyncio.wait_for(main(server.server_address[1]), timeout=30))
    finally:
        server.shutdown()
        server.server_close()
