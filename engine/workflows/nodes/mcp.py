"""The mcp node: call one tool of a connected MCP server with templated arguments.

The output is the tool's structured content when the server sends it, else its text. A server
that could not be started or reached fails the step with retry (the node's retries and
``on_error`` apply); one that timed out or died after the call went out fails it without retry,
since the tool may have acted; so do a tool that answered with an error, a missing or disabled
connector and a refused credential. Starting, calling and closing fit in the step's timeout, so
the executor never abandons a call that is still running. A dry run names the call and does not
make it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.connectors import connections, toolbox
from engine.errors import MeterbookError
from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register


class McpParams(Params):
    connection: str | int  # the connector's name, slug or id
    tool: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(30.0, gt=0, le=600)


def run_mcp(ctx: NodeContext, p: McpParams) -> NodeResult:
    try:
        connection_id = connections.resolve(ctx.workspace_id, p.connection)
    except MeterbookError as exc:
        raise NodeFailed(str(exc), retry=False) from None
    if ctx.dry_run:
        return NodeResult({"dry_run": True, "connection": p.connection, "tool": p.tool, "arguments": p.arguments})
    try:
        done = toolbox.call_detailed(ctx.actor, connection_id, p.tool, p.arguments, timeout_s=p.timeout_s,
                                     within_s=ctx.timeout_s)
    except MeterbookError as exc:
        raise NodeFailed(str(exc), retry=False) from None
    outcome = done.outcome
    if not outcome.ok:
        message = outcome.error or "The tool failed."
        if done.retry and done.sent:
            # A step with side effects is not repeated when the tool may already have acted.
            message += " Not retried: the call had gone out, so the tool may have acted; check before running it again."
        raise NodeFailed(message, retry=done.retry and not done.sent)
    return NodeResult(outcome.data if outcome.data is not None else outcome.text, logs=f"mcp {p.connection}.{p.tool} → ok")

register(NodeType("mcp", McpParams, run_mcp, side_effects=True, summary="a tool of a connected MCP server"))
