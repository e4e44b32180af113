"""Chat with tools through the real ``openai`` and ``anthropic`` clients against the wire fakes.

The toolbox here is a tiny one of the test's own, with the contract's interface
(``tools_for``/``call_tool``, engine/connectors/toolbox.py): the MCP client behind the real one is the
connectors side's, tested there. Every model turn must be its own priced ledger row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from engine import accounts, budgets, chat_tools, connections, conversations, db, routes, tokens
from engine.chat_models import ConversationMessage
from engine.errors import InvalidInput, MeterbookError, NotFound
from engine.models import LedgerEntry
from engine.permissions import Actor
from providers.base import Message, Request, ToolSpec, tools_text
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.anthropic_server import FakeAnthropic, tool_use_reply
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI, tool_call_reply


@dataclass(frozen=True)
class Tool:
    connection_id: int
    name: str
    qualified: str
    description: str
    input_schema: dict


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    text: str
    data: Any
    error: str | None


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER, FILES = 41, 42  # connection ids


class Toolbox:
    """Two connections' tools; records every call."""

    tools = [Tool(WEATHER, "forecast", "weather__forecast", "Tomorrow's weather in a city.", CITY),
             Tool(WEATHER, "radar", "weather__radar", "The rain radar (its server is down).", CITY),
             Tool(FILES, "read", "files__read", "Read a file.", {"type": "object"})]

    def __init__(self):
        self.calls: list[tuple[int, str, dict]] = []

    def tools_for(self, actor, connection_ids, *, start=True):
        self.started = getattr(self, "started", []) + [start]
        return [t for t in self.tools if t.connection_id in connection_ids]

    def call_tool(self, actor, connection_id, name, arguments, *, timeout_s=30):
        self.calls.append((connection_id, name, arguments))
        if name == "forecast":
            return ToolOutcome(True, f"Sunny, 21 C in {arguments['city']}.", None, None)
        if name == "read":
            raise NotFound("That connection was deleted.")
        return ToolOutcome(False, "", None, "The weather server did not answer within 30 s.")


@pytest.fixture
def toolbox(monkeypatch):
    box = Toolbox()
    chat_tools.register_choices(lambda actor: {WEATHER: "weather", FILES: "files"})
    yield box
    chat_tools.register_choices(None)


def _routed_owner(*targets) -> Actor:
    """The first owner, with a connection per (vendor, key, fake, model) routed for text in that order."""
    user, ws = accounts.create_first_owner("owner@example.com", "Olivia Owner", "correct horse battery", "Acme")
    actor = Actor(user.id, ws.id)
    for kind, key, fake, model in targets:
        c = connections.create_connection(actor, name=kind, provider_type=kind, api_key=key, base_url=fake.base_url)
        routes.add_target(actor, "text", connection_id=c.id, model=model)
    return actor


@pytest.fixture
def setup(database, toolbox):
    with FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake:
        actor = _routed_owner(("openai", openai_server.API_KEY, openai_fake, "gpt-4o-mini"),
                              ("anthropic", anthropic_server.API_KEY, anthropic_fake, "claude-haiku-4-5"))
        yield actor, openai_fake, anthropic_fake, toolbox


def _conversation(actor, target: str, tools=(WEATHER,)) -> int:
    c = conversations.create_conversation(actor, target=target)
    chat_tools.set_tools(actor, c.id, list(tools))
    return c.id


def _ledger():
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))


def test_openai_tool_round_trip_each_model_turn_priced(setup):
    actor, fake, _, box = setup
    cid = _conversation(actor, "openai/gpt-4o-mini")
    fake.push(tool_call_reply(("call_1", "weather__forecast", {"city": "Oslo"})),
              openai_server.Reply(text="Tomorrow is sunny in Oslo."))

    turn = chat_tools.send(actor, cid, "Weather in Oslo tomorrow?", toolbox=box)

    assert (turn.status, turn.text, turn.error) == ("ok", "Tomorrow is sunny in Oslo.", None)
    assert box.calls == [(WEATHER, "forecast", {"city": "Oslo"})]
    first, second = (r.body for r in fake.received)
    assert [t["function"]["name"] for t in first["tools"]] == ["weather__forecast", "weather__radar"]
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "weather__forecast"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C in Oslo."}
    rows = _ledger()
    assert len(rows) == 2 and all(r.status == "ok" and r.priced and "chat:tools" in r.tags for r in rows)
    assert turn.cost == sum((r.cost for r in rows), Decimal(0)) > 0
    view = conversations.get_conversation(actor, cid)
    answer = view.messages[-1]
    assert [m.role for m in view.messages] == ["user", "assistant"]
    assert answer.cost == turn.cost and answer.ledger_id == rows[-1].id and answer.input_tokens == 24
    assert [s["type"] for s in answer.tool_steps] == ["model", "tool", "model"]
    assert answer.tool_steps[1] | {} == {"type": "tool", "id": "call_1", "name": "weather__forecast",
                                         "arguments": {"city": "Oslo"}, "connection_id": WEATHER, "ok": True,
                                         "result": "Sunny, 21 C in Oslo."}
    assert [s["ledger_id"] for s in answer.tool_steps if s["type"] == "model"] == [r.id for r in rows]
    assert view.tool_connections == (WEATHER,)


def test_the_cap_stops_a_model_that_keeps_calling(setup):
    actor, fake, _, box = setup
    cid = _conversation(actor, "openai/gpt-4o-mini")
    fake.default = tool_call_reply(("call_n", "weather__forecast", {"city": "Oslo"}))  # never stops asking

    turn = chat_tools.send(actor, cid, "Keep checking.", toolbox=box, cap=3)

    assert turn.status == "error"
    assert "more than 3 tool calls in one turn (3 ran)" in turn.error
    assert len(box.calls) == 3 and len(fake.received) == 4
    rows = _ledger()
    assert len(rows) == 4 and turn.cost == sum((r.cost for r in rows), Decimal(0))
    stored = conversations.get_conversation(actor, cid).messages[-1]
    assert stored.status == "error" and stored.error == turn.error and stored.cost == turn.cost


def test_anthropic_gets_tool_errors_back_as_error_results(setup):
    actor, _, fake, box = setup
    cid = _conversation(actor, "anthropic/claude-haiku-4-5", tools=(WEATHER, FILES))
    fake.push(tool_use_reply(("toolu_1", "weather__radar", {"city": "Oslo"}), ("toolu_2", "files__read", {}),
                             ("toolu_3", "nope__nothing", {}), text="Checking."),
              anthropic_server.Reply(text="The radar is down; I could not read the file."))

    turn = chat_tools.send(actor, cid, "Radar and file?", toolbox=box)

    assert turn.status == "ok" and turn.text.startswith("The radar is down")
    results = fake.received[1].body["messages"][-1]
    assert results["role"] == "user"
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "The weather server did not answer within 30 s.",
         "is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "That connection was deleted.",
         "is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_3", "is_error": True,
         "content": "There is no tool called 'nope__nothing' here; use one of: weather__forecast, weather__radar, "
                    "files__read."}]
    assert [c[1] for c in box.calls] == ["radar", "read"]  # the unknown tool never reached the toolbox
    rows = _ledger()
    assert len(rows) == 2 and [r.provider for r in rows] == ["anthropic", "anthropic"]
    steps = conversations.get_conversation(actor, cid).messages[-1].tool_steps
    assert [s.get("ok") for s in steps if s["type"] == "tool"] == [False, False, False]


def test_refusals_store_nothing(setup):
    actor, fake, _, box = setup
    plain = conversations.create_conversation(actor, target="openai/gpt-4o-mini")
    with pytest.raises(InvalidInput, match="no tools enabled"):
        chat_tools.send(actor, plain.id, "Hi", toolbox=box)
    with pytest.raises(InvalidInput, match="Connectors page"):
        chat_tools.set_tools(actor, plain.id, [999])
    assert conversations.get_conversation(actor, plain.id).tool_connections == ()
    cid = _conversation(actor, "openai/gpt-4o-mini")
    # A hard budget too small for one call: refused before any vendor is reached.
    tight = budgets.create_budget(actor, name="Tight", scope="workspace", period="monthly", limit_usd="0.0000001")
    with pytest.raises(MeterbookError, match="Tight"):
        chat_tools.send(actor, cid, "Hi", toolbox=box)
    assert fake.received == [] and _ledger() == [] and box.calls == []
    assert conversations.get_conversation(actor, cid).messages == ()
    budgets.delete_budget(actor, tight.id)
    # The vendor refusing the first model turn reached it: stored as a failed answer, like plain chat.
    fake.push(openai_server.error_reply(400, "Invalid schema for function 'weather__forecast'."))
    turn = chat_tools.send(actor, cid, "Hi", toolbox=box)
    assert turn.status == "error" and "Invalid schema" in turn.error
    assert [m.status for m in conversations.get_conversation(actor, cid).messages] == ["ok", "error"]
    chat_tools.set_tools(actor, cid, [])
    assert conversations.get_conversation(actor, cid).tool_connections == ()


# --- models that cannot call tools --------------------------------------------------------------


@pytest.fixture
def with_gemini(database, toolbox):
    """A text route of Gemini first, then OpenAI, and a budget that would show any hold left behind."""
    with FakeOpenAI() as openai_fake, FakeGemini() as gemini_fake:
        actor = _routed_owner(("gemini", gemini_server.API_KEY, gemini_fake, "gemini-2.5-flash"),
                              ("openai", openai_server.API_KEY, openai_fake, "gpt-4o-mini"))
        budget = budgets.create_budget(actor, name="Monthly", scope="workspace", period="monthly", limit_usd="25")
        yield actor, openai_fake, gemini_fake, toolbox, budget.id


def _held(actor, budget_id) -> Decimal:
    return budgets.get_budget(actor, budget_id).held


def test_a_chosen_gemini_model_is_refused_with_tools_before_any_vendor(with_gemini):
    actor, _, gemini_fake, box, budget_id = with_gemini
    cid = _conversation(actor, "gemini/gemini-2.5-flash")

    with pytest.raises(InvalidInput, match="Gemini models here do not call tools; pick an OpenAI or Anthropic "
                                           "model for chat with tools"):
        chat_tools.send(actor, cid, "Weather in Oslo tomorrow?", toolbox=box)

    # Refused like a budget or a missing route: nothing sent, reserved, charged or stored.
    assert gemini_fake.received == [] and _ledger() == [] and box.calls == []
    assert _held(actor, budget_id) == 0
    assert conversations.get_conversation(actor, cid).messages == ()


def test_the_route_skips_gemini_when_tools_are_offered(with_gemini):
    actor, openai_fake, gemini_fake, box, _ = with_gemini
    cid = _conversation(actor, None)  # the route: Gemini first, then OpenAI
    openai_fake.push(tool_call_reply(("call_1", "weather__forecast", {"city": "Oslo"})),
                     openai_server.Reply(text="Sunny in Oslo."))

    turn = chat_tools.send(actor, cid, "Weather in Oslo tomorrow?", toolbox=box)

    assert (turn.status, turn.text) == ("ok", "Sunny in Oslo.")
    assert gemini_fake.received == [] and len(openai_fake.received) == 2
    assert [r.provider for r in _ledger()] == ["openai", "openai"]


def test_a_later_model_turn_never_falls_back_to_gemini(with_gemini):
    actor, openai_fake, gemini_fake, box, budget_id = with_gemini
    cid = _conversation(actor, "openai/gpt-4o-mini")  # fallback stays on: the route's Gemini comes next
    openai_fake.push(tool_call_reply(("call_1", "weather__forecast", {"city": "Oslo"})),
                     openai_server.error_reply(401, "Incorrect API key provided.", kind="invalid_request_error"))

    turn = chat_tools.send(actor, cid, "Weather in Oslo tomorrow?", toolbox=box)

    assert turn.status == "error" and gemini_fake.received == []
    assert "Incorrect API key" in turn.error and "gemini/gemini-2.5-flash: Gemini models here do not call tools" \
        in turn.error
    rows = _ledger()
    assert [(r.provider, r.status) for r in rows] == [("openai", "ok"), ("openai", "error")]
    assert _held(actor, budget_id) == 0
    stored = conversations.get_conversation(actor, cid).messages[-1]
    assert stored.status == "error" and stored.error == turn.error and stored.cost == turn.cost == rows[0].cost


# --- the context window ---------------------------------------------------------------------------


@pytest.fixture
def windowed(database, toolbox):
    """OpenAI with a 3,000-token context window on its route."""
    with FakeOpenAI() as fake:
        user, ws = accounts.create_first_owner("owner@example.com", "Olivia Owner", "correct horse battery", "Acme")
        actor = Actor(user.id, ws.id)
        c = connections.create_connection(actor, name="openai", provider_type="openai", api_key=openai_server.API_KEY,
                                          base_url=fake.base_url)
        routes.add_target(actor, "text", connection_id=c.id, model="gpt-4o-mini", context_window=3000)
        yield actor, fake


def _history(conversation_id: int, turns: int, words: int) -> None:
    with db.transaction() as s:
        for n in range(turns):
            s.add(ConversationMessage(conversation_id=conversation_id, role="user", content=f"Q{n} " + "word " * words,
                                      status="ok"))
            s.add(ConversationMessage(conversation_id=conversation_id, role="assistant", content=f"A{n}.",
                                      status="ok"))


def _sent_tokens(body: dict) -> int:
    """What the request the fake received takes of the window, counted as the path counts it."""
    messages = tuple(Message(m["role"], m.get("content") or "") for m in body["messages"] if m["role"] != "system")
    specs = tuple(ToolSpec(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
                  for t in body.get("tools", ()))
    return tokens.count_request(Request(kind="text", model=body["model"], messages=messages, tools=specs),
                                "openai").tokens


def test_the_history_is_trimmed_to_leave_room_for_the_tool_definitions(windowed, toolbox):
    actor, fake = windowed
    big = Tool(WEATHER, "forecast", "weather__forecast", "Forecasts. " + "detail " * 1500, CITY)
    toolbox.tools = [big]
    c = conversations.create_conversation(actor, target="openai/gpt-4o-mini", max_tokens=500)
    chat_tools.set_tools(actor, c.id, [WEATHER])
    _history(c.id, 4, 250)  # ~1,000 tokens of history: fits 3,000 - 500 alone, not beside ~1,500 of tools
    fake.push(openai_server.Reply(text="Hello."))

    turn = chat_tools.send(actor, c.id, "Hi", toolbox=toolbox)

    assert turn.status == "ok"
    [sent] = fake.received
    assert _sent_tokens(sent.body) + 500 <= 3000  # it fits the model, tools included
    assert sent.body["messages"][0]["content"].startswith(("Q1 ", "Q2 ", "Q3 "))  # the oldest turn(s) dropped


def test_tools_that_fill_the_window_are_refused_before_any_vendor(windowed, toolbox):
    actor, fake = windowed
    toolbox.tools = [Tool(WEATHER, "forecast", "weather__forecast", "detail " * 2800, CITY)]
    c = conversations.create_conversation(actor, target="openai/gpt-4o-mini", max_tokens=500)
    chat_tools.set_tools(actor, c.id, [WEATHER])

    with pytest.raises(InvalidInput, match="tool definitions alone take about"):
        chat_tools.send(actor, c.id, "Hi", toolbox=toolbox)
    # A message that would fit the window alone, but not beside the tools, says what the tools take.
    toolbox.tools = [Tool(WEATHER, "forecast", "weather__forecast", "detail " * 1500, CITY)]
    with pytest.raises(InvalidInput, match=r"does not fit .*tool definitions, about 1,5\d\d tokens, leave of "
                                           r"its 3,000"):
        chat_tools.send(actor, c.id, "Hi " + "word " * 1200, toolbox=toolbox)
    assert fake.received == [] and _ledger() == []
    assert conversations.get_conversation(actor, c.id).messages == ()


class BigResults(Toolbox):
    def call_tool(self, actor, connection_id, name, arguments, *, timeout_s=30):
        self.calls.append((connection_id, name, arguments))
        return ToolOutcome(True, "row " * 5000, None, None)  # 20,000 characters, ~5,000 tokens


def test_a_later_model_turn_over_the_window_is_stopped_not_sent(windowed):
    actor, fake = windowed
    box = BigResults()
    c = conversations.create_conversation(actor, target="openai/gpt-4o-mini", max_tokens=500)
    chat_tools.set_tools(actor, c.id, [WEATHER])
    fake.push(tool_call_reply(("call_1", "weather__forecast", {"city": "Oslo"})),
              openai_server.Reply(text="Never sent."))

    turn = chat_tools.send(actor, c.id, "Weather in Oslo?", toolbox=box)

    assert turn.status == "error" and len(box.calls) == 1
    assert len(fake.received) == 1  # the second model turn would not fit: not sent, not billed
    assert "would not fit openai/gpt-4o-mini's context window of 3,000 tokens" in turn.error
    rows = _ledger()
    assert len(rows) == 1 and turn.cost == rows[0].cost
    stored = conversations.get_conversation(actor, c.id).messages[-1]
    assert stored.status == "error" and stored.error == turn.error
    assert [s["type"] for s in stored.tool_steps] == ["model", "tool"]


# --- unexpected errors ----------------------------------------------------------------------------


class BrokenDatabase(Toolbox):
    """A toolbox whose database fails mid-turn, after the first model turn was answered and stored."""

    def call_tool(self, actor, connection_id, name, arguments, *, timeout_s=30):
        self.calls.append((connection_id, name, arguments))
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def test_an_unexpected_error_after_the_first_model_turn_ends_the_answer_as_an_error(setup, caplog):
    actor, fake, _, _ = setup
    box = BrokenDatabase()
    cid = _conversation(actor, "openai/gpt-4o-mini")
    fake.push(tool_call_reply(("call_1", "weather__forecast", {"city": "Oslo"})))

    with caplog.at_level(logging.ERROR, logger="engine.chat_tools"):
        turn = chat_tools.send(actor, cid, "Weather in Oslo?", toolbox=box)

    assert turn.status == "error" and len(fake.received) == 1
    assert turn.error.startswith("The answer stopped on an unexpected error (OperationalError) after 1 model turn")
    assert "server closed" not in turn.error  # the details go to the log, not to the transcript
    assert any("server closed the connection" in (r.exc_text or "") for r in caplog.records)  # redacted, kept
    stored = conversations.get_conversation(actor, cid).messages[-1]
    assert stored.status == "error" and stored.error == turn.error  # never left "streaming"
    rows = _ledger()
    assert len(rows) == 1 and stored.cost == rows[0].cost and stored.ledger_id == rows[0].id


def test_the_context_meter_counts_the_tool_definitions_without_starting_a_server(setup):
    actor, fake, _, box = setup
    cid = _conversation(actor, "openai/gpt-4o-mini")
    plain = conversations.context_usage(actor, cid)

    usage = chat_tools.context_usage(actor, cid, toolbox=box)
    definitions = tokens.count(tools_text(tuple(ToolSpec(t.qualified, t.description, t.input_schema)
                                                for t in box.tools if t.connection_id == WEATHER)), "gpt-4o-mini")
    assert usage.tool_tokens == definitions + tokens.PER_MESSAGE > 0
    assert usage.prompt_tokens == plain.prompt_tokens + usage.tool_tokens and plain.tool_tokens == 0
    assert box.started == [False] and box.calls == []  # only the stored listings were read

    chat_tools.set_tools(actor, cid, [])
    assert chat_tools.context_usage(actor, cid, toolbox=box) == plain
