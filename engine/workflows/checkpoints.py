"""Where a run's progress is kept: ``DbRun`` for real runs (rows, under the worker's lease) and
``MemoryRun`` for dry runs (nothing is stored).

Every write a worker makes about a run checks that it still holds the lease, except a step's
result: an output a node produced is saved even by a worker that has just lost its lease, for
the attempt it ran (a newer attempt by another worker is never overwritten), so a paid answer
is kept whenever it can be.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update

from engine import db
from engine.db import write_lock
from engine.dbtypes import utcnow
from engine.models import User
from engine.workflows import payloads
from engine.workflows.models import WorkflowApproval, WorkflowDeadLetter, WorkflowRun, WorkflowStep


class LeaseLost(Exception):
    """Another worker holds this run now (this one was too slow to renew its lease)."""


@dataclass
class StepState:
    node_id: str
    status: str
    attempt: int = 0
    output: Any = None
    error: str | None = None


class DbRun:
    def __init__(self, run_id: int, worker_id: str, lease_s: float):
        self.run_id, self.worker_id, self.lease_s = run_id, worker_id, lease_s
        self._pending: list[dict] = []
        self._known: set[str] = set()  # node ids that have a step row

    def _owned(self):
        return (WorkflowRun.id == self.run_id) & (WorkflowRun.lease_owner == self.worker_id) & (
            WorkflowRun.status == "running")

    def steps(self) -> dict[str, StepState]:
        with db.read_session() as s:
            rows = s.scalars(select(WorkflowStep).where(WorkflowStep.run_id == self.run_id)).all()
        self._known = {r.node_id for r in rows}
        return {r.node_id: StepState(r.node_id, r.status, r.attempt,
                                     payloads.load_output(r.output, r.output_file) if r.status == "succeeded" else None,
                                     r.error) for r in rows}

    def heartbeat(self) -> bool:
        """Renew the lease; False when the run was cancelled. ``LeaseLost`` when it is not ours any more."""
        with db.transaction() as s:
            renewed = s.execute(update(WorkflowRun).where(self._owned()).values(
                lease_expires_at=utcnow() + timedelta(seconds=self.lease_s))).rowcount
            if not renewed:
                raise LeaseLost(self.run_id)
            self._flush(s)
            return not s.scalar(select(WorkflowRun.cancel_requested).where(WorkflowRun.id == self.run_id))

    def begin(self, node_id: str, node_type: str, attempt: int, value: Any) -> None:
        with db.transaction() as s:
            write_lock(s)
            if not s.scalar(select(WorkflowRun.id).where(self._owned())):
                raise LeaseLost(self.run_id)
            self._flush(s)
            step = s.scalar(select(WorkflowStep).where(WorkflowStep.run_id == self.run_id,
                                                       WorkflowStep.node_id == node_id))
            if step is None:
                step = WorkflowStep(run_id=self.run_id, node_id=node_id, node_type=node_type)
                s.add(step)
            self._known.add(node_id)
            step.status, step.attempt, step.input, step.error = "running", attempt, payloads.preview(value), None
            step.output, step.output_file, step.started_at, step.finished_at = None, None, utcnow(), None

    def end(self, node_id: str, attempt: int, status: str, output: Any = None, logs: str | None = None,
            error: str | None = None, node_type: str = "") -> None:
        inline, file = payloads.store_output(self.run_id, node_id, output) if status == "succeeded" else (None, None)
        values = dict(status=status, output=inline, output_file=file, logs=payloads.cap_logs(logs), error=error,
                      finished_at=utcnow() if status not in ("retrying", "waiting") else None)
        with db.transaction() as s:
            if self._pending:
                write_lock(s)
                self._flush(s)
            done = s.execute(update(WorkflowStep).where(
                WorkflowStep.run_id == self.run_id, WorkflowStep.node_id == node_id,
                WorkflowStep.attempt == attempt).values(**values)).rowcount
            if not done and attempt == 0:  # a step decided without running (skipped, cancelled)
                self._known.add(node_id)
                s.add(WorkflowStep(run_id=self.run_id, node_id=node_id, node_type=node_type, attempt=0, **values))

    def record(self, node_id: str, node_type: str, attempt: int, value: Any, status: str, output: Any = None,
               logs: str | None = None, error: str | None = None, started=None) -> None:
        """A pure node's whole attempt. It is written with the run's next write (the next step's start,
        or the run's end): nothing it did outside could be repeated by a crash, only recomputed."""
        inline, file = payloads.store_output(self.run_id, node_id, output) if status == "succeeded" else (None, None)
        self._pending.append(dict(node_id=node_id, node_type=node_type, status=status, attempt=attempt,
                                  input=payloads.preview(value), output=inline, output_file=file,
                                  logs=payloads.cap_logs(logs), error=error, started_at=started, finished_at=utcnow()))

    def _flush(self, s) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        # Core statements, not the ORM's unit of work: this is on every run's path.
        new = [dict(run_id=self.run_id, **p) for p in pending if p["node_id"] not in self._known]
        if new:
            s.execute(insert(WorkflowStep.__table__), new)
        for values in (p for p in pending if p["node_id"] in self._known):
            s.execute(update(WorkflowStep.__table__).where(
                WorkflowStep.__table__.c.run_id == self.run_id,
                WorkflowStep.__table__.c.node_id == values["node_id"]).values(**values))
        self._known.update(p["node_id"] for p in pending)

    def approval(self, node_id: str, message: str) -> dict | None:
        with db.transaction() as s:
            write_lock(s)
            a = s.scalar(select(WorkflowApproval).where(WorkflowApproval.run_id == self.run_id,
                                                        WorkflowApproval.node_id == node_id))
            if a is None:
                workspace_id = s.scalar(select(WorkflowRun.workspace_id).where(WorkflowRun.id == self.run_id))
                s.add(WorkflowApproval(workspace_id=workspace_id, run_id=self.run_id, node_id=node_id,
                                       message=message[:4000]))
                return None
            if a.status == "pending":
                return None
            who = s.get(User, a.decided_by) if a.decided_by else None
            return {"status": a.status, "by": who.name if who else "a former member", "comment": a.comment}

    def finish(self, status: str, *, outputs: Any = None, error: str | None = None,
               failed_node: str | None = None) -> None:
        with db.transaction() as s:
            done = s.execute(update(WorkflowRun).where(self._owned()).values(
                status=status, outputs=payloads.jsonable(outputs) if outputs is not None else None,
                error=error, failed_node=failed_node, finished_at=utcnow(), lease_owner=None,
                lease_expires_at=None)).rowcount
            if not done:
                raise LeaseLost(self.run_id)
            self._flush(s)
            if status == "failed":
                run = s.get(WorkflowRun, self.run_id)
                existing = s.scalar(select(WorkflowDeadLetter).where(WorkflowDeadLetter.run_id == self.run_id))
                if existing is None:
                    s.add(WorkflowDeadLetter(workspace_id=run.workspace_id, run_id=self.run_id, error=error or ""))
                else:  # failed again after a retry: back on the list
                    existing.error, existing.dismissed, existing.created_at = error or "", False, utcnow()

    def pause(self) -> None:
        """Waiting on an approval: let go of the run until someone decides."""
        with db.transaction() as s:
            self._flush(s)
            s.execute(update(WorkflowRun).where(self._owned()).values(
                status="waiting", lease_owner=None, lease_expires_at=None))

    def release(self) -> None:
        """The worker is stopping: put the run back in the queue for the next one, at once."""
        with db.transaction() as s:
            self._flush(s)
            s.execute(update(WorkflowRun).where(self._owned()).values(
                status="queued", lease_owner=None, lease_expires_at=None))


class MemoryRun:
    """A dry run's steps, kept in memory; nothing is written anywhere."""

    run_id = None

    def __init__(self):
        self.records: dict[str, dict] = {}
        self.outcome: dict = {}

    def steps(self) -> dict[str, StepState]:
        return {}

    def heartbeat(self) -> bool:
        return True

    def begin(self, node_id, node_type, attempt, value) -> None:
        self.records[node_id] = {"node_id": node_id, "type": node_type, "status": "running", "input": value}

    def end(self, node_id, attempt, status, output=None, logs=None, error=None, node_type="") -> None:
        rec = self.records.setdefault(node_id, {"node_id": node_id, "type": node_type, "input": None})
        rec.update(status=status, output=payloads.jsonable(output), logs=logs, error=error)

    def record(self, node_id, node_type, attempt, value, status, output=None, logs=None, error=None,
               started=None) -> None:
        self.records[node_id] = {"node_id": node_id, "type": node_type, "input": value, "status": status,
                                 "output": payloads.jsonable(output), "logs": logs, "error": error}

    def approval(self, node_id, message):
        return {"status": "approved", "by": "dry run", "comment": None}

    def finish(self, status, *, outputs=None, error=None, failed_node=None) -> None:
        self.outcome = {"status": status, "outputs": payloads.jsonable(outputs), "error": error,
                        "failed_node": failed_node}

    def pause(self) -> None:
        self.outcome = {"status": "waiting"}

    def release(self) -> None:
        pass
