"""A sidecar in this process, on both databases: it takes the lease, sees schedules created, edited,
paused, resumed and deleted within a few ticks, fires and works them, and hands over on stop."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from engine import db
from engine.dbtypes import utcnow
from engine.schedules import store as schedules
from engine.schedules.models import Schedule, ScheduleFire, SidecarLease
from engine.sidecar.lease import Lease
from engine.sidecar.process import Sidecar
from engine.sidecar.reconcile import Reconciler
from engine.sidecar import jobs
from engine.workflows import store
from engine.workflows.models import WorkflowRun
from tests.factories import owner
from tests.waiting import until


@pytest.fixture
def ws(database, data_dir):
    return owner()




def workflow(actor, name="every"):
    return store.create(actor, f"name: {name}\nnodes:\n  - {{id: a, type: transform, params: {{value: 1}}}}\n")


def fired(schedule_id):
    with db.read_session() as s:
        return s.scalars(select(ScheduleFire).where(ScheduleFire.schedule_id == schedule_id,
                                                    ScheduleFire.status == "fired")).all()


def row(schedule_id):
    with db.read_session() as s:
        return s.get(Schedule, schedule_id)


def test_the_reconciler_replaces_only_what_changed(ws):
    wf = workflow(ws)
    ids = [schedules.create(ws, kind="workflow", target_id=wf.id, cron=f"{m} 9 * * *", timezone="Europe/Paris").id
           for m in range(3)]
    lease = Lease("r", 60)
    lease.acquire()
    scheduler, _pools = jobs.build_scheduler()
    scheduler.start(paused=True)
    try:
        rec = Reconciler(scheduler, lease)
        assert rec.tick() == {"changed": 3, "removed": 0}
        assert rec.tick() == {"changed": 0, "removed": 0}  # the cheap read only
        assert all(row(i).next_fire_time is not None for i in ids)
        schedules.update(ws, ids[0], cron="0 10 * * *")
        schedules.pause(ws, ids[1])
        schedules.delete(ws, ids[2])
        assert rec.tick() == {"changed": 1, "removed": 2}
        assert [j.id for j in scheduler.get_jobs()] == [f"schedule-{ids[0]}"]
        assert scheduler.get_job(f"schedule-{ids[0]}").next_run_time.astimezone().hour is not None
        assert row(ids[0]).next_fire_time.minute == 0 and row(ids[1]).next_fire_time is None
        schedules.resume(ws, ids[1])
        assert rec.tick()["changed"] == 1 and rec.count() == 2
    finally:
        scheduler.shutdown(wait=False)


def test_a_running_sidecar_follows_the_schedule_rows_and_hands_over_when_stopped(ws):
    sidecar = Sidecar(workers=1, lease_s=5, reconcile_s=0.3).start()
    try:
        until(lambda: sidecar.health()["leader"])
        sid = schedules.create(ws, kind="workflow", target_id=workflow(ws).id, cron="* * * * * *",
                               timezone="UTC").id
        until(lambda: len(fired(sid)) >= 3)  # created: fires every second, within a few ticks
        with db.read_session() as s:
            until(lambda: s.scalar(select(WorkflowRun.status).where(WorkflowRun.id == fired(sid)[0].run_id))
                  == "succeeded")  # …and the sidecar's worker ran it
        health = sidecar.health()
        assert health["ok"] and health["leader"] and health["schedules"] == 1 and health["workers"] == 1

        schedules.update(ws, sid, cron="0 0 1 1 *")  # edited: once a year from now on
        until(lambda: row(sid).next_fire_time is not None and row(sid).next_fire_time.month == 1)
        count = len(fired(sid))
        time.sleep(1.5)
        assert len(fired(sid)) == count

        schedules.update(ws, sid, cron="* * * * * *")
        until(lambda: len(fired(sid)) > count)
        schedules.pause(ws, sid)
        until(lambda: row(sid).next_fire_time is None)
        count = len(fired(sid))
        time.sleep(1.5)
        assert len(fired(sid)) <= count + 1  # at most the one already in flight when it was paused

        schedules.delete(ws, sid)
        until(lambda: sidecar.health()["schedules"] == 0)
    finally:
        sidecar.stop(5)
    with db.read_session() as s:
        lease = s.scalar(select(SidecarLease))
    assert lease.expires_at <= utcnow()  # released: a successor takes over at once
    assert not sidecar.health()["leader"]
