"""Workers: claim a queued run (or one whose worker's lease expired) and execute it.

The executor does not care which process hosts it: ``work(worker_id, stop_event)`` is a loop
any thread can run (``python -m engine up`` starts one; the sidecar will run more), and
``work_once`` runs what is queued and returns, for tests, benches and the CLI. Claims lock the
row with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of sidecars share one queue;
SQLite, with one writer at a time, uses a conditional UPDATE.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta

from sqlalchemy import func, or_, select, update

from engine import db
from engine.dbtypes import utcnow
from engine.permissions import Actor
from engine.workflows import spec as specs
from engine.workflows.checkpoints import DbRun, LeaseLost
from engine.workflows.executor import RunExecution
from engine.workflows.models import WorkflowRun, WorkflowVersion
from engine.workflows.nodes import NodeFailed

log = logging.getLogger(__name__)

LEASE_S = 30.0


def _claimable(now):
    return or_(WorkflowRun.status == "queued",
               (WorkflowRun.status == "running") & (WorkflowRun.lease_expires_at < now))


def claim(worker_id: str, *, lease_s: float = LEASE_S, run_id: int | None = None) -> int | None:
    """Take one queued run (or one whose worker's lease expired); the id, or None when there is none."""
    if db.is_sqlite():
        return _claim_sqlite(worker_id, lease_s, run_id)
    return _claim_locked(worker_id, lease_s, run_id)


def _take(s, run_id: int, worker_id: str, lease_s: float, now) -> int:
    # The condition is checked again in the UPDATE itself: of two workers, one wins.
    return s.execute(update(WorkflowRun).where(WorkflowRun.id == run_id, _claimable(now)).values(
        status="running", lease_owner=worker_id, lease_expires_at=now + timedelta(seconds=lease_s),
        claims=WorkflowRun.claims + 1, started_at=func.coalesce(WorkflowRun.started_at, now))).rowcount


def _claim_locked(worker_id: str, lease_s: float, run_id: int | None) -> int | None:
    """PostgreSQL: lock the oldest claimable row, skipping rows other workers have locked, and take it
    in the same transaction, so workers polling together each get a different run at the first try."""
    now = utcnow()
    q = select(WorkflowRun.id).where(_claimable(now))
    q = q.where(WorkflowRun.id == run_id) if run_id is not None else q.order_by(WorkflowRun.id)
    with db.transaction() as s:
        candidate = s.scalar(q.limit(1).with_for_update(skip_locked=True))
        if candidate is not None and _take(s, candidate, worker_id, lease_s, now):
            return candidate
    return None


def _claim_sqlite(worker_id: str, lease_s: float, run_id: int | None) -> int | None:
    """SQLite has one writer at a time and no row locks: a conditional UPDATE on one of the oldest."""
    now = utcnow()
    with db.read_session() as s:
        q = select(WorkflowRun.id).where(_claimable(now)).order_by(WorkflowRun.id).limit(8)
        candidates = [run_id] if run_id is not None else list(s.scalars(q))
    if len(candidates) > 1:
        # Workers polling together would all race for the oldest run; each tries the few oldest
        # in its own order instead, so most claims succeed at the first UPDATE.
        random.shuffle(candidates)
    for candidate in candidates:
        with db.transaction() as s:
            if _take(s, candidate, worker_id, lease_s, now):
                return candidate
    return None


def execute(run_id: int, worker_id: str, *, lease_s: float = LEASE_S, stop: threading.Event | None = None) -> str:
    """Run a claimed run to its end (or pause); returns its status, or "lost" if another worker took it."""
    with db.read_session() as s:
        run = s.get(WorkflowRun, run_id)
        spec = specs.from_stored(s.get(WorkflowVersion, run.version_id).spec)
        deadline = (run.started_at or utcnow()).timestamp() + spec.timeout_s
        actor = Actor(run.user_id or 0, run.workspace_id)
        info = {"id": run.id, "claims": run.claims, "trigger": run.trigger}
        inputs, project_id = dict(run.inputs or {}), run.project_id
    store = DbRun(run_id, worker_id, lease_s)
    try:
        return RunExecution(store, spec, inputs=inputs, actor=actor, project_id=project_id, run_info=info,
                            stop=stop, deadline=deadline,
                            subrun=lambda node_id, name, sub_inputs: _subrun(run_id, worker_id, lease_s, node_id,
                                                                             name, sub_inputs, stop)).run()
    except LeaseLost:
        log.warning("worker %s lost the lease of run %s; another worker carries on", worker_id, run_id)
        return "lost"


def _subrun(parent_id: int, worker_id: str, lease_s: float, node_id: str, name: str, inputs: dict,
            stop: threading.Event | None) -> dict:
    from engine.workflows import runs

    child = runs.start_child(parent_id, node_id, name, inputs)
    while True:
        status = runs.status_of(child)
        if status == "succeeded":
            return runs.outputs_of(child) or {}
        if status in ("failed", "cancelled"):
            raise NodeFailed(f"The sub-workflow {name!r} {status}: {runs.error_of(child)}", retry=False)
        if claim(worker_id, lease_s=lease_s, run_id=child):
            execute(child, worker_id, lease_s=lease_s, stop=stop)
        elif stop is not None and stop.wait(0.2):
            raise NodeFailed("The worker is stopping.")
        else:
            time.sleep(0.2)


def work_once(worker_id: str, *, lease_s: float = LEASE_S, stop: threading.Event | None = None,
              hand_back: threading.Event | None = None) -> int:
    """Run queued runs until none is left; how many were run.

    ``stop`` ends the claiming; ``hand_back`` (``stop`` when not given) also stops the run in
    progress at its next step and puts it back in the queue.
    """
    count = 0
    hand_back = hand_back if hand_back is not None else stop
    while stop is None or not stop.is_set():
        run_id = claim(worker_id, lease_s=lease_s)
        if run_id is None:
            return count
        execute(run_id, worker_id, lease_s=lease_s, stop=hand_back)
        count += 1
    return count


def work(worker_id: str, stop: threading.Event, *, poll_s: float = 1.0, lease_s: float = LEASE_S,
         hand_back: threading.Event | None = None) -> None:
    """A worker loop for any thread or process: claim, run, repeat, until ``stop`` is set.

    With a ``hand_back`` event, ``stop`` only ends the claiming and the run in progress may
    finish; setting ``hand_back`` puts it back in the queue (the sidecar's graceful shutdown).
    """
    from engine.workflows import runs

    try:  # the python node's spare interpreters start now, not at the first python node
        from engine.workflows import python_sandbox

        python_sandbox.warm_up()
    except Exception:  # absent or off on this host: the python node says so when it runs
        log.info("python sandbox not warmed up", exc_info=True)
    last_prune = 0.0
    while not stop.is_set():
        try:
            ran = work_once(worker_id, lease_s=lease_s, stop=stop, hand_back=hand_back)
            if time.monotonic() - last_prune > 3600:
                last_prune = time.monotonic()
                runs.prune()
        except Exception:  # the database went away for a moment: try again, never die
            log.exception("workflow worker %s", worker_id)
            ran = 0
        if not ran:
            stop.wait(poll_s)
