"""A workflow journey in a real headless Chromium, against the app as `python -m engine up` starts it
(whose worker thread runs queued workflow runs): install the web page summary template, run it on
a page served on 127.0.0.1, watch the run finish on the Runs page, and see its cost."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from engine import db
from engine.models import LedgerEntry
from pages import _common as ui
from tests.browser import app_with_openai, launch, open_page, settle, sign_in
from tests.fakes.http_target import HttpTarget

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "wendy@example.com", "workflows all the way"
PAGE = "<html><body><h1>Tea</h1><p>Tea is brewed from the leaves of Camellia sinensis.</p></body></html>"


@pytest.fixture
def prepared_app(tmp_path):
    target = HttpTarget(answers={"/tea": [(200, PAGE, "text/html")]}).start()
    try:
        with app_with_openai(tmp_path, EMAIL, "Wendy Flow", PASSWORD, "Flows Ltd") as prepared:
            yield (*prepared, target)
    finally:
        target.stop()


def test_install_a_template_run_it_watch_it_finish_and_see_its_cost(prepared_app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, actor, fake, target = prepared_app
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        sign_in(page, url, EMAIL, PASSWORD)
        open_page(page, "Workflows")
        expect(page.get_by_text("No workflows yet")).to_be_visible()
        page.get_by_text("Templates", exact=True).click()
        settle(page)  # a click while the page is still running is lost
        page.locator(".st-key-wf_tpl_web_page_summary button").click()
        expect(page.get_by_role("heading", name="Web page summary")).to_be_visible(timeout=30_000)
        settle(page)
        page.get_by_role("textbox", name="url (string)").fill(f"{target.url}/tea")
        page.get_by_role("button", name="Run with inputs").click()
        expect(page.get_by_text("is queued")).to_be_visible(timeout=30_000)
        page.get_by_role("link", name="Watch it on the Runs page").click()
        status = page.get_by_test_id("stMetric").filter(has_text="Status").get_by_test_id("stMetricValue")
        expect(status).to_have_text("succeeded", timeout=60_000)
        settle(page)
        with db.read_session() as s:
            [entry] = s.scalars(select(LedgerEntry)).all()
        cost = page.get_by_test_id("stMetric").filter(has_text="Cost").get_by_test_id("stMetricValue")
        expect(cost).to_have_text(ui.usd(entry.cost, 4))
        expect(page.get_by_test_id("stJson").last).to_contain_text("Hello from the fake OpenAI server.")
        page.screenshot(path=str(tmp_path / "workflow-run.png"), full_page=True)
        browser.close()
    assert entry.workflow_run_id is not None and entry.cost > 0
    [chat] = [r for r in fake.received if r.path == "/v1/chat/completions"]
    assert "Tea is brewed" in str(chat.body)
