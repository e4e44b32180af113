"""``Sidecar``: one process's scheduler, workers and periodic jobs, started and stopped together.

Threads:

* ``sidecar-lease`` takes the scheduler lease when it is free and renews it every third of
  the lease time (lease.py). Alone in its thread, so a long reconcile never delays a renewal.
* ``sidecar-leader`` follows the lease: on gaining it, finishes firings a killed leader left
  half done, adds the periodic jobs and reconciles the schedule jobs every ``reconcile_s``; on
  losing it (or failing to renew in time) it removes every job at once. Firings in flight are
  fenced by the lease generation, so none is written after a successor took over.
* N workflow workers and the report delivery workers, in every sidecar, leader or not.

``stop`` is the graceful shutdown: no more firings or claims; running work may finish until the
timeout, then workflow runs are handed back to the queue; the lease is released last, so the
next leader starts at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import threading
import time
from datetime import datetime

from sqlalchemy import func, select

from engine import db
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.sidecar import jobs
from engine.sidecar.lease import Lease

log = logging.getLogger(__name__)

HAND_BACK_GRACE_S = 10.0  # after the hand-back: a run stops at its next step, within seconds


class Sidecar:
    def __init__(self, *, workers: int | None = None, delivery_workers: int = 1, lease_s: float | None = None,
                 reconcile_s: float = 2.0, holder: str | None = None, firing_threads: int = 10):
        settings = get_settings()
        self.workers = settings.sidecar_workers if workers is None else workers
        self.delivery_workers = delivery_workers
        self.reconcile_s = reconcile_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lease = Lease(self.holder, lease_s or settings.sidecar_lease_seconds)
        self.scheduler, self._pools = jobs.build_scheduler(firing_threads)
        self.reconciler = None
        self.last_tick: datetime | None = None
        self.last_error: str | None = None
        self._stopping = threading.Event()  # no new firings, no new claims
        self._claims_stop = threading.Event()
        self._hand_back = threading.Event()  # runs in progress go back to the queue
        self._lease_changed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._worker_threads: list[threading.Thread] = []
        self._leading = False
        self._lead_lock = threading.Lock()
        self._started = False

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> Sidecar:
        if self._started:
            return self
        self._started = True
        self.scheduler.start()
        self._spawn(self._lease_loop, "sidecar-lease")
        self._spawn(self._leader_loop, "sidecar-leader")
        from engine.workflows import worker

        for i in range(self.workers):
            self._worker_threads.append(self._spawn(
                worker.work, f"workflow-worker-{i}", f"{self.holder}/w{i}", self._claims_stop,
                poll_s=0.5, hand_back=self._hand_back))
        from engine.reports import deliveries

        for i in range(self.delivery_workers):
            self._worker_threads.append(self._spawn(deliveries.work, f"delivery-worker-{i}",
                                                    f"{self.holder}/d{i}", self._claims_stop))
        log.info("Sidecar %s started: %d workflow workers, %d delivery workers", self.holder, self.workers,
                 self.delivery_workers)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop firing and claiming; let running work finish for ``timeout`` s, then hand it back."""
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._claims_stop.set()
        self._lease_changed.set()
        self._unlead()
        for pool in self._pools:  # firings in flight finish (they are short); so does a periodic job
            pool.wait_idle(max(0.0, deadline - time.monotonic()))
        self.scheduler.shutdown(wait=False)
        for t in self._worker_threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._worker_threads):
            log.info("Handing the runs still in progress back to the queue")
            self._hand_back.set()
            for t in self._worker_threads:
                t.join(HAND_BACK_GRACE_S)
        for t in self._threads:
            if t not in self._worker_threads:
                t.join(5)
        self.lease.release()
        # The MCP servers workflow steps kept open; the module is loaded only if a step used a tool,
        # and importing it here would load the MCP SDK into every sidecar for nothing.
        sessions = sys.modules.get("engine.connectors.sessions")
        closed = sessions.close_all() if sessions else 0
        self._started = False
        log.info("Sidecar %s stopped (%d MCP sessions closed)", self.holder, closed)

    def _spawn(self, target, name: str, *args, **kwargs) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, kwargs=kwargs, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    # --- the lease and leadership -------------------------------------------------------------

    def _lease_loop(self) -> None:
        follow_s = min(1.0, self.lease.ttl_s / 5)
        last_renew = 0.0
        while not self._stopping.is_set():
            try:
                if self.lease.generation is not None:
                    if time.monotonic() - last_renew >= self.lease.renew_every_s:
                        if self.lease.renew():
                            last_renew = time.monotonic()
                    if not self.lease.held():
                        self._lease_changed.set()
                elif self.lease.acquire():
                    last_renew = time.monotonic()
                    self._lease_changed.set()
            except Exception as exc:  # the database is away: a held lease lapses by itself, locally
                self.last_error = f"lease: {exc}"
                log.exception("The scheduler lease could not be read or written")
            wait = min(follow_s, max(0.05, self.lease.renew_every_s / 4)) if self.lease.generation else follow_s
            self._stopping.wait(wait)

    def _leader_loop(self) -> None:
        next_reconcile = 0.0
        while not self._stopping.is_set():
            try:
                held = self.lease.held()
                if held and not self._leading:
                    self._lead()
                    next_reconcile = 0.0
                elif not held and self._leading:
                    self._unlead()
                if self._leading and time.monotonic() >= next_reconcile:
                    self.reconciler.tick()
                    next_reconcile = time.monotonic() + self.reconcile_s
                self.last_tick, self.last_error = utcnow(), None
            except Exception as exc:
                self.last_error = f"scheduler: {exc}"
                log.exception("The leader's scheduling tick failed; trying again")
                next_reconcile = time.monotonic() + self.reconcile_s
            self._lease_changed.wait(min(0.5, self.reconcile_s))
            self._lease_changed.clear()

    def _lead(self) -> None:
        from engine.sidecar import firing
        from engine.sidecar.reconcile import Reconciler

        with self._lead_lock:
            if self._stopping.is_set():
                return
            log.info("Sidecar %s is the scheduler now (lease generation %s)", self.holder, self.lease.generation)
            firing.finish_leftovers(self.lease)
            self.reconciler = Reconciler(self.scheduler, self.lease)
            jobs.add_periodic(self.scheduler)
            self._leading = True

    def _unlead(self) -> None:
        with self._lead_lock:
            if not self._leading:
                return
            self._leading = False
            self.reconciler = None
            self.scheduler.remove_all_jobs()
        log.warning("Sidecar %s stopped scheduling (lease generation %s ended)", self.holder, self.lease.generation)

    # --- health -------------------------------------------------------------------------------

    def health(self) -> dict:
        alive = [t for t in self._threads if t.is_alive()]
        workers = sum(1 for t in self._worker_threads if t.is_alive() and t.name.startswith("workflow-worker"))
        delivery_workers = sum(1 for t in self._worker_threads if t.is_alive() and t.name.startswith("delivery-worker"))
        stale = self.last_tick is None or (utcnow() - self.last_tick).total_seconds() > max(10.0, 5 * self.reconcile_s)
        try:
            from engine.workflows.models import WorkflowRun

            with db.read_session() as s:
                queued = s.scalar(select(func.count()).select_from(WorkflowRun).where(WorkflowRun.status == "queued"))
        except Exception as exc:
            queued, self.last_error = None, f"database: {exc}"
        reconciler = self.reconciler
        return {
            "ok": bool(self._started and len(alive) == len(self._threads) and not stale and self.last_error is None),
            "leader": self.lease.held(),
            "lease_generation": self.lease.generation,
            "last_tick": self.last_tick.isoformat() if self.last_tick else None,
            "schedules": reconciler.count() if reconciler is not None else 0,
            "workers": workers,
            "delivery_workers": delivery_workers,
            "queued_runs": queued,
            "holder": self.holder,
            "error": self.last_error,
        }
