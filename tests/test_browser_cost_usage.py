"""The Cost & Usage journey in a real headless Chromium, against the app as `python -m engine up` starts it.

Sign in as the demo user, open Cost & Usage, filter it to one project, see the URL carry the
view and a fresh tab restore it from that URL, drill into a bar, and download the view as CSV:
the file holds exactly that project's rows, to the cent.
"""

from __future__ import annotations

import io
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from engine import accounts, dashboards, db, demo
from engine.config import get_settings
from engine.dashboards import View
from engine.permissions import Actor
from pages._common import usd
from tests.browser import demo_app, launch, open_page, settle, sign_in  # noqa: F401  (demo_app: the app fixture)

pytestmark = pytest.mark.browser
PROJECT = "Support Assistant"


def _expected(env, monkeypatch) -> tuple[int, Decimal]:
    """Calls and spend of the project over the default period (last 7 days), read as the app reads them."""
    monkeypatch.setenv("METERBOOK_DATA_DIR", env["METERBOOK_DATA_DIR"])  # the app's warehouse, not ours
    get_settings.cache_clear()
    db.use_engine(db.make_engine(env["METERBOOK_DATABASE_URL"]))
    try:
        user = accounts.authenticate(demo.DEMO_EMAIL, demo.DEMO_PASSWORD)
        [access] = accounts.workspaces_for(user.id)
        with dashboards.open_dashboard(Actor(user.id, access.workspace.id)) as board:
            project_id = next(i for i, name in board.options().projects.items() if name == PROJECT)
            totals = board.summary(board.filters(View("7d", project_id=project_id))).totals.current
    finally:
        db.use_engine(None)
        monkeypatch.undo()
        get_settings.cache_clear()
    return totals.calls, totals.spend


def _choose(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def _metric(page, label: str):
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue")


def test_filter_to_one_project_share_the_link_drill_down_and_export(demo_app, tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    url, env, log_path = demo_app.url, demo_app.env, demo_app.log
    calls, spend = _expected(env, monkeypatch)
    assert calls > 0

    with sync_playwright() as pw:
        browser = launch(pw)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        sign_in(page, url, demo.DEMO_EMAIL, demo.DEMO_PASSWORD)
        open_page(page, "Cost & Usage")
        _choose(page, "Project", PROJECT)
        expect(_metric(page, "Spend")).to_have_text(usd(spend), timeout=30_000)
        expect(_metric(page, "Calls")).to_have_text(f"{calls:,}")
        shared = page.url
        assert parse_qs(urlparse(shared).query).get("project") == [PROJECT]
        page.screenshot(path=str(log_path.parent / "cost_usage.png"), full_page=True)

        # The link restores the view in a new tab (signed in by the same cookie).
        other = context.new_page()
        other.goto(shared)
        settle(other)
        expect(_metric(other, "Spend")).to_have_text(usd(spend), timeout=30_000)
        expect(other.get_by_role("combobox", name="Project", exact=True)).to_have_value(PROJECT)
        other.close()

        # Selecting a bar of the top-projects chart lists the rows behind it.
        page.get_by_role("tab", name="Projects").click()
        bar = page.get_by_role("tabpanel", name="Projects").locator(".barlayer .point path").first
        bar.scroll_into_view_if_needed()
        box = bar.bounding_box()  # Plotly's drag layer takes the click and finds the bar under it
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        settle(page)
        expect(page.get_by_text(f"Rows behind {PROJECT}")).to_be_visible(timeout=30_000)
        expect(page.get_by_text(f"of {calls:,}, newest first").first).to_be_visible()

        path = tmp_path / "export.csv"
        # A click that lands while Streamlit is still redrawing after the drill-down can be lost
        # (the deferred download never starts); a person clicks again, and so does the test.
        for attempt in range(3):
            settle(page)
            try:
                with page.expect_download(timeout=25_000) as download:
                    page.get_by_role("button", name=f"Download {calls:,} rows as CSV").click()
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
        download.value.save_as(path)
        context.close()
        browser.close()

    exported = pl.read_csv(io.BytesIO(path.read_bytes()), schema_overrides={"cost": pl.String})
    assert exported.height == calls
    assert set(exported["project"].to_list()) == {PROJECT}
    assert sum((Decimal(c) for c in exported["cost"].to_list() if c), Decimal(0)) == spend
