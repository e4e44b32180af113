"""What pages and services do with schedules: create, edit, pause, resume, delete, list, read firings.

A schedule points at a target by kind: a workflow (registered here) or a report (registered
by ``engine.reports``). Each kind says which permission edits its schedules, how to check the
target is in the workspace, and how to read the result of what a firing started. Every change
bumps ``version``, which the sidecar compares to replace its job; nothing here starts a
scheduler or fires anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete as sa_delete, func, select
from sqlalchemy.orm import Session

from engine import audit, db
from engine.billing import limits, plans
from engine.db import write_lock
from engine.dbtypes import utcnow
from engine.errors import InvalidInput
from engine.permissions import Actor, authorize, in_workspace
from engine.schedules import cron as crons
from engine.schedules.models import (
    KINDS, MISFIRE_POLICIES, SCHEDULER_LEASE, Schedule, ScheduleFire, SidecarLease,
)

MAX_GRACE_S = 7 * 24 * 3600
MISSED_WINDOW = timedelta(days=30)
EDITABLE = ("name", "cron", "timezone", "inputs", "no_overlap", "misfire", "grace_s", "paused")


@dataclass(frozen=True)
class Target:
    """How one kind of schedule target is checked and read."""

    permission: str
    name_of: Callable[[Session, Actor, int], str]  # the target's name, or NotFound
    results: Callable[[Session, list[ScheduleFire]], dict[int, str]]  # fire id -> status of what it started


TARGETS: dict[str, Target] = {}


def register_target(kind: str, target: Target) -> None:
    TARGETS[kind] = target


@dataclass(frozen=True)
class ScheduleView:
    id: int
    kind: str
    target_id: int
    name: str
    cron: str
    timezone: str
    paused: bool
    no_overlap: bool
    misfire: str
    grace_s: int
    inputs: dict[str, Any] | None
    created_by: int | None
    version: int
    created_at: datetime
    last_fire_time: datetime | None
    last_fired_at: datetime | None
    next_fire_time: datetime | None
    last_status: str | None = None  # of the last firing: fired, missed, skipped, failed
    last_result: str | None = None  # of what it started: the run's or the delivery's status
    last_detail: str | None = None
    missed: int = 0  # missed firings in the last 30 days


@dataclass(frozen=True)
class FireView:
    id: int
    fire_time: datetime
    status: str
    coalesced: int
    recorded_at: datetime
    late_ms: int
    run_id: int | None
    delivery_id: int | None
    detail: str | None
    result: str | None = None


def _registered() -> dict[str, Target]:
    """Every kind's target. Reports register when their module loads, which cannot happen while
    ``engine.models`` is still importing this package, so it is imported here, on first use."""
    if "report" not in TARGETS:
        import engine.reports.schedule_link  # noqa: F401  (registers the "report" target)
    return TARGETS


def _target(kind: str) -> Target:
    if kind not in KINDS or kind not in _registered():
        raise InvalidInput(f"A schedule runs a workflow or sends a report, not {kind!r}.")
    return TARGETS[kind]


def _load(s: Session, actor: Actor, schedule_id: int) -> Schedule:
    return in_workspace(s, Schedule, schedule_id, actor.workspace_id, "schedule")


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Checked field values (only those given); ``InvalidInput`` names the first that is wrong."""
    out = dict(values)
    if "name" in out:
        out["name"] = (out["name"] or "").strip()[:200]
    if "timezone" in out:
        out["timezone"] = (out["timezone"] or "").strip()
        crons.zone(out["timezone"])
    if "cron" in out:
        out["cron"] = " ".join((out["cron"] or "").split())
    if "misfire" in out and out["misfire"] not in MISFIRE_POLICIES:
        raise InvalidInput("When a firing is missed, a schedule either runs once late (coalesce) or records the "
                           "miss and runs nothing (skip).")
    if "grace_s" in out:
        try:
            grace = int(out["grace_s"])
        except (TypeError, ValueError):
            raise InvalidInput("The grace window is a whole number of seconds.") from None
        if not 0 <= grace <= MAX_GRACE_S:
            raise InvalidInput(f"The grace window is between 0 seconds and {MAX_GRACE_S // 86400} days.")
        out["grace_s"] = grace
    if "inputs" in out and out["inputs"] is not None and not isinstance(out["inputs"], dict):
        raise InvalidInput("A schedule's inputs are a mapping of input names to values.")
    for flag in ("no_overlap", "paused"):
        if flag in out:
            out[flag] = bool(out[flag])
    return out


def schedules_in(session: Session, workspace_id: int, _month_start: datetime | None = None) -> int:
    return int(session.scalar(select(func.count()).select_from(Schedule).where(Schedule.workspace_id == workspace_id)))


def create(actor: Actor, *, kind: str, target_id: int, cron: str, timezone: str, name: str | None = None,
           inputs: dict[str, Any] | None = None, no_overlap: bool = False, misfire: str = "coalesce",
           grace_s: int = 300, paused: bool = False) -> ScheduleView:
    target = _target(kind)
    values = _clean({"cron": cron, "timezone": timezone, "name": name, "inputs": inputs, "no_overlap": no_overlap,
                     "misfire": misfire, "grace_s": grace_s, "paused": paused})
    crons.parse(values["cron"], values["timezone"])
    with db.transaction() as s:
        write_lock(s)  # the sidecar writes these rows too: wait for it rather than fail at once
        authorize(s, actor, target.permission)
        target_name = target.name_of(s, actor, target_id)
        if plans.billing_configured():
            limits.check(actor.workspace_id, "schedules", schedules_in(s, actor.workspace_id))
        now = utcnow()
        row = Schedule(workspace_id=actor.workspace_id, kind=kind, target_id=target_id,
                       name=values["name"] or target_name, cron=values["cron"], timezone=values["timezone"],
                       paused=values["paused"], no_overlap=values["no_overlap"], misfire=values["misfire"],
                       grace_s=values["grace_s"], inputs=values["inputs"], created_by=actor.user_id,
                       created_at=now, updated_at=now, resumed_at=now)
        s.add(row)
        s.flush()
        audit.record_for(s, actor, "schedule.create", "schedule", row.id, kind=kind, target_id=target_id,
                         cron=row.cron, timezone=row.timezone)
        return _view(s, row)


def update(actor: Actor, schedule_id: int, **changes: Any) -> ScheduleView:
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise InvalidInput(f"A schedule has no field {sorted(unknown)[0]!r}.")
    values = _clean(changes)
    with db.transaction() as s:
        write_lock(s)
        row = _load(s, actor, schedule_id)
        authorize(s, actor, _target(row.kind).permission)
        crons.parse(values.get("cron", row.cron), values.get("timezone", row.timezone))
        if "name" in values and not values["name"]:
            values["name"] = _target(row.kind).name_of(s, actor, row.target_id)
        if values.get("paused") is False and row.paused:
            row.resumed_at = utcnow()  # what it would have fired while paused is not "missed"
        if values.get("cron", row.cron) != row.cron or values.get("timezone", row.timezone) != row.timezone:
            # Misses are counted under the new expression from now on, never back into the old one's past.
            row.next_fire_time, row.resumed_at = None, utcnow()
        changed = {k: v for k, v in values.items() if getattr(row, k) != v}
        for key, value in changed.items():
            setattr(row, key, value)
        if changed:
            row.version += 1
            row.updated_at = utcnow()
            audit.record_for(s, actor, "schedule.update", "schedule", row.id, fields=sorted(changed))
        return _view(s, row)


def pause(actor: Actor, schedule_id: int) -> ScheduleView:
    return update(actor, schedule_id, paused=True)


def resume(actor: Actor, schedule_id: int) -> ScheduleView:
    return update(actor, schedule_id, paused=False)


def delete(actor: Actor, schedule_id: int) -> None:
    with db.transaction() as s:
        write_lock(s)
        row = _load(s, actor, schedule_id)
        authorize(s, actor, _target(row.kind).permission)
        audit.record_for(s, actor, "schedule.delete", "schedule", row.id, kind=row.kind, target_id=row.target_id)
        s.delete(row)


def delete_for_target(s: Session, kind: str, target_id: int) -> int:
    """In the caller's transaction, when the workflow or report itself is deleted; how many went."""
    return s.execute(sa_delete(Schedule).where(Schedule.kind == kind, Schedule.target_id == target_id)).rowcount


def get(actor: Actor, schedule_id: int) -> ScheduleView:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        return _with_results(s, [_load(s, actor, schedule_id)])[0]


def list_schedules(actor: Actor, kind: str | None = None) -> list[ScheduleView]:
    """Every schedule of the workspace (or of one kind), soonest next firing first, paused last."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        q = select(Schedule).where(Schedule.workspace_id == actor.workspace_id)
        if kind is not None:
            q = q.where(Schedule.kind == _kind(kind))
        views = _with_results(s, list(s.scalars(q)))
    far = datetime.max.replace(tzinfo=utcnow().tzinfo)
    return sorted(views, key=lambda v: (v.paused, v.next_fire_time or far, v.name.lower()))


def for_target(actor: Actor, kind: str, target_id: int) -> list[ScheduleView]:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        rows = list(s.scalars(select(Schedule).where(Schedule.workspace_id == actor.workspace_id,
                                                     Schedule.kind == _kind(kind), Schedule.target_id == target_id)
                              .order_by(Schedule.id)))
        return _with_results(s, rows)


def fires(actor: Actor, schedule_id: int, limit: int = 50) -> list[FireView]:
    """The schedule's firings, newest first, each with the status of what it started."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        row = _load(s, actor, schedule_id)
        rows = list(s.scalars(select(ScheduleFire).where(ScheduleFire.schedule_id == row.id)
                              .order_by(ScheduleFire.fire_time.desc()).limit(max(1, min(int(limit), 1000)))))
        results = _target(row.kind).results(s, rows) if rows else {}
        return [FireView(f.id, f.fire_time, f.status, f.coalesced, f.recorded_at, f.late_ms, f.run_id,
                         f.delivery_id, f.detail, results.get(f.id)) for f in rows]


def preview(cron: str, timezone: str, n: int = 3, after: datetime | None = None) -> list[datetime]:
    """The next ``n`` fire times of an expression not saved yet (for forms); ``InvalidInput`` if it is wrong."""
    return crons.next_times(cron, timezone, after or utcnow(), n)


@dataclass(frozen=True)
class SchedulerStatus:
    """Whether a sidecar is scheduling: the lease row as the sidecar last wrote it."""

    running: bool
    holder: str | None
    renewed_at: datetime | None
    expires_at: datetime | None


def scheduler_status() -> SchedulerStatus:
    """So a page can say when no sidecar is firing schedules, instead of them silently not running."""
    with db.read_session() as s:
        lease = s.get(SidecarLease, SCHEDULER_LEASE)
    if lease is None:
        return SchedulerStatus(False, None, None, None)
    return SchedulerStatus(lease.expires_at > utcnow(), lease.holder, lease.renewed_at, lease.expires_at)


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"A schedule runs a workflow or sends a report, not {kind!r}.")
    return kind


def _view(s: Session, row: Schedule) -> ScheduleView:
    return _with_results(s, [row])[0]


def _with_results(s: Session, rows: Iterable[Schedule]) -> list[ScheduleView]:
    rows = list(rows)
    if not rows:
        return []
    ids = [r.id for r in rows]
    last_ids = dict(s.execute(select(ScheduleFire.schedule_id, func.max(ScheduleFire.id))
                              .where(ScheduleFire.schedule_id.in_(ids), ScheduleFire.status != "missed")
                              .group_by(ScheduleFire.schedule_id)).all())
    last = {f.schedule_id: f for f in s.scalars(select(ScheduleFire).where(ScheduleFire.id.in_(last_ids.values())))}
    missed = dict(s.execute(select(ScheduleFire.schedule_id, func.sum(ScheduleFire.coalesced))
                            .where(ScheduleFire.schedule_id.in_(ids), ScheduleFire.status == "missed",
                                   ScheduleFire.fire_time >= utcnow() - MISSED_WINDOW)
                            .group_by(ScheduleFire.schedule_id)).all())
    results: dict[int, str] = {}
    kind_of = {r.id: r.kind for r in rows}
    for kind in set(kind_of.values()):
        fired = [f for f in last.values() if kind_of[f.schedule_id] == kind]
        if fired and kind in _registered():
            results.update(TARGETS[kind].results(s, fired))
    out = []
    for r in rows:
        f = last.get(r.id)
        next_fire = r.next_fire_time
        if next_fire is None and not r.paused:  # the sidecar has not looked yet: say what it will do
            try:
                upcoming = crons.next_times(r.cron, r.timezone, utcnow(), 1)
                next_fire = upcoming[0] if upcoming else None
            except InvalidInput:
                next_fire = None
        out.append(ScheduleView(
            r.id, r.kind, r.target_id, r.name, r.cron, r.timezone, r.paused, r.no_overlap, r.misfire, r.grace_s,
            r.inputs, r.created_by, r.version, r.created_at, r.last_fire_time, r.last_fired_at,
            None if r.paused else next_fire, f.status if f else None, results.get(f.id) if f else None,
            f.detail if f else None, int(missed.get(r.id) or 0)))
    return out


# --- workflows as targets -----------------------------------------------------------------------


def _workflow_name(s: Session, actor: Actor, workflow_id: int) -> str:
    from engine.workflows.models import Workflow

    return in_workspace(s, Workflow, workflow_id, actor.workspace_id, "workflow").name


def _run_results(s: Session, fired: list[ScheduleFire]) -> dict[int, str]:
    from engine.workflows.models import WorkflowRun

    by_run = {f.run_id: f.id for f in fired if f.run_id is not None}
    if not by_run:
        return {}
    return {by_run[run_id]: status for run_id, status in s.execute(
        select(WorkflowRun.id, WorkflowRun.status).where(WorkflowRun.id.in_(by_run)))}


register_target("workflow", Target("workflow.write", _workflow_name, _run_results))
limits.register_counter("schedules", schedules_in)

