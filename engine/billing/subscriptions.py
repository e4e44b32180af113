"""Copying a Stripe subscription's current state onto the workspace's billing account.

Both the webhook handler and the "refresh from Stripe" after a checkout come here with the
subscription as Stripe holds it now (fetched, not the copy inside an event), so the order
events arrive in does not matter: applying the same state twice changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import audit
from engine.billing import limits, plans, stripe_api
from engine.billing.models import BillingAccount
from engine.dbtypes import utcnow

ENDED = frozenset({"canceled", "incomplete_expired"})


def fetch(subscription_id: str) -> Any:
    try:
        return stripe_api.client().v1.subscriptions.retrieve(subscription_id)
    except stripe.StripeError as exc:
        raise stripe_api.translate(exc, "reading the subscription") from None


def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def _get(obj: Any, key: str, default: Any = None) -> Any:
    try:
        return obj[key]
    except (KeyError, TypeError):
        return default


def apply(session: Session, sub: Any, now: datetime | None = None) -> int | None:
    """Copy ``sub`` onto its customer's account; the workspace id, or None when it is not one of ours."""
    now = now or utcnow()
    sub = sub.to_dict() if hasattr(sub, "to_dict") else sub
    account = session.scalar(select(BillingAccount).where(BillingAccount.stripe_customer_id == sub["customer"])
                             .with_for_update())
    if account is None:
        return None
    status = sub["status"]
    if account.stripe_subscription_id not in (None, sub["id"]) and account.status not in ENDED and status in ENDED:
        return account.workspace_id  # an older subscription ending says nothing about the current one
    items = _get(_get(sub, "items", {}), "data", []) or []
    plan = next((p for p in (plans.plan_for_price(_get(_get(i, "price", {}), "id")) for i in items) if p), None)
    before = (account.plan, account.status)
    account.stripe_subscription_id = sub["id"]
    account.status = status
    if status in ENDED:
        account.plan = "free"  # what it was on stays in the audit log
    elif plan is not None:
        account.plan = plan.key
    if items:
        account.current_period_start = _ts(_get(items[0], "current_period_start"))
        account.current_period_end = _ts(_get(items[0], "current_period_end"))
    account.cancel_at_period_end = bool(_get(sub, "cancel_at_period_end", False))
    if status in limits.GRACE:
        account.past_due_since = account.past_due_since or now
    else:
        account.past_due_since = None
    account.synced_at = now
    account.updated_at = now
    if before != (account.plan, account.status):
        audit.record(session, "billing.subscription_changed", workspace_id=account.workspace_id, actor_user_id=None,
                     object_type="billing_account", object_id=account.id, plan=account.plan, status=status,
                     was_plan=before[0], was_status=before[1])
    session.flush()
    limits.forget(account.workspace_id)
    return account.workspace_id
