"""Spend spikes: each project's and each model's spend today against a robust baseline of its past days.

The baseline is the median of the series' daily spend over the last 28 complete local days
(days without spend count as zero, from the workspace's first day of spend on) and its median
absolute deviation. Today is a spike when it passes

    median + max(5.19 × MAD, median, $1)

that is, a modified z-score above 3.5 (Iglewicz and Hoaglin), at least double the typical
day, and at least a dollar over it, so that pennies and naturally noisy series stay quiet.
Today is still running: a spike is flagged as soon as today's spend so far passes the line.
An alert (once per series and day) breaks today's spend down by model, person and workflow
run, each beside its typical day, so the cause is one look away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from statistics import median
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import alerts, db, spend_series
from engine.budget_periods import local_midnight
from engine.dbtypes import utcnow
from engine.models import LedgerEntry, Project, User, Workspace

BASELINE_DAYS = 28
MIN_BASELINE_DAYS = 7
MAD_FACTOR = Decimal("5.19")  # 3.5 / 0.6745: a modified z-score of 3.5
MIN_EXCESS_USD = Decimal("1")
TOP_CAUSES = 5


@dataclass(frozen=True)
class Baseline:
    median: Decimal
    mad: Decimal

    @property
    def threshold(self) -> Decimal:
        return self.median + max(MAD_FACTOR * self.mad, self.median, MIN_EXCESS_USD)


def baseline(values: list[Decimal]) -> Baseline:
    m = median(values)
    return Baseline(m, median(abs(v - m) for v in values))


@dataclass(frozen=True)
class Cause:
    label: str
    today: Decimal
    typical: Decimal  # mean daily spend over the baseline days


@dataclass(frozen=True)
class Spike:
    series: str  # "project" or "model"
    key: str
    label: str
    day: date
    spend: Decimal
    baseline: Baseline
    causes: dict[str, list[Cause]]  # "model", "user", "workflow" → biggest first


def find(session: Session, workspace_id: int, tz: str, now: datetime) -> list[Spike]:
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    today_start = local_midnight(today, zone)
    start = local_midnight(today - timedelta(days=BASELINE_DAYS), zone)
    families = {
        "project": spend_series.hourly_by(session, workspace_id, LedgerEntry.project_id, start, now),
        "model": spend_series.hourly_by(session, workspace_id, LedgerEntry.model, start, now),
    }
    daily = {name: {k: spend_series.daily(h, tz) for k, h in series.items()} for name, series in families.items()}
    seen = [d for series in daily["model"].values() for d in series if d < today]
    if not seen:
        return []
    days = [d for d in (today - timedelta(days=i) for i in range(BASELINE_DAYS, 0, -1)) if d >= min(seen)]
    if len(days) < MIN_BASELINE_DAYS:
        return []
    spikes = []
    for name, series in daily.items():
        for key, by_day in series.items():
            spend = by_day.get(today, Decimal(0))
            b = baseline([by_day.get(d, Decimal(0)) for d in days])
            if spend > b.threshold:
                where = (LedgerEntry.project_id.is_(None) if key is None else LedgerEntry.project_id == key) \
                    if name == "project" else LedgerEntry.model == key
                spikes.append(Spike(name, "none" if key is None else str(key), _label(session, name, key), today,
                                    spend, b, _causes(session, workspace_id, where, start, today_start, now,
                                                      len(days))))
    return spikes


def _label(session: Session, series: str, key) -> str:
    if series == "model":
        return f"model {key}"
    if key is None:
        return "calls without a project"
    return f"project “{session.get(Project, key).name}”"


def _causes(session: Session, workspace_id: int, where, start: datetime, today_start: datetime, now: datetime,
            days: int) -> dict[str, list[Cause]]:
    dims = {"model": (LedgerEntry.model, lambda v: v),
            "user": (User.email, lambda v: v or "API or system calls"),
            "workflow": (LedgerEntry.workflow_run_id, lambda v: f"workflow run #{v}" if v else "direct calls")}
    out = {}
    for name, (column, label) in dims.items():
        today_spend = func.sum(LedgerEntry.cost).filter(LedgerEntry.created_at >= today_start)
        before = func.sum(LedgerEntry.cost).filter(LedgerEntry.created_at < today_start)
        q = (select(column, today_spend, before).select_from(LedgerEntry)
             .where(LedgerEntry.workspace_id == workspace_id, LedgerEntry.created_at >= start,
                    LedgerEntry.created_at < now, where)
             .group_by(column))
        if name == "user":
            q = q.outerjoin(User, User.id == LedgerEntry.user_id)
        rows = [(value, t or Decimal(0), b or Decimal(0)) for value, t, b in session.execute(q).all()]
        rows = sorted((r for r in rows if r[1] > 0), key=lambda r: r[1], reverse=True)[:TOP_CAUSES]
        out[name] = [Cause(label(v), t, (b / days).quantize(Decimal("0.0001"))) for v, t, b in rows]
    return out


def _describe(s: Spike) -> str:
    parts = []
    for name, title in (("model", "model"), ("user", "person"), ("workflow", "workflow")):
        if s.causes.get(name):
            top = s.causes[name][0]
            parts.append(f"{title} {top.label} {alerts.usd(top.today)} (typical {alerts.usd(top.typical)})")
    cause = f" Most of it: {'; '.join(parts)}." if parts else ""
    return (f"Spend on {s.label} is {alerts.usd(s.spend)} today, against a typical {alerts.usd(s.baseline.median)} "
            f"a day (alert above {alerts.usd(s.baseline.threshold)}).{cause}")


def scan(workspace_id: int, now: datetime | None = None) -> int:
    """Look for spikes in a workspace and fire an alert for each new one; returns how many fired."""
    now = now or utcnow()
    with db.read_session() as s:
        spikes = find(s, workspace_id, s.get(Workspace, workspace_id).timezone, now)
    if not spikes:
        return 0
    fired = 0
    # Its own short write: on SQLite a read that turned into a write could lose its snapshot to another writer.
    with db.transaction() as s:
        for spike in spikes:
            fired += alerts.fire(
                s, workspace_id=workspace_id, kind="spike",
                key=f"spike:{spike.series}:{spike.key}:{spike.day.isoformat()}",
                title=f"Spend spike on {spike.label}", message=_describe(spike),
                detail={"series": spike.series, "key": spike.key, "day": spike.day.isoformat(),
                        "spend": str(spike.spend), "median": str(spike.baseline.median),
                        "mad": str(spike.baseline.mad), "threshold": str(spike.baseline.threshold),
                        "causes": {k: [{"label": c.label, "today": str(c.today), "typical": str(c.typical)}
                                       for c in v] for k, v in spike.causes.items()}},
            )
    return fired
