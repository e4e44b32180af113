"""The usage ledger: writing one row per provider attempt, and the small summaries the Overview shows.

Summaries read the system of record for now; the Cost & Usage dashboards read the
analytics warehouse instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from engine import db
from engine.dbtypes import utcnow
from engine.models import LedgerEntry, Project, User, Workspace
from engine.permissions import Actor, authorize


def record(session: Session, **fields) -> LedgerEntry:
    entry = LedgerEntry(**fields)
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class Totals:
    spend: Decimal
    calls: int
    tokens: int
    errors: int


@dataclass(frozen=True)
class ActivityRow:
    created_at: datetime
    user: str | None
    project: str | None
    provider: str
    model: str
    kind: str
    tokens: int
    cost: Decimal | None
    status: str


@dataclass(frozen=True)
class ProjectSpend:
    project: str
    spend: Decimal
    budget: Decimal | None


@dataclass(frozen=True)
class Overview:
    month_start: datetime
    this_month: Totals
    last_month_same_days: Totals
    top_projects: list[ProjectSpend]
    recent: list[ActivityRow]
    has_usage: bool


def month_start(now: datetime, tz: str) -> datetime:
    local = now.astimezone(ZoneInfo(tz))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _totals(session: Session, workspace_id: int, start: datetime, end: datetime) -> Totals:
    row = session.execute(
        select(
            func.sum(LedgerEntry.cost),
            func.count(),
            func.coalesce(func.sum(LedgerEntry.input_tokens + LedgerEntry.output_tokens), 0),
            func.coalesce(func.sum(case((LedgerEntry.status != "ok", 1), else_=0)), 0),
        ).where(
            LedgerEntry.workspace_id == workspace_id,
            LedgerEntry.created_at >= start,
            LedgerEntry.created_at < end,
        )
    ).one()
    return Totals(row[0] if row[0] is not None else Decimal(0), row[1], int(row[2]), int(row[3]))


def overview(actor: Actor, now: datetime | None = None) -> Overview:
    now = now or utcnow()
    with db.read_session() as s:
        authorize(s, actor, "usage.read")
        tz = s.get(Workspace, actor.workspace_id).timezone
        start = month_start(now, tz)
        prev_start = month_start(start - timedelta(days=1), tz)
        # The same number of days into last month, so the comparison is like for like.
        prev_end = min(prev_start + (now - start), start)
        this = _totals(s, actor.workspace_id, start, now)
        prev = _totals(s, actor.workspace_id, prev_start, prev_end)
        spend = func.sum(LedgerEntry.cost)
        top = s.execute(
            select(Project.name, spend, Project.budget_usd)
            .join(Project, Project.id == LedgerEntry.project_id)
            .where(LedgerEntry.workspace_id == actor.workspace_id, LedgerEntry.created_at >= start)
            .group_by(Project.id, Project.name, Project.budget_usd)
            .order_by(spend.desc())
            .limit(5)
        ).all()
        recent = s.execute(
            select(LedgerEntry, User.email, Project.name)
            .outerjoin(User, User.id == LedgerEntry.user_id)
            .outerjoin(Project, Project.id == LedgerEntry.project_id)
            .where(LedgerEntry.workspace_id == actor.workspace_id)
            .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
            .limit(10)
        ).all()
    return Overview(
        month_start=start,
        this_month=this,
        last_month_same_days=prev,
        top_projects=[ProjectSpend(n, sp, b) for n, sp, b in top],
        recent=[
            ActivityRow(e.created_at, email, pname, e.provider, e.model, e.kind,
                        e.input_tokens + e.output_tokens, e.cost, e.status)
            for e, email, pname in recent
        ],
        has_usage=bool(recent),
    )
