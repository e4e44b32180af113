"""The Billing page's service: the workspace's Stripe customer, checkout and portal sessions,
refreshing from Stripe, the invoice cache and the overview the page draws.

Access never changes here from what a browser says (a checkout redirect proves nothing);
``refresh`` reads the subscription's current state from Stripe, as a webhook would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import audit, db
from engine.billing import limits, plans, stripe_api, subscriptions
from engine.billing.limits import Effective, LimitUse
from engine.billing.models import BillingAccount, CheckoutAttempt, InvoiceCache
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import InvalidInput
from engine.models import User, Workspace
from engine.permissions import RANK, Actor, authorize

REUSE_CHECKOUT = timedelta(minutes=30)  # a second click within this gets the same Stripe session back
SUBSCRIBED = limits.LIVE | limits.GRACE


def _account(s: Session, workspace_id: int) -> BillingAccount:
    account = s.scalar(select(BillingAccount).where(BillingAccount.workspace_id == workspace_id))
    if account is None:
        account = BillingAccount(workspace_id=workspace_id)
        s.add(account)
        s.flush()
    return account


def _key(kind: str, row_id: int, created: datetime) -> str:
    # Our row's id and creation time: the same row always asks with the same key, another row never does.
    return f"meterbook-{kind}-{row_id}-{int(created.timestamp())}"


def ensure_customer(actor: Actor) -> str:
    """The workspace's Stripe customer, created once (a retry after a crash gets the same one)."""
    with db.transaction() as s:
        authorize(s, actor, "billing.manage")
        account = _account(s, actor.workspace_id)
        if account.stripe_customer_id:
            return account.stripe_customer_id
        workspace = s.get(Workspace, actor.workspace_id)
        email = s.scalar(select(User.email).where(User.id == actor.user_id))
        account_id, created = account.id, account.created_at
    try:
        customer = stripe_api.client().v1.customers.create(
            {"name": workspace.name, "email": email, "metadata": {"workspace_id": str(actor.workspace_id)}},
            {"idempotency_key": _key("customer", account_id, created)})
    except stripe.StripeError as exc:
        raise stripe_api.translate(exc, "creating the Stripe customer") from None
    with db.transaction() as s:
        account = s.get(BillingAccount, account_id)
        if account.stripe_customer_id is None:
            account.stripe_customer_id = customer.id
            audit.record_for(s, actor, "billing.customer_created", "billing_account", account_id)
        return account.stripe_customer_id


def start_checkout(actor: Actor, plan_key: str) -> str:
    """A Checkout Session URL for subscribing to ``plan_key``; a subscribed workspace changes plan in the portal."""
    stripe_api.client()  # refuses at once when billing is not configured
    plan = plans.get(plan_key)
    if not plan.paid or plan.price_id is None:
        raise InvalidInput(f"{plan.name} has no Stripe price to check out; set METERBOOK_STRIPE_PRICE_"
                           f"{plan.key.upper()} first." if plan.paid else f"{plan.name} needs no checkout.")
    customer = ensure_customer(actor)
    with db.transaction() as s:
        account = _account(s, actor.workspace_id)
        if account.status in SUBSCRIBED:
            raise InvalidInput("This workspace already has a subscription: change its plan with “Change plan” "
                               "(Stripe's customer portal), so it is not billed twice.")
        since = utcnow() - REUSE_CHECKOUT
        attempt = s.scalar(select(CheckoutAttempt).where(
            CheckoutAttempt.workspace_id == actor.workspace_id, CheckoutAttempt.plan == plan.key,
            CheckoutAttempt.created_at >= since).order_by(CheckoutAttempt.id.desc()).limit(1))
        if attempt is None:
            attempt = CheckoutAttempt(workspace_id=actor.workspace_id, plan=plan.key, created_by=actor.user_id,
                                      created_at=utcnow())
            s.add(attempt)
            s.flush()
        attempt_id, created = attempt.id, attempt.created_at
    base = get_settings().base_url.rstrip("/")
    items = [{"price": plan.price_id, "quantity": 1}]
    if plan.bills_usage:
        items.append({"price": plan.usage_price_id})  # metered: no quantity, the meter counts it
    meta = {"workspace_id": str(actor.workspace_id), "plan": plan.key}
    try:
        session = stripe_api.client().v1.checkout.sessions.create({
            "mode": "subscription", "customer": customer, "line_items": items,
            "client_reference_id": str(actor.workspace_id), "metadata": meta,
            "subscription_data": {"metadata": meta},
            "success_url": f"{base}/billing?checkout=success", "cancel_url": f"{base}/billing?checkout=cancelled",
        }, {"idempotency_key": _key("checkout", attempt_id, created)})
    except stripe.StripeError as exc:
        raise stripe_api.translate(exc, "starting the checkout") from None
    with db.transaction() as s:
        attempt = s.get(CheckoutAttempt, attempt_id)
        attempt.stripe_session_id = session.id
        audit.record_for(s, actor, "billing.checkout_started", "billing_checkout", attempt_id, plan=plan.key)
    return session.url


def portal_url(actor: Actor, *, change_plan: bool = False) -> str:
    """A customer-portal link (a bearer link: shown once to this user, never logged or stored)."""
    with db.read_session() as s:
        authorize(s, actor, "billing.manage")
        account = s.scalar(select(BillingAccount).where(BillingAccount.workspace_id == actor.workspace_id))
    if account is None or not account.stripe_customer_id:
        raise InvalidInput("This workspace has no Stripe customer yet: choose a plan first.")
    params: dict = {"customer": account.stripe_customer_id,
                    "return_url": f"{get_settings().base_url.rstrip('/')}/billing"}
    if change_plan and account.stripe_subscription_id and account.status in SUBSCRIBED:
        params["flow_data"] = {"type": "subscription_update",
                               "subscription_update": {"subscription": account.stripe_subscription_id}}
    try:
        return stripe_api.client().v1.billing_portal.sessions.create(params).url
    except stripe.StripeError as exc:
        raise stripe_api.translate(exc, "opening the customer portal") from None


def refresh(actor: Actor) -> Effective:
    """Read the subscription's current state from Stripe (after a checkout, or to be sure)."""
    with db.read_session() as s:
        authorize(s, actor, "billing.read")
        account = s.scalar(select(BillingAccount).where(BillingAccount.workspace_id == actor.workspace_id))
        last = s.scalar(select(CheckoutAttempt.stripe_session_id).where(
            CheckoutAttempt.workspace_id == actor.workspace_id, CheckoutAttempt.stripe_session_id.isnot(None))
            .order_by(CheckoutAttempt.id.desc()).limit(1))
    if account is None or not account.stripe_customer_id:
        return limits.current(actor.workspace_id)
    client = stripe_api.client()
    sub_id = account.stripe_subscription_id
    try:
        if sub_id is None and last:
            sub_id = client.v1.checkout.sessions.retrieve(last).subscription
    except stripe.StripeError as exc:
        raise stripe_api.translate(exc, "reading the checkout") from None
    if sub_id:
        sub = subscriptions.fetch(sub_id)
        with db.transaction() as s:
            subscriptions.apply(s, sub)
        limits.forget(actor.workspace_id)
    sync_invoices(actor.workspace_id)
    return limits.current(actor.workspace_id)


# --- invoices ----------------------------------------------------------------------------------


def _money(cents: int | None) -> Decimal:
    return Decimal(cents or 0) / 100


def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def cache_invoice(s: Session, workspace_id: int, inv) -> None:
    inv = inv.to_dict() if hasattr(inv, "to_dict") else inv
    row = s.scalar(select(InvoiceCache).where(InvoiceCache.stripe_invoice_id == inv["id"]))
    if row is None:
        row = InvoiceCache(workspace_id=workspace_id, stripe_invoice_id=inv["id"])
        s.add(row)
    row.number, row.status, row.currency = inv.get("number"), inv.get("status"), inv.get("currency") or "usd"
    row.amount_due, row.amount_paid, row.total = (_money(inv.get("amount_due")), _money(inv.get("amount_paid")),
                                                  _money(inv.get("total")))
    row.created = _ts(inv.get("created")) or utcnow()
    row.period_start, row.period_end = _ts(inv.get("period_start")), _ts(inv.get("period_end"))
    row.hosted_invoice_url, row.invoice_pdf = inv.get("hosted_invoice_url"), inv.get("invoice_pdf")
    row.fetched_at = utcnow()


def sync_invoices(workspace_id: int, limit: int = 24) -> int:
    with db.read_session() as s:
        customer = s.scalar(select(BillingAccount.stripe_customer_id).where(
            BillingAccount.workspace_id == workspace_id))
    if not customer:
        return 0
    try:
        listed = stripe_api.client().v1.invoices.list({"customer": customer, "limit": limit})
    except stripe.StripeError as exc:
        raise stripe_api.translate(exc, "listing invoices") from None
    with db.transaction() as s:
        for inv in listed.data:
            cache_invoice(s, workspace_id, inv)
    return len(listed.data)


@dataclass(frozen=True)
class InvoiceView:
    number: str | None
    status: str | None
    total: Decimal
    amount_paid: Decimal
    currency: str
    created: datetime
    hosted_invoice_url: str | None
    invoice_pdf: str | None


def invoices(actor: Actor) -> list[InvoiceView]:
    with db.read_session() as s:
        authorize(s, actor, "billing.read")
        rows = s.scalars(select(InvoiceCache).where(InvoiceCache.workspace_id == actor.workspace_id)
                         .order_by(InvoiceCache.created.desc())).all()
    return [InvoiceView(r.number, r.status, r.total, r.amount_paid, r.currency, r.created, r.hosted_invoice_url,
                        r.invoice_pdf) for r in rows]


# --- what the page shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    configured: bool
    state: Effective
    usage: list[LimitUse]
    plans: list[plans.Plan]
    has_customer: bool
    period_end: datetime | None
    cancel_at_period_end: bool
    can_manage: bool


def overview(actor: Actor) -> Overview:
    # The rooms whose things a plan counts register their counters when imported: make sure they are.
    from engine.workflows import plan_limits  # noqa: F401

    with db.read_session() as s:
        role = authorize(s, actor, "billing.read")
        state = limits.effective(s, actor.workspace_id)
        account = s.scalar(select(BillingAccount).where(BillingAccount.workspace_id == actor.workspace_id))
        use = limits.usage(s, actor.workspace_id, state.plan)
    return Overview(plans.billing_configured(), state, use, list(plans.all_plans().values()),
                    bool(account and account.stripe_customer_id), account.current_period_end if account else None,
                    bool(account and account.cancel_at_period_end), RANK[role] >= RANK["admin"])
