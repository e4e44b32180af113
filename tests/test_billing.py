"""Billing through the real StripeClient against the fake Stripe: checkout, webhooks, grace, limits."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from engine import accounts, db, generation
from engine.billing import accounts as billing
from engine.billing import limits, plans, webhooks
from engine.billing.limits import PlanLimitReached
from engine.billing.models import BillingAccount, CheckoutAttempt, InvoiceCache, StripeEvent
from engine.billing.stripe_api import StripeRefused, StripeUnavailable
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, PermissionDenied
from engine.models import LedgerEntry
from providers.base import Result, Usage
from tests import scripted_provider as scripted
from tests.billing_helpers import billing_on, deliver
from tests.factories import member, owner, scripted_routes

GPT = "gpt-4o-mini"


@pytest.fixture
def fake(database, data_dir, monkeypatch):
    with billing_on(monkeypatch) as fake:
        yield fake


@pytest.fixture
def ws(fake):
    return owner()


def account(workspace_id: int) -> BillingAccount:
    with db.read_session() as s:
        return s.scalar(select(BillingAccount).where(BillingAccount.workspace_id == workspace_id))


def subscribe(fake, actor, plan="pro"):
    """Checkout, the customer pays, and the webhooks arrive: the subscription id."""
    url = billing.start_checkout(actor, plan)
    session_id = url.rsplit("/", 1)[1]
    for event in fake.complete_checkout(session_id):
        deliver(event)
    return fake.sessions[session_id]["subscription"]


# --- self-hosted ----------------------------------------------------------------------------


def test_without_stripe_keys_the_workspace_is_self_hosted_and_unlimited(database, data_dir):
    actor = owner()
    state = limits.current(actor.workspace_id)
    assert state.plan is plans.SELF_HOSTED and not plans.billing_configured()
    limits.check(actor.workspace_id, "workflows", 10_000)
    limits.require_feature(actor.workspace_id, "mcp_connectors")
    with pytest.raises(billing.stripe_api.BillingNotConfigured, match="METERBOOK_STRIPE_SECRET_KEY"):
        billing.start_checkout(actor, "pro")


# --- checkout -------------------------------------------------------------------------------


def test_checkout_makes_one_customer_and_reuses_it_and_the_session(fake, ws):
    first = billing.start_checkout(ws, "pro")
    again = billing.start_checkout(ws, "pro")  # a double click or a retry after a crash
    assert first == again and len(fake.sessions) == 1 and len(fake.customers) == 1
    session = next(iter(fake.sessions.values()))
    assert session["mode"] == "subscription" and session["client_reference_id"] == str(ws.workspace_id)
    assert [i["price"] for i in session["line_items_sent"]] == ["price_pro", "price_pro_usage"]
    posts = [r for r in fake.received if r.method == "POST"]
    assert all(r.header("idempotency-key").startswith("meterbook-") for r in posts)
    billing.start_checkout(ws, "business")  # another plan: a new session, the same customer
    assert len(fake.customers) == 1 and len(fake.sessions) == 2
    assert {s["customer"] for s in fake.sessions.values()} == {account(ws.workspace_id).stripe_customer_id}


def test_a_customer_post_retried_after_a_crash_gets_the_same_customer(fake, ws):
    customer = billing.ensure_customer(ws)
    with db.transaction() as s:  # as if the process died before storing Stripe's answer
        s.get(BillingAccount, account(ws.workspace_id).id).stripe_customer_id = None
    assert billing.ensure_customer(ws) == customer and len(fake.customers) == 1
    keys = [r.header("idempotency-key") for r in fake.received if r.path == "/v1/customers"]
    assert len(keys) == 2 and keys[0] == keys[1]  # the same row asked twice with the same key


def test_the_redirect_alone_changes_nothing_only_stripe_state_does(fake, ws):
    url = billing.start_checkout(ws, "pro")
    assert limits.current(ws.workspace_id).plan.key == "free"
    assert billing.refresh(ws).plan.key == "free"  # session still open at Stripe: nothing paid
    fake.complete_checkout(url.rsplit("/", 1)[1])  # paid, but the webhooks are not delivered yet
    assert limits.current(ws.workspace_id).plan.key == "free"
    state = billing.refresh(ws)  # the success page fetches the subscription's current state
    assert state.plan.key == "pro" and state.status == "active"
    assert [i.status for i in billing.invoices(ws)] == ["paid"]


def test_checkout_then_webhooks_make_the_subscription_active_and_raise_limits(fake, ws):
    with pytest.raises(PlanLimitReached, match="Free plan's limit on workflows is reached: 3 of 3"):
        limits.check(ws.workspace_id, "workflows", 3)
    subscribe(fake, ws)
    a = account(ws.workspace_id)
    assert (a.plan, a.status) == ("pro", "active") and a.current_period_end is not None
    limits.check(ws.workspace_id, "workflows", 3)  # Pro allows 50
    limits.require_feature(ws.workspace_id, "reports")
    with pytest.raises(PlanLimitReached, match="Upgrade to Business"):
        limits.require_feature(ws.workspace_id, "mcp_connectors")
    with pytest.raises(InvalidInput, match="already has a subscription"):
        billing.start_checkout(ws, "business")  # a second subscription would bill twice
    invoices = billing.invoices(ws)
    assert [(i.status, i.total) for i in invoices] == [("paid", Decimal("29.00"))]
    assert invoices[0].hosted_invoice_url and invoices[0].invoice_pdf


def test_portal_links_are_made_for_admins_and_never_logged(fake, ws, caplog):
    subscribe(fake, ws)
    caplog.set_level("DEBUG")
    url = billing.portal_url(ws, change_plan=True)
    portal = next(iter(fake.portal_sessions.values()))
    assert url == portal["url"] and portal["flow"] == "subscription_update"
    assert url not in caplog.text and portal["url"].rsplit("/", 1)[1] not in caplog.text
    viewer = member(ws, "viewer@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        billing.portal_url(viewer)
    with pytest.raises(PermissionDenied):
        billing.start_checkout(viewer, "business")


def test_stripe_errors_say_what_to_do_and_store_nothing(fake, ws, monkeypatch):
    monkeypatch.setenv("METERBOOK_STRIPE_PRICE_PRO", "price_missing")
    from tests.billing_helpers import reset_caches

    reset_caches()
    with pytest.raises(StripeRefused, match="No such price"):
        billing.start_checkout(ws, "pro")
    fake.outage = True
    with pytest.raises(StripeUnavailable, match="could not be reached"):
        billing.start_checkout(ws, "business")
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(CheckoutAttempt).where(
            CheckoutAttempt.stripe_session_id.isnot(None))) == 0
    with pytest.raises(InvalidInput, match="no plan called"):
        billing.start_checkout(ws, "platinum")


# --- webhooks -------------------------------------------------------------------------------


def test_payment_failed_keeps_the_plan_for_the_grace_period_then_free_limits(fake, ws):
    sub = subscribe(fake, ws)
    failed = fake.fail_payment(sub)
    for event in failed:
        deliver(event)
    a = account(ws.workspace_id)
    assert a.status == "past_due" and a.past_due_since is not None
    assert limits.current(ws.workspace_id).plan.key == "pro"  # grace: still Pro
    later = utcnow() + timedelta(days=8)
    state = limits.current(ws.workspace_id, now=later)
    assert state.plan.key == "free" and state.subscribed_plan == "pro"
    with db.transaction() as s:  # move the first past-due notice back past the grace period
        s.get(BillingAccount, a.id).past_due_since = utcnow() - timedelta(days=8)
    limits.forget()
    with pytest.raises(PlanLimitReached, match="past due"):
        limits.check(ws.workspace_id, "schedules", 1)
    for event in fake.pay_invoice(failed[0]["data"]["object"]["id"]):
        deliver(event)
    assert account(ws.workspace_id).past_due_since is None
    limits.check(ws.workspace_id, "schedules", 1)  # paid: Pro again, nothing was deleted meanwhile


def test_the_same_event_twice_and_out_of_order_leave_the_current_state(fake, ws):
    sub = subscribe(fake, ws)
    created = fake.event("customer.subscription.created", fake.subscriptions[sub])
    upgrade = fake.change_price(sub, "price_business", "price_business_usage")
    assert deliver(upgrade).outcome == "processed"
    assert deliver(upgrade).outcome == "duplicate"
    # The older "created" event, with Pro inside it, arrives late: the state fetched is Business.
    assert deliver(created).outcome == "processed"
    assert account(ws.workspace_id).plan == "business"
    deleted = fake.cancel(sub)
    updated_late = fake.event("customer.subscription.updated", {**fake.subscriptions[sub], "status": "active"})
    deliver(deleted)
    deliver(updated_late)  # a stale "active" copy after the deletion
    a = account(ws.workspace_id)
    assert (a.status, a.plan) == ("canceled", "free") and limits.current(ws.workspace_id).plan.key == "free"
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(StripeEvent)) == len(
            {e for e in s.scalars(select(StripeEvent.id))})


def test_a_failed_handler_stores_nothing_and_the_retry_does_the_work_once(fake, ws):
    sub = subscribe(fake, ws)
    [failed_invoice, past_due] = fake.fail_payment(sub)
    fake.outage = True
    with pytest.raises(StripeUnavailable):
        deliver(failed_invoice)
    fake.outage = False
    with db.read_session() as s:
        assert s.get(StripeEvent, failed_invoice["id"]) is None
    assert deliver(failed_invoice).outcome == "processed"
    assert deliver(failed_invoice).outcome == "duplicate"
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(InvoiceCache)) == 2
    assert account(ws.workspace_id).status == "past_due"


def test_forged_and_stale_signatures_are_refused(fake, ws):
    sub = subscribe(fake, ws)
    event = fake.cancel(sub)
    with pytest.raises(webhooks.InvalidWebhook, match="signature"):
        deliver(event, secret="whsec_someone_else")
    with pytest.raises(webhooks.InvalidWebhook, match="signature"):
        deliver(event, timestamp=int(time.time()) - 3600)  # a replay an hour later
    with pytest.raises(webhooks.InvalidWebhook):
        webhooks.handle_webhook(b'{"id": "evt_1"}', None)
    assert account(ws.workspace_id).status == "active"
    assert deliver(event).outcome == "processed"


def test_events_for_customers_that_are_not_ours_are_ignored(fake, ws):
    other = fake._customer({"email": "x@example.com"})
    event = fake.event("invoice.paid", {"id": "in_missing", "customer": other["id"]})
    fake.invoices["in_missing"] = {"id": "in_missing", "object": "invoice", "customer": other["id"],
                                   "status": "paid", "currency": "usd", "amount_due": 1, "amount_paid": 1,
                                   "total": 1, "created": int(time.time())}
    assert deliver(event).outcome == "ignored"


# --- limits at the engine -------------------------------------------------------------------


def test_invitations_stop_at_the_member_limit_counting_open_invitations(fake, ws):
    member(ws, "ana@example.com", "editor")
    accounts.invite(ws, "ben@example.com", "viewer")  # owner + a + b's open invitation = 3, Free's limit
    with pytest.raises(PlanLimitReached, match=r"members \(with open invitations\) is reached: 3 of 3.*Upgrade to "
                                               "Pro"):
        accounts.invite(ws, "cleo@example.com", "viewer")
    subscribe(fake, ws)
    accounts.invite(ws, "cleo@example.com", "viewer")


def test_counted_limits_name_the_limit_the_use_and_the_upgrade(fake, ws):
    for limit, allowed in (("workflows", 3), ("schedules", 1), ("workflow_runs", 200)):
        limits.check(ws.workspace_id, limit, allowed - 1)
        with pytest.raises(PlanLimitReached) as err:
            limits.check(ws.workspace_id, limit, allowed)
        assert err.value.limit == limit and err.value.current == allowed and err.value.upgrade_to == "pro"
        assert f"{allowed:,} of {allowed:,}" in str(err.value)
    subscribe(fake, ws, "business")
    limits.check(ws.workspace_id, "workflows", 100_000)  # Business: unlimited workflows
    with pytest.raises(PlanLimitReached, match="largest plan"):
        limits.check(ws.workspace_id, "workflow_runs", 50_000)
    with pytest.raises(ValueError):
        limits.check(ws.workspace_id, "rockets", 1)


def test_free_ai_spend_is_blocked_at_the_generation_path_once_used_up(fake, ws):
    scripted_routes(ws, ("primary", "openai", GPT))
    with db.transaction() as s:  # $4.99 of this month's $5 already spent
        s.add(LedgerEntry(workspace_id=ws.workspace_id, provider="openai", model=GPT, cost=Decimal("4.99"),
                          created_at=utcnow()))
    scripted.SCRIPT[GPT] = [Result(text="ok", usage=Usage(input_tokens=1_000_000, output_tokens=100_000))]
    generation.generate(generation.GenerationRequest(prompt="hi", max_tokens=10), ws)  # $0.21: over now
    with pytest.raises(PlanLimitReached, match=r"AI spend included this month is reached: \$5\.20 of \$5\.00"):
        generation.generate(generation.GenerationRequest(prompt="hi", max_tokens=10), ws)
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 2  # the refused call made no row
    subscribe(fake, ws)  # Pro bills overage instead of blocking
    generation.generate(generation.GenerationRequest(prompt="hi", max_tokens=10), ws)


def test_the_same_event_delivered_twice_at_once_is_processed_once(fake, ws):
    import threading

    sub = subscribe(fake, ws)
    [failed_invoice, _] = fake.fail_payment(sub)
    results, barrier = [], threading.Barrier(2)

    def deliver_it():
        barrier.wait()
        results.append(deliver(failed_invoice).outcome)

    threads = [threading.Thread(target=deliver_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["duplicate", "processed"]
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(StripeEvent).where(
            StripeEvent.id == failed_invoice["id"])) == 1


def test_a_webhook_without_a_signing_secret_or_with_a_body_that_is_not_an_event_is_refused(fake, ws, monkeypatch):
    from tests.billing_helpers import reset_caches
    from tests.fakes.stripe_server import sign

    body = b"not json at all"
    with pytest.raises(webhooks.InvalidWebhook, match="not a Stripe event"):
        webhooks.handle_webhook(body, sign(body))
    monkeypatch.delenv("METERBOOK_STRIPE_WEBHOOK_SECRET")
    reset_caches()
    with pytest.raises(billing.stripe_api.BillingNotConfigured, match="METERBOOK_STRIPE_WEBHOOK_SECRET"):
        deliver(fake.event("invoice.paid", {"id": "in_1"}))
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(StripeEvent)) == 0


WORKFLOW = """
name: {name}
nodes:
  - id: shout
    type: transform
    params: {{value: "hi"}}
"""


def test_workflows_and_their_runs_stop_at_the_plan_limit_in_the_engine(fake, ws):
    from engine.workflows import runs, store
    from engine.workflows.models import WorkflowRun

    made = [store.create(ws, WORKFLOW.format(name=f"wf{i}")) for i in range(3)]  # Free keeps 3
    with pytest.raises(PlanLimitReached, match=r"workflows is reached: 3 of 3.*Upgrade to Pro") as err:
        store.create(ws, WORKFLOW.format(name="wf3"))
    assert err.value.limit == "workflows"
    with pytest.raises(PlanLimitReached):
        store.clone(ws, made[0].id)
    first = runs.trigger(ws, made[0].id)
    with db.transaction() as s:  # 199 of Free's 200 runs this month already started
        version_id = s.get(WorkflowRun, first.id).version_id
        s.add_all(WorkflowRun(workspace_id=ws.workspace_id, workflow_id=made[0].id, version_id=version_id,
                              user_id=ws.user_id, trigger="manual", inputs={}, status="succeeded")
                  for _ in range(198))
    runs.trigger(ws, made[1].id)  # the 200th
    with pytest.raises(PlanLimitReached, match=r"workflow runs this month is reached: 200 of 200") as err:
        runs.trigger(ws, made[1].id)
    assert err.value.current == 200
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(WorkflowRun)) == 200  # nothing queued by the refusal
    subscribe(fake, ws)
    store.create(ws, WORKFLOW.format(name="wf3"))
    runs.trigger(ws, made[1].id)
    names = {u.limit: u.used for u in billing.overview(ws).usage}
    assert names["workflows"] == 4 and names["workflow_runs"] == 201
