"""The sql node: one reading query over the workspace's analytics views, in the notebooks' SQL sandbox."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pydantic import Field

from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register


class SqlParams(Params):
    query: str = Field(min_length=1)
    max_rows: int = Field(1000, ge=1, le=10_000)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def run_sql(ctx: NodeContext, p: SqlParams) -> NodeResult:
    if ctx.dry_run:
        return NodeResult({"dry_run": True, "rows": [], "columns": []})
    from analytics import SqlError, sandbox

    try:
        result = sandbox.run_user_sql(ctx.workspace_id, p.query, row_cap=p.max_rows, timeout_s=min(ctx.timeout_s, 300))
    except SqlError as exc:
        raise NodeFailed(str(exc), retry=False) from None
    rows = [_plain(r) for r in result.rows.to_dicts()]
    return NodeResult({"columns": result.columns, "rows": rows, "row_count": result.row_count,
                       "truncated": result.truncated},
                      logs=f"{result.row_count} row(s) in {result.elapsed_ms:.0f} ms" +
                           (" (capped)" if result.truncated else ""))


register(NodeType("sql", SqlParams, run_sql, side_effects=True, summary="a query on the analytics warehouse"))
