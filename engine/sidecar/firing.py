"""Firing one schedule at one nominal time, in the contract's three steps, so doing it twice is harmless.

1. One transaction (fenced by the scheduler lease) inserts the ``schedule_fires`` row for
   (schedule, fire time), status ``firing`` (or ``skipped`` when no-overlap finds the previous
   run unfinished), and moves the schedule's ``last_fire_time``. The unique key on (schedule,
   fire time) makes a second firing of the same moment lose here and start nothing.
2. The target starts with a key derived from the fire row: ``runs.trigger`` with an idempotency
   key, or ``deliveries.enqueue_scheduled`` (idempotent on report and fire time).
3. The row becomes ``fired`` with the run or delivery id, or ``failed`` with the target's own
   message (paused workflow, plan limit, deleted target, a member who left).

A leader killed between 1 and 3 leaves a ``firing`` row; ``finish_leftovers`` repeats 2 and 3
for it when the next leader starts (and every half minute while it leads).

``on_job`` is what the leader's APScheduler job calls: it first lets misfires.py settle the
nominal times missed since the last firing, then fires.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from engine import db
from engine.db import write_lock
from engine.dbtypes import utcnow
from engine.errors import MeterbookError
from engine.permissions import Actor
from engine.schedules.models import Schedule, ScheduleFire
from engine.sidecar.lease import Lease, NotLeader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What firing needs of a schedule row, read once."""

    id: int
    workspace_id: int
    kind: str
    target_id: int
    cron: str
    timezone: str
    paused: bool
    no_overlap: bool
    misfire: str
    grace_s: int
    inputs: dict | None
    created_by: int | None
    version: int
    resumed_at: datetime
    last_fire_time: datetime | None

    @classmethod
    def of(cls, row: Schedule) -> Snapshot:
        return cls(row.id, row.workspace_id, row.kind, row.target_id, row.cron, row.timezone, row.paused,
                   row.no_overlap, row.misfire, row.grace_s, row.inputs, row.created_by, row.version,
                   row.resumed_at, row.last_fire_time)


@dataclass(frozen=True)
class Outcome:
    status: str  # fired | failed | skipped | duplicate | gone | paused | firing (step 2 to be retried)
    fire_id: int | None = None
    run_id: int | None = None
    delivery_id: int | None = None
    detail: str | None = None


def idempotency_key(schedule_id: int, fire_time: datetime) -> str:
    return f"schedule-{schedule_id}-{fire_time.astimezone(UTC):%Y%m%dT%H%M%SZ}"


LATE_MS_MAX = 2**31 - 1  # the column is a 32-bit integer: about 24 days, after which "late" is plain enough


def late_ms(fire_time: datetime, recorded_at: datetime) -> int:
    return min(LATE_MS_MAX, max(0, round((recorded_at - fire_time).total_seconds() * 1000)))


def locked_schedule(s, schedule_id: int) -> Schedule | None:
    """The schedule row, locked for this transaction: one writer of its firings at a time."""
    write_lock(s)
    q = select(Schedule).where(Schedule.id == schedule_id)
    if s.get_bind().dialect.name != "sqlite":
        q = q.with_for_update()
    return s.scalar(q)


def load(schedule_id: int) -> Snapshot | None:
    with db.read_session() as s:
        row = s.get(Schedule, schedule_id)
        return Snapshot.of(row) if row is not None else None


def advance(row: Schedule, fire_time: datetime, now: datetime, next_time: datetime | None = None) -> None:
    if row.last_fire_time is None or row.last_fire_time < fire_time:
        row.last_fire_time = fire_time
    row.last_fired_at = now
    if next_time is not None:
        row.next_fire_time = next_time


# --- the three steps ----------------------------------------------------------------------------


def fire(schedule_id: int, fire_time: datetime, *, lease: Lease | None, coalesced: int = 1,
         next_time: datetime | None = None) -> Outcome:
    """Fire ``schedule_id`` for the nominal ``fire_time`` (steps 1–3). ``NotLeader`` when fenced out."""
    fire_time = fire_time.astimezone(UTC)
    try:
        with db.transaction() as s:
            row = locked_schedule(s, schedule_id)
            if lease is not None:
                lease.fence(s)
            if row is None:
                return Outcome("gone")
            if row.paused:
                return Outcome("paused")
            now = utcnow()
            busy = _unfinished_previous(s, row, fire_time) if row.no_overlap else None
            fire_row = ScheduleFire(schedule_id=row.id, workspace_id=row.workspace_id, fire_time=fire_time,
                                    status="skipped" if busy else "firing", coalesced=coalesced, recorded_at=now,
                                    late_ms=late_ms(fire_time, now), detail=busy)
            s.add(fire_row)
            advance(row, fire_time, now, next_time)
            s.flush()
            snap, fire_id = Snapshot.of(row), fire_row.id
    except IntegrityError:  # this moment was fired already (another thread, sidecar or a restart)
        return Outcome("duplicate")
    if busy:
        return Outcome("skipped", fire_id, detail=busy)
    return _start_and_record(snap, fire_id, fire_time)


def _start_and_record(snap: Snapshot, fire_id: int, fire_time: datetime) -> Outcome:
    """Steps 2 and 3. A database error leaves the row ``firing``, for ``finish_leftovers`` to retry."""
    try:
        run_id, delivery_id = start_target(snap, fire_time)
    except MeterbookError as exc:
        _record(fire_id, status="failed", detail=str(exc)[:2000])
        return Outcome("failed", fire_id, detail=str(exc))
    _record(fire_id, status="fired", run_id=run_id, delivery_id=delivery_id)
    return Outcome("fired", fire_id, run_id=run_id, delivery_id=delivery_id)


def _record(fire_id: int, **values: Any) -> None:
    with db.transaction() as s:
        s.execute(update(ScheduleFire).where(ScheduleFire.id == fire_id, ScheduleFire.status == "firing")
                  .values(**values))


def start_target(snap: Snapshot, fire_time: datetime) -> tuple[int | None, int | None]:
    """Start the run or queue the delivery; ``MeterbookError`` with the target's reason when it refuses."""
    if snap.kind == "workflow":
        from engine.workflows import runs

        if snap.created_by is None:
            raise MeterbookError("The member who made this schedule has left the workspace; edit or re-create "
                                 "the schedule to run it as someone who is still a member.")
        run = runs.trigger(Actor(snap.created_by, snap.workspace_id), snap.target_id, snap.inputs or None,
                           trigger="schedule", idempotency_key=idempotency_key(snap.id, fire_time))
        return run.id, None
    if snap.kind == "report":
        from engine.reports import deliveries

        return None, deliveries.enqueue_scheduled(snap.target_id, fire_time)
    raise MeterbookError(f"Unknown schedule kind {snap.kind!r}.")


def _unfinished_previous(s, row: Schedule, fire_time: datetime) -> str | None:
    """No-overlap: why this firing is skipped (the previous one's run is still going), or None."""
    prev = s.execute(select(ScheduleFire.run_id, ScheduleFire.delivery_id, ScheduleFire.fire_time).where(
        ScheduleFire.schedule_id == row.id, ScheduleFire.fire_time < fire_time, ScheduleFire.status == "fired"
    ).order_by(ScheduleFire.fire_time.desc()).limit(1)).first()
    if prev is None:
        return None
    if row.kind == "workflow" and prev.run_id is not None:
        from engine.workflows.models import FINISHED, WorkflowRun

        status = s.scalar(select(WorkflowRun.status).where(WorkflowRun.id == prev.run_id))
        if status is not None and status not in FINISHED:
            return (f"Skipped: the run of {prev.fire_time:%Y-%m-%d %H:%M:%S} UTC (#{prev.run_id}) was still "
                    f"{status} (no overlap).")
    if row.kind == "report" and prev.delivery_id is not None:
        from engine.reports import deliveries

        if deliveries.is_unfinished(prev.delivery_id):
            return (f"Skipped: the delivery of {prev.fire_time:%Y-%m-%d %H:%M:%S} UTC (#{prev.delivery_id}) "
                    "was still unfinished (no overlap).")
    return None


def finish_leftovers(lease: Lease | None, *, older_than_s: float = 0.0) -> int:
    """Repeat steps 2–3 for ``firing`` rows a killed leader (or a database hiccup) left; how many."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with db.read_session() as s:
        rows = s.execute(select(ScheduleFire.id, ScheduleFire.schedule_id, ScheduleFire.fire_time).where(
            ScheduleFire.status == "firing", ScheduleFire.recorded_at <= cutoff).order_by(ScheduleFire.id)).all()
    done = 0
    for fire_id, schedule_id, fire_time in rows:
        if lease is not None and not lease.held():
            raise NotLeader(lease.name)
        snap = load(schedule_id)
        if snap is None:
            continue
        try:
            _start_and_record(snap, fire_id, fire_time)
            done += 1
        except Exception:
            log.exception("Finishing the firing %s of schedule %s failed; trying again later", fire_id, schedule_id)
    if done:
        log.info("Finished %d firings a previous scheduler left half done", done)
    return done


# --- the APScheduler job ------------------------------------------------------------------------


def on_job(schedule_id: int, lease: Lease, since: datetime, run_times: list[datetime] | None = None) -> None:
    """The leader's job for one schedule: settle what was missed since the last firing, then fire."""
    from engine.sidecar import misfires

    if not lease.held() or not run_times:
        return
    try:
        misfires.settle(schedule_id, lease, nominal=max(run_times), since=since)
    except NotLeader:
        log.info("Not firing schedule %s: this sidecar is no longer the scheduler", schedule_id)
