"""Nominal fire times that passed without a firing: run them once late, or record them as missed.

Whenever the leader fires a schedule (``settle``) or takes a schedule on, at its start or at a
takeover after a crash (``catch_up``), it compares the schedule's nominal times with its
``last_fire_time`` (or ``resumed_at``: nothing before a creation or a resume is missed). Of
the times in between:

* those inside the grace window (``grace_s`` before now), with the policy ``coalesce``, become
  ONE firing at the latest of them, its row saying how many it stands for (``coalesced``). When
  the job of an on-time firing finds earlier ones, that firing is the one they join;
* the others, and with the policy ``skip`` every one but the on-time firing, are written as
  ``missed`` rows, so the Schedules page shows them. At most ``MISS_ROWS`` rows per schedule
  at once: the newest, plus one row standing for all the earlier ones.

APScheduler's jobs are added with the same ``misfire_grace_time`` and ``coalesce``, but the
database decides: a job APScheduler skipped (still running, a busy pool) is caught up here at
its next firing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from engine import db
from engine.dbtypes import utcnow
from engine.schedules import cron
from engine.schedules.models import ScheduleFire
from engine.sidecar import firing
from engine.sidecar.firing import Outcome, Snapshot
from engine.sidecar.lease import Lease

log = logging.getLogger(__name__)

MISS_ROWS = 100
COUNT_LIMIT = 100_000  # nominal times counted one by one: past this the summary says "more than"
_TICK = timedelta(microseconds=1)


def base_of(snap: Snapshot, since: datetime | None = None) -> datetime:
    """The moment after which a nominal time without a row is missed."""
    base = max(snap.last_fire_time or snap.resumed_at, snap.resumed_at)
    return max(base, since) if since is not None else base


def settle(schedule_id: int, lease: Lease | None, *, nominal: datetime, since: datetime | None = None,
           now: datetime | None = None) -> Outcome | None:
    """The job at ``nominal``: what was missed before it, then the firing itself."""
    snap = firing.load(schedule_id)
    if snap is None or snap.paused:
        return None
    nominal = nominal.astimezone(UTC)
    trigger = cron.parse(snap.cron, snap.timezone)
    nxt = trigger.get_next_fire_time(None, nominal + _TICK)
    next_time = nxt.astimezone(UTC) if nxt is not None else None
    base, now = base_of(snap, since), now or utcnow()
    first = trigger.get_next_fire_time(None, base + _TICK)
    on_time = (now - nominal).total_seconds() <= snap.grace_s
    if on_time and (nominal <= base or first is None or first.astimezone(UTC) >= nominal):
        # nothing between the last firing and this one (or this one is written already: harmless)
        return firing.fire(schedule_id, nominal, lease=lease, next_time=next_time)
    return _resolve(snap, trigger, lease, base, nominal, now, on_time=nominal, next_time=next_time)


def catch_up(snap: Snapshot, lease: Lease | None, *, upto: datetime, trigger=None) -> Outcome | None:
    """A schedule taken on by a (new) leader: settle the nominal times in (last firing, ``upto``]."""
    if snap.paused:
        return None
    trigger = trigger or cron.parse(snap.cron, snap.timezone)
    base = base_of(snap)
    first = trigger.get_next_fire_time(None, base + _TICK)
    if first is None or first.astimezone(UTC) > upto:
        return None
    nxt = trigger.get_next_fire_time(None, upto + _TICK)
    return _resolve(snap, trigger, lease, base, upto, utcnow(), on_time=None,
                    next_time=nxt.astimezone(UTC) if nxt is not None else None)


def _resolve(snap: Snapshot, trigger, lease: Lease | None, base: datetime, upto: datetime, now: datetime, *,
             on_time: datetime | None, next_time: datetime | None) -> Outcome | None:
    boundary = now - timedelta(seconds=snap.grace_s)
    old = cron.times_between(trigger, base, min(boundary, upto), COUNT_LIMIT + 1) if base < boundary else []
    recent = cron.times_between(trigger, max(base, boundary), upto, COUNT_LIMIT)
    truncated = len(old) > COUNT_LIMIT
    old = old[:COUNT_LIMIT]
    if snap.misfire == "coalesce":
        skipped, to_fire = [], recent
    else:
        skipped = [t for t in recent if t != on_time]
        to_fire = [on_time] if on_time in recent else []
    if old:
        record_missed(snap, lease, old, truncated=truncated, reason=(
            f"the scheduler was not running then, and it is more than the schedule's grace window "
            f"({snap.grace_s} s) ago"))
    if skipped:
        record_missed(snap, lease, skipped, reason="not run late, as the schedule's misfire policy is skip")
    if not to_fire:
        return None
    if len(to_fire) > 1:
        log.info("Schedule %s: %d firings since %s run once, late, as the firing of %s", snap.id, len(to_fire),
                 base, to_fire[-1])
    return firing.fire(snap.id, to_fire[-1], lease=lease, coalesced=len(to_fire), next_time=next_time)


def record_missed(snap: Snapshot, lease: Lease | None, times: list[datetime], *, truncated: bool = False,
                  reason: str) -> int:
    """``missed`` rows for ``times`` (oldest first): the newest ``MISS_ROWS`` one by one, one row for the rest."""
    if not times:
        return 0
    single, rest = times[-MISS_ROWS:], times[:-MISS_ROWS]
    rows = [(t, 1, f"Missed: {reason}.") for t in single]
    if rest:
        more = "more than " if truncated else ""
        rows.insert(0, (rest[-1], len(rest), f"Missed {more}{len(rest):,} firings from {rest[0]:%Y-%m-%d %H:%M:%S} "
                                             f"to {rest[-1]:%Y-%m-%d %H:%M:%S} UTC: {reason}."))
    with db.transaction() as s:
        row = firing.locked_schedule(s, snap.id)
        if lease is not None:
            lease.fence(s)
        if row is None:
            return 0
        wanted = [t for t, _, _ in rows]
        have = set()
        for i in range(0, len(wanted), 500):
            have.update(s.scalars(select(ScheduleFire.fire_time).where(
                ScheduleFire.schedule_id == snap.id, ScheduleFire.fire_time.in_(wanted[i:i + 500]))))
        now = utcnow()
        new = [ScheduleFire(schedule_id=snap.id, workspace_id=snap.workspace_id, fire_time=t, status="missed",
                            coalesced=n, recorded_at=now, late_ms=firing.late_ms(t, now), detail=detail)
               for t, n, detail in rows if t not in have]
        s.add_all(new)
        firing.advance(row, times[-1], now)
    if new:
        log.warning("Schedule %s: %d firings recorded as missed (%s)", snap.id, sum(r.coalesced for r in new), reason)
    return len(new)
