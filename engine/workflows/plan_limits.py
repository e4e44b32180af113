"""The plan's limits on workflows: how many a workspace keeps, and how many runs it starts a month.

Checked inside the transaction that would add one (``store.create``, ``runs.trigger``), so the
engine refuses what the plan does not allow whichever page, CLI or trigger asks; the counts are
registered with billing for the Billing page's bars.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.billing import limits, plans
from engine.dbtypes import utcnow
from engine.workflows.models import Workflow, WorkflowRun


def workflows(session: Session, workspace_id: int, _month_start: datetime | None = None) -> int:
    return int(session.scalar(select(func.count()).select_from(Workflow).where(Workflow.workspace_id == workspace_id)))


def runs_this_month(session: Session, workspace_id: int, month_start: datetime | None = None) -> int:
    start = month_start or limits.month_start(utcnow())
    return int(session.scalar(select(func.count()).select_from(WorkflowRun).where(
        WorkflowRun.workspace_id == workspace_id, WorkflowRun.created_at >= start)))


def check_new_workflow(session: Session, workspace_id: int) -> None:
    if plans.billing_configured():  # self-hosted: no plan, nothing to count
        limits.check(workspace_id, "workflows", workflows(session, workspace_id))


def check_new_run(session: Session, workspace_id: int) -> None:
    if plans.billing_configured():
        limits.check(workspace_id, "workflow_runs", runs_this_month(session, workspace_id))


limits.register_counter("workflows", workflows)
limits.register_counter("workflow_runs", runs_this_month)
