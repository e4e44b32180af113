"""A 20-row batch in a real headless Chromium, against the app as `python -m engine up` starts it.

The workspace is prepared before the app starts: an owner, and an OpenAI connection pointing
at the fake OpenAI server in this process, routed for text. The journey: sign in, open Batch,
upload a CSV, write the template, see the total estimate (the engine's figure) before anything
is sent, start it, watch the progress bar reach the end, and download the results as CSV.
"""

from __future__ import annotations

import io
from decimal import Decimal

import polars as pl
import pytest
from sqlalchemy import select

from engine import batches, db
from engine.models import LedgerEntry
from pages import _common as ui
from tests.browser import app_with_openai, launch, open_page, settle, sign_in

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "bea@example.com", "batches of twenty rows"
TEMPLATE = "Describe {{ city }} in {{ country }} in five words."
ROWS = "city,country\n" + "".join(f"City {i},Country {i % 4}\n" for i in range(1, 21))


@pytest.fixture
def prepared_app(tmp_path):
    with app_with_openai(tmp_path, EMAIL, "Bea Batcher", PASSWORD, "Rows Ltd") as prepared:
        yield prepared


def test_run_a_twenty_row_batch_and_download_its_results(prepared_app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, actor, fake = prepared_app
    expected = batches.prepare(actor, batches.read_csv(ROWS), batches.BatchSettings(TEMPLATE)).estimate
    assert expected.cost is not None and expected.rows == 20
    (tmp_path / "cities.csv").write_text(ROWS)

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        sign_in(page, url, EMAIL, PASSWORD)
        open_page(page, "Batch")
        page.locator("input[type=file]").set_input_files(str(tmp_path / "cities.csv"))
        expect(page.get_by_text("20 rows · columns: city, country")).to_be_visible(timeout=30_000)
        settle(page)
        template = page.get_by_role("textbox", name="Prompt template")
        template.fill(TEMPLATE)
        template.press("Control+Enter")
        settle(page)

        # The total is on screen before anything is sent.
        estimate = page.get_by_test_id("stMetric").filter(has_text="Estimated total").get_by_test_id("stMetricValue")
        expect(estimate).to_have_text(ui.usd(expected.cost, 4), timeout=30_000)
        expect(page.get_by_text("Describe City 1 in Country 1 in five words.")).to_be_visible()
        assert not [r for r in fake.received if r.path == "/v1/chat/completions"]
        page.screenshot(path=str(tmp_path / "batch-estimate.png"), full_page=True)

        page.get_by_role("button", name="Start batch of 20 rows").click()
        expect(page.get_by_test_id("stProgress").get_by_text("20 of 20 rows · 20 answered")).to_be_visible(
            timeout=30_000)
        settle(page)
        with db.read_session() as s:
            entries = s.scalars(select(LedgerEntry)).all()
        assert len(entries) == 20 and all(e.status == "ok" for e in entries)
        total = sum(e.cost for e in entries)
        status = page.get_by_test_id("stMetric").filter(has_text="Status").get_by_test_id("stMetricValue")
        expect(status).to_have_text("Done", timeout=30_000)
        page.screenshot(path=str(tmp_path / "batch-done.png"), full_page=True)

        with page.expect_download(timeout=30_000) as download:
            page.get_by_role("button", name="Download CSV").click()
        name = download.value.suggested_filename
        results = pl.read_csv(io.BytesIO(download.value.path().read_bytes()), infer_schema=False)
        browser.close()

    assert name == "cities-csv-results.csv"
    assert results.height == 20 and results["city"].to_list()[:2] == ["City 1", "City 2"]
    assert set(results["status"]) == {"ok"} and set(results["output"]) == {"Hello from the fake OpenAI server."}
    assert sum(Decimal(c) for c in results["cost_usd"]) == total > 0
    assert {int(i) for i in results["ledger_id"]} == {e.id for e in entries}
