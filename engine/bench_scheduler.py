"""Scheduler: with 10,000 schedules loaded, the sidecar's start time and memory, then the firing lag of 20 one-second probes.

* ``start_s``: from ``Sidecar.start()`` until the leader has a job for every schedule (the
  lease taken, every row read, caught up and turned into an APScheduler job);
* ``rss_mb``: the process's resident memory then (the bench's own data included);
* ``lag_p50_ms`` / ``lag_p99_ms``: 20 probe schedules (``* * * * * *``) fire for ``--seconds``
  seconds while the 10,000 hourly and daily ones are scheduled beside them (some fire at each
  minute boundary, as they would); the lag is from each nominal fire time to its workflow run
  row's ``created_at``;
* ``missed``: probe nominal times in the window without a ``fired`` row of their own (a
  coalesced late firing counts as missed here); ``doubled``: runs beyond one per probe time.

All on a fresh SQLite file (``bench.scratch_database``), data directory in a temporary folder;
two workflow workers run the probes' runs meanwhile.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta


def add_arguments(parser) -> None:
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _load(actor_ids: list, workflow_ids: dict, n: int) -> None:
    """``n`` hourly and daily schedules, straight into the table (the store's own checks would take minutes)."""
    from sqlalchemy import insert

    from engine import db
    from engine.dbtypes import utcnow
    from engine.schedules.models import Schedule

    rnd, now = random.Random(8), utcnow()
    rows = []
    for i in range(n):
        user_id, ws_id = actor_ids[i % len(actor_ids)]
        minute, hour = rnd.randrange(60), rnd.randrange(24)
        expr = f"{minute} * * * *" if i % 2 else f"{minute} {hour} * * *"
        rows.append(dict(workspace_id=ws_id, kind="workflow", target_id=rnd.choice(workflow_ids[ws_id]),
                         name=f"load {i}", cron=expr, timezone=rnd.choice(["UTC", "Europe/Paris", "America/New_York"]),
                         paused=False, no_overlap=False, misfire="coalesce", grace_s=300, created_by=user_id,
                         created_at=now, updated_at=now, version=1, resumed_at=now))
    with db.transaction() as s:
        for i in range(0, len(rows), 1000):
            s.execute(insert(Schedule), rows[i:i + 1000])


def _until(check, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return False


def _measure(probe_ids: list[int], start: datetime, end: datetime) -> dict:
    from sqlalchemy import select

    from engine import db
    from engine.schedules.models import ScheduleFire
    from engine.workflows.models import WorkflowRun

    with db.read_session() as s:
        fires = s.execute(select(ScheduleFire.schedule_id, ScheduleFire.fire_time, ScheduleFire.status,
                                 ScheduleFire.run_id).where(ScheduleFire.schedule_id.in_(probe_ids),
                                                            ScheduleFire.fire_time >= start,
                                                            ScheduleFire.fire_time <= end)).all()
        keys = {f"schedule-{sid}-" for sid in probe_ids}
        runs = [r for r in s.execute(select(WorkflowRun.id, WorkflowRun.idempotency_key, WorkflowRun.created_at)
                                     .where(WorkflowRun.trigger == "schedule")).all()
                if r.idempotency_key and r.idempotency_key[:r.idempotency_key.rfind("-") + 1] in keys]
    created = {r.id: r.created_at for r in runs}
    fired = {(f.schedule_id, f.fire_time): f for f in fires if f.status == "fired"}
    seconds = int((end - start).total_seconds()) + 1
    expected = {(sid, start + timedelta(seconds=k)) for sid in probe_ids for k in range(seconds)}
    lags = [(created[f.run_id] - t).total_seconds() * 1000 for (sid, t), f in fired.items() if f.run_id in created]
    per_key: dict[str, int] = {}
    for r in runs:
        per_key[r.idempotency_key] = per_key.get(r.idempotency_key, 0) + 1
    in_window = {f"schedule-{sid}-{t:%Y%m%dT%H%M%SZ}" for sid, t in expected}
    counted = sum(n for k, n in per_key.items() if k in in_window)
    lags.sort()
    return {
        "lag_p50_ms": round(statistics.median(lags), 1) if lags else None,
        "lag_p99_ms": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 1) if lags else None,
        "missed": len(expected - set(fired)),
        "doubled": counted - len({k for k in per_key if k in in_window}),
        "firings": len(fired),
    }


def run(args) -> dict:
    os.environ.setdefault("METERBOOK_ARGON2_PROFILE", "test")
    from engine import accounts, bench, db, migrate
    from engine.config import get_settings
    from engine.permissions import Actor
    from engine.schedules import store as schedules
    from engine.sidecar.process import Sidecar
    from engine.workflows import store

    with tempfile.TemporaryDirectory(prefix="meterbook-bench-sched-") as data, bench.scratch_database(None) as engine:
        saved = {k: os.environ.get(k) for k in ("METERBOOK_DATA_DIR",)}
        os.environ["METERBOOK_DATA_DIR"] = data
        get_settings.cache_clear()
        migrate.upgrade(engine)
        db.use_engine(engine)
        sidecar = None
        try:
            user, ws = accounts.create_first_owner("sched@example.com", "Bench", "quiet lantern copper meadow", "Bench")
            actors = [Actor(user.id, ws.id)] + [Actor(user.id, accounts.create_workspace(user.id, f"Bench {i}").id)
                                                for i in range(2)]
            spec = "name: {}\nnodes:\n  - {{id: a, type: transform, params: {{value: 1}}}}\n"
            workflow_ids = {a.workspace_id: [store.create(a, spec.format(f"wf{i}")).id for i in range(3)]
                            for a in actors}
            _load([(a.user_id, a.workspace_id) for a in actors], workflow_ids, args.schedules)

            started = time.perf_counter()
            sidecar = Sidecar(workers=2).start()
            if not _until(lambda: sidecar.reconciler is not None and sidecar.reconciler.count() >= args.schedules,
                          600):
                raise RuntimeError("The sidecar did not schedule every schedule within 10 minutes.")
            start_s = round(time.perf_counter() - started, 2)
            rss_mb = _rss_mb()

            probe = store.create(actors[0], spec.format("probe"))
            probes = [schedules.create(actors[0], kind="workflow", target_id=probe.id, cron="* * * * * *",
                                       timezone="UTC", name=f"probe {i}").id for i in range(args.probes)]
            _until(lambda: sidecar.reconciler is not None and sidecar.reconciler.count() >= args.schedules + args.probes,
                   60)
            window_start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            window_end = window_start + timedelta(seconds=args.seconds - 1)
            time.sleep(max(0.0, (window_end - datetime.now(UTC)).total_seconds() + 2.0))
            sidecar.stop(10)
            sidecar = None
            result = _measure(probes, window_start, window_end)
        finally:
            if sidecar is not None:
                sidecar.stop(10)
            db.use_engine(None)
            bench.restore_env(saved)
            get_settings.cache_clear()
    return {"bench": "scheduler", "schedules": args.schedules, "start_s": start_s, "rss_mb": rss_mb, **result,
            "probes": args.probes, "seconds": args.seconds, "database": "sqlite"}
