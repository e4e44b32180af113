"""The leader's APScheduler 3 scheduler, and the periodic jobs it hosts beside the schedules.

Schedule jobs run in a ``TrackedExecutor``: APScheduler hands the executor every nominal time that
is due (``run_times``), and the firing needs that time to write its row, which a job function
in APScheduler 3 is never told. The scheduler keeps its jobs in memory: the database is the
truth, and a new leader rebuilds them from the schedule rows.

Periodic jobs (the warehouse export, the billing drain, the budget monitor, orphaned batches) are guarded: a
failure is logged and the job runs again at its next tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)

FIRING = "firing"
EXPORT_S = 30.0
MONITOR_S = 300.0
BATCHES_S = 60.0  # batches whose worker stopped are taken over after batches.STALE_AFTER anyway


class TrackedExecutor(ThreadPoolExecutor):
    """A thread pool that counts its jobs in flight, so a shutdown can wait for them (up to a timeout).

    With ``pass_run_times``, calls ``job.func(*job.args, run_times)``: the firing needs its nominal time.
    """

    def __init__(self, max_workers: int, name: str, *, pass_run_times: bool = False):
        super().__init__(max_workers, pool_kwargs={"thread_name_prefix": name})
        self._pass_run_times = pass_run_times
        self._busy = 0
        self._idle = threading.Condition()

    def _do_submit_job(self, job, run_times):
        with self._idle:
            self._busy += 1

        def call():
            try:
                if self._pass_run_times:
                    job.func(*job.args, list(run_times), **job.kwargs)
                else:
                    job.func(*job.args, **job.kwargs)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        def done(f):
            exc = f.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, [])

        self._pool.submit(call).add_done_callback(done)

    def wait_idle(self, timeout_s: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout_s)


def build_scheduler(firing_threads: int = 10) -> tuple[BackgroundScheduler, list[TrackedExecutor]]:
    """The scheduler (started by the caller) and its two pools: firings, and the periodic jobs."""
    firing = TrackedExecutor(firing_threads, "firing", pass_run_times=True)
    periodic = TrackedExecutor(4, "periodic")
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": periodic, FIRING: firing},
        job_defaults={"max_instances": 1, "coalesce": True},
        timezone=UTC,
    )
    return scheduler, [firing, periodic]


def guarded(name: str, fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception:  # the next tick tries again
            log.exception("The sidecar's periodic job %r failed; it runs again at its next tick", name)
    run.__name__ = name
    return run


def export_warehouse() -> None:
    from engine import warehouse_sync

    stats = warehouse_sync.export_now()
    if stats.rows:
        log.info("Exported %s ledger rows to the warehouse in %.1f s", stats.rows, stats.seconds)


def drain_billing() -> None:
    from engine.billing import drainer

    result = drainer.run_once()
    if result.error:
        log.warning("Meter events wait for Stripe (%d pending): %s", result.pending, result.error)


def monitor_workspaces() -> None:
    """The budget monitor for every workspace; one workspace failing does not stop the others."""
    from sqlalchemy import select

    from engine import db, monitor
    from engine.models import Workspace

    with db.read_session() as s:
        ids = list(s.scalars(select(Workspace.id).order_by(Workspace.id)))
    for workspace_id in ids:
        try:
            monitor.run(workspace_id)
        except Exception:
            log.exception("The budget monitor failed for workspace %s", workspace_id)


def resume_batches() -> None:
    from engine import batch_worker

    resumed = batch_worker.resume_stale()
    if resumed:
        log.info("Resumed batches whose worker had stopped: %s", resumed)


def add_periodic(scheduler: BackgroundScheduler) -> list[str]:
    """The periodic jobs, each first run soon after leadership starts; their ids."""
    from engine.billing.plans import billing_configured
    from engine.config import get_settings

    now = datetime.now(UTC)
    wanted = [("periodic-export", export_warehouse, EXPORT_S),
              ("periodic-monitor", monitor_workspaces, MONITOR_S),
              ("periodic-batches", resume_batches, BATCHES_S)]
    if billing_configured():
        wanted.append(("periodic-billing", drain_billing, get_settings().billing_drain_seconds))
    for job_id, fn, seconds in wanted:
        scheduler.add_job(guarded(job_id, fn), "interval", seconds=seconds, id=job_id, replace_existing=True,
                          next_run_time=now, misfire_grace_time=None)
    return [job_id for job_id, _, _ in wanted]
