"""Generate a text in a real headless Chromium, against the app as `python -m engine up` starts it.

The workspace is prepared before the app starts: an owner, and an OpenAI connection pointing
at the fake OpenAI server in this process, routed for text. The journey: sign in, open
Generate, write a prompt, see the cost estimate before running (the figure the engine
computes), run it, watch the answer arrive and see what it really cost (the ledger's figure).
"""

from __future__ import annotations

import os
import shutil
from decimal import Decimal

import pytest
from sqlalchemy import select

from engine import db, generation
from engine.models import LedgerEntry
from tests.browser import app_with_openai, launch, open_page, settle, sign_in
from tests.fakes.openai_server import Reply

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "gina@example.com", "ledger lantern quietly"
PROMPT = "Write one line about invoices."
ANSWER = "Invoices arrive like clockwork, and so do the payments."


def _cents(value: Decimal) -> str:
    return f"${value.normalize():f}"  # how Generate writes a fraction of a cent


@pytest.fixture
def prepared_app(tmp_path):
    with app_with_openai(tmp_path, EMAIL, "Gina Generator", PASSWORD, "Words Inc") as prepared:
        yield prepared


def test_generate_a_text_with_its_estimate_before_and_its_cost_after(prepared_app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, actor, fake = prepared_app
    expected = generation.estimate(generation.GenerationRequest(prompt=PROMPT), actor)
    assert expected.cost is not None and expected.exact
    fake.push(Reply(text=ANSWER, prompt_tokens=14, completion_tokens=12))

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        sign_in(page, url, EMAIL, PASSWORD)
        open_page(page, "Generate")
        expect(page.get_by_text("Write a prompt to see what the call will cost")).to_be_visible()
        prompt = page.get_by_role("textbox", name="Prompt", exact=True)
        prompt.fill(PROMPT)
        prompt.press("Control+Enter")
        settle(page)

        # The estimate is on screen before anything is sent.
        expect(page.get_by_text(f"Estimated cost: at most {_cents(expected.cost)}")).to_be_visible(timeout=30_000)
        expect(page.get_by_text(f"{expected.input_tokens} prompt tokens + up to 4,096 answer tokens "
                                "on openai/gpt-4o-mini")).to_be_visible()
        assert not [r for r in fake.received if r.path == "/v1/chat/completions"]
        page.screenshot(path=str(tmp_path / "generate-estimate.png"), full_page=True)

        page.get_by_role("button", name="Generate", exact=True).click()
        expect(page.get_by_text(ANSWER)).to_be_visible(timeout=30_000)
        settle(page)
        with db.read_session() as s:
            [row] = s.scalars(select(LedgerEntry)).all()
        assert (row.status, row.input_tokens, row.output_tokens) == ("ok", 14, 12)
        assert row.cost == Decimal("0.0000093")  # 14 × $0.15/M + 12 × $0.60/M
        cost = page.get_by_test_id("stMetric").filter(has_text="Cost").get_by_test_id("stMetricValue")
        expect(cost).to_have_text(_cents(row.cost), timeout=30_000)
        expect(page.get_by_text(f"Estimated at most {_cents(expected.cost)} before running")).to_be_visible()
        page.screenshot(path=str(tmp_path / "generate-result.png"), full_page=True)
        browser.close()
    if os.environ.get("METERBOOK_KEEP_SCREENSHOTS"):
        shutil.copy(tmp_path / "generate-result.png", os.environ["METERBOOK_KEEP_SCREENSHOTS"])
