"""The Reports page in a real Chromium: the email's preview shows its charts (the cid: images inlined), as sent."""

from __future__ import annotations

import pytest

from engine import accounts
from engine.permissions import Actor
from engine.reports import store
from tests.browser import TIMEOUT, app_database, launch, serve_app, settle, sign_in
from tests.report_helpers import spend

pytest.importorskip("playwright")


def test_the_preview_draws_the_email_with_its_chart_images(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with app_database(tmp_path):
        user, ws = accounts.create_first_owner("ann@example.com", "Ann", "correct horse battery", "Acme")
        actor = Actor(user.id, ws.id)
        spend(actor)
        report = store.create(actor, name="Weekly spend", source="dashboard", view={"period": "7d"})
    with serve_app(tmp_path, demo=False) as app, sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        sign_in(page, app.url, "ann@example.com", "correct horse battery")
        page.goto(f"{app.url}/reports?report={report.id}")
        settle(page)
        expect(page.get_by_role("heading", name="Weekly spend").first).to_be_visible(timeout=TIMEOUT)
        page.screenshot(path=str(tmp_path / "reports-editor.png"), full_page=True)
        page.get_by_role("tab", name="Preview").click()
        settle(page)
        chart = page.get_by_role("img", name="Spend over time by provider")
        expect(chart).to_be_visible(timeout=TIMEOUT)
        assert chart.evaluate("img => img.naturalWidth") > 300  # the PNG itself loaded, not a broken image
        assert chart.get_attribute("src").startswith("data:image/png;base64,")
        page.screenshot(path=str(tmp_path / "reports-preview.png"), full_page=True)
        browser.close()
