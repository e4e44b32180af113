"""What an MCP tool call costs: the loop bridge, a stdio call (a fresh server each call), an HTTP call.

``bridge_us``: a trivial coroutine run from sync code through the private loop thread
(``engine.connectors.loop``), against ``anyio.run`` in the calling thread. ``stdio_ms`` and
``http_ms``: ``client.call_tool`` end to end against the fake servers in ``tests/fakes`` (one
session per call: spawn or connect, handshake, call, shutdown). ``in_session_ms``: calls on one
open stdio session, what a kept-alive session would cost per call. Medians of ``--calls``.
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
    from mcp import Client, StdioServerParameters

    from engine.connectors import client, loop
    from tests.fakes.mcp_servers import http_server

    async def nothing() -> int:
        return 1

    n = max(3, args.calls)
    bridge = _median_ms(lambda: loop.run(nothing, deadline_s=10), 200) * 1000
    per_call_anyio = _median_ms(lambda: anyio.run(nothing), 200) * 1000
    stdio = client.ServerSpec("bench", "stdio", sys.executable, ("-m", "tests.fakes.mcp_servers", "stdio"))
    stdio_ms = _median_ms(lambda: client.call_tool(stdio, "add", {"a": 1, "b": 2}, timeout_s=30), n)

    async def in_session() -> float:
        params = StdioServerParameters(command=sys.executable, args=["-m", "tests.fakes.mcp_servers", "stdio"])
        async with Client(params) as c:
            samples = []
            for _ in range(n):
                began = time.perf_counter()
                await c.call_tool("add", {"a": 1, "b": 2})
                samples.append((time.perf_counter() - began) * 1000)
        return round(statistics.median(samples), 3)

    in_session_ms = loop.run(in_session, deadline_s=120)
    with http_server(token="bench-token-0123456789") as server:
        remote = client.ServerSpec("bench", "http", url=server.url, headers={"Authorization": "Bearer bench-token-0123456789"})
        http_ms = _median_ms(lambda: client.call_tool(remote, "add", {"a": 1, "b": 2}, timeout_s=30), n)
    return {"calls": n, "bridge_us": round(bridge, 1), "anyio_run_us": round(per_call_anyio, 1),
            "stdio_ms": stdio_ms, "in_session_ms": in_session_ms, "http_ms": http_ms}
