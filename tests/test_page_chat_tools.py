"""The Chat page's tools toggle and transcript through AppTest, the model being the fake OpenAI server.

The toolbox is the test's own (tests/test_chat_tools.py), standing where the connectors
package's will: the page reaches it only through ``engine.chat_tools``.
"""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from engine import chat_tools, connections, conversations, generation, routes
from engine.config import get_settings
from tests.factories import owner
from tests.fakes.openai_server import API_KEY, FakeOpenAI, Reply, tool_call_reply
from tests.pages_helpers import errors, no_exceptions, open_page
from tests.test_chat_tools import FILES, WEATHER, Toolbox

PAGE = "pages/chat.py"


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def box(monkeypatch):
    toolbox = Toolbox()
    monkeypatch.setattr(chat_tools, "_toolbox", lambda: toolbox)
    yield toolbox
    chat_tools.register_choices(None)


@pytest.fixture
def keyed(sqlite_database, tmp_path, monkeypatch, fake):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    generation._cached_provider.cache_clear()
    boss = owner()
    conn = connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                         base_url=fake.base_url)
    routes.add_target(boss, "text", connection_id=conn.id, model="gpt-4o-mini")
    yield boss
    get_settings.cache_clear()


def test_no_connected_tools_means_no_toggle(keyed, box):
    c = conversations.create_conversation(keyed)
    at = open_page(PAGE, query={"conversation": str(c.id)})
    assert not any(e.label.startswith("Tools") for e in at.expander)


def test_enable_tools_then_an_answer_shows_each_call_collapsed(keyed, box, fake):
    chat_tools.register_choices(lambda actor: {WEATHER: "Weather", FILES: "Files"})
    c = conversations.create_conversation(keyed)
    at = open_page(PAGE, query={"conversation": str(c.id)})
    assert any(e.label == "Tools (0 connections on)" for e in at.expander)
    at.multiselect(key=f"chat_tools_{c.id}").set_value([WEATHER])
    at.button(key="chat_tools_save").click().run()
    no_exceptions(at)
    assert conversations.get_conversation(keyed, c.id).tool_connections == (WEATHER,)
    assert any(e.label == "Tools (1 connection on)" for e in at.expander)

    fake.push(tool_call_reply(("call_1", "weather__forecast", {"city": "Oslo"})), Reply(text="Sunny in Oslo."))
    at.chat_input(key="chat_input").set_value("Weather in Oslo?").run()
    no_exceptions(at)
    assert not errors(at)
    assert box.calls == [(WEATHER, "forecast", {"city": "Oslo"})]
    assert "Sunny in Oslo." in [m.value for m in at.markdown]
    [call] = [e for e in at.expander if e.label == "Tool call: weather__forecast"]
    assert not call.proto.expanded
    assert [cd.value for cd in call.code] == ['{\n  "city": "Oslo"\n}', "Sunny, 21 C in Oslo."]
    assert any(cap.value == "2 model turns, each its own priced call." for cap in at.caption)
    # every model turn was one priced ledger row; the answer's cost is their sum
    answer = conversations.get_conversation(keyed, c.id).messages[-1]
    assert answer.cost is not None and answer.cost > 0
    assert any(cap.value.startswith("openai/gpt-4o-mini · 24 in / 14 out tokens") for cap in at.caption)


def _with_tools(keyed, box) -> int:
    chat_tools.register_choices(lambda actor: {WEATHER: "Weather"})
    c = conversations.create_conversation(keyed)
    chat_tools.set_tools(keyed, c.id, [WEATHER])
    return c.id


def test_an_unexpected_error_mid_answer_shows_as_a_failed_answer_not_a_traceback(keyed, box, fake, monkeypatch):
    def broken(actor, connection_id, name, arguments, *, timeout_s=30):
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(box, "call_tool", broken)
    cid = _with_tools(keyed, box)
    at = open_page(PAGE, query={"conversation": str(cid)})
    fake.push(tool_call_reply(("call_1", "weather__forecast", {"city": "Oslo"})))
    at.chat_input(key="chat_input").set_value("Weather in Oslo?").run()

    no_exceptions(at)
    [shown] = errors(at)
    assert shown.startswith("This answer failed: The answer stopped on an unexpected error (OperationalError)")
    assert conversations.get_conversation(keyed, cid).messages[-1].status == "error"


def test_an_unexpected_error_before_any_model_turn_is_an_error_message(keyed, box, fake, monkeypatch):
    def broken(actor, connection_ids, *, start=True):  # the context meter's read fails too, and must not crash
        raise RuntimeError("the connectors table is locked")

    monkeypatch.setattr(box, "tools_for", broken)
    cid = _with_tools(keyed, box)
    at = open_page(PAGE, query={"conversation": str(cid)})
    at.chat_input(key="chat_input").set_value("Weather in Oslo?").run()

    no_exceptions(at)
    [shown] = errors(at)
    assert "unexpected error (RuntimeError)" in shown and "locked" not in shown
    assert fake.received == [] and conversations.get_conversation(keyed, cid).messages == ()
