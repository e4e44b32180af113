"""The Billing page through AppTest, against a real SQLite database and the fake Stripe."""

from __future__ import annotations

from decimal import Decimal
from functools import partial

import pytest

from engine import db, usage
from tests import pages_helpers
from tests.billing_helpers import billing_on, deliver
from tests.factories import PASSWORD, member, owner
from tests.pages_helpers import errors, no_exceptions, signed_in

PAGE = "pages/billing.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Billing")


@pytest.fixture
def fake(sqlite_database, data_dir, monkeypatch):
    with billing_on(monkeypatch) as fake:
        yield fake


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def links(at) -> list:
    return [e.proto for e in at.get("link_button")]


def test_without_stripe_keys_it_says_self_hosted_and_how_to_configure(sqlite_database, data_dir):
    owner()
    at = open_page()
    assert any("self-hosted" in i.value for i in at.info)
    assert any("METERBOOK_STRIPE_SECRET_KEY" in m.value for m in at.markdown)
    assert not [b for b in at.button if b.key.startswith("plan_")]


def test_upgrade_goes_through_checkout_and_the_plan_changes_when_stripe_says_so(fake):
    boss = owner()
    with db.transaction() as s:
        usage.record(s, workspace_id=boss.workspace_id, provider="openai", model="gpt-4o-mini", cost=Decimal("1.25"))
    at = open_page()
    assert metrics(at)["Plan"] == "Free"
    bars = [p.proto.text for p in at.get("progress")]
    assert "AI spend included this month: $1.25 of $5.00" in bars
    assert "Members (with open invitations): 1 of 3" in bars
    assert any("No invoices yet" in c.value for c in at.caption)
    at.button(key="plan_pro").click().run()
    no_exceptions(at)
    [link] = links(at)
    session_id = link.url.rsplit("/", 1)[1]
    assert link.url == fake.sessions[session_id]["url"] and "checkout" in link.label.lower()
    at.run()
    assert metrics(at)["Plan"] == "Free"  # being sent to checkout changes nothing
    for event in fake.complete_checkout(session_id):
        deliver(event)
    at = open_page()
    assert (metrics(at)["Plan"], metrics(at)["Status"]) == ("Pro", "Active")
    assert "AI spend included this month: $1.25 of $50.00" in [p.proto.text for p in at.get("progress")]
    assert at.button(key="plan_pro").disabled
    [table] = at.dataframe
    assert list(table.value["Total"]) == ["$29.00"] and list(table.value["Status"]) == ["Paid"]
    at.button(key="portal").click().run()
    [portal] = links(at)
    assert portal.url == next(iter(fake.portal_sessions.values()))["url"]
    at.button(key="plan_business").click().run()  # subscribed: plan changes go through the portal
    no_exceptions(at)
    [change] = links(at)
    [session] = [p for p in fake.portal_sessions.values() if p["url"] == change.url]
    assert session["flow"] == "subscription_update" and len(fake.sessions) == 1


def test_the_success_redirect_reads_the_subscription_from_stripe(fake):
    boss = owner()
    from engine.billing import accounts as billing

    url = billing.start_checkout(boss, "business")
    fake.complete_checkout(url.rsplit("/", 1)[1])  # paid; webhooks not here yet
    at = open_page(query={"checkout": "success"})
    assert metrics(at)["Plan"] == "Business"
    assert any("Stripe confirms" in s.value for s in at.success)


def test_viewers_see_the_plan_but_no_buttons_that_change_it(fake):
    boss = owner()
    member(boss, "vera@example.com", "viewer")
    at = open_page("vera@example.com")
    assert metrics(at)["Plan"] == "Free"
    assert not [b for b in at.button if b.key.startswith("plan_") and not b.disabled]
    assert any("An admin or owner can change the plan" in c.value for c in at.caption)


def test_past_due_shows_the_grace_period_and_stripe_errors_show_as_messages(fake):
    boss = owner()
    from engine.billing import accounts as billing

    url = billing.start_checkout(boss, "pro")
    events = fake.complete_checkout(url.rsplit("/", 1)[1])
    for event in events:
        deliver(event)
    for event in fake.fail_payment(events[0]["data"]["object"]["subscription"]):
        deliver(event)
    at = open_page()
    assert metrics(at)["Status"] == "Payment overdue"
    assert any("keeps working until" in w.value and "Nothing is deleted" in w.value for w in at.warning)
    fake.outage = True
    at.button(key="portal").click().run()
    no_exceptions(at)
    assert any("could not be reached" in e for e in errors(at))
    assert not links(at)


def test_a_limit_reached_on_another_page_offers_the_way_to_upgrade(fake):
    boss = owner()
    member(boss, "ana@example.com", "editor")
    member(boss, "ben@example.com", "viewer")  # 3 of Free's 3 members
    at = signed_in("owner@example.com", PASSWORD, page="pages/settings.py")
    at.text_input(key="invite_email").input("cleo@example.com")
    at.button(key="invite_submit").click().run()
    no_exceptions(at)
    assert any("members (with open invitations) is reached: 3 of 3" in e for e in errors(at))
    assert [(link.proto.page, link.proto.label) for link in at.get("page_link")
            if link.proto.label.startswith("See plans")] == [("billing", "See plans and upgrade")]
