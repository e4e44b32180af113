"""The MCP client: sessions to a stdio child process or a streamable-HTTP server.

``list_tools`` and ``call_tool`` open a session (spawn the command, or connect with the
headers), do one thing and close it; the SDK's stdio shutdown closes the child's stdin, waits,
then terminates and kills its whole process group, so nothing is left behind, not even a
zombie. ``engine.connectors.sessions`` keeps stdio sessions open between calls with the same
pieces (``new_client``, ``stdio_transport``, ``list_on``, ``call_on``, ``failure``). Every failure of the server — it did not start, did not answer in time, died in the
middle, refused the credential, could not be reached — becomes ``ServerFailure`` with plain
words and whether trying again could help. Secret values never appear in those words.

No database here: ``engine.connectors.connections`` builds the ``ServerSpec`` from a row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from engine import outbound, redaction
from engine.errors import PermissionDenied
from engine.connectors import loop

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # npx/uvx may fetch the package on a first start
STDERR_TAIL = 300


@dataclass(frozen=True)
class ServerSpec:
    """How to reach one server. ``env`` and ``headers`` hold decrypted secrets: never log or show them."""

    label: str  # "GitHub", for messages
    transport: str  # stdio | http
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    start_timeout_s: float = START_TIMEOUT_S
    hidden: tuple[str, ...] = field(default=(), repr=False)  # the secret values among env (settings are not)

    def secrets(self) -> list[str]:
        values = list(self.hidden) + list(self.headers.values())
        for v in list(self.headers.values()):
            values.extend(v.split(" ", 1)[1:])  # "Bearer x": x alone too
        return [v for v in values if v and len(v) >= 4]


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class CallResult:
    is_error: bool
    text: str
    data: Any  # structuredContent, or None


class ServerFailure(Exception):
    """The server could not do what was asked; ``message`` is safe to show; ``retry`` whether another try may help.

    ``sent``: the failure came after the request went out, so a tool may have acted anyway (a
    caller with side effects should not repeat it on its own).
    """

    def __init__(self, message: str, *, kind: str, retry: bool, sent: bool = False):
        super().__init__(message)
        self.message, self.kind, self.retry, self.sent = message, kind, retry, sent


def list_tools(spec: ServerSpec) -> list[ToolInfo]:
    """The server's tools, over a session of its own (started, used once, shut down)."""
    return _run(spec, list_on, call_timeout_s=spec.start_timeout_s)


def call_tool(spec: ServerSpec, name: str, arguments: dict[str, Any], *, timeout_s: float) -> CallResult:
    """One tool call over a session of its own (started, used once, shut down)."""
    return _run(spec, lambda c: call_on(c, name, arguments, timeout_s), call_timeout_s=timeout_s)


async def list_on(client: Client) -> list[ToolInfo]:
    tools: list[ToolInfo] = []
    cursor = None
    for _ in range(50):  # a paginator that never ends cannot hang us
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools += [ToolInfo(t.name, t.description or "", dict(t.input_schema or {})) for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


async def call_on(client: Client, name: str, arguments: dict[str, Any], timeout_s: float) -> CallResult:
    result = await client.call_tool(name, arguments, read_timeout_seconds=timeout_s)
    return CallResult(bool(result.is_error), flatten(result.content), result.structured_content)


def flatten(content: list[Any]) -> str:
    """Content blocks as one text for a model or a step: text as it is, other blocks named."""
    parts = []
    for block in content or []:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource) and isinstance(getattr(block.resource, "text", None), str):
            parts.append(block.resource.text)
        else:
            kind = getattr(block, "type", "content")
            mime = getattr(block, "mime_type", None) or getattr(block, "mimeType", None)
            uri = getattr(block, "uri", None)
            parts.append(f"[{kind}{' ' + mime if mime else ''}{' ' + str(uri) if uri else ''}]")
    return "\n".join(parts)


# --- sessions ---------------------------------------------------------------------------------


def _run(spec: ServerSpec, work, *, call_timeout_s: float):
    deadline = spec.start_timeout_s + call_timeout_s
    try:
        return loop.run(lambda: _session(spec, work, call_timeout_s), deadline_s=deadline + 15)
    except loop.Abandoned:
        raise timed_out(spec, "call", call_timeout_s) from None


async def _session(spec: ServerSpec, work, call_timeout_s: float):
    if spec.transport == "http":
        try:
            await anyio.to_thread.run_sync(outbound.check_host, urlsplit(spec.url or "").hostname)
        except PermissionDenied as exc:
            raise ServerFailure(str(exc), kind="refused", retry=False) from None
    phase = "start"
    statuses: list[int] = []
    with tempfile.TemporaryFile() as errlog:
        try:
            with anyio.move_on_after(spec.start_timeout_s + call_timeout_s) as guard:
                async with contextlib.AsyncExitStack() as stack:
                    transport = await _transport(spec, stack, statuses, errlog, call_timeout_s)
                    client = await stack.enter_async_context(new_client(spec, transport))
                    phase = "call"
                    with anyio.fail_after(call_timeout_s):
                        return await work(client)
            if guard.cancelled_caught:
                raise timed_out(spec, phase, call_timeout_s)
        except ServerFailure:
            raise
        except TimeoutError:
            raise timed_out(spec, phase, call_timeout_s) from None
        except BaseException as exc:  # noqa: BLE001 - every failure of a foreign server becomes words
            if isinstance(exc, (KeyboardInterrupt, SystemExit, anyio.get_cancelled_exc_class())):
                raise
            raise failure(spec, exc, phase, call_timeout_s, statuses, stderr_tail(errlog)) from None


def new_client(spec: ServerSpec, transport) -> Client:
    """An unopened ``mcp.Client`` over ``transport``, made the way every session here makes it."""
    return Client(transport, read_timeout_seconds=spec.start_timeout_s,
                  client_info=mcp_types.Implementation(name="meterbook", version="1"))


def stdio_transport(spec: ServerSpec, errlog):
    """The child process ``spec`` names, its stderr to ``errlog`` (a file: the SDK writes to its fd)."""
    params = StdioServerParameters(command=spec.command or "", args=list(spec.args), env=dict(spec.env))
    return stdio_client(params, errlog=errlog)


async def _transport(spec, stack, statuses, errlog, call_timeout_s):
    if spec.transport == "stdio":
        return stdio_transport(spec, errlog)

    async def remember(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = httpx2.AsyncClient(
        headers=dict(spec.headers),
        timeout=httpx2.Timeout(min(spec.start_timeout_s, 30.0), read=call_timeout_s + 5),
        event_hooks={"response": [remember]},
    )
    await stack.enter_async_context(http)
    return streamable_http_client(spec.url or "", http_client=http)


def timed_out(spec: ServerSpec, phase: str, call_timeout_s: float) -> ServerFailure:
    if phase == "start":
        return ServerFailure(f"The {spec.label} server did not start within {spec.start_timeout_s:g} s.",
                             kind="start_timeout", retry=True)
    return ServerFailure(f"The {spec.label} server did not answer within {call_timeout_s:g} s.",
                         kind="timeout", retry=True, sent=True)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _where(spec: ServerSpec) -> str:
    parts = urlsplit(spec.url or "")
    return f"{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}"


def failure(spec, exc, phase, call_timeout_s, statuses, stderr) -> ServerFailure:
    """What went wrong with a session, in plain words, from the exception (group) it ended with."""
    found = _failure(spec, exc, phase, call_timeout_s, statuses, stderr)
    found.sent = phase == "call"
    return found


def _failure(spec, exc, phase, call_timeout_s, statuses, stderr) -> ServerFailure:
    leaves = _leaves(exc)
    first = next((e for e in leaves if not isinstance(e, anyio.get_cancelled_exc_class())), leaves[0])
    said = f" It said: {stderr}" if stderr else ""
    label = spec.label
    refused = [s for s in statuses if s in (401, 403)]
    if refused:
        return ServerFailure(f"The {label} server refused the credential (HTTP {refused[-1]}). "
                             "Check the key or token, then test again.", kind="refused", retry=False)
    if any(isinstance(e, TimeoutError) for e in leaves):
        return timed_out(spec, phase, call_timeout_s)
    if isinstance(first, MCPError):
        if first.code == mcp_types.REQUEST_TIMEOUT:
            return timed_out(spec, phase, call_timeout_s)
        if first.code == mcp_types.CONNECTION_CLOSED:
            if phase == "start":
                return ServerFailure(_clean(spec, f"The {label} server exited before it was ready.{said}"),
                                     kind="died", retry=True)
            return ServerFailure(_clean(spec, f"The {label} server stopped in the middle of the call.{said}"),
                                 kind="died", retry=True)
        status = f" (HTTP {statuses[-1]})" if statuses and statuses[-1] >= 400 else ""
        return ServerFailure(_clean(spec, f"The {label} server answered with an error{status}: {first.error.message}"),
                             kind="protocol", retry=bool(status and statuses[-1] >= 500))
    if isinstance(first, (FileNotFoundError, PermissionError)) and spec.transport == "stdio":
        return ServerFailure(f"Cannot start the {label} server: {spec.command!r} is not installed or not "
                             "runnable on this machine.", kind="unreachable", retry=False)
    if isinstance(first, httpx2.TimeoutException):
        return timed_out(spec, phase, call_timeout_s)
    if isinstance(first, httpx2.ConnectError):
        return ServerFailure(f"Cannot reach the {label} server at {_where(spec)}.", kind="unreachable", retry=True)
    if isinstance(first, (httpx2.RemoteProtocolError, httpx2.ReadError)):
        return ServerFailure(f"The {label} server stopped in the middle of the call.", kind="died", retry=True)
    log.info("MCP session with %s failed: %r", label, first)
    return ServerFailure(_clean(spec, f"The {label} server failed: {type(first).__name__}: {first}{said}"),
                         kind="protocol", retry=False)


def stderr_size(errlog) -> int:
    try:
        return os.fstat(errlog.fileno()).st_size
    except (OSError, ValueError):
        return 0


def stderr_tail(errlog, since: int = 0) -> str:
    """The last line the server wrote to stderr after byte ``since`` (a kept-open session's earlier calls are not this one's)."""
    try:
        errlog.seek(0, 2)
        size = errlog.tell()
        errlog.seek(max(since, size - 4000))
        text = errlog.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][-STDERR_TAIL:] if lines else ""


def scrub(spec: ServerSpec, text: str) -> str:
    """``text`` without the spec's secret values or anything shaped like a key (a server may echo its token)."""
    for secret in spec.secrets():
        text = text.replace(secret, redaction.REDACTED)
    return redaction.redact(text)


def _clean(spec: ServerSpec, text: str) -> str:
    return scrub(spec, text)[:1000]
