"""What an MCP tool call costs: the loop bridge, a stdio call with a fresh server, a kept-open one, HTTP.

``bridge_us``: a trivial coroutine run from sync code through the private loop thread
(``engine.connectors.loop``), against ``anyio.run`` in the calling thread. Against the fake servers
in ``tests/fakes``: ``stdio_fresh_ms`` is ``client.call_tool`` with a session of its own (spawn,
handshake, call, shutdown: what the Connectors page's Test costs); ``stdio_kept_open_ms`` is
``sessions.call_tool``, what chat and workflow steps pay once the server is up;
``http_ms`` is a call to a streamable-HTTP server (a session per call). Medians of ``--calls``.
"""

from __future__ import annotations

import statistics
import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("--calls", type=int, default=20)


def _median_ms(fn, n: int) -> float:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(samples), 3)


def run(args) -> dict:
    import anyio

    from engine.connectors import client, loop, sessions
    from tests.fakes.mcp_servers import http_server

    async def nothing() -> int:
        return 1

    n = max(3, args.calls)
    bridge = _median_ms(lambda: loop.run(nothing, deadline_s=10), 200) * 1000
    per_call_anyio = _median_ms(lambda: anyio.run(nothing), 200) * 1000
    stdio = client.ServerSpec("bench", "stdio", sys.executable, ("-m", "tests.fakes.mcp_servers", "stdio"))
    stdio_ms = _median_ms(lambda: client.call_tool(stdio, "add", {"a": 1, "b": 2}, timeout_s=30), n)
    scope = (0, 0)
    began = time.perf_counter()
    sessions.call_tool(scope, stdio, "add", {"a": 1, "b": 2}, timeout_s=30)  # starts the kept-open server
    first_ms = round((time.perf_counter() - began) * 1000, 3)
    kept_ms = _median_ms(lambda: sessions.call_tool(scope, stdio, "add", {"a": 1, "b": 2}, timeout_s=30), n * 10)
    sessions.close_all()
    with http_server(token="bench-token-0123456789") as server:
        remote = client.ServerSpec("bench", "http", url=server.url, headers={"Authorization": "Bearer bench-token-0123456789"})
        http_ms = _median_ms(lambda: client.call_tool(remote, "add", {"a": 1, "b": 2}, timeout_s=30), n)
    return {"calls": n, "bridge_us": round(bridge, 1), "anyio_run_us": round(per_call_anyio, 1),
            "stdio_fresh_ms": stdio_ms, "stdio_kept_open_first_ms": first_ms, "stdio_kept_open_ms": kept_ms,
            "http_ms": http_ms}
