"""What runs after budgeted spend is recorded: forecast checks, spike scans and sending alerts.

None of it may slow a call down or run inside its transaction, so ``after_commit`` asks for
a run once the settling transaction has committed, and ``schedule`` (replaceable in tests)
starts it on a background thread a couple of seconds later. Everything that asks for a run
of the same workspace meanwhile joins it: that delay is the storm window, and the alerts
that fire in it go out together as one message per recipient.

Forecasts and spike scans are throttled per process (``FORECAST_EVERY``, ``SCAN_EVERY``);
fired alerts are sent at the next run whatever the throttle says. ``watch`` asks for a run
when the Budgets page is opened; ``run`` does the whole job at once for a workspace (for the
sidecar, and tests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from engine import alerts, anomalies, db, forecast
from engine.budget_scope import current_spent
from engine.dbtypes import utcnow
from engine.models import Budget, Workspace
from engine.permissions import Actor, authorize

log = logging.getLogger(__name__)

STORM_WINDOW_S = 2.0
FORECAST_EVERY = timedelta(minutes=10)
SCAN_EVERY = timedelta(minutes=15)


def run(workspace_id: int, budget_ids: Iterable[int] | None = None, *, spikes: bool = True,
        now: datetime | None = None) -> int:
    """Check forecasts (of ``budget_ids``, or every enabled budget), scan for spikes, then send what is pending."""
    now = now or utcnow()
    to_fire = []
    with db.read_session() as s:
        tz = s.get(Workspace, workspace_id).timezone
        q = select(Budget).where(Budget.workspace_id == workspace_id, Budget.enabled.is_(True))
        if budget_ids is not None:
            q = q.where(Budget.id.in_(set(budget_ids)))
        for b in s.scalars(q):
            spent = current_spent(s, b, tz, now)
            fire = forecast.alert_for(b, tz, now, spent, forecast.for_budget(s, b, tz, now, spent))
            if fire:
                to_fire.append(fire)
    if to_fire:
        with db.transaction() as s:
            for fire in to_fire:
                alerts.fire(s, **fire)
    if spikes:
        anomalies.scan(workspace_id, now)
    return alerts.deliver_pending(workspace_id)


class BackgroundRunner:
    """Runs ``run`` for a workspace on a timer thread, joining requests that arrive within the storm window."""

    def __init__(self, delay_s: float = STORM_WINDOW_S):
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self._queued: dict[int, set[int]] = {}
        self._checked: dict[int, datetime] = {}  # budget id → last forecast check here
        self._scanned: dict[int, datetime] = {}  # workspace id → last spike scan here

    def __call__(self, workspace_id: int, budget_ids: Iterable[int], fired: bool) -> None:
        now = utcnow()
        never = datetime.min.replace(tzinfo=now.tzinfo)
        with self._lock:
            due = {b for b in budget_ids if now - self._checked.get(b, never) >= FORECAST_EVERY}
            scan_due = now - self._scanned.get(workspace_id, never) >= SCAN_EVERY
            if not (fired or due or scan_due):
                return
            self._checked.update(dict.fromkeys(due, now))
            if workspace_id in self._queued:
                self._queued[workspace_id] |= due
                return
            self._queued[workspace_id] = set(due)
        timer = threading.Timer(self.delay_s, self._run, args=(workspace_id,))
        timer.daemon = True
        timer.start()

    def _run(self, workspace_id: int) -> None:
        now = utcnow()
        with self._lock:
            budget_ids = self._queued.pop(workspace_id, set())
            spikes = now - self._scanned.get(workspace_id, datetime.min.replace(tzinfo=now.tzinfo)) >= SCAN_EVERY
            if spikes:
                self._scanned[workspace_id] = now
        try:
            run(workspace_id, budget_ids, spikes=spikes, now=now)
        except Exception:  # a background thread has nobody to raise to: log it, and the next run tries again
            log.exception("budget monitor run for workspace %s failed", workspace_id)


schedule = BackgroundRunner()


def watch(actor: Actor) -> None:
    """Ask for a run of the actor's workspace (throttled like any other): the Budgets page does, so that
    forecasts and spikes are looked at even where no budgeted call has been made lately."""
    with db.read_session() as s:
        authorize(s, actor, "budget.read")
        ids = list(s.scalars(select(Budget.id).where(Budget.workspace_id == actor.workspace_id,
                                                     Budget.enabled.is_(True))))
    schedule(actor.workspace_id, ids, False)


def after_commit(session: Session, workspace_id: int, budget_ids: Iterable[int], fired: bool) -> None:
    """Ask for a run once ``session`` commits (never if it rolls back)."""
    ids = tuple(budget_ids)
    event.listen(session, "after_commit", lambda _s: schedule(workspace_id, ids, fired), once=True)
