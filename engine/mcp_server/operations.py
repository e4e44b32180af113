"""What Meterbook's MCP tools do, as plain functions of an actor that return JSON-ready dicts.

Each goes through the same engine services the pages use (workflow store and runs, the
Cost & Usage dashboard's warehouse questions, the budget service), so role checks, plan
limits and budgets apply exactly as they do in the app. Money is a decimal string in USD,
exact to 1e-10, never a float; an unknown price is null, never zero.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from engine import budgets, dashboards
from engine.errors import InvalidInput
from engine.permissions import Actor
from engine.workflows import hooks, runs, spec as specs, store, worker

PERIODS = ("today", "7d", "30d", "month")
GROUPS = ("project", "model", "provider")
MAX_WAIT_S = hooks.MAX_WAIT_S

# Runs started here are also worked here, so they finish without a separate worker process;
# the claim is one conditional UPDATE, so a worker of `engine up` racing for the same run is harmless.
_runner = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mcp-run")
_stop = threading.Event()


def usd(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _stamp(value) -> str | None:
    return value.isoformat() if value is not None else None


# --- workflows -------------------------------------------------------------------------------


def list_workflows(actor: Actor, search: str = "") -> dict[str, Any]:
    out = []
    for wf in store.list_workflows(actor, search):
        inputs = specs.parse(wf.source).inputs
        out.append({
            "id": wf.id, "name": wf.name, "description": wf.description, "active": wf.active,
            "version": wf.version,
            "inputs": {name: {"type": i.type, "required": i.required is not False and i.default is None,
                              "default": i.default, "description": i.description} for name, i in inputs.items()},
            "last_status": wf.last_status, "last_run_at": _stamp(wf.last_run_at), "last_cost_usd": usd(wf.last_cost),
        })
    return {"workflows": out}


def stop() -> None:
    _stop.set()
    _runner.shutdown(wait=False, cancel_futures=True)


def _work(run_id: int) -> None:
    if worker.claim(f"mcp-{os.getpid()}", run_id=run_id):
        worker.execute(run_id, f"mcp-{os.getpid()}", stop=_stop)


def run_workflow(actor: Actor, workflow: str | int, inputs: dict[str, Any] | None = None, *,
                 wait_seconds: float = 0, idempotency_key: str | None = None) -> dict[str, Any]:
    """Queue a run, work it in this process, and wait up to ``wait_seconds`` (at most 60) for its end."""
    if inputs is not None and not isinstance(inputs, dict):
        raise InvalidInput("Give the inputs as an object of name → value.")
    if not 0 <= float(wait_seconds) <= MAX_WAIT_S:
        raise InvalidInput(f"Wait between 0 and {MAX_WAIT_S:.0f} seconds; ask for the run's status after that.")
    kw = {"trigger": "mcp", "idempotency_key": idempotency_key}
    if isinstance(workflow, int) or str(workflow).isdigit():
        view = runs.trigger(actor, int(workflow), inputs, **kw)
    else:
        view = runs.trigger_by_name(actor, str(workflow), inputs, **kw)
    if view.status == "queued":
        _runner.submit(_work, view.id)
    if wait_seconds:
        hooks.wait_for(view.id, float(wait_seconds), _stop)
    return get_run(actor, view.id)


def get_run(actor: Actor, run_id: int) -> dict[str, Any]:
    view = runs.get_run(actor, int(run_id))
    out: dict[str, Any] = {
        "run_id": view.id, "workflow": view.workflow_name, "workflow_id": view.workflow_id, "version": view.version,
        "status": view.status, "trigger": view.trigger, "inputs": view.inputs, "created_at": _stamp(view.created_at),
        "started_at": _stamp(view.started_at), "finished_at": _stamp(view.finished_at),
        "cost_usd": usd(view.cost),  # every AI call of the run and its sub-runs, from the ledger
        "finished": view.status in ("succeeded", "failed", "cancelled"),
    }
    if view.status == "succeeded":
        out["outputs"] = view.outputs
    if view.error:
        out["error"], out["failed_node"] = view.error, view.failed_node
    out["steps"] = [{"node": s.node_id, "type": s.node_type, "status": s.status, "cost_usd": usd(s.cost)}
                    for s in runs.steps(actor, view.id)]
    return out


# --- spend -----------------------------------------------------------------------------------


def spend_summary(actor: Actor, period: str = "month", by: str | None = None) -> dict[str, Any]:
    """The Cost & Usage page's figures for a period, optionally broken down by project, model or provider."""
    if period not in PERIODS:
        raise InvalidInput(f"Choose the period from {', '.join(PERIODS)}, not {period!r}.")
    if by is not None and by not in GROUPS:
        raise InvalidInput(f"Break spend down by {', '.join(GROUPS)}, not {by!r}.")
    with dashboards.open_dashboard(actor) as board:
        filters = board.filters(dashboards.View(period=period))
        totals = board.totals(filters)
        frame = board.breakdown(filters, by) if by else None
    now, before = totals.current, totals.previous
    p = filters.period
    out: dict[str, Any] = {
        "period": period, "label": dashboards.PERIODS[period], "timezone": board.timezone,
        "from": p.start.isoformat(), "to": p.end.isoformat(),
        "spend_usd": usd(now.spend), "calls": now.calls, "tokens": now.tokens, "errors": now.errors,
        "unpriced_calls": now.unpriced,  # their cost is unknown and not in spend_usd
        "previous_spend_usd": usd(before.spend),
    }
    if frame is not None:
        rows = []
        for row in frame.iter_rows(named=True):
            if by == "project":
                key = None if row["key"] == dashboards.UNASSIGNED else row["key"]
                rows.append({"project_id": key, "project": row["label"], "spend_usd": usd(row["spend"]),
                             "calls": row["calls"]})
            else:
                item = {"provider": row["provider"], **({"model": row["model"]} if by == "model" else {})}
                rows.append(item | {"spend_usd": usd(row["spend"]), "calls": row["calls"], "tokens": row["tokens"],
                                    "unpriced_calls": row["unpriced"]})
        out["by"], out["breakdown"] = by, rows
    return out


# --- budgets ---------------------------------------------------------------------------------


def _budget(view: budgets.BudgetView) -> dict[str, Any]:
    return {
        "id": view.id, "name": view.name, "covers": view.target, "period": view.period,
        "action": view.action, "enabled": view.enabled,
        "period_start": _stamp(view.period_start), "period_end": _stamp(view.period_end),
        "limit_usd": usd(view.limit_usd), "spent_usd": usd(view.spent), "held_usd": usd(view.held),
        "remaining_usd": usd(view.remaining),
    }


def check_budget(actor: Actor, budget: str | int | None = None) -> dict[str, Any]:
    """One budget (by id or name) with its forecast to the period's end, or every budget without one."""
    views = budgets.list_budgets(actor)
    if budget is None or str(budget).strip() == "":
        return {"budgets": [_budget(v) for v in views]}
    wanted = str(budget).strip()
    match = [v for v in views if str(v.id) == wanted or v.name.lower() == wanted.lower()]
    if not match:
        names = ", ".join(repr(v.name) for v in views) or "none yet"
        raise InvalidInput(f"There is no budget {wanted!r} in this workspace (budgets: {names}).")
    burn = budgets.burndown(actor, match[0].id)
    out = _budget(burn.budget)
    f = burn.forecast
    out["forecast"] = None if f is None else {
        "to": _stamp(f.end), "expected_usd": usd(f.expected), "low_usd": usd(f.low), "high_usd": usd(f.high),
        "exhausted_at": _stamp(f.exhausted_at), "history_days": f.history_days,
    }
    return out
