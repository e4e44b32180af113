"""Chat and Compare in a real headless Chromium, against the app as `python -m engine up` starts it.

The workspace's OpenAI and Anthropic connections point at the fake vendors on 127.0.0.1,
which this process runs. The OpenAI fake can hold a stream back after its first words until
the test lets it go, so the journeys see an answer mid-stream without timing anything.

Chat: two turns, the first seen arriving word by word, the second sent with the first as
history; each answer shows its model, tokens and cost. Compare: two models at once, one
finished while the other is still streaming beside it, then the table of cost and speed,
and a rating kept for the analytics.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from engine import conversations, db
from engine.chat_models import AnswerRating
from engine.models import LedgerEntry
from tests.browser import app_database, launch, open_page, routed_owner, serve_app, settle, sign_in
from tests.factories import PASSWORD
from tests.fakes import anthropic_server
from tests.fakes.openai_server import API_KEY, FakeOpenAI, Reply

pytestmark = pytest.mark.browser
EMAIL = "analyst@example.com"


class HeldBack:
    """An exchange that sends the first ``send_first`` events of a stream, then waits for ``release``."""

    def __init__(self, exchange, send_first: int, release: threading.Event):
        self._exchange = exchange
        self._left = send_first
        self._release = release

    def event(self, data: str, name: str | None = None) -> None:
        if self._left == 0:
            self._release.wait(60)
        self._left -= 1
        self._exchange.event(data, name)

    def __getattr__(self, name: str):
        return getattr(self._exchange, name)


class HoldingOpenAI(FakeOpenAI):
    """The OpenAI fake, able to hold the next stream back after its first few events."""

    def __init__(self):
        super().__init__()
        self.hold_after: int | None = None
        self.release = threading.Event()

    def hold(self, events: int) -> None:
        self.hold_after, self.release = events, threading.Event()

    def _chat(self, req, ex, reply, headers):
        if self.hold_after is not None and (req.body or {}).get("stream"):
            ex, self.hold_after = HeldBack(ex, self.hold_after, self.release), None
        super()._chat(req, ex, reply, headers)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat_compare")
    with HoldingOpenAI() as openai_fake, anthropic_server.FakeAnthropic() as anthropic_fake:
        with app_database(tmp):  # both vendors routed for text, written before the app starts
            actor = routed_owner(EMAIL, "Ana Analyst", PASSWORD, "Research",
                                 ("openai", API_KEY, openai_fake.base_url, "gpt-4o-mini"),
                                 ("anthropic", anthropic_server.API_KEY, anthropic_fake.base_url, "claude-haiku-4-5"))
        with serve_app(tmp, demo=False) as served:
            try:
                yield served.url, served.database_url, actor, openai_fake, anthropic_fake, tmp
            finally:
                openai_fake.release.set()


def _signed_in(pw, url: str, page_name: str):
    browser = launch(pw)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, url, EMAIL, PASSWORD)
    open_page(page, page_name)
    return browser, page


def _rows(database: str, model: str | None = None) -> list[LedgerEntry]:
    db.use_engine(db.make_engine(database))
    try:
        with db.read_session() as s:
            query = select(LedgerEntry).order_by(LedgerEntry.id)
            if model:
                query = query.where(LedgerEntry.model == model)
            return list(s.scalars(query))
    finally:
        db.use_engine(None)


def test_chat_two_turns_with_the_answer_streaming(app):
    from playwright.sync_api import expect, sync_playwright

    url, database, actor, openai_fake, _, tmp = app
    first = "Paris is the capital of France, on the Seine."
    openai_fake.push(Reply(text=first, prompt_tokens=14, completion_tokens=11), Reply(text="Rome is.", prompt_tokens=30))
    openai_fake.hold(4)  # the role chunk and "Paris is the", then nothing until released
    with sync_playwright() as pw:
        browser, page = _signed_in(pw, url, "Chat")
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("What is the capital of France?")
        box.press("Enter")

        answer = page.get_by_test_id("stChatMessage").nth(1)
        expect(answer).to_contain_text("Paris is the", timeout=30_000)
        assert "Seine" not in answer.inner_text()  # the rest is still held back: this is the stream, mid-answer
        page.screenshot(path=str(tmp / "chat_streaming.png"), full_page=True)
        openai_fake.release.set()
        expect(page.get_by_text(first)).to_be_visible(timeout=30_000)
        expect(page.get_by_text("openai/gpt-4o-mini · 14 in / 11 out tokens · $")).to_be_visible(timeout=30_000)
        settle(page)

        box.fill("And of Italy?")
        box.press("Enter")
        expect(page.get_by_text("Rome is.")).to_be_visible(timeout=30_000)
        settle(page)
        expect(page.get_by_text("2 answers · $")).to_be_visible()
        page.screenshot(path=str(tmp / "chat.png"), full_page=True)
        browser.close()

    chats = [r.body for r in openai_fake.received if r.path.endswith("/chat/completions")]
    assert [m["content"] for m in chats[-1]["messages"]] == ["What is the capital of France?", first, "And of Italy?"]
    assert all(body["stream"] for body in chats[-2:])
    rows = _rows(database)
    assert [(r.status, r.tags) for r in rows[-2:]] == [("ok", ["chat"]), ("ok", ["chat"])]
    db.use_engine(db.make_engine(database))
    try:
        [c] = conversations.list_conversations(actor)
        assert c.message_count == 4 and c.cost == rows[-2].cost + rows[-1].cost
    finally:
        db.use_engine(None)


def test_compare_two_models_side_by_side(app):
    from playwright.sync_api import expect, sync_playwright

    url, database, actor, openai_fake, anthropic_fake, tmp = app
    openai_fake.push(Reply(text="The blue whale, by far.", prompt_tokens=12, completion_tokens=6))
    anthropic_fake.push(anthropic_server.Reply(text="Blue whales are the largest animals.", input_tokens=15,
                                               output_tokens=8))
    openai_fake.hold(3)  # the role chunk and "The blue", then held back
    with sync_playwright() as pw:
        browser, page = _signed_in(pw, url, "Compare")
        page.get_by_role("textbox", name="Prompt").fill("What is the largest animal?")
        page.get_by_role("button", name="Compare").click()

        # Claude has finished while GPT is still mid-answer beside it.
        expect(page.get_by_text("Blue whales are the largest animals.")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("The blue", exact=True)).to_be_visible(timeout=30_000)
        # Claude's column may show its words a moment before its "Streaming…" gives way: wait for one left.
        expect(page.get_by_text("Streaming…")).to_have_count(1, timeout=30_000)
        page.screenshot(path=str(tmp / "compare_streaming.png"), full_page=True)
        openai_fake.release.set()

        table = page.get_by_test_id("stTable")
        expect(table).to_be_visible(timeout=30_000)
        settle(page)
        gpt, claude = _rows(database, "gpt-4o-mini")[-1], _rows(database, "claude-haiku-4-5")[-1]
        expect(page.get_by_text("The blue whale, by far.")).to_be_visible()
        for row in (gpt, claude):
            expect(table).to_contain_text(f"${row.cost:.10f}".rstrip("0"))
        expect(table.get_by_role("row")).to_have_count(3)
        page.screenshot(path=str(tmp / "compare.png"), full_page=True)

        page.get_by_text("Rate this answer").first.wait_for()
        page.get_by_role("radio", name="Thumbs up").first.click()  # on GPT's answer, the first column
        settle(page)
        browser.close()

    assert (gpt.tags, claude.tags, gpt.status, claude.status) == (["compare"], ["compare"], "ok", "ok")
    db.use_engine(db.make_engine(database))
    try:
        with db.read_session() as s:
            mark = s.scalar(select(AnswerRating))
    finally:
        db.use_engine(None)
    assert (mark.ledger_id, mark.rating, mark.source) == (gpt.id, 1, "compare")
