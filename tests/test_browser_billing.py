"""Upgrade a plan in a real headless Chromium, against the app as `python -m engine up` starts it.

The app runs with billing pointed at the fake Stripe in this process. The journey: sign in,
open Billing on Free, press "Upgrade to Pro" and get Stripe's checkout link; the customer pays
(at the fake) and Stripe's signed webhooks reach the engine's handler; the page then shows Pro,
active, with the paid invoice. `engine up` also starts the meter drain thread.
"""

from __future__ import annotations

import pytest

from engine import accounts
from tests.billing_helpers import ENV, deliver, reset_caches
from tests.browser import app_database, launch, open_page, serve_app, settle, sign_in
from tests.fakes.stripe_server import FakeStripe

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "bea@example.com", "ledger lantern quietly"


def test_upgrade_through_checkout_and_webhooks(tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    with FakeStripe() as fake, app_database(tmp_path):
        env = {**ENV, "METERBOOK_STRIPE_API_BASE": fake.base_url, "METERBOOK_BILLING_DRAIN_SECONDS": "1"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_caches()
        accounts.create_first_owner(EMAIL, "Bea Biller", PASSWORD, "Meters Ltd")
        with serve_app(tmp_path, demo=False, env=env) as app, sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            sign_in(page, app.url, EMAIL, PASSWORD)
            open_page(page, "Billing")
            expect(page.get_by_text("Members (with open invitations): 1 of 3")).to_be_visible()
            page.get_by_role("button", name="Upgrade to Pro").click()
            settle(page)
            link = page.get_by_role("link", name="Continue to Stripe checkout for Pro")
            expect(link).to_be_visible(timeout=30_000)
            [session_id] = fake.sessions
            assert link.get_attribute("href") == fake.sessions[session_id]["url"]

            for event in fake.complete_checkout(session_id):
                deliver(event)
            page.reload()
            settle(page)
            expect(page.get_by_text("Active", exact=True)).to_be_visible(timeout=30_000)
            expect(page.get_by_role("button", name="Pro: current plan")).to_be_visible()
            page.screenshot(path=str(tmp_path / "billing.png"), full_page=True)
            expect(page.get_by_text("AI spend included this month: $0.00 of $50.00")).to_be_visible()
            browser.close()
