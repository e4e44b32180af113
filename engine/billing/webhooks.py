"""Stripe's webhooks: ``handle_webhook(payload, signature_header)``, the sidecar endpoint's whole job.

1. The signature is checked by the Stripe library (``StripeClient.construct_event``) with a
   five-minute tolerance, so a replayed or forged delivery is refused (``InvalidWebhook``:
   answer 400).
2. An event id already stored is answered as a duplicate and does nothing.
3. The objects the event names are fetched from Stripe as they are *now*, and copied onto the
   account, so events arriving late or out of order cannot roll the state back.
4. The event id is written in the same transaction as the effects. A handler that fails
   (Stripe unreachable mid-way: ``StripeUnavailable``, answer 5xx) stores nothing, and
   Stripe's retry does the work once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from engine import db
from engine.billing import limits, stripe_api, subscriptions
from engine.billing.accounts import cache_invoice
from engine.billing.models import BillingAccount, StripeEvent
from engine.config import get_settings
from engine.dbtypes import utcnow

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300
SUBSCRIPTION_EVENTS = {"customer.subscription.created", "customer.subscription.updated",
                       "customer.subscription.deleted", "customer.subscription.paused",
                       "customer.subscription.resumed"}
INVOICE_EVENTS = {"invoice.paid", "invoice.payment_failed", "invoice.payment_succeeded", "invoice.finalized"}


class InvalidWebhook(stripe_api.BillingError):
    """Not a genuine, fresh Stripe delivery: answer 400 and do nothing."""


@dataclass(frozen=True)
class WebhookResult:
    event_id: str
    type: str
    outcome: str  # processed, duplicate, ignored
    workspace_id: int | None = None


def _invoice_subscription(inv: dict) -> str | None:
    parent = inv.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return details.get("subscription") or inv.get("subscription")


def _fetch_invoice(invoice_id: str) -> dict:
    try:
        return stripe_api.client().v1.invoices.retrieve(invoice_id).to_dict()
    except stripe.StripeError as exc:
        raise stripe_api.translate(exc, "reading the invoice") from None


def _subscription_now(sub_id: str, fallback: dict | None) -> dict:
    try:
        return subscriptions.fetch(sub_id).to_dict()
    except stripe_api.StripeRefused as exc:
        if exc.code == "resource_missing" and fallback is not None:
            return fallback  # gone at Stripe's end: the event's copy is the last word
        raise


def handle_webhook(payload: bytes, signature_header: str | None) -> WebhookResult:
    secret = get_settings().stripe_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise stripe_api.BillingNotConfigured("Stripe webhooks need METERBOOK_STRIPE_WEBHOOK_SECRET (the endpoint's "
                                              "signing secret, whsec_…).")
    try:
        event = stripe_api.client().construct_event(payload, signature_header, secret.get_secret_value(),
                                                    tolerance=TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(f"The Stripe signature does not verify ({exc.user_message or exc}); the delivery "
                             "was ignored.") from None
    except (ValueError, json.JSONDecodeError):
        raise InvalidWebhook("The webhook body is not a Stripe event; it was ignored.") from None
    data = json.loads(payload)
    event_id, kind = data["id"], data["type"]
    obj: dict[str, Any] = data["data"]["object"]
    with db.read_session() as s:
        if s.get(StripeEvent, event_id) is not None:
            return WebhookResult(event_id, kind, "duplicate")

    sub = invoice = None
    if kind == "checkout.session.completed" and obj.get("mode") == "subscription" and obj.get("subscription"):
        sub = _subscription_now(obj["subscription"], None)
    elif kind in SUBSCRIPTION_EVENTS:
        sub = _subscription_now(obj["id"], obj)
    elif kind in INVOICE_EVENTS:
        invoice = _fetch_invoice(obj["id"])
        sub_id = _invoice_subscription(invoice)
        sub = _subscription_now(sub_id, None) if sub_id else None

    try:
        with db.transaction() as s:
            # The event's row first: a write, so a parallel delivery of the same event waits here
            # for this one's commit (on SQLite too) and then finds the id taken.
            record = StripeEvent(id=event_id, type=kind, outcome="processed", processed_at=utcnow())
            s.add(record)
            s.flush()
            workspace_id = subscriptions.apply(s, sub) if sub is not None else None
            if invoice is not None:
                workspace_id = workspace_id or s.scalar(select(BillingAccount.workspace_id).where(
                    BillingAccount.stripe_customer_id == invoice.get("customer")))
                if workspace_id is not None:
                    cache_invoice(s, workspace_id, invoice)
            outcome = "processed" if workspace_id is not None else "ignored"
            record.workspace_id, record.outcome = workspace_id, outcome
    except IntegrityError:
        return WebhookResult(event_id, kind, "duplicate")  # a parallel delivery of the same event won
    if workspace_id is not None:  # again after the commit: a check in between may have cached the old state
        limits.forget(workspace_id)
    log.info("Stripe event %s (%s): %s", event_id, kind, outcome)
    return WebhookResult(event_id, kind, outcome, workspace_id)
