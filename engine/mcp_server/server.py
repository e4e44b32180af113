"""Meterbook's own MCP server (the ``mcp`` SDK's ``MCPServer``), over stdio or streamable HTTP.

Every tool call presents a workspace API key: over stdio the ``METERBOOK_API_KEY`` variable
of the server's environment, over HTTP the request's ``Authorization: Bearer`` header (read
per request, so one HTTP session cannot borrow another request's key). The key is checked for
the tool's scope before anything is done; a missing, unknown, expired or revoked key, a
missing scope or a role that may not do it is refused as a JSON-RPC error (``INVALID_REQUEST``,
with ``data.reason``), while the engine's other refusals (bad input, not found, a plan limit, a
budget) come back as a tool result marked ``isError`` with the engine's own words, which a
model can read and act on. Listing tools needs no key: it does and reveals nothing.

Over HTTP the SDK's DNS-rebinding protection answers 421 to a request whose Host header names
anything but the listening address or a name given with ``--allowed-host``. Listening beyond
this machine (not a loopback address) therefore needs at least one ``--allowed-host``, and is
warned about: the keys travel in clear unless a TLS proxy sits in front.
"""

import ipaddress
import logging
import os
import re
from collections.abc import Callable
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST, ToolAnnotations

from engine.errors import InvalidCredentials, InvalidInput, MeterbookError, PermissionDenied
from engine.mcp_server import auth, operations as ops
from engine.permissions import Actor

log = logging.getLogger(__name__)

NAME = "meterbook"
HTTP_PATH = "/mcp"

KeySource = Callable[[Context], tuple[str | None, str]]  # (presented key, how to present one here)


def stdio_key(_ctx: Context) -> tuple[str | None, str]:
    return os.environ.get(auth.ENV_VAR), f"set {auth.ENV_VAR} in the server's environment"


def http_key(ctx: Context) -> tuple[str | None, str]:
    return auth.bearer(ctx.headers), "send it as 'Authorization: Bearer <key>'"


def _refuse(exc: MeterbookError) -> MCPError:
    return MCPError(INVALID_REQUEST, f"Refused: {exc}", {"reason": "unauthorised" if isinstance(
        exc, InvalidCredentials) else "forbidden"})


def build(key_source: KeySource) -> MCPServer:
    """The server with Meterbook's tools; ``key_source`` says where a call's API key comes from."""
    server = MCPServer(NAME, title="Meterbook", instructions=(
        "Run Meterbook workflows and ask what they and the workspace's AI calls cost. Money is USD as a "
        "decimal string; a null cost means the price is unknown."))

    def act(ctx: Context, scope: str, work: Callable[[Actor], dict[str, Any]]) -> dict[str, Any]:
        secret, where = key_source(ctx)
        try:
            caller = auth.authorise(secret, scope, where=where)
            return work(caller.actor)
        except (InvalidCredentials, PermissionDenied) as exc:
            raise _refuse(exc) from None
        except MeterbookError as exc:
            raise ToolError(str(exc)) from None

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    def list_workflows(ctx: Context, search: str = "") -> dict[str, Any]:
        """The workspace's workflows with their inputs and their last run's status and cost. Scope workflows:read."""
        return act(ctx, "workflows:read", lambda actor: ops.list_workflows(actor, search))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))
    def run_workflow(ctx: Context, workflow: str, inputs: dict[str, Any] | None = None, wait_seconds: float = 0,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """Start a run of a workflow (its name or id) with the given inputs; wait up to wait_seconds (max 60)
        for it to finish. Returns the run's status, outputs once finished, and cost so far. A repeated
        idempotency_key returns the first run instead of starting another. Scope workflows:run."""
        return act(ctx, "workflows:run", lambda actor: ops.run_workflow(
            actor, workflow, inputs, wait_seconds=wait_seconds, idempotency_key=idempotency_key))

    @server.tool(annotations=read_only)
    def get_run(ctx: Context, run_id: int) -> dict[str, Any]:
        """A workflow run's status, outputs (once succeeded) or error, its steps and its cost from the ledger.
        Scope workflows:read."""
        return act(ctx, "workflows:read", lambda actor: ops.get_run(actor, run_id))

    @server.tool(annotations=read_only)
    def spend_summary(ctx: Context, period: Literal["today", "7d", "30d", "month"] = "month",
                      by: Literal["project", "model", "provider"] | None = None) -> dict[str, Any]:
        """AI spend for a period (today, 7d, 30d or month: month to date, in the workspace's time zone),
        with calls, tokens and errors, optionally broken down by project, model or provider. Scope usage:read."""
        return act(ctx, "usage:read", lambda actor: ops.spend_summary(actor, period, by))

    @server.tool(annotations=read_only)
    def check_budget(ctx: Context, budget: str | None = None) -> dict[str, Any]:
        """A budget (its name or id): limit, spent, held, remaining and the forecast to the period's end.
        Without a name, every budget without forecasts. Scope budgets:read."""
        return act(ctx, "budgets:read", lambda actor: ops.check_budget(actor, budget))

    return server


def serve(*, http: bool, host: str = "127.0.0.1", port: int = 8766, allowed_hosts: tuple[str, ...] = ()) -> None:
    """Run until stopped: stdio for a client that spawns us, or streamable HTTP on host:port."""
    try:
        _serve(http, host, port, allowed_hosts)
    finally:
        ops.stop()  # a run still being worked here goes back to the queue rather than holding up the exit


def _serve(http: bool, host: str, port: int, allowed_hosts: tuple[str, ...]) -> None:
    if not http:
        build(stdio_key).run("stdio")
        return
    server = build(http_key)
    # Stateless, JSON answers: every request stands alone (and carries its own key).
    server.run("streamable-http", host=host, port=port, streamable_http_path=HTTP_PATH, stateless_http=True,
               json_response=True, transport_security=transport_security(host, port, allowed_hosts))


# --- who may be named in the Host header ------------------------------------------------------

ALLOWED_HOST = re.compile(r"(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(?:\d{1,5}|\*))?", re.I)


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, it may be reachable from elsewhere


def check_allowed_host(value: str) -> str:
    """A ``--allowed-host`` value as the Host header carries it: a name or address, optionally ``:port``."""
    value = value.strip()
    if not ALLOWED_HOST.fullmatch(value):
        raise InvalidInput(f"--allowed-host {value!r} is not a host name: give it as clients send it in the Host "
                           "header, like mcp.example.com or mcp.example.com:8443 (no scheme, no path).")
    return value.lower()


def check_bind(host: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Refuse a bind beyond this machine that names no host; else the warning such a bind deserves (or None)."""
    if is_loopback(host):
        return None
    if not allowed_hosts:
        raise InvalidInput(
            f"Listening on {host} (beyond this machine) needs --allowed-host: pass the host name clients use to "
            "reach this server (like --allowed-host mcp.example.com; repeat it for each name). Requests naming "
            "any other host are refused (HTTP 421) to stop DNS-rebinding attacks.")
    return (f"Warning: listening on {host}, reachable from other machines, over plain HTTP. Every MCP request "
            "carries a Meterbook API key, which travels in clear unless a TLS-terminating proxy sits in front; "
            "serve it only behind one (or on a network you trust).")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host  # how a Host header names IPv6


def transport_security(host: str, port: int, allowed_hosts: tuple[str, ...] = ()) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding protection: the address we listen on (and localhost for 127.0.0.1), plus the
    names given with --allowed-host (a name without a port: any port, as a proxy in front may use 443)."""
    bound = _bracketed(host)
    hosts = [bound, f"{bound}:{port}"] + ([f"localhost:{port}", "localhost"] if host == "127.0.0.1" else [])
    origins = [f"http://{h}" for h in hosts]
    for name in allowed_hosts:
        named = [name] if re.search(r":(\d+|\*)$", name) else [name, f"{name}:*"]
        hosts += named
        origins += [f"{scheme}://{h}" for h in named for scheme in ("https", "http")]
    return TransportSecuritySettings(allowed_hosts=list(dict.fromkeys(hosts)),
                                     allowed_origins=list(dict.fromkeys(origins)))
