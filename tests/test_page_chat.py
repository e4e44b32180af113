"""The Chat page through AppTest, answering from the fake OpenAI server on 127.0.0.1 through the real SDK."""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy import select

from engine import budgets, connections, conversations, db, generation, routes
from engine.chat_models import AnswerRating
from engine.config import get_settings
from engine.models import LedgerEntry
from tests import pages_helpers
from tests.factories import member, owner
from tests.fakes.openai_server import API_KEY, FakeOpenAI, Reply, error_reply
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/chat.py"
open_page = partial(pages_helpers.open_page, PAGE)


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    generation._cached_provider.cache_clear()
    yield owner()
    get_settings.cache_clear()


@pytest.fixture
def keyed(boss, fake):
    """The owner's workspace with an OpenAI connection (pointed at the fake) and gpt-4o-mini routed."""
    conn = connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                         base_url=fake.base_url)
    routes.add_target(boss, "text", connection_id=conn.id, model="gpt-4o-mini")
    return boss


def say(at, text):
    at.chat_input(key="chat_input").set_value(text).run()
    no_exceptions(at)
    return at


def markdown(at) -> list[str]:
    return [m.value for m in at.markdown]


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def sent_messages(fake, n=-1) -> list[tuple[str, str]]:
    chats = [r for r in fake.received if r.path.endswith("/chat/completions")]
    return [(m["role"], m["content"]) for m in chats[n].body["messages"]]


def test_without_a_text_model_the_page_says_so_and_links_to_providers(boss):
    at = open_page()
    assert any("No text model is set up" in i.value for i in at.info)
    assert [link.proto.page for link in at.get("page_link")] == ["providers"]
    assert at.chat_input(key="chat_input").disabled


def test_two_turns_stream_with_history_and_show_cost_and_context(keyed, fake):
    fake.push(Reply(text="Paris is the **capital** of France.", prompt_tokens=14, completion_tokens=8),
              Reply(text="About 2.1 million people.", prompt_tokens=40, completion_tokens=6))
    at = open_page()
    assert any("Write a message below" in i.value for i in at.info)

    say(at, "What is the capital of France?")
    assert not errors(at)
    [c] = conversations.list_conversations(keyed)
    assert at.query_params["conversation"] == str(c.id)
    assert at.subheader[0].value == "What is the capital of France?"
    assert "Paris is the **capital** of France." in markdown(at)
    # the real SDK streamed it: the request asked for a stream, through the route's model
    chats = [r for r in fake.received if r.path.endswith("/chat/completions")]
    assert chats[0].body["stream"] is True and chats[0].body["model"] == "gpt-4o-mini"

    say(at, "How many people live there?")
    assert sent_messages(fake) == [("user", "What is the capital of France?"),
                                   ("assistant", "Paris is the **capital** of France."),
                                   ("user", "How many people live there?")]
    assert "About 2.1 million people." in markdown(at)
    assert [m.name for m in at.chat_message] == ["user", "assistant"] * 2
    with db.read_session() as s:
        rows = list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))
    assert [(r.input_tokens, r.output_tokens, r.status) for r in rows] == [(14, 8, "ok"), (40, 6, "ok")]
    metas = [t for t in captions(at) if t.startswith("openai/gpt-4o-mini · ")]
    assert metas[0].startswith("openai/gpt-4o-mini · 14 in / 8 out tokens · $0.00000")
    view = conversations.get_conversation(keyed, c.id)
    total = rows[0].cost + rows[1].cost
    assert view.cost == total
    assert any(f"2 answers · ${total:.10f}".rstrip("0") + " in all" in t for t in captions(at))
    # the context meter: gpt-4o-mini's window from the OpenAI provider's own model list
    [meter] = at.get("progress")
    assert "of 128,000 tokens" in meter.proto.text and "on openai/gpt-4o-mini" in meter.proto.text
    assert any("Window from the provider's model list" in t for t in captions(at))


def test_settings_switch_the_model_and_refuse_max_tokens_beyond_the_window(keyed, fake):
    conn = connections.list_connections(keyed)[0]
    routes.add_target(keyed, "text", connection_id=conn.id, model="gpt-4.1-mini")
    c = conversations.create_conversation(keyed, "Settings")
    at = open_page()
    at.button(key=f"chat_open_{c.id}").click().run()
    at.number_input(key=f"chat_max_tokens_{c.id}").set_value(200_000)
    at.button(key="chat_settings_save").click().run()
    no_exceptions(at)
    assert any("context window of 128,000" in e for e in errors(at))
    assert conversations.get_conversation(keyed, c.id).max_tokens is None

    at.selectbox(key=f"chat_target_{c.id}").set_value("openai/gpt-4.1-mini")
    at.number_input(key=f"chat_max_tokens_{c.id}").set_value(500)
    at.text_area(key=f"chat_system_{c.id}").input("Answer in French.")
    at.button(key="chat_settings_save").click().run()
    assert not errors(at)
    saved = conversations.get_conversation(keyed, c.id)
    assert (saved.target, saved.max_tokens, saved.system_prompt) == ("openai/gpt-4.1-mini", 500, "Answer in French.")
    fake.push(Reply(text="Bonjour."))
    say(at, "Hello")
    body = [r for r in fake.received if r.path.endswith("/chat/completions")][-1].body
    assert body["model"] == "gpt-4.1-mini" and body["max_completion_tokens"] == 500
    assert body["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert any(t.startswith("openai/gpt-4.1-mini · ") for t in captions(at))


def test_a_rejected_key_is_shown_on_the_answer_and_kept(keyed, fake):
    fake.push(error_reply(401, "Incorrect API key provided: sk-test-***.", kind="invalid_request_error",
                          code="invalid_api_key"))
    at = open_page()
    say(at, "hello")
    [failed] = [e for e in errors(at) if e.startswith("This answer failed")]
    assert "Incorrect API key" in failed and API_KEY not in failed
    [c] = conversations.list_conversations(keyed)
    view = conversations.get_conversation(keyed, c.id)
    assert [(m.role, m.status) for m in view.messages] == [("user", "ok"), ("assistant", "error")]


def test_an_empty_message_and_a_budget_refusal_store_nothing_and_keep_the_draft(keyed, fake):
    at = open_page()
    say(at, "   ")
    assert any("Write a message first" in e for e in errors(at))

    budgets.create_budget(keyed, name="Team", scope="workspace", period="monthly", limit_usd="0.001")
    say(at, "An expensive question")  # its worst case (4,096 tokens of answer) is over the limit
    assert any("more than the budget “Team” has left" in e for e in errors(at))
    assert [c.value for c in at.code] == ["An expensive question"]
    assert any("Your message was not sent" in t for t in captions(at))
    assert conversations.list_conversations(keyed) == []
    assert not [r for r in fake.received if r.path.endswith("/chat/completions")]
    with db.read_session() as s:
        assert s.scalar(select(LedgerEntry.id)) is None


def test_rename_delete_search_and_rate(keyed, fake):
    fake.push(Reply(text="Green."))
    turn = conversations.send(keyed, None, "Colour of grass?")
    list(turn)
    other = conversations.create_conversation(keyed, "Empty one")
    at = open_page()
    at.text_input(key="chat_search").input("grass").run()
    assert f"chat_open_{turn.conversation_id}" in [b.key for b in at.button]
    assert f"chat_open_{other.id}" not in [b.key for b in at.button]
    at.text_input(key="chat_search").input("").run()

    at.button(key=f"chat_open_{turn.conversation_id}").click().run()
    [answer] = [m for m in conversations.get_conversation(keyed, turn.conversation_id).messages if m.role == "assistant"]
    at.feedback(key=f"chat_rate_{answer.ledger_id}").set_value(1).run()
    no_exceptions(at)
    with db.read_session() as s:
        mark = s.scalar(select(AnswerRating))
    assert (mark.ledger_id, mark.rating, mark.source) == (answer.ledger_id, 1, "chat")

    at.button(key="chat_rename").click().run()
    at.text_input(key="chat_rename_title").input("Botany")
    at.button(key="chat_rename_save").click().run()
    no_exceptions(at)
    assert at.subheader[0].value == "Botany"

    at.button(key="chat_delete").click().run()
    assert conversations.list_conversations(keyed)  # nothing gone before confirming
    at.button(key="chat_delete_confirm").click().run()
    no_exceptions(at)
    assert [c.id for c in conversations.list_conversations(keyed)] == [other.id]
    assert "conversation" not in at.query_params
    assert any("deleted" in s.value for s in at.success)


def test_a_viewer_reads_but_cannot_send(keyed):
    member(keyed, "viewer@example.com", "viewer")
    at = open_page("viewer@example.com")
    assert any("cannot" in i.value or "not send" in i.value for i in at.info)
    assert at.chat_input(key="chat_input").disabled
