"""The shipped templates: each one validates, installs in one click, and the main ones do their job
end to end (AI through the generation path, email over SMTP, webhooks and SQL for real)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from engine import db
from engine.config import get_settings
from engine.models import LedgerEntry
from engine.workflows import library, runs, worker
from providers.base import Result, Usage
from tests import scripted_provider as scripted
from tests.factories import owner, scripted_routes
from tests.fakes.http_target import HttpTarget
from tests.test_notify import Inbox, _free_port
from tests.test_warehouse import add_rows

GPT = "gpt-4o-mini"
WANTED = {"lead_scoring", "website_analysis", "daily_cost_digest", "support_ticket_classification",
          "content_pipeline", "web_page_summary", "batch_translation", "weekly_usage_report"}


@pytest.fixture
def ws(sqlite_database, data_dir):
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT))
    return actor


@pytest.fixture
def inbox(monkeypatch):
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    for key, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port), "SMTP_STARTTLS": "false"}.items():
        monkeypatch.setenv(f"METERBOOK_{key}", value)
    get_settings.cache_clear()
    yield box
    controller.stop()
    get_settings.cache_clear()


def run(actor, template_id, inputs):
    wf = library.install(actor, template_id)
    view = runs.trigger(actor, wf.id, inputs)
    worker.work_once("templates")
    return runs.get_run(actor, view.id), {s.node_id: s for s in runs.steps(actor, view.id)}


def test_every_template_validates_and_the_issue_s_eight_are_there():
    assert WANTED <= {t.id for t in library.list_templates()}
    assert all(t.description for t in library.list_templates())


def test_installing_twice_gives_a_numbered_copy(ws):
    first = library.install(ws, "web_page_summary")
    second = library.install(ws, "web_page_summary")
    assert (first.name, second.name) == ("Web page summary", "Web page summary 2")


def test_lead_scoring_replies_to_a_hot_lead_by_email(ws, inbox):
    scripted.SCRIPT[GPT] = [
        Result(text='{"score": 91, "reason": "budget and timeline"}', usage=Usage(input_tokens=300, output_tokens=20)),
        Result(text="Hi Ann, thanks for writing. How about a call on Thursday?", usage=Usage(400, 60)),
    ]
    done, steps = run(ws, "lead_scoring", {"name": "Ann", "email": "ann@example.com", "company": "Acme",
                                           "message": "We need cost controls for 40 people by March."})
    assert done.status == "succeeded", done.error
    assert done.outputs == {"score": 91, "reason": "budget and timeline"}
    assert steps["nurture"].status == "skipped" and steps["send"].status == "succeeded"
    [(_, to, text, _, _)] = inbox.messages
    assert to == ["ann@example.com"] and "How about a call on Thursday?" in text
    with db.read_session() as s:
        costs = list(s.scalars(select(LedgerEntry.cost).where(LedgerEntry.workflow_run_id == done.id)))
    assert len(costs) == 2 and done.cost == sum(costs) > 0


def test_a_cold_lead_goes_to_nurture_without_an_email(ws, inbox):
    scripted.SCRIPT[GPT] = [Result(text='{"score": 12, "reason": "student project"}', usage=Usage(100, 10))]
    done, steps = run(ws, "lead_scoring", {"name": "Bo", "email": "bo@example.com", "message": "just looking"})
    assert done.status == "succeeded"
    assert steps["nurture"].output == "Bo scored 12: added to nurture" and steps["send"].status == "skipped"
    assert inbox.messages == []


def test_batch_translation_maps_each_text_through_the_model(ws):
    scripted.SCRIPT[GPT] = [Result(text="Bonjour", usage=Usage(10, 2))]
    done, _ = run(ws, "batch_translation", {"texts": '["Hello", "Good morning", "Hi"]'})
    assert done.status == "succeeded", done.error
    assert done.outputs["translations"] == [{"source": t, "translation": "Bonjour"}
                                            for t in ("Hello", "Good morning", "Hi")]
    assert len(scripted.CALLS) == 3 and all(c.system == "Translate into French. Answer with the translation only."
                                            for c in scripted.CALLS)


def test_daily_cost_digest_posts_yesterday_s_spend(ws):
    from datetime import UTC, datetime, timedelta

    yesterday = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    add_rows(ws.workspace_id, ws.user_id, 3, seed=9, cost=Decimal("0.25"), created_at=yesterday, status="ok",
             provider="openai", model=GPT)
    hook = HttpTarget().start()
    try:
        done, steps = run(ws, "daily_cost_digest", {"webhook_url": f"{hook.url}/hook"})
        assert done.status == "succeeded", done.error
        posted = json.loads(hook.seen[0].body)["text"]
    finally:
        hook.stop()
    assert posted.startswith("*AI spend yesterday*") and f"openai/{GPT}: 3 calls, $0.75" in posted
