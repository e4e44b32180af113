"""The toolbox chat and workflows use: the tools of a workspace's enabled MCP connections, and calling one.

``tools_for`` lists the tools of the enabled
connections among those asked for, each with a qualified name (``<slug>__<tool>``) unique across
a conversation; a listing younger than ``TOOLS_FRESH_S`` is reused from the row rather than
starting every server again. Calls and listings go through ``sessions``, which keeps a stdio
server running between them. ``call_tool`` never raises for the server's failure: the outcome
says ``ok=False`` with plain words. It raises ``NotFound``/``PermissionDenied``/``InvalidInput``
for Meterbook's own refusals (no such connection, a viewer, a disabled connection, bad arguments).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from engine import db, vault
from engine.billing import limits
from engine.connectors import client, connections, sessions
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.permissions import Actor, authorize

log = logging.getLogger(__name__)

TOOLS_FRESH_S = 600
STOP_S = 10.0  # closing a stuck stdio server (the SDK: stdin, 2 s, SIGTERM, 2 s, SIGKILL) and a margin
MAX_TIMEOUT_S = 600
QUALIFIED = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Tool:
    connection_id: int
    name: str  # the server's tool name
    qualified: str  # f"{connection_slug}__{name}", unique across a conversation, [a-zA-Z0-9_-]{1,64}
    description: str
    input_schema: dict  # JSON Schema, as the server listed it


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    text: str  # the result flattened to text (content blocks joined), for the model
    data: Any  # structuredContent if the server sent it, else None
    error: str | None  # plain words: "The GitHub server did not answer within 30 s."


def qualify(slug: str, name: str) -> str:
    """``slug__name`` within the 64 characters models accept; anything else in a name becomes ``_``."""
    safe = re.sub(r"[^a-zA-Z0-9_-]", "_", name)
    qualified = f"{slug}__{safe}"
    return qualified if len(qualified) <= 64 else qualified[:64]


def tools_for(actor: Actor, connection_ids: list[int], *, start: bool = True) -> list[Tool]:
    """The tools of the usable connections among ``connection_ids``; the others are left out.

    Left out: disabled, deleted, refused by the instance's stdio policy, credentials unreadable, or
    a server that cannot be listed right now (its error is kept on the row for the Connectors page).
    ``start=False``: only the stored listings, however old; no server is started or called.
    """
    tools: list[Tool] = []
    seen: set[str] = set()
    fresh_after = utcnow() - timedelta(seconds=TOOLS_FRESH_S)
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
    _require_plan(actor)
    for connection_id in dict.fromkeys(connection_ids):
        try:
            with db.read_session() as s:
                row, spec = connections.server_spec(s, actor.workspace_id, connection_id)
                if not row.enabled:
                    continue
                slug = row.slug
                fresh = not start or (row.tools_listed_at and row.tools_listed_at > fresh_after)
                listed = connections.stored_tools(row) if fresh else None
        except (NotFound, PermissionDenied, vault.SecretUnreadable) as unusable:
            # Deleted since the conversation chose it, refused by this instance's stdio policy, or its
            # credentials unreadable: the chat goes on without its tools rather than failing every turn.
            log.info("Connector %s left out of a tool list: %s", connection_id, unusable)
            continue
        if listed is None and not start:
            continue
        if listed is None:
            try:
                listed = sessions.list_tools((actor.workspace_id, connection_id), spec)
            except client.ServerFailure as failure:
                log.info("Listing the tools of connector %s failed: %s", connection_id, failure.message)
                connections.record_outcome(actor.workspace_id, connection_id, error=failure.message, used=False)
                continue
            connections.record_outcome(actor.workspace_id, connection_id, error=None, tools=listed, used=False)
        for t in listed:
            qualified = qualify(slug, t.name)
            if qualified in seen:
                continue
            seen.add(qualified)
            tools.append(Tool(connection_id, t.name, qualified, t.description, t.input_schema))
    return tools


@dataclass(frozen=True)
class _Detailed:
    outcome: ToolOutcome
    kind: str | None  # None: ok; "tool_error": the tool answered isError; else the ServerFailure kind
    retry: bool
    sent: bool = False  # it failed after the call went out: the tool may have acted


def call_tool(actor: Actor, connection_id: int, name: str, arguments: dict, *, timeout_s: float = 30) -> ToolOutcome:
    return call_detailed(actor, connection_id, name, arguments, timeout_s=timeout_s).outcome


def call_detailed(actor: Actor, connection_id: int, name: str, arguments: dict, *, timeout_s: float = 30,
                  within_s: float | None = None) -> _Detailed:
    """``call_tool`` with what failed and whether another try may help (for the workflow node).

    ``within_s``: starting the server, the call and closing a stuck server all fit in it (a
    workflow step's timeout), so a caller never gives up on a call still running and runs it again.
    """
    if not isinstance(arguments, dict):
        raise InvalidInput("A tool's arguments are a JSON object (a mapping of names to values).")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("Name the tool to call.")
    if not 0 < float(timeout_s) <= MAX_TIMEOUT_S:
        raise InvalidInput(f"A tool call's timeout is between 0 and {MAX_TIMEOUT_S} seconds.")
    with db.read_session() as s:
        authorize(s, actor, "workflow.run")  # a tool may act in the vendor's system, like a run's steps
        row, spec = connections.server_spec(s, actor.workspace_id, connection_id)
        if not row.enabled:
            raise InvalidInput(f"The connector {row.name!r} is disabled; enable it on the Connectors page.")
    _require_plan(actor)
    if within_s is not None:
        spec, timeout_s = _fit_in(spec, float(timeout_s), float(within_s))
    try:
        result = sessions.call_tool((actor.workspace_id, connection_id), spec, name, arguments,
                                    timeout_s=float(timeout_s))
    except client.ServerFailure as failure:
        connections.record_outcome(actor.workspace_id, connection_id, error=failure.message)
        return _Detailed(ToolOutcome(False, "", None, failure.message), failure.kind, failure.retry, failure.sent)
    text = client.scrub(spec, result.text)  # it goes to a model, a transcript, a step's output
    if result.is_error:
        words = text.strip() or "it gave no reason"
        message = f"The {spec.label} tool {name!r} failed: {words}"[:2000]
        connections.record_outcome(actor.workspace_id, connection_id, error=None)  # the server itself worked
        return _Detailed(ToolOutcome(False, text, result.data, message), "tool_error", False, True)
    connections.record_outcome(actor.workspace_id, connection_id, error=None)
    return _Detailed(ToolOutcome(True, text, result.data, None), None, False)


def _fit_in(spec: client.ServerSpec, call_s: float, within_s: float) -> tuple[client.ServerSpec, float]:
    """Start and call timeouts that, with closing a stuck server, add up to no more than ``within_s``."""
    budget = max(2.0, within_s - STOP_S)
    start_s = min(spec.start_timeout_s, budget / 2)
    call_s = min(call_s, budget - start_s)
    return replace(spec, start_timeout_s=min(spec.start_timeout_s, budget - call_s)), call_s


def _require_plan(actor: Actor) -> None:
    """Connectors are a plan feature at use too, not only when one is added: a downgrade stops them."""
    limits.require_feature(actor.workspace_id, "mcp_connectors")
