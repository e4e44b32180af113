"""Connectors into Chat in a real headless Chromium, against the app as `python -m engine up` starts it.

An admin adds the stdio fake MCP server (tests/fakes/mcp_servers.py) as a custom connector with a
secret environment variable, tests it and sees its tools, then lets a conversation use them. The
model is the fake OpenAI on 127.0.0.1: it asks for the fake's ``add`` tool, which the app's own
toolbox calls in a child process of the app, and then answers with the result. The transcript
shows the call and its result; both model turns are priced in the ledger.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from engine import db
from engine.models import LedgerEntry
from tests.browser import app_database, launch, open_page, routed_owner, serve_app, settle, sign_in
from tests.factories import PASSWORD
from tests.fakes.openai_server import API_KEY, FakeOpenAI, Reply, tool_call_reply
from tests.test_connectors import FAKE

pytestmark = pytest.mark.browser
EMAIL = "admin@example.com"
SECRET = "browser-env-secret-5e6f7a8b"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("connectors")
    with FakeOpenAI() as openai_fake:
        with app_database(tmp):
            routed_owner(EMAIL, "Ada Admin", PASSWORD, "Tools", ("openai", API_KEY, openai_fake.base_url, "gpt-4o-mini"))
        with serve_app(tmp, demo=False) as served:
            yield served.url, served.database_url, openai_fake, tmp


def _ledger(database: str) -> list[LedgerEntry]:
    db.use_engine(db.make_engine(database))
    try:
        with db.read_session() as s:
            return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))
    finally:
        db.use_engine(None)


def test_connect_a_server_test_it_and_let_a_chat_call_its_tool(app):
    from playwright.sync_api import expect, sync_playwright

    url, database, openai_fake, tmp = app
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        sign_in(page, url, EMAIL, PASSWORD)
        open_page(page, "Connectors")

        page.get_by_role("tab", name="Custom connector").click()
        page.get_by_role("textbox", name="Name", exact=True).fill("Fake tools")
        page.get_by_role("textbox", name="Command").fill(FAKE)
        page.get_by_role("textbox", name="Environment variables").fill(f"FAKE_SECRET={SECRET}")
        page.get_by_role("button", name="Add connector").click()
        expect(page.get_by_text("Added Fake tools.")).to_be_visible(timeout=30_000)
        settle(page)

        page.get_by_role("tab", name="Connected").click()
        expect(page.get_by_text("FAKE_SECRET bro…7a8b")).to_be_visible()  # the secret only as its last four
        page.get_by_role("button", name="Test").click()
        expect(page.get_by_text("Connected: 8 tools.")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("`add` — Add two integers.").or_(page.get_by_text("add — Add two integers."))).to_be_visible()
        assert SECRET not in page.content()  # not even in the form it was typed into
        page.screenshot(path=str(tmp / "connectors.png"), full_page=True)

        open_page(page, "Chat")
        openai_fake.push(Reply(text="Hello! Ask me to add.", prompt_tokens=9, completion_tokens=5))
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("Hi")
        box.press("Enter")
        expect(page.get_by_text("Hello! Ask me to add.")).to_be_visible(timeout=30_000)
        settle(page)

        page.get_by_text("Tools (0 connections on)").click()
        settle(page)
        page.get_by_test_id("stMultiSelect").get_by_role("button", name="Open").click()
        page.get_by_role("option", name="Fake tools", exact=True).click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Save tools").click()
        expect(page.get_by_text("Tools (1 connection on)")).to_be_visible(timeout=30_000)
        settle(page)

        openai_fake.push(tool_call_reply(("call_1", "fake-tools__add", {"a": 2, "b": 3}), prompt_tokens=40, completion_tokens=12),
                         Reply(text="2 + 3 is 5.", prompt_tokens=60, completion_tokens=7))
        box.fill("What is 2 + 3? Use the tool.")
        box.press("Enter")
        expect(page.get_by_text("2 + 3 is 5.")).to_be_visible(timeout=60_000)
        call = page.get_by_text("Tool call: fake-tools__add")
        expect(call).to_be_visible()
        call.click()
        expect(page.get_by_text("2 model turns, each its own priced call.")).to_be_visible()
        settle(page)
        page.screenshot(path=str(tmp / "chat_tools.png"), full_page=True)
        browser.close()

    chats = [r.body for r in openai_fake.received if r.path.endswith("/chat/completions")]
    assert [t["function"]["name"] for t in chats[-1]["tools"]][:2] == ["fake-tools__echo", "fake-tools__add"]
    tool_turn = [m for m in chats[-1]["messages"] if m["role"] == "tool"]
    assert tool_turn == [{"role": "tool", "tool_call_id": "call_1", "content": "5"}]  # the real server's answer
    rows = _ledger(database)
    assert [(r.status, r.tags, r.input_tokens) for r in rows[-2:]] == [("ok", ["chat", "chat:tools"], 40),
                                                                           ("ok", ["chat", "chat:tools"], 60)]
    assert all(r.cost is not None and r.cost > 0 for r in rows[-2:])
