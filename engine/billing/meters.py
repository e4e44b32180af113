"""Billable AI usage to Stripe's billing meter, through an outbox.

``enqueue`` runs in the ledger row's own transaction (the generation path's plan hook), so a
row is billable exactly when it exists. ``drain`` sends pending rows as meter events, each
with the identifier fixed when its row was made and the ledger row's own time as the event's
timestamp, and marks it sent in a transaction of its own. A process killed between Stripe's
answer and that mark sends the same event again next time; Stripe refuses it with "An event
already exists with identifier …", which is taken as delivered. Stripe unreachable: the rows
wait, nothing is lost, nothing sent twice. Stripe enforces an identifier for at least 24 hours
and refuses events older than 35 days, so rows unsent for ``STALE_AFTER`` raise an alert.

The meter receives whole units of ``METER_UNIT`` USD (a micro-dollar), each row's exact cost
rounded half-even, so rounding does not drift one way; the outbox keeps the exact cost too.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import stripe
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from engine import alerts, db
from engine.billing import stripe_api
from engine.billing.models import MeterOutbox
from engine.billing.plans import billing_configured
from engine.config import get_settings
from engine.dbtypes import utcnow

log = logging.getLogger(__name__)

METER_UNIT = Decimal("0.000001")
STALE_AFTER = timedelta(days=3)
DUPLICATE = "an event already exists with identifier"


_INSERT = MeterOutbox.__table__.insert()  # built once: this runs in every billed call's ledger transaction


def meter_value(cost: Decimal) -> int:
    return int((cost / METER_UNIT).to_integral_value(rounding=ROUND_HALF_EVEN))


def enqueue(session: Session, *, workspace_id: int, ledger_id: int, cost: Decimal, customer_id: str,
            created_at: datetime) -> None:
    value = meter_value(cost)
    if value <= 0:
        return  # less than half a unit: nothing the meter could count
    session.execute(_INSERT, {
        "workspace_id": workspace_id, "ledger_id": ledger_id, "stripe_customer_id": customer_id,
        "identifier": f"mb_{uuid.uuid4().hex}", "cost": cost, "value": value, "event_at": created_at,
        "state": "pending", "attempts": 0, "created_at": created_at,
    })


@dataclass(frozen=True)
class DrainResult:
    sent: int  # Stripe accepted the event
    already_there: int  # Stripe had it (an earlier send whose answer was lost): delivered
    rejected: int  # Stripe refused it for good (too old, unknown customer): alerted
    pending: int  # still waiting (Stripe unreachable)
    error: str | None = None


def _is_duplicate(exc: stripe.StripeError) -> bool:
    message = (exc.error.message if exc.error else None) or str(exc)
    return exc.http_status == 400 and DUPLICATE in message.lower()


def _mark(row_id: int, state: str, error: str | None = None) -> None:
    with db.transaction() as s:
        s.execute(update(MeterOutbox).where(MeterOutbox.id == row_id, MeterOutbox.state == "pending").values(
            state=state, sent_at=utcnow() if state == "sent" else None, last_error=error,
            attempts=MeterOutbox.attempts + 1))


def drain(*, batch: int = 200, max_rows: int | None = None) -> DrainResult:
    """Send pending meter events, oldest first, until none are left or Stripe stops answering."""
    if not billing_configured():
        return DrainResult(0, 0, 0, 0)
    client = stripe_api.client()
    event_name = get_settings().stripe_meter_event_name
    sent = already = rejected = 0
    error = None
    after = 0
    while max_rows is None or sent + already + rejected < max_rows:
        with db.read_session() as s:
            rows = s.execute(select(MeterOutbox.id, MeterOutbox.identifier, MeterOutbox.stripe_customer_id,
                                    MeterOutbox.value, MeterOutbox.event_at, MeterOutbox.workspace_id)
                             .where(MeterOutbox.state == "pending", MeterOutbox.id > after)
                             .order_by(MeterOutbox.id).limit(batch)).all()
        if not rows:
            break
        for row in rows:
            after = row.id
            params = {"event_name": event_name, "identifier": row.identifier,
                      "timestamp": int(row.event_at.timestamp()),
                      "payload": {"stripe_customer_id": row.stripe_customer_id, "value": str(row.value)}}
            try:
                # No idempotency key of ours: the identifier is the meter's own, and Stripe keeps it longer.
                client.v1.billing.meter_events.create(params)
            except stripe.StripeError as exc:
                if _is_duplicate(exc):
                    _mark(row.id, "sent")
                    already += 1
                    continue
                err = stripe_api.translate(exc, "reporting AI usage to the meter")
                if isinstance(err, stripe_api.StripeRefused):
                    _mark(row.id, "rejected", str(err))
                    _alert_rejected(row.workspace_id, row.id, str(err))
                    rejected += 1
                    continue
                with db.transaction() as s:  # unreachable: keep it, count the try, stop this round
                    s.execute(update(MeterOutbox).where(MeterOutbox.id == row.id).values(
                        attempts=MeterOutbox.attempts + 1, last_error=str(err)))
                error = str(err)
                return DrainResult(sent, already, rejected, pending_count(), error)
            _mark(row.id, "sent")
            sent += 1
    return DrainResult(sent, already, rejected, pending_count(), error)


def pending_count() -> int:
    with db.read_session() as s:
        return int(s.scalar(select(func.count()).select_from(MeterOutbox).where(MeterOutbox.state == "pending")))


def _alert_rejected(workspace_id: int, row_id: int, message: str) -> None:
    with db.transaction() as s:
        alerts.fire(s, workspace_id=workspace_id, key=f"billing:meter-rejected:{row_id}", kind="billing",
                    title="Stripe refused a usage report",
                    message=f"{message} The usage stays in the ledger; report it by hand in Stripe if it is billable.")


def raise_stale_alerts(now: datetime | None = None) -> int:
    """One alert per workspace and day while meter events wait longer than ``STALE_AFTER``."""
    now = now or utcnow()
    with db.transaction() as s:
        stale = s.execute(select(MeterOutbox.workspace_id, func.count(), func.min(MeterOutbox.event_at))
                          .where(MeterOutbox.state == "pending", MeterOutbox.event_at < now - STALE_AFTER)
                          .group_by(MeterOutbox.workspace_id)).all()
        fired = 0
        for workspace_id, count, oldest in stale:
            left = timedelta(days=35) - (now - oldest)
            fired += alerts.fire(
                s, workspace_id=workspace_id, key=f"billing:meter-stale:{now:%Y-%m-%d}", kind="billing",
                title="AI usage has not reached Stripe for days",
                message=(f"{count} usage reports have waited since {oldest:%Y-%m-%d %H:%M} UTC. Stripe refuses "
                         f"events older than 35 days ({max(left.days, 0)} days left for the oldest): check "
                         "that Stripe is reachable and the API key is valid, then run `python -m engine billing "
                         "drain`."),
                detail={"pending": int(count), "oldest": oldest.isoformat()})
    return fired


@dataclass(frozen=True)
class Reconciliation:
    workspace_id: int
    customer_id: str
    ours: int  # meter units our outbox holds for the day (sent or waiting)
    stripe: int  # what Stripe's meter summary says for the day
    ledger_cost: Decimal  # the exact cost behind ``ours``

    @property
    def matches(self) -> bool:
        return self.ours == self.stripe


def reconcile(day: datetime, *, alert: bool = True) -> list[Reconciliation]:
    """Compare one UTC day's meter units, ours against Stripe's summary, per customer."""
    settings = get_settings()
    if not billing_configured() or not settings.stripe_meter_id:
        return []
    start = day.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    with db.read_session() as s:
        ours = s.execute(select(MeterOutbox.workspace_id, MeterOutbox.stripe_customer_id, func.sum(MeterOutbox.value),
                                func.sum(MeterOutbox.cost))
                         .where(MeterOutbox.state != "rejected", MeterOutbox.event_at >= start,
                                MeterOutbox.event_at < end)
                         .group_by(MeterOutbox.workspace_id, MeterOutbox.stripe_customer_id)).all()
    client = stripe_api.client()
    results = []
    for workspace_id, customer, value, cost in ours:
        try:
            summary = client.v1.billing.meters.event_summaries.list(settings.stripe_meter_id, {
                "customer": customer, "start_time": int(start.timestamp()), "end_time": int(end.timestamp())})
        except stripe.StripeError as exc:
            raise stripe_api.translate(exc, "reading the meter's summary") from None
        theirs = int(sum(Decimal(str(row.aggregated_value)) for row in summary.data))
        result = Reconciliation(workspace_id, customer, int(value), theirs, cost)
        results.append(result)
        if alert and not result.matches:
            with db.transaction() as s:
                alerts.fire(s, workspace_id=workspace_id, key=f"billing:reconcile:{start:%Y-%m-%d}", kind="billing",
                            title="Stripe's meter disagrees with the ledger",
                            message=(f"On {start:%Y-%m-%d} the ledger billed {result.ours:,} meter units "
                                     f"(${cost:,.4f}) and Stripe counted {theirs:,}. Waiting reports are counted "
                                     "as ours; run the drain, then compare again."),
                            detail={"ours": result.ours, "stripe": theirs})
    return results

