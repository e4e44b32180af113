"""The batch worker: claim a batch, run its rows ``concurrency`` at a time, keep a heartbeat, stop on
pause, cancel or a budget, and pick up batches whose worker died (``resume_stale``, for the sidecar).

See ``engine.batches`` for the guarantees (each row's request id is fixed when the batch is
stored, so a row that reached a vendor is never charged twice).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from engine import db, generation, router
from engine.batch_models import Batch, BatchRow
from engine.batches import (
    ACTIVE, FETCH, FINISHED, HEARTBEAT_EVERY, LOST, RATE_LIMIT_RETRIES, STALE_AFTER, BatchSettings, _request,
)
from engine.dbtypes import utcnow
from engine.errors import Conflict, MeterbookError, PermissionDenied
from engine.permissions import Actor
from engine.reservations import BudgetExceeded
from providers.base import RateLimited

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def stale_batches() -> list[int]:
    """Batches still running (or queued and claimed) whose worker stopped beating: the server stopped."""
    stale = utcnow() - STALE_AFTER
    with db.read_session() as s:
        return list(s.scalars(select(Batch.id).where(
            Batch.status.in_(ACTIVE), Batch.claimed_by.is_not(None),
            or_(Batch.heartbeat_at.is_(None), Batch.heartbeat_at < stale)).order_by(Batch.id)))


def resume_stale() -> list[int]:
    """Start a worker thread for every batch whose worker died; their ids. For the sidecar's periodic jobs."""
    from engine import batches

    found = stale_batches()
    for batch_id in found:
        batches.launch(batch_id)  # the thread's claim decides: a second resumer finds it taken
    return found


def _claimable(stale: datetime):
    return or_(
        and_(Batch.status == "queued", or_(Batch.claimed_by.is_(None), Batch.heartbeat_at < stale)),
        and_(Batch.status == "running", or_(Batch.heartbeat_at.is_(None), Batch.heartbeat_at < stale)),
    )


def _requeue_running(s: Session, batch_id: int) -> None:
    # Their request ids stay: a row that did reach a vendor is refused by the generation path, not charged again.
    s.execute(update(BatchRow).where(BatchRow.batch_id == batch_id, BatchRow.status == "running")
              .values(status="pending", started_at=None))


def claim(batch_id: int, worker: str) -> bool:
    """Take the batch if it is queued and free, or running under a worker whose heartbeat went stale.

    One conditional UPDATE, so of two processes trying at once exactly one wins (SQLite runs
    writers one at a time; PostgreSQL re-checks the condition on the row it locked).
    """
    now = utcnow()
    with db.transaction() as s:
        taken = s.execute(update(Batch).where(Batch.id == batch_id, _claimable(now - STALE_AFTER))
                          .values(status="running", claimed_by=worker, heartbeat_at=now)).rowcount
        if taken != 1:
            return False
        s.execute(update(Batch).where(Batch.id == batch_id, Batch.started_at.is_(None)).values(started_at=now))
        _requeue_running(s, batch_id)
    return True


def _release(batch_id: int, worker: str) -> None:
    with db.transaction() as s:
        s.execute(update(Batch).where(Batch.id == batch_id, Batch.claimed_by == worker).values(claimed_by=None))


def _stop(batch_id: int, worker: str, status: str, error: str | None = None) -> None:
    with db.transaction() as s:
        s.execute(update(Batch).where(Batch.id == batch_id, Batch.claimed_by == worker)
                  .values(status=status, error=error, claimed_by=None,
                          finished_at=utcnow() if status in FINISHED else None))


def run(batch_id: int, worker: str) -> None:
    """Work one batch until it is done, paused or cancelled, if this worker can claim it.

    A resume that arrives while this worker is still finishing its last rows finds the batch
    claimed; so after releasing it, the worker tries to claim it once more.
    """
    while claim(batch_id, worker):
        try:
            _work(batch_id, worker)
        except Exception:  # a worker must not die silently: the batch says it stopped, the log says why
            log.exception("batch %s stopped on an unexpected error", batch_id)
            _stop(batch_id, worker, "failed", "The batch stopped on an unexpected error (the server log has the "
                                              "details). Resume it to carry on with the remaining rows.")
            return
        _release(batch_id, worker)


@dataclass(frozen=True)
class _Job:
    batch_id: int
    actor: Actor | None
    settings: BatchSettings
    concurrency: int


@dataclass(frozen=True)
class _Row:
    id: int
    prompt: str
    request_id: str


def _job(batch_id: int) -> _Job:
    with db.read_session() as s:
        b = s.get(Batch, batch_id)
        settings = BatchSettings(b.template, b.name, b.target, b.system, b.max_tokens, b.temperature,
                                 b.concurrency, b.project_id, tuple(b.tags))
        actor = Actor(b.created_by, b.workspace_id) if b.created_by is not None else None
        return _Job(batch_id, actor, settings, b.concurrency)


def _check_in(batch_id: int, worker: str, beat: bool) -> str | None:
    """The batch's status while this worker holds it; None once another worker has taken it."""
    with db.transaction() as s:
        status, holder = s.execute(select(Batch.status, Batch.claimed_by).where(Batch.id == batch_id)).one()
        if holder != worker:
            return None
        if status == "queued":  # resumed while this worker was still finishing: it simply carries on
            status = "running"
            s.execute(update(Batch).where(Batch.id == batch_id).values(status=status))
        if beat:
            s.execute(update(Batch).where(Batch.id == batch_id).values(heartbeat_at=utcnow()))
        return status


def _pending(batch_id: int) -> list[int]:
    with db.read_session() as s:
        return list(s.scalars(select(BatchRow.id).where(BatchRow.batch_id == batch_id, BatchRow.status == "pending")
                              .order_by(BatchRow.position).limit(FETCH)))


def _take(row_id: int) -> _Row | None:
    with db.transaction() as s:
        taken = s.execute(update(BatchRow).where(BatchRow.id == row_id, BatchRow.status == "pending")
                          .values(status="running", started_at=utcnow())).rowcount
        if taken != 1:
            return None  # cancelled meanwhile
        prompt, request_id = s.execute(select(BatchRow.prompt, BatchRow.request_id).where(BatchRow.id == row_id)).one()
    return _Row(row_id, prompt, request_id)


def _work(batch_id: int, worker: str) -> None:
    job = _job(batch_id)
    if job.actor is None:
        _stop(batch_id, worker, "failed", "The member who started this batch is no longer in the workspace, and "
                                          "rows run as them. Start a new batch with the rows that are left.")
        return
    queue: deque[int] = deque()
    in_flight: set[Future] = set()
    last_beat = time.monotonic()
    with ThreadPoolExecutor(max_workers=job.concurrency, thread_name_prefix=f"batch-{batch_id}-row") as pool:
        while True:
            beat = time.monotonic() - last_beat >= HEARTBEAT_EVERY
            status = _check_in(batch_id, worker, beat)
            if beat:
                last_beat = time.monotonic()
            stopping = status != "running"
            if not stopping:
                if not queue:
                    queue.extend(_pending(batch_id))
                if not queue and not in_flight:
                    _stop(batch_id, worker, "done")
                    return
                while queue and len(in_flight) < job.concurrency:
                    row = _take(queue.popleft())
                    if row is not None:
                        in_flight.add(pool.submit(_run_row, job, row))
            if not in_flight:
                if stopping:
                    return
                continue
            finished, in_flight = wait(in_flight, timeout=HEARTBEAT_EVERY, return_when=FIRST_COMPLETED)
            for future in finished:
                halt = future.result()
                if halt is not None:
                    status, error = halt
                    with db.transaction() as s:
                        s.execute(update(Batch).where(Batch.id == batch_id, Batch.claimed_by == worker,
                                                      Batch.status.in_(ACTIVE)).values(status=status, error=error))


def _run_row(job: _Job, row: _Row) -> tuple[str, str] | None:
    """Run one row and store what came of it; returns (status, why) when the whole batch must stop."""
    request_id, retries = row.request_id, 0
    while True:
        try:
            g = generation.generate(_request(job.settings, row.prompt, batch_id=job.batch_id, request_id=request_id),
                                    job.actor)
        except router.NoRoute as exc:
            if isinstance(exc.last, RateLimited) and retries < RATE_LIMIT_RETRIES:
                time.sleep(min(max(exc.last.retry_after or 0.0, 2.0**retries), 60.0))
                retries += 1
                # A vendor's 429 is in the ledger under the old id, so the next try needs its own.
                request_id = f"{row.request_id}~{retries}"
                _save(row.id, request_id=request_id)
                continue
            _save(row.id, status="error", error=str(exc))
        except BudgetExceeded as exc:  # nothing was sent; the row waits for the budget
            _save(row.id, status="pending", started_at=None)
            return "paused", f"Paused: {exc} Resume once the budget allows it."
        except PermissionDenied as exc:
            _save(row.id, status="pending", started_at=None)
            return "failed", str(exc)
        except Conflict:
            _save(row.id, status="error", error=LOST)
        except MeterbookError as exc:
            _save(row.id, status="error", error=str(exc))
        except Exception as exc:  # one row's surprise must not stop the others; the log keeps the details
            log.exception("batch %s: row %s failed unexpectedly", job.batch_id, row.id)
            _save(row.id, status="error", error=f"Unexpected error ({type(exc).__name__}); see the server log.")
        else:
            _save(row.id, status="ok", output=g.text, target=g.target, cost=g.cost, estimated_cost=g.estimated_cost,
                  input_tokens=g.usage.input_tokens, output_tokens=g.usage.output_tokens, ledger_id=g.ledger_id,
                  latency_ms=g.latency_ms, request_id=g.request_id)
        return None


def _save(row_id: int, **values: Any) -> None:
    if values.get("status") in ("ok", "error"):
        values["finished_at"] = utcnow()
    with db.transaction() as s:
        s.execute(update(BatchRow).where(BatchRow.id == row_id).values(**values))
