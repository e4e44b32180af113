"""Chat conversations: turns streamed through the generation path, stored with what they cost, never lost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from engine import chat_context, conversations, db, guards, routes
from engine.chat_models import ConversationMessage
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.models import AuditEvent, LedgerEntry, ProviderConnection, RouteTarget
from engine.router import NoRoute
from providers.base import BadRequest, Result, TruncatedStream, Usage
from tests import scripted_provider as scripted
from tests.factories import member, owner, scripted_routes

GPT = "gpt-4o-mini"
HAIKU = "claude-haiku-4-5"


@pytest.fixture
def ws(database, data_dir):
    """A workspace with two scripted connections priced as OpenAI and Anthropic, routed in that order."""
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT), ("backup", "anthropic", HAIKU))
    return actor


def answer(*pieces: str, usage: Usage = Usage(input_tokens=20, output_tokens=5)) -> list:
    return [*pieces, Result(text="".join(pieces), usage=usage, finish_reason="stop")]


def stored() -> list[ConversationMessage]:
    with db.read_session() as s:
        return list(s.scalars(select(ConversationMessage).order_by(ConversationMessage.id)))


def ledger() -> list[LedgerEntry]:
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))


def set_window(actor, model: str, window: int) -> None:
    view = routes.get_route(actor, "text")
    target = next(t for t in view.targets if t.model == model)
    routes.update_target(actor, target.id, context_window=window)


def test_two_turns_stream_and_are_stored_with_their_ledger_rows_and_costs(ws):
    scripted.SCRIPT[GPT] = [answer("Paris", " is the capital."), answer("About 2.1", " million.")]
    c = conversations.create_conversation(ws)
    assert c.title == conversations.DEFAULT_TITLE and c.messages == ()

    first = conversations.send(ws, c.id, "What is the capital of France?")
    assert list(first) == ["Paris", " is the capital."]
    assert first.status == "ok" and first.stored
    second = conversations.send(ws, c.id, "  How many people live there?  ")
    assert "".join(second) == "About 2.1 million."

    # The second call carried the first turn as history.
    sent = scripted.CALLS[1].messages
    assert [(m.role, m.content) for m in sent] == [
        ("user", "What is the capital of France?"), ("assistant", "Paris is the capital."),
        ("user", "How many people live there?")]

    view = conversations.get_conversation(ws, c.id)
    assert view.title == "What is the capital of France?"  # named after its first message
    assert [(m.role, m.status) for m in view.messages] == [("user", "ok"), ("assistant", "ok")] * 2
    rows = ledger()
    assert [r.tags for r in rows] == [["chat"], ["chat"]]
    for message, row in zip(view.messages[1::2], rows):
        assert message.ledger_id == row.id and message.cost == row.cost and row.cost > 0
        assert (message.input_tokens, message.output_tokens) == (20, 5)
        assert message.target == f"primary/{GPT}" and message.ttft_ms == row.ttft_ms
    assert view.cost == rows[0].cost + rows[1].cost and view.unpriced == 0
    [summary] = conversations.list_conversations(ws)
    assert (summary.id, summary.message_count, summary.cost) == (c.id, 4, view.cost)


def test_nothing_is_stored_or_charged_for_bad_input_or_a_refused_role(ws):
    c = conversations.create_conversation(ws)
    for text in ("", "   \n "):
        with pytest.raises(InvalidInput, match="Write a message"):
            conversations.send(ws, c.id, text)
    viewer = member(ws, "viewer@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        conversations.create_conversation(viewer)
    with pytest.raises(NotFound):  # someone else's conversation reads as not found
        conversations.get_conversation(member(ws, "editor@example.com", "editor"), c.id)
    for bad in ({"temperature": 3}, {"max_tokens": 0}, {"max_tokens": 2.5}, {"target": "primary/unknown-model"},
                {"system_prompt": "x" * (conversations.MAX_SYSTEM_CHARS + 1)}):
        with pytest.raises(InvalidInput):
            conversations.update_settings(ws, c.id, **({"target": None, "system_prompt": None, "temperature": None,
                                                         "max_tokens": None} | bad))
    assert stored() == [] and ledger() == [] and scripted.CALLS == []


def test_a_budget_that_refuses_the_call_leaves_nothing_behind(ws, monkeypatch):
    class Refusing:
        def reserve(self, ctx, amount):
            raise InvalidInput("The budget 'Team' would go over its $1.00 limit; this call was not made.")

    monkeypatch.setattr(guards, "budgets", Refusing())
    c = conversations.create_conversation(ws)
    turn = conversations.send(ws, c.id, "hello")
    with pytest.raises(InvalidInput, match="budget 'Team'"):
        list(turn)
    assert not turn.stored and turn.status == "error"
    assert stored() == [] and ledger() == [] and scripted.CALLS == []


def test_a_failed_answer_is_kept_marked_failed_with_what_it_cost(ws):
    scripted.SCRIPT[GPT] = [["Once upon", " a time", TruncatedStream("connection closed mid-answer")]]
    c = conversations.create_conversation(ws)
    turn = conversations.send(ws, c.id, "Tell me a story")
    got = []
    with pytest.raises(NoRoute, match="broke off"):
        for piece in turn:
            got.append(piece)
    assert got == ["Once upon", " a time"]
    user, reply = stored()
    [row] = ledger()
    assert user.content == "Tell me a story" and reply.status == "error" and "broke off" in reply.error
    assert reply.content == "Once upon a time" and reply.ledger_id == row.id and reply.cost == row.cost > 0


def test_an_answer_refused_by_the_vendor_is_kept_even_before_its_first_word(ws):
    scripted.SCRIPT[GPT] = [BadRequest("This model does not accept that temperature", status=400)]
    c = conversations.create_conversation(ws)
    with pytest.raises(NoRoute, match="does not accept"):
        list(conversations.send(ws, c.id, "hi"))
    user, reply = stored()
    [row] = ledger()
    assert reply.status == "error" and reply.content == "" and reply.ledger_id == row.id and row.status == "error"
    # A failed answer is not sent back as history.
    scripted.SCRIPT[GPT] = [answer("Hello")]
    list(conversations.send(ws, c.id, "hello again"))
    assert [m.content for m in scripted.CALLS[-1].messages] == ["hello again"]


def test_an_abandoned_answer_is_kept_as_cancelled_with_the_words_received(ws):
    scripted.SCRIPT[GPT] = [answer("one", " two", " three")]
    c = conversations.create_conversation(ws)
    turn = conversations.send(ws, c.id, "count")
    assert next(turn) == "one"
    # While the answer streams, the question and an open answer are already stored.
    assert [(m.role, m.status) for m in stored()] == [("user", "ok"), ("assistant", "streaming")]
    turn.close()
    _, reply = stored()
    [row] = ledger()
    assert turn.status == "cancelled" and reply.status == "cancelled" and reply.content == "one"
    assert row.status == "cancelled" and reply.ledger_id == row.id and reply.output_tokens == row.output_tokens == 1
    # A stopped answer's words are history for the next turn.
    scripted.SCRIPT[GPT] = [answer("four")]
    list(conversations.send(ws, c.id, "go on"))
    assert [m.content for m in scripted.CALLS[-1].messages] == ["count", "one", "go on"]


def test_switching_the_model_mid_conversation_keeps_each_answers_model(ws):
    scripted.SCRIPT[GPT] = [answer("from gpt")]
    scripted.SCRIPT[HAIKU] = [answer("from haiku")]
    c = conversations.create_conversation(ws)
    list(conversations.send(ws, c.id, "first"))
    conversations.update_settings(ws, c.id, target=f"backup/{HAIKU}", system_prompt="Be brief.", temperature=0.2,
                                  max_tokens=300)
    list(conversations.send(ws, c.id, "second"))
    call = scripted.CALLS[-1]
    assert call.model == HAIKU and call.system == "Be brief." and call.temperature == 0.2 and call.max_tokens == 300
    view = conversations.get_conversation(ws, c.id)
    assert [m.target for m in view.messages if m.role == "assistant"] == [f"primary/{GPT}", f"backup/{HAIKU}"]
    assert view.target == f"backup/{HAIKU}"
    assert [r.provider for r in ledger()] == ["openai", "anthropic"]


def test_history_is_trimmed_oldest_first_to_fit_a_known_context_window(ws):
    long = "word " * 60  # about 60 tokens
    scripted.SCRIPT[GPT] = [answer(long)]
    set_window(ws, GPT, 400)
    c = conversations.create_conversation(ws, max_tokens=100)
    for n in range(4):
        list(conversations.send(ws, c.id, f"question {n} " + long))
    usage = conversations.context_usage(ws, c.id)
    assert usage.window == chat_context.Window(400, "the route settings") and usage.exact
    assert usage.turns_total == 4 and 0 < usage.turns_sent < 4 and usage.trimmed == 4 - usage.turns_sent
    assert usage.prompt_tokens <= 400 - 100 and 0 < usage.fraction < 1
    # The last call went out with only the newest turns, and they fit.
    last = scripted.CALLS[-1].messages
    assert last[-1].content.startswith("question 3") and not any(m.content.startswith("question 0") for m in last)

    with pytest.raises(InvalidInput, match="does not fit .*context window of 400"):
        conversations.send(ws, c.id, "word " * 400)
    with pytest.raises(InvalidInput, match="context window of 400"):
        conversations.update_settings(ws, c.id, target=None, system_prompt=None, temperature=None, max_tokens=500)
    assert len(stored()) == 8


def test_an_unknown_window_is_said_so_and_the_whole_history_is_sent(ws):
    scripted.SCRIPT[GPT] = [answer("ok")]
    c = conversations.create_conversation(ws)
    for n in range(3):
        list(conversations.send(ws, c.id, f"message {n}"))
    usage = conversations.context_usage(ws, c.id)
    assert usage.window == chat_context.Window(None, None) and usage.fraction is None
    assert usage.turns_sent == usage.turns_total == 3 and usage.prompt_tokens > 0
    assert len(scripted.CALLS[-1].messages) == 5


def test_an_unpriced_answer_is_counted_as_unpriced_never_as_zero(ws):
    with db.transaction() as s:
        conn = s.scalar(select(ProviderConnection).where(ProviderConnection.name == "primary"))
        s.add(RouteTarget(workspace_id=ws.workspace_id, kind="text", position=5, connection_id=conn.id,
                          model="my-finetune"))
    scripted.SCRIPT["my-finetune"] = [answer("custom")]
    c = conversations.create_conversation(ws, target="primary/my-finetune")
    list(conversations.send(ws, c.id, "hi"))
    view = conversations.get_conversation(ws, c.id)
    assert view.messages[1].cost is None and view.messages[1].unpriced
    assert view.cost == Decimal(0) and view.unpriced == 1
    assert conversations.list_conversations(ws)[0].unpriced == 1


def test_list_search_rename_and_delete(ws):
    scripted.SCRIPT[GPT] = [answer("Bonjour")]
    a = conversations.create_conversation(ws, "Trip planning")
    b = conversations.create_conversation(ws)
    list(conversations.send(ws, b.id, "Translate hello into French"))
    assert [c.id for c in conversations.list_conversations(ws)] == [b.id, a.id]  # latest first
    assert [c.id for c in conversations.list_conversations(ws, "TRIP")] == [a.id]
    assert [c.id for c in conversations.list_conversations(ws, "bonjour")] == [b.id]  # message text too
    assert conversations.list_conversations(ws, "100%") == []  # a wildcard is a character here

    with pytest.raises(InvalidInput):
        conversations.rename_conversation(ws, a.id, "   ")
    assert conversations.rename_conversation(ws, a.id, "  Summer   trip ").title == "Summer trip"
    assert conversations.delete_conversation(ws, b.id) == "Translate hello into French"
    assert [c.id for c in conversations.list_conversations(ws)] == [a.id]
    assert stored() == [] and len(ledger()) == 1  # the ledger keeps what was spent
    with db.read_session() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "conversation.deleted"))
    assert event is not None
    with pytest.raises(NotFound):
        conversations.send(ws, b.id, "still there?")


def test_a_first_message_starts_a_conversation_only_once_something_is_kept(ws, monkeypatch):
    scripted.SCRIPT[GPT] = [answer("Hi there")]
    turn = conversations.send(ws, None, "Hello, is anyone there? " * 4)
    assert turn.conversation_id is None
    assert "".join(turn) == "Hi there" and turn.conversation_id is not None
    [summary] = conversations.list_conversations(ws)
    assert summary.id == turn.conversation_id and summary.title.endswith("…")
    assert len(summary.title) == conversations.TITLE_FROM_MESSAGE and summary.message_count == 2

    class Refusing:
        def reserve(self, ctx, amount):
            raise InvalidInput("Over budget.")

    monkeypatch.setattr(guards, "budgets", Refusing())
    refused = conversations.send(ws, None, "another one")
    with pytest.raises(InvalidInput, match="Over budget"):
        list(refused)
    assert refused.conversation_id is None and len(conversations.list_conversations(ws)) == 1
