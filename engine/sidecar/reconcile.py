"""Keeping the leader's APScheduler jobs equal to the schedule rows, every couple of seconds.

Each tick reads ``(id, version, paused)`` of every schedule, a cheap query, and touches only
what changed: a new or edited schedule's job is added (or replaced: fixed id ``schedule-{id}``,
``replace_existing``), a paused or deleted one's removed. The UI only writes rows and never
starts a scheduler, so an edit reaches the scheduler within one tick, without a restart.

A schedule the leader takes on for the first time in its leadership is caught up first
(misfires.py), and its job starts at the first nominal time after that catch-up, so no time
falls between the two. Each job's next time is written to ``next_fire_time`` for the UI.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import bindparam, select, update

from engine import db
from engine.dbtypes import utcnow
from engine.errors import InvalidInput
from engine.schedules import cron
from engine.schedules.models import Schedule
from engine.sidecar import firing, misfires
from engine.sidecar.jobs import FIRING
from engine.sidecar.lease import Lease

log = logging.getLogger(__name__)

LEFTOVERS_EVERY_S = 30.0
_CHUNK = 500


def job_id(schedule_id: int) -> str:
    return f"schedule-{schedule_id}"


class Reconciler:
    def __init__(self, scheduler: BaseScheduler, lease: Lease):
        self.scheduler, self.lease = scheduler, lease
        self.versions: dict[int, int] = {}  # schedules with a job here, at the version the job was built from
        self.caught_up: set[int] = set()  # taken on (and caught up) in this leadership
        self.refused: dict[int, int] = {}  # versions whose cron no longer parses: not retried every tick
        self._leftovers_at = time.monotonic() + LEFTOVERS_EVERY_S

    def count(self) -> int:
        return len(self.versions)

    def tick(self) -> dict[str, int]:
        """One pass; how many jobs were added or replaced, and removed."""
        with db.read_session() as s:
            rows = s.execute(select(Schedule.id, Schedule.version, Schedule.paused)).all()
        active = {r.id: r.version for r in rows if not r.paused}
        gone = [i for i in self.versions if i not in active]
        for schedule_id in gone:
            self._remove(schedule_id)
        paused = [r.id for r in rows if r.paused]
        self.caught_up.difference_update(paused)
        changed = [i for i, v in active.items() if self.versions.get(i) != v and self.refused.get(i) != v]
        next_times = {i: None for i in gone}  # paused (a deleted row takes no write)
        for i in range(0, len(changed), _CHUNK):
            with db.read_session() as s:
                snaps = [firing.Snapshot.of(r) for r in
                         s.scalars(select(Schedule).where(Schedule.id.in_(changed[i:i + _CHUNK])))]
            for snap in snaps:
                next_times[snap.id] = self._apply(snap)
        if next_times:
            _write_next_times(next_times)
        if time.monotonic() >= self._leftovers_at:
            self._leftovers_at = time.monotonic() + LEFTOVERS_EVERY_S
            firing.finish_leftovers(self.lease, older_than_s=LEFTOVERS_EVERY_S)
        return {"changed": len(changed), "removed": len(gone)}

    def _apply(self, snap: firing.Snapshot):
        try:
            trigger = cron.parse(snap.cron, snap.timezone)
        except InvalidInput as exc:  # written before a stricter check, or by hand: say so once
            log.error("Schedule %s cannot be scheduled: %s", snap.id, exc)
            self.refused[snap.id] = snap.version
            self._remove(snap.id)
            return None
        since = utcnow()
        if snap.id not in self.caught_up:
            misfires.catch_up(snap, self.lease, upto=since, trigger=trigger)
            self.caught_up.add(snap.id)
        first = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
        if first is None:  # a cron with no future time (a year that has passed)
            self._remove(snap.id)
            return None
        self.scheduler.add_job(
            firing.on_job, trigger=trigger, args=(snap.id, self.lease, since), id=job_id(snap.id),
            name=f"schedule {snap.id}", replace_existing=True, executor=FIRING, next_run_time=first,
            misfire_grace_time=snap.grace_s, coalesce=snap.misfire == "coalesce", max_instances=1)
        self.versions[snap.id] = snap.version
        return first.astimezone(UTC)

    def _remove(self, schedule_id: int) -> None:
        self.versions.pop(schedule_id, None)
        try:
            self.scheduler.remove_job(job_id(schedule_id))
        except JobLookupError:
            pass


def _write_next_times(next_times: dict) -> None:
    t = Schedule.__table__
    stmt = update(t).where(t.c.id == bindparam("sid")).values(next_fire_time=bindparam("nft"))
    items = [{"sid": i, "nft": when} for i, when in next_times.items()]
    with db.transaction() as s:
        for i in range(0, len(items), _CHUNK):
            s.execute(stmt, items[i:i + _CHUNK])
