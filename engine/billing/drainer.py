"""One round of sending usage to Stripe: the sidecar's leader runs ``run_once`` every
``billing_drain_seconds`` (``engine/sidecar/jobs.py``); ``python -m engine billing drain`` does it by hand.

Each round drains the outbox, raises alerts for rows waiting too long and, once per UTC day,
reconciles yesterday against Stripe's meter. A failed round is logged and tried again at the
next tick; the outbox keeps every row meanwhile.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from engine import alerts, db
from engine.billing import meters
from engine.dbtypes import utcnow
from engine.models import BudgetAlert

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
