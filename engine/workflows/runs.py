"""Runs: trigger (with idempotency keys), cancel, retry from the failed node, replay dead letters,
decide approvals, list history, read one run live, and prune old runs.

A run is charged to its workflow's project; its cost is the sum of its AI steps' ledger rows
(and its sub-workflows'), read from the ledger, so it can never disagree with it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete as sa_delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import audit, db
from engine.billing import limits
from engine.db import write_lock
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import LedgerEntry
from engine.permissions import Actor, authorize, in_workspace
from engine.workflows import payloads, plan_limits, spec as specs, store
from engine.workflows.models import (
    FINISHED, Workflow, WorkflowApproval, WorkflowDeadLetter, WorkflowRun, WorkflowStep, WorkflowVersion,
)

TRIGGERS = ("manual", "schedule", "webhook", "cli", "replay", "child", "mcp")
MAX_KEY = 200
DEFAULT_RETENTION_DAYS = 30
_STEP_OF_REQUEST = re.compile(r"^wf\d+-([A-Za-z0-9_]+)")  # NodeContext.request_id's shape


@dataclass(frozen=True)
class RunView:
    id: int
    workflow_id: int
    workflow_name: str
    version: int
    status: str
    trigger: str
    inputs: dict
    outputs: Any
    error: str | None
    failed_node: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cost: Decimal
    cancel_requested: bool
    parent_run_id: int | None


@dataclass(frozen=True)
class StepView:
    node_id: str
    node_type: str
    status: str
    attempt: int
    input: Any
    output: Any
    logs: str | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    cost: Decimal


def _run(s: Session, actor: Actor, run_id: int) -> WorkflowRun:
    return in_workspace(s, WorkflowRun, run_id, actor.workspace_id, "run")


def _family(s: Session, run_id: int) -> list[int]:
    ids, frontier = [run_id], [run_id]
    while frontier:
        frontier = list(s.scalars(select(WorkflowRun.id).where(WorkflowRun.parent_run_id.in_(frontier))))
        ids += frontier
    return ids


def cost_of(s: Session, run_id: int) -> Decimal:
    total = s.scalar(select(func.sum(LedgerEntry.cost)).where(LedgerEntry.workflow_run_id.in_(_family(s, run_id))))
    return total if total is not None else Decimal(0)


def _view(s: Session, run: WorkflowRun) -> RunView:
    wf = s.get(Workflow, run.workflow_id)
    version = s.get(WorkflowVersion, run.version_id)
    return RunView(run.id, run.workflow_id, wf.name, version.version, run.status, run.trigger, run.inputs,
                   run.outputs, run.error, run.failed_node, run.created_at, run.started_at, run.finished_at,
                   cost_of(s, run.id), run.cancel_requested, run.parent_run_id)


# --- starting runs ------------------------------------------------------------------------------


def trigger(actor: Actor, workflow_id: int, inputs: dict[str, Any] | None = None, *, trigger: str = "manual",
            idempotency_key: str | None = None) -> RunView:
    """Queue a run of the workflow's current version. The same idempotency key returns the first run."""
    if trigger not in TRIGGERS:
        raise InvalidInput(f"Unknown trigger {trigger!r}.")
    key = (idempotency_key or "").strip() or None
    if key is not None and len(key) > MAX_KEY:
        raise InvalidInput(f"An idempotency key is at most {MAX_KEY} characters.")
    with db.read_session() as s:
        authorize(s, actor, "workflow.run")
        wf = store._load(s, actor, workflow_id)
        if key is not None:
            existing = s.scalar(select(WorkflowRun).where(WorkflowRun.workflow_id == wf.id,
                                                          WorkflowRun.idempotency_key == key))
            if existing is not None:
                return _view(s, existing)
        if not wf.active:
            raise InvalidInput(f"The workflow {wf.name!r} is paused; switch it to active to run it.")
        version = store.current_version(s, wf)
        values = specs.coerce_inputs(specs.from_stored(version.spec), inputs)
        project_id, version_id = wf.project_id, version.id
    try:
        with db.transaction() as s:
            write_lock(s)
            plan_limits.check_new_run(s, actor.workspace_id)
            run = WorkflowRun(workspace_id=actor.workspace_id, workflow_id=workflow_id, version_id=version_id,
                              user_id=actor.user_id, project_id=project_id, trigger=trigger, inputs=values,
                              idempotency_key=key)
            s.add(run)
            s.flush()
            audit.record_for(s, actor, "workflow.run", "workflow_run", run.id, workflow_id=workflow_id,
                             trigger=trigger)
            return _view(s, run)
    except IntegrityError:  # the same key, at the same moment, from another trigger
        with db.read_session() as s:
            existing = s.scalar(select(WorkflowRun).where(WorkflowRun.workflow_id == workflow_id,
                                                          WorkflowRun.idempotency_key == key))
            if existing is None:
                raise
            return _view(s, existing)


def trigger_by_name(actor: Actor, name: str, inputs: dict[str, Any] | None = None, **kw) -> RunView:
    with db.read_session() as s:
        wf_id = store.by_name(s, actor.workspace_id, name).id
    return trigger(actor, wf_id, inputs, **kw)


def start_child(parent_id: int, node_id: str, name: str, inputs: dict[str, Any]) -> int:
    """The sub-workflow run a parent's node starts; the same one again when the parent resumes."""
    key = f"parent:{parent_id}:{node_id}"[:MAX_KEY]
    with db.read_session() as s:
        parent = s.get(WorkflowRun, parent_id)
        try:
            wf = store.by_name(s, parent.workspace_id, name)
        except NotFound as exc:
            from engine.workflows.nodes import NodeFailed

            raise NodeFailed(str(exc), retry=False) from None
        existing = s.scalar(select(WorkflowRun.id).where(WorkflowRun.workflow_id == wf.id,
                                                         WorkflowRun.idempotency_key == key))
        if existing is not None:
            return existing
        if _depth(s, parent) >= 5:
            from engine.workflows.nodes import NodeFailed

            raise NodeFailed("Sub-workflows nest at most 5 deep (is a workflow calling itself?).", retry=False)
        version = store.current_version(s, wf)
        try:
            values = specs.coerce_inputs(specs.from_stored(version.spec), inputs)
        except InvalidInput as exc:
            from engine.workflows.nodes import NodeFailed

            raise NodeFailed(f"{name}: {exc}", retry=False) from None
        fields = dict(workspace_id=parent.workspace_id, workflow_id=wf.id, version_id=version.id,
                      parent_run_id=parent.id, user_id=parent.user_id,
                      project_id=wf.project_id or parent.project_id, trigger="child", inputs=values,
                      idempotency_key=key)
    with db.transaction() as s:
        write_lock(s)
        try:
            plan_limits.check_new_run(s, fields["workspace_id"])
        except limits.PlanLimitReached as exc:  # the parent's node fails with the plan's own words
            from engine.workflows.nodes import NodeFailed

            raise NodeFailed(str(exc), retry=False) from None
        run = WorkflowRun(**fields)
        s.add(run)
        s.flush()
        return run.id


def _depth(s: Session, run: WorkflowRun) -> int:
    depth = 0
    while run.parent_run_id is not None:
        run = s.get(WorkflowRun, run.parent_run_id)
        depth += 1
    return depth


def status_of(run_id: int) -> str:
    with db.read_session() as s:
        return s.scalar(select(WorkflowRun.status).where(WorkflowRun.id == run_id))


def outputs_of(run_id: int) -> Any:
    with db.read_session() as s:
        return s.scalar(select(WorkflowRun.outputs).where(WorkflowRun.id == run_id))


def error_of(run_id: int) -> str | None:
    with db.read_session() as s:
        return s.scalar(select(WorkflowRun.error).where(WorkflowRun.id == run_id))


# --- changing runs ------------------------------------------------------------------------------


def cancel(actor: Actor, run_id: int) -> RunView:
    """A queued or waiting run ends at once; a running one when its worker next checks (within seconds)."""
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.run")
        run = _run(s, actor, run_id)
        if run.status in FINISHED:
            raise InvalidInput(f"This run has already {run.status}.")
        if run.status in ("queued", "waiting"):
            run.status, run.finished_at, run.error = "cancelled", utcnow(), "Cancelled."
            s.execute(update(WorkflowStep).where(WorkflowStep.run_id == run.id, WorkflowStep.status.in_(
                ("pending", "waiting"))).values(status="cancelled", finished_at=utcnow()))
        run.cancel_requested = True
        audit.record_for(s, actor, "workflow.cancel", "workflow_run", run.id)
        s.flush()
        return _view(s, run)


def retry(actor: Actor, run_id: int) -> RunView:
    """Run a failed or cancelled run again from where it stopped: its succeeded steps are kept."""
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.run")
        run = _run(s, actor, run_id)
        if run.status not in ("failed", "cancelled"):
            raise InvalidInput("Only a failed or cancelled run can be retried.")
        s.execute(sa_delete(WorkflowStep).where(WorkflowStep.run_id == run.id, WorkflowStep.status != "succeeded"))
        s.execute(sa_delete(WorkflowApproval).where(WorkflowApproval.run_id == run.id,
                                                    WorkflowApproval.status == "rejected"))
        run.status, run.error, run.failed_node, run.finished_at = "queued", None, None, None
        # started_at again: the run's time limit counts from this new start
        run.cancel_requested, run.started_at, run.outputs = False, None, None
        s.execute(update(WorkflowDeadLetter).where(WorkflowDeadLetter.run_id == run.id).values(dismissed=True))
        audit.record_for(s, actor, "workflow.retry", "workflow_run", run.id)
        s.flush()
        return _view(s, run)


def replay(actor: Actor, dead_letter_id: int) -> RunView:
    """A new run with the dead run's version and inputs, from the start."""
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.run")
        letter = in_workspace(s, WorkflowDeadLetter, dead_letter_id, actor.workspace_id, "dead letter")
        if letter.replayed_run_id is not None:
            raise Conflict(f"It was replayed already, as run {letter.replayed_run_id}.")
        plan_limits.check_new_run(s, actor.workspace_id)
        old = s.get(WorkflowRun, letter.run_id)
        run = WorkflowRun(workspace_id=old.workspace_id, workflow_id=old.workflow_id, version_id=old.version_id,
                          user_id=actor.user_id, project_id=old.project_id, trigger="replay", inputs=old.inputs)
        s.add(run)
        s.flush()
        letter.replayed_run_id, letter.dismissed = run.id, True
        audit.record_for(s, actor, "workflow.replay", "workflow_run", run.id, of=old.id)
        return _view(s, run)


def decide(actor: Actor, approval_id: int, approve: bool, comment: str = "") -> None:
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.approve")
        a = in_workspace(s, WorkflowApproval, approval_id, actor.workspace_id, "approval")
        if a.status != "pending":
            raise Conflict(f"It was {a.status} already.")
        a.status, a.decided_by, a.decided_at = ("approved" if approve else "rejected"), actor.user_id, utcnow()
        a.comment = comment.strip()[:2000] or None
        # Wake the run: a worker picks it up and the approval node reads the decision.
        s.execute(update(WorkflowRun).where(WorkflowRun.id == a.run_id, WorkflowRun.status == "waiting")
                  .values(status="queued"))
        audit.record_for(s, actor, "workflow.approval", "workflow_run", a.run_id, node=a.node_id, decision=a.status)


# --- reading runs -------------------------------------------------------------------------------


def list_runs(actor: Actor, *, workflow_id: int | None = None, status: str | None = None,
              trigger: str | None = None, since: datetime | None = None, until: datetime | None = None,
              limit: int = 200) -> list[RunView]:
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        q = select(WorkflowRun).where(WorkflowRun.workspace_id == actor.workspace_id)
        if workflow_id is not None:
            q = q.where(WorkflowRun.workflow_id == workflow_id)
        if status:
            q = q.where(WorkflowRun.status == status)
        if trigger:
            q = q.where(WorkflowRun.trigger == trigger)
        if since is not None:
            q = q.where(WorkflowRun.created_at >= since)
        if until is not None:
            q = q.where(WorkflowRun.created_at < until)
        return [_view(s, r) for r in s.scalars(q.order_by(WorkflowRun.id.desc()).limit(limit))]


def get_run(actor: Actor, run_id: int) -> RunView:
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        return _view(s, _run(s, actor, run_id))


def steps(actor: Actor, run_id: int) -> list[StepView]:
    """The run's steps in spec order, with each one's cost from the ledger."""
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        run = _run(s, actor, run_id)
        order = [n["id"] for n in s.get(WorkflowVersion, run.version_id).spec["nodes"]]
        rows = {r.node_id: r for r in s.scalars(select(WorkflowStep).where(WorkflowStep.run_id == run.id))}
        costs: dict[str, Decimal] = {}
        for request_id, cost in s.execute(select(LedgerEntry.request_id, LedgerEntry.cost).where(
                LedgerEntry.workflow_run_id == run.id)):
            found = _STEP_OF_REQUEST.match(request_id or "")
            node = found[1] if found else ""
            costs[node] = costs.get(node, Decimal(0)) + (cost or 0)
        out = []
        for node_id in order + sorted(set(rows) - set(order)):
            r = rows.get(node_id)
            if r is None:
                continue
            try:
                output = payloads.load_output(r.output, r.output_file)
            except ValueError as exc:
                output = {"unavailable": str(exc)}
            out.append(StepView(r.node_id, r.node_type, r.status, r.attempt, r.input, output, r.logs, r.error,
                                r.started_at, r.finished_at, costs.get(node_id[:30], Decimal(0))))
        return out


@dataclass(frozen=True)
class DeadLetterView:
    id: int
    run_id: int
    workflow_name: str
    error: str
    created_at: datetime
    replayed_run_id: int | None


def dead_letters(actor: Actor, *, include_dismissed: bool = False) -> list[DeadLetterView]:
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        q = (select(WorkflowDeadLetter, Workflow.name).join(WorkflowRun, WorkflowRun.id == WorkflowDeadLetter.run_id)
             .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
             .where(WorkflowDeadLetter.workspace_id == actor.workspace_id))
        if not include_dismissed:
            q = q.where(WorkflowDeadLetter.dismissed.is_(False))
        return [DeadLetterView(d.id, d.run_id, name, d.error, d.created_at, d.replayed_run_id)
                for d, name in s.execute(q.order_by(WorkflowDeadLetter.id.desc()))]


def dismiss(actor: Actor, dead_letter_id: int) -> None:
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.run")
        d = in_workspace(s, WorkflowDeadLetter, dead_letter_id, actor.workspace_id, "dead letter")
        d.dismissed = True


@dataclass(frozen=True)
class ApprovalView:
    id: int
    run_id: int
    workflow_name: str
    node_id: str
    message: str
    created_at: datetime


def pending_approvals(actor: Actor) -> list[ApprovalView]:
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        q = (select(WorkflowApproval, Workflow.name).join(WorkflowRun, WorkflowRun.id == WorkflowApproval.run_id)
             .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
             .where(WorkflowApproval.workspace_id == actor.workspace_id, WorkflowApproval.status == "pending",
                    WorkflowRun.status.in_(("waiting", "running", "queued"))))
        return [ApprovalView(a.id, a.run_id, name, a.node_id, a.message, a.created_at)
                for a, name in s.execute(q.order_by(WorkflowApproval.id))]


# --- retention ----------------------------------------------------------------------------------


def retention_days() -> int:
    try:
        return max(1, int(os.environ.get("METERBOOK_WORKFLOW_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)))
    except ValueError:
        return DEFAULT_RETENTION_DAYS


def prune(days: int | None = None, *, now: datetime | None = None) -> int:
    """Delete finished runs (steps, approvals, dead letters, payload files) older than the retention.

    Ledger rows are kept: what was spent stays in the books, only the run's working data goes.
    """
    cutoff = (now or utcnow()) - timedelta(days=days or retention_days())
    with db.transaction() as s:
        write_lock(s)
        ids = list(s.scalars(select(WorkflowRun.id).where(WorkflowRun.status.in_(FINISHED),
                                                          WorkflowRun.finished_at < cutoff,
                                                          WorkflowRun.parent_run_id.is_(None)).limit(5000)))
        all_ids = [i for run_id in ids for i in _family(s, run_id)]
        if all_ids:
            s.execute(sa_delete(WorkflowRun).where(WorkflowRun.id.in_(all_ids)))
    for run_id in all_ids:
        payloads.remove_run_files(run_id)
    return len(all_ids)


def version_spec(actor: Actor, run_id: int) -> dict:
    """The spec of the version a run ran (runs record their version; later edits do not change it)."""
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        return s.get(WorkflowVersion, _run(s, actor, run_id).version_id).spec
