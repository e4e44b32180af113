"""The main journey in a real headless Chromium, against the app as `python -m engine up` starts it.

Sign in as the demo user, see the demo totals on the Overview, create a project, see it
listed, and stay signed in across a browser refresh.
"""

from __future__ import annotations

import os
import shutil
from decimal import Decimal

import pytest

from engine import db, demo, usage
from tests.browser import demo_app, launch, open_page, settle, sign_in  # noqa: F401  (demo_app: the app fixture)

pytestmark = pytest.mark.browser


def test_demo_user_journey(demo_app):
    from playwright.sync_api import expect, sync_playwright

    url, log_path = demo_app.url, demo_app.log
    log_text = log_path.read_text()
    assert f"Meterbook is running at {url}" in log_text
    assert f"Demo login: {demo.DEMO_EMAIL} / {demo.DEMO_PASSWORD}" in log_text

    # The figure the Overview must show, computed by the engine from the same database.
    db.use_engine(db.make_engine(demo_app.database_url))
    try:
        from engine import accounts
        from engine.permissions import Actor

        user = accounts.authenticate(demo.DEMO_EMAIL, demo.DEMO_PASSWORD)
        [access] = accounts.workspaces_for(user.id)
        expected = usage.overview(Actor(user.id, access.workspace.id)).this_month.spend
    finally:
        db.use_engine(None)
    assert expected > Decimal(0)

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        sign_in(page, url, demo.DEMO_EMAIL, demo.DEMO_PASSWORD)
        expect(page.get_by_test_id("stMetricValue").first).to_have_text(f"${expected:,.2f}", timeout=30_000)
        page.screenshot(path=str(log_path.parent / "overview.png"), full_page=True)

        # A refresh keeps the session (the cookie holds a server-side session token).
        page.reload()
        settle(page)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=30_000)

        open_page(page, "Projects")
        page.get_by_text("New project").first.click()
        name_box = page.get_by_role("textbox", name="Name").first
        for _ in range(3):  # a rerun that lands while typing draws the form again, empty: type again
            name_box.fill("Browser-made project")
            settle(page)
            if name_box.input_value() == "Browser-made project":
                break
        page.get_by_role("button", name="Create project").click()
        expect(page.get_by_text("Browser-made project").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(log_path.parent / "projects.png"), full_page=True)
        browser.close()
    if os.environ.get("METERBOOK_KEEP_SCREENSHOTS"):
        shutil.copy(log_path.parent / "projects.png", os.environ["METERBOOK_KEEP_SCREENSHOTS"])
