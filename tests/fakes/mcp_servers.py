"""Real MCP servers for the connector tests, written with the ``mcp`` SDK's server API (MCPServer).

Tools: ``echo``, ``add``, ``weather`` (structured output), ``slow`` (sleeps), ``fail`` (raises,
so the SDK answers a tool error), ``die`` (the process exits mid-call), ``env_digest`` (the
SHA-256 of one environment variable: how a test sees a vault credential arrive) and ``auth_digest``
(the SHA-256 of the HTTP request's Authorization header). Digests, not values: Meterbook scrubs a
connection's own secrets from what its tools answer.

    python -m tests.fakes.mcp_servers stdio
    python -m tests.fakes.mcp_servers http PORT [--token TOKEN]

Over HTTP every request must carry ``Authorization: Bearer TOKEN`` when a token is given
(401 otherwise), the way a vendor's hosted server checks its key. ``http_server()`` starts one
on a free port of 127.0.0.1 for a test and stops it after.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

ROOT = Path(__file__).resolve().parents[2]
_auth_header: contextvars.ContextVar[str] = contextvars.ContextVar("auth_header", default="")

server = MCPServer("meterbook-test-server", instructions="A server for Meterbook's connector tests.")


class Forecast(BaseModel):
    city: str
    temperature_c: float
    conditions: str


@server.tool(description="Answer the text it was given.", structured_output=False)
def echo(text: str) -> str:
    return text


@server.tool(description="Add two integers.", structured_output=False)
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="A fixed forecast for a city, as structured content.")
def weather(city: str) -> Forecast:
    return Forecast(city=city, temperature_c=21.5, conditions="sunny")


@server.tool(description="Sleep for the given seconds, then answer.", structured_output=False)
async def slow(seconds: float) -> str:
    import anyio

    await anyio.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool(description="Always fails.", structured_output=False)
def fail(reason: str = "it broke") -> str:
    raise ToolError(reason)


@server.tool(description="Exit the server process in the middle of the call.", structured_output=False)
def die() -> str:
    sys.stdout.flush()
    os._exit(3)


@server.tool(description="The SHA-256 of one environment variable's value, or an empty text when it is unset.",
             structured_output=False)
def env_digest(name: str) -> str:
    value = os.environ.get(name)
    return "" if value is None else hashlib.sha256(value.encode()).hexdigest()


@server.tool(description="The SHA-256 of the Authorization header this request came with (HTTP only).",
             structured_output=False)
def auth_digest() -> str:
    return hashlib.sha256(_auth_header.get().encode()).hexdigest()


def _require_token(app, token: str | None):
    """ASGI middleware: 401 unless the bearer token matches; remembers the header for auth_digest."""

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        given = headers.get("authorization", "")
        if token is not None and given != f"Bearer {token}":
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"error":"invalid_token"}'})
            return
        reset = _auth_header.set(given)
        try:
            return await app(scope, receive, send)
        finally:
            _auth_header.reset(reset)

    return guarded


def serve_http(port: int, token: str | None) -> None:
    import uvicorn

    app = _require_token(server.streamable_http_app(), token)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RunningServer:
    url: str
    token: str | None
    process: subprocess.Popen


@contextlib.contextmanager
def http_server(token: str | None = "test-token-0123456789abcd") -> Iterator[RunningServer]:
    """The fake served over streamable HTTP on 127.0.0.1, in its own process, until the block ends."""
    port = free_port()
    args = [sys.executable, "-m", "tests.fakes.mcp_servers", "http", str(port)]
    if token is not None:
        args += ["--token", token]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fake MCP server did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        yield RunningServer(f"http://127.0.0.1:{port}/mcp", token, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stdio_command() -> tuple[str, list[str]]:
    """The command and arguments that start this fake over stdio."""
    return sys.executable, ["-m", "tests.fakes.mcp_servers", "stdio"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.mcp_servers")
    sub = parser.add_subparsers(dest="transport", required=True)
    sub.add_parser("stdio")
    http = sub.add_parser("http")
    http.add_argument("port", type=int)
    http.add_argument("--token")
    args = parser.parse_args(argv)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        serve_http(args.port, args.token)


if __name__ == "__main__":
    main()
