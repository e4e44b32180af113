"""Firing on both databases: one row per (schedule, fire time), duplicate firings harmless, refusals
recorded as failed, no-overlap skips, misfires coalesced inside the grace window or recorded as missed,
and daylight-saving days firing once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from engine import db
from engine.dbtypes import utcnow
from engine.schedules import cron, store as schedules
from engine.schedules.models import Schedule, ScheduleFire, SidecarLease
from engine.sidecar import firing, misfires
from engine.sidecar.lease import Lease, NotLeader
from engine.workflows import store, worker
from engine.workflows.models import WorkflowRun
from tests.factories import owner

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def ws(database, data_dir):
    return owner()


@pytest.fixture
def lease(ws):
    lease = Lease("test-leader", 60)
    assert lease.acquire()
    return lease


def workflow(actor, name="daily"):
    return store.create(actor, f"name: {name}\nnodes:\n  - {{id: a, type: transform, params: {{value: 1}}}}\n")


def schedule(actor, wf, expr="0 9 * * *", **kw):
    return schedules.create(actor, kind="workflow", target_id=wf.id, cron=expr, timezone=kw.pop("timezone", "UTC"),
                            **kw).id


def set_row(schedule_id, **values):
    with db.transaction() as s:
        s.execute(update(Schedule).where(Schedule.id == schedule_id).values(**values))


def fires(schedule_id):
    with db.read_session() as s:
        return s.scalars(select(ScheduleFire).where(ScheduleFire.schedule_id == schedule_id)
                         .order_by(ScheduleFire.fire_time)).all()


def schedule_runs():
    with db.read_session() as s:
        return s.scalars(select(WorkflowRun).where(WorkflowRun.trigger == "schedule")).all()


def test_a_firing_writes_its_row_then_the_run_and_a_second_firing_of_the_same_time_does_nothing(ws, lease):
    sid = schedule(ws, workflow(ws))
    first = firing.fire(sid, T0, lease=lease)
    assert first.status == "fired" and first.run_id is not None
    assert firing.fire(sid, T0, lease=lease).status == "duplicate"
    [row] = fires(sid)
    assert (row.status, row.run_id, row.fire_time, row.coalesced) == ("fired", first.run_id, T0, 1)
    assert row.late_ms > 0  # recorded now, for a nominal time in the past
    [run] = schedule_runs()
    assert run.idempotency_key == f"schedule-{sid}-20261130T090000Z"
    with db.read_session() as s:
        assert s.get(Schedule, sid).last_fire_time == T0


def test_two_threads_firing_the_same_time_at_once_start_one_run(ws, lease):
    sid = schedule(ws, workflow(ws))
    start, outcomes = threading.Barrier(2), []

    def go():
        start.wait()
        outcomes.append(firing.fire(sid, T0, lease=lease).status)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["duplicate", "fired"]
    assert len(fires(sid)) == 1 and len(schedule_runs()) == 1


def test_a_fenced_out_leader_writes_nothing(ws, lease):
    sid = schedule(ws, workflow(ws))
    with db.transaction() as s:
        s.execute(update(SidecarLease).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert Lease("successor", 60).acquire()
    with pytest.raises(NotLeader):
        firing.fire(sid, T0, lease=lease)
    assert fires(sid) == [] and schedule_runs() == []


def test_a_target_that_refuses_is_a_failed_firing_with_its_reason(ws, lease):
    wf = workflow(ws)
    sid = schedule(ws, wf)
    store.set_active(ws, wf.id, False)
    out = firing.fire(sid, T0, lease=lease)
    assert out.status == "failed" and "paused" in out.detail
    [row] = fires(sid)
    assert row.status == "failed" and "paused" in row.detail and row.run_id is None


def test_no_overlap_skips_while_the_previous_run_is_unfinished(ws, lease):
    sid = schedule(ws, workflow(ws), "0 * * * *", no_overlap=True)
    assert firing.fire(sid, T0, lease=lease).status == "fired"
    skipped = firing.fire(sid, T0 + timedelta(hours=1), lease=lease)
    assert skipped.status == "skipped" and "still queued" in skipped.detail
    worker.work_once("w")  # the first run finishes
    assert firing.fire(sid, T0 + timedelta(hours=2), lease=lease).status == "fired"
    assert [f.status for f in fires(sid)] == ["fired", "skipped", "fired"]
    assert len(schedule_runs()) == 2


def test_a_leftover_firing_row_is_finished_once(ws, lease):
    sid = schedule(ws, workflow(ws))
    with db.transaction() as s:  # a leader killed between step 1 and step 2
        s.add(ScheduleFire(schedule_id=sid, workspace_id=ws.workspace_id, fire_time=T0, status="firing"))
    assert firing.finish_leftovers(lease) == 1
    assert firing.finish_leftovers(lease) == 0
    [row] = fires(sid)
    assert row.status == "fired" and len(schedule_runs()) == 1


def test_misses_inside_the_grace_window_become_one_late_run(ws, lease):
    sid = schedule(ws, workflow(ws), "*/10 * * * * *")  # every 10 s
    now = utcnow()
    set_row(sid, resumed_at=now - timedelta(seconds=125))  # the scheduler was down for two minutes
    out = misfires.catch_up(firing.load(sid), lease, upto=now)
    assert out.status == "fired"
    [row] = fires(sid)
    assert row.coalesced in (12, 13) and row.status == "fired"
    # The latest missed time (within the 10 s before `now`), lateness measured from it to the firing.
    fire_time = row.fire_time.replace(tzinfo=UTC) if row.fire_time.tzinfo is None else row.fire_time
    assert now - timedelta(seconds=10) < fire_time <= now
    assert row.late_ms == firing.late_ms(fire_time, row.recorded_at)
    assert len(schedule_runs()) == 1
    assert misfires.catch_up(firing.load(sid), lease, upto=now) is None  # settled: nothing more


def test_misses_outside_the_grace_window_are_recorded_and_capped(ws, lease):
    sid = schedule(ws, workflow(ws), "* * * * * *", grace_s=60)
    now = utcnow().replace(microsecond=0)
    set_row(sid, resumed_at=now - timedelta(seconds=600))
    misfires.catch_up(firing.load(sid), lease, upto=now)
    rows = fires(sid)
    missed = [r for r in rows if r.status == "missed"]
    fired = [r for r in rows if r.status == "fired"]
    assert len(missed) == misfires.MISS_ROWS + 1  # the newest one by one, one row for the earlier ones
    assert missed[0].coalesced > 1 and "firings from" in missed[0].detail
    assert len(fired) == 1 and len(schedule_runs()) == 1
    total = sum(r.coalesced for r in rows)
    assert total == 600  # every nominal second accounted for exactly once
    assert all(r.status != "missed" or (now - r.fire_time).total_seconds() >= 59 for r in rows)


def test_with_the_skip_policy_misses_are_recorded_and_nothing_runs_late(ws, lease):
    sid = schedule(ws, workflow(ws), "*/10 * * * * *", misfire="skip")
    now = utcnow()
    set_row(sid, resumed_at=now - timedelta(seconds=65))
    assert misfires.catch_up(firing.load(sid), lease, upto=now) is None
    assert {r.status for r in fires(sid)} == {"missed"} and len(fires(sid)) in (6, 7)
    assert schedule_runs() == []


def test_an_on_time_job_joins_the_misses_inside_grace_into_its_firing(ws, lease):
    sid = schedule(ws, workflow(ws), "*/10 * * * * *")
    now = utcnow()
    nominal = now.replace(second=now.second // 10 * 10, microsecond=0)
    set_row(sid, last_fire_time=nominal - timedelta(seconds=40), resumed_at=nominal - timedelta(hours=1))
    out = misfires.settle(sid, lease, nominal=nominal)
    assert out.status == "fired"
    [row] = [r for r in fires(sid)]
    assert row.fire_time == nominal and row.coalesced == 4  # three missed + this one, one run
    assert len(schedule_runs()) == 1


def test_a_paris_0230_daily_schedule_fires_once_a_day_across_both_clock_changes(ws, lease):
    # The trigger itself: 02:30 does not exist on 29 March (fires at 01:30 UTC, as cron does) and
    # happens twice on 25 October (fires at the first, 00:30 UTC, only).
    march = cron.next_times("30 2 * * *", "Europe/Paris", datetime(2026, 3, 27, 12, tzinfo=UTC), 4)
    assert [t.strftime("%m-%d %H:%M") for t in march] == ["03-28 01:30", "03-29 01:30", "03-30 00:30",
                                                           "03-31 00:30"]
    october = cron.next_times("30 2 * * *", "Europe/Paris", datetime(2026, 10, 23, 12, tzinfo=UTC), 4)
    assert [t.strftime("%m-%d %H:%M") for t in october] == ["10-24 00:30", "10-25 00:30", "10-26 01:30",
                                                             "10-27 01:30"]
    # The sidecar's own accounting over those days: one row per day, none doubled or lost.
    for start, days in ((datetime(2026, 3, 27, 12, tzinfo=UTC), march), (datetime(2026, 10, 23, 12, tzinfo=UTC),
                                                                            october)):
        sid = schedule(ws, workflow(ws, f"paris{start.month}"), "30 2 * * *", timezone="Europe/Paris",
                       misfire="skip")
        set_row(sid, resumed_at=start)
        misfires.catch_up(firing.load(sid), lease, upto=days[-1] + timedelta(minutes=1))
        assert [r.fire_time for r in fires(sid)] == days


def test_a_job_run_later_than_the_grace_window_is_recorded_as_missed_not_run(ws, lease):
    sid = schedule(ws, workflow(ws), "0 * * * *", grace_s=60)  # hourly; the machine slept through one
    now = utcnow()
    nominal = now.replace(minute=0, second=0, microsecond=0)
    set_row(sid, resumed_at=nominal - timedelta(minutes=30))
    assert misfires.settle(sid, lease, nominal=nominal, now=nominal + timedelta(minutes=5)) is None
    [row] = fires(sid)
    assert row.status == "missed" and row.fire_time == nominal and "grace window (60 s)" in row.detail
    assert schedule_runs() == []
