"""Who calls ``meters.drain`` until the sidecar exists: a daemon thread of ``python -m engine up``
(and ``python -m engine billing drain`` by hand or from cron).

Each round drains the outbox, raises alerts for rows waiting too long and, once per UTC day,
reconciles yesterday against Stripe's meter. A failed round is logged and tried again next
time; the outbox keeps every row meanwhile. The sidecar should call ``run_once`` on its schedule
and the thread then goes away.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import select

from engine import alerts, db
from engine.billing import meters
from engine.billing.plans import billing_configured
from engine.dbtypes import utcnow
from engine.errors import MeterbookError
from engine.models import BudgetAlert

log = logging.getLogger(__name__)

_reconciled: set[str] = set()


def run_once() -> meters.DrainResult:
    result = meters.drain()
    meters.raise_stale_alerts()
    # Stripe sums meter events asynchronously: a day is compared from one o'clock the next day.
    yesterday = utcnow() - timedelta(days=1, hours=1)
    day = f"{yesterday:%Y-%m-%d}"
    if day not in _reconciled:
        meters.reconcile(yesterday)
        _reconciled.add(day)
    deliver_alerts()
    return result


def deliver_alerts() -> int:
    """Send billing alerts by email and webhook to the workspace's owners and admins, like spikes."""
    with db.read_session() as s:
        workspaces = list(s.scalars(select(BudgetAlert.workspace_id).where(
            BudgetAlert.kind == "billing", BudgetAlert.delivery == "pending").distinct()))
    return sum(alerts.deliver_pending(workspace_id) for workspace_id in workspaces)


def start(interval: float, stop: threading.Event | None = None) -> threading.Thread | None:
    """A daemon thread draining every ``interval`` seconds; None when billing is off."""
    if not billing_configured():
        return None
    stop = stop or threading.Event()

    def loop() -> None:
        while True:
            try:
                result = run_once()
                if result.error:
                    log.warning("Meter events wait for Stripe (%d pending): %s", result.pending, result.error)
            except MeterbookError as exc:
                log.warning("Billing drain failed, trying again in %.0f s: %s", interval, exc)
            except Exception:
                log.exception("Billing drain failed unexpectedly; trying again in %.0f s", interval)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="billing-drain", daemon=True)
    thread.start()
    return thread
