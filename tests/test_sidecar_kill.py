"""Real sidecar processes (``python -m engine sidecar``) killed with SIGKILL: on restart nothing fires
twice, nothing is lost, and the firings missed inside the grace window run once; two sidecars on one
PostgreSQL fire every time exactly once and the survivor takes over when the leader is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from engine import db, migrate
from engine.config import PROJECT_ROOT
from engine.dbtypes import utcnow
from engine.schedules import store as schedules
from engine.schedules.models import ScheduleFire, SidecarLease
from engine.workflows import store
from engine.workflows.models import WorkflowRun
from tests.conftest import POSTGRES_URL
from tests.factories import owner
from tests.waiting import until

LEASE_S = 4


def start_sidecar(url: str, data_dir) -> subprocess.Popen:
    env = dict(os.environ, METERBOOK_DATABASE_URL=url, METERBOOK_DATA_DIR=str(data_dir),
               METERBOOK_SIDECAR_LEASE_SECONDS=str(LEASE_S))
    return subprocess.Popen([sys.executable, "-m", "engine", "sidecar", "--no-http", "--workers", "1"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()




def rows(schedule_ids):
    with db.read_session() as s:
        return s.scalars(select(ScheduleFire).where(ScheduleFire.schedule_id.in_(schedule_ids))
                         .order_by(ScheduleFire.schedule_id, ScheduleFire.fire_time)).all()


def every_second_once(schedule_ids) -> list[ScheduleFire]:
    """Each schedule's nominal seconds, from its first firing to its last, each accounted for once."""
    all_rows = rows(schedule_ids)
    for sid in schedule_ids:
        mine = [r for r in all_rows if r.schedule_id == sid]
        assert mine, f"schedule {sid} never fired"
        assert all(r.status == "fired" for r in mine), [(r.fire_time, r.status, r.detail) for r in mine]
        span = int((mine[-1].fire_time - mine[0].fire_time).total_seconds()) + 1
        # the first row may stand for seconds before it (a catch-up); from then on, none lost or doubled
        assert sum(r.coalesced for r in mine[1:]) == span - 1
        for a, b in zip(mine, mine[1:]):
            assert b.fire_time - a.fire_time == timedelta(seconds=b.coalesced)
    with db.read_session() as s:
        schedule_runs = s.scalars(select(WorkflowRun).where(WorkflowRun.trigger == "schedule")).all()
    assert sorted(r.id for r in schedule_runs) == sorted(r.run_id for r in all_rows)  # one run per firing
    return all_rows


def setup_schedules(n: int) -> list[int]:
    actor = owner()
    wf = store.create(actor, "name: tick\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n")
    return [schedules.create(actor, kind="workflow", target_id=wf.id, cron="* * * * * *", timezone="UTC").id
            for _ in range(n)]


def test_sigkill_between_firings_and_restart_loses_nothing_and_doubles_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/kill.db"
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    db.use_engine(engine)
    procs = []
    try:
        [sid] = setup_schedules(1)
        procs.append(start_sidecar(url, tmp_path))
        until(lambda: len(rows([sid])) >= 3, timeout=60)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        before = rows([sid])
        time.sleep(2)  # firings are missed while nothing runs
        procs.append(start_sidecar(url, tmp_path))
        until(lambda: len(rows([sid])) >= len(before) + 3, timeout=60)
        stop(procs[1])  # SIGTERM: a graceful stop releases the lease
        assert procs[1].returncode == 0
        assert lease_row().expires_at <= utcnow()
        after = every_second_once([sid])
        late = [r for r in after[len(before):] if r.coalesced > 1]
        assert len(late) == 1  # the misses inside the grace window ran once, as one late run
        assert late[0].fire_time > before[-1].fire_time
    finally:
        for p in procs:
            stop(p, signal.SIGKILL)
        db.use_engine(None)
        engine.dispose()


@pytest.fixture
def postgres_url():
    if not POSTGRES_URL:
        pytest.skip("set METERBOOK_TEST_POSTGRES_URL to run two sidecars against PostgreSQL")
    schema = f"mbsidecar_{os.getpid()}"
    admin = db.make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(db.normalize_url(POSTGRES_URL)).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    admin.dispose()


def lease_row():
    with db.read_session() as s:
        return s.scalar(select(SidecarLease))


def test_two_sidecars_on_postgresql_fire_every_time_once_and_the_survivor_takes_over(postgres_url, tmp_path):
    engine = db.make_engine(postgres_url)
    migrate.upgrade(engine)
    db.use_engine(engine)
    procs = []
    try:
        ids = setup_schedules(5)
        procs = [start_sidecar(postgres_url, tmp_path / f"s{i}") for i in range(2)]
        until(lambda: lease_row() is not None and len(rows(ids)) >= 5 * 25, timeout=90)  # ~25 s of firings
        leader = lease_row()
        [victim] = [p for p in procs if f":{p.pid}:" in leader.holder]
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        taken = until(lambda: (r := lease_row()).holder != leader.holder and r, timeout=60)
        # Not before the dead leader's lease ran out, and soon after: within the lease time of the kill
        # plus the follower's one-second look.
        assert taken.acquired_at >= leader.expires_at - timedelta(seconds=0.5)
        assert taken.acquired_at.timestamp() - killed_at <= LEASE_S + 3
        assert taken.generation == leader.generation + 1
        count = len(rows(ids))
        until(lambda: len(rows(ids)) >= count + 5 * 25, timeout=90)  # ~25 s more under the survivor
        for p in procs:
            stop(p)
        every_second_once(ids)
    finally:
        for p in procs:
            stop(p, signal.SIGKILL)
        db.use_engine(None)
        engine.dispose()
