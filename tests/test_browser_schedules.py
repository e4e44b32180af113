"""A schedule journey in a real headless Chromium, against the app as `python -m engine up` starts it
(with its sidecar): schedule a workflow every two seconds on the Schedules page, watch its firings
arrive with succeeded runs, pause it, and see that nothing fires while it is paused."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from engine import accounts, db
from engine.permissions import Actor
from engine.schedules.models import ScheduleFire
from engine.workflows import store as workflows
from engine.workflows.models import WorkflowRun
from tests.browser import app_database, launch, open_page, serve_app, settle, sign_in

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "sara@example.com", "every two seconds please"
FLOW = "name: Heartbeat\nnodes:\n  - {id: beat, type: transform, params: {value: alive}}\noutputs:\n  beat: '{{ beat }}'\n"


def fires() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(ScheduleFire).where(ScheduleFire.status == "fired"))


def succeeded() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(WorkflowRun).where(WorkflowRun.trigger == "schedule",
                                                                            WorkflowRun.status == "succeeded"))


def test_schedule_a_workflow_watch_it_fire_and_pause_it(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with app_database(tmp_path):
        user, ws = accounts.create_first_owner(EMAIL, "Sara Sched", PASSWORD, "Clockwork Ltd")
        workflows.create(Actor(user.id, ws.id), FLOW)
        with serve_app(tmp_path, demo=False) as app, sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            sign_in(page, app.url, EMAIL, PASSWORD)
            open_page(page, "Schedules")
            expect(page.get_by_text("No schedules yet")).to_be_visible()
            page.get_by_role("textbox", name="Cron").fill("*/2 * * * * *")
            page.get_by_role("textbox", name="Timezone").fill("Europe/Paris")
            page.get_by_role("textbox", name="Timezone").press("Enter")
            settle(page)
            expect(page.get_by_text("Next:")).to_be_visible()
            page.get_by_role("button", name="Create schedule").click()
            expect(page.get_by_text("Saved Heartbeat")).to_be_visible(timeout=30_000)
            deadline = time.monotonic() + 60
            while fires() < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert fires() >= 2, (tmp_path / "up.log").read_text()[-3000:]
            deadline = time.monotonic() + 60
            while not succeeded() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert succeeded(), (tmp_path / "up.log").read_text()[-3000:]
            page.reload()
            settle(page)
            table = page.get_by_test_id("stDataFrame").first
            expect(table).to_contain_text("fired", timeout=30_000)
            expect(page.get_by_text("The sidecar is scheduling")).to_be_visible()
            page.get_by_role("button", name="Pause").click()
            settle(page)
            expect(page.get_by_text("paused").first).to_be_visible(timeout=30_000)
            time.sleep(1.0)  # a firing already on its way when the pause landed may still be written
            paused_at = fires()
            time.sleep(5.0)
            assert fires() == paused_at
            page.screenshot(path=str(tmp_path / "schedules.png"), full_page=True)
            browser.close()
