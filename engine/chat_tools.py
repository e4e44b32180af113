"""Chat with tools: a conversation offers the model the tools of connected MCP servers.

A conversation keeps the MCP connection ids it enabled (``set_tools``). Sending a turn with
tools (``send``) runs a loop: the model answers through ``generation.generate`` (each model
turn its own request, so its own priced ledger row, its own budget reservation); the tool calls
it asks for run through the toolbox (``engine/connectors/toolbox.py``: ``tools_for`` and
``call_tool``); their results, or their errors marked as errors, go back as tool messages; and
so on until the model answers without calling a tool, or until it asks for more than the
turn's cap of tool calls (``DEFAULT_CAP``), which stops the loop with a message saying so.

What is stored follows the plain chat turn (``conversations.ChatTurn``): nothing if the first
model turn is refused before a vendor is reached; the question and an open answer once the first
model turn came back; the end completes it with the final words, ``status`` ok or error, the
cost of every model turn from the ledger, and ``tool_calls``: each model turn and each call
with its arguments and result, in order, for the transcript. Later turns send the history as
questions and final answers only, not the tool traffic.

Tool calls are not streamed: a model turn is a whole answer (``Provider.generate``).

The context window (when known) has to hold the tool definitions as well as the history, so
the history is trimmed to what the definitions leave; and before each later model turn the
prompt, now with the tool results, is counted again: one that would not fit stops the loop with
a stored error instead of being sent to fail at the vendor (and be billed for it).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import chat_context, conversations as conv, db, generation, router, tokens
from engine.chat_models import Conversation, ConversationMessage
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, MeterbookError
from engine.models import LedgerEntry
from engine.permissions import Actor, authorize
from providers.base import Message, Request, ToolSpec, tools_text

log = logging.getLogger(__name__)

DEFAULT_CAP = 8  # tool calls per turn
MAX_RESULT_CHARS = 20_000  # of one tool result, sent to the model and stored
MAX_CONNECTIONS = 20
TAGS = ("chat", "chat:tools")

# Where the choices come from can be replaced (tests with a tool set of their own); None means
# the workspace's enabled MCP connections.
_choices: Callable[[Actor], dict[int, str]] | None = None


def register_choices(fn: Callable[[Actor], dict[int, str]] | None) -> None:
    global _choices
    _choices = fn


def _connected(actor: Actor) -> dict[int, str]:
    from engine.connectors import connections

    return {c.id: c.name for c in connections.list_connections(actor) if c.enabled}


def choices(actor: Actor) -> dict[int, str]:
    """The connected, enabled MCP connections this member could enable for a conversation."""
    return dict((_choices or _connected)(actor))


def _toolbox():
    """The toolbox module (``tools_for`` and ``call_tool``), from the connectors package."""
    from engine.connectors import toolbox

    return toolbox


# --- settings ------------------------------------------------------------------------------


def set_tools(actor: Actor, conversation_id: int, connection_ids: list[int]) -> tuple[int, ...]:
    """Offer the tools of these connections in this conversation from the next turn on ([] for none)."""
    ids = tuple(dict.fromkeys(int(i) for i in connection_ids))
    if len(ids) > MAX_CONNECTIONS:
        raise InvalidInput(f"Enable at most {MAX_CONNECTIONS} connections in one conversation.")
    offered = choices(actor)
    if unknown := [i for i in ids if i not in offered]:
        raise InvalidInput(f"Connection{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))} "
                           "cannot be used here: connect and enable it on the Connectors page first.")
    with db.transaction() as s:
        authorize(s, actor, "generate")
        c = conv._load(s, actor, conversation_id)
        c.tool_connections = list(ids) or None
        c.updated_at = utcnow()
    return ids


# --- a turn ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolTurn:
    conversation_id: int
    message_id: int | None  # None: nothing reached a vendor, nothing was stored
    status: str  # ok, error
    text: str
    error: str | None
    steps: tuple[dict, ...]
    cost: Decimal | None


def _clip(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    return text[:MAX_RESULT_CHARS] + f"\n…(cut: the result was {len(text):,} characters)"


def _specs(tools: list) -> tuple[ToolSpec, ...]:
    return tuple(ToolSpec(t.qualified, t.description, t.input_schema) for t in tools)


def _model(target: router.Target | None) -> str:
    return target.model if target else "gpt-4o"  # the tokenizer conversations._fit counts with


class _Loop:
    def __init__(self, actor: Actor, c: Conversation, text: str, toolbox, cap: int,
                 target: router.Target | None = None, window: chat_context.Window = chat_context.Window(None, None)):
        self.actor, self.text, self.toolbox, self.cap = actor, text, toolbox, cap
        self.planned, self.window = target, window  # the model the turn is fitted to, and its window
        self.conversation_id = c.id
        self.settings = conv._Settings(c.target, c.system_prompt, c.temperature, c.max_tokens)
        self.base = uuid.uuid4().hex
        self.request_ids: list[str] = []
        self.steps: list[dict] = []
        self.message_id: int | None = None
        self.target: str | None = None

    def run(self, messages: tuple[Message, ...], tools: list) -> ToolTurn:
        by_name = {t.qualified: t for t in tools}
        specs = _specs(tools)
        calls, said = 0, ""
        try:
            while True:
                if self.request_ids and (too_big := self._over_window(messages, specs)):
                    return self._end("error", said, too_big)
                gen = self._model_turn(messages, specs)
                said = gen.text
                if not gen.tool_calls:
                    return self._end("ok", gen.text, None)
                if calls + len(gen.tool_calls) > self.cap:
                    return self._end("error", gen.text, (
                        f"Stopped: the model asked for more than {self.cap} tool calls in one turn "
                        f"({calls} ran). Ask again to let it go on, or narrow the question."))
                messages += (Message("assistant", gen.text, tool_calls=gen.tool_calls),)
                for call in gen.tool_calls:
                    calls += 1
                    messages += (self._call(call, by_name),)
        except Exception as exc:
            if not self.request_ids or self._charged() is None and self.message_id is None:
                raise  # refused before any vendor answered: nothing stored, as a plain chat turn
            if isinstance(exc, MeterbookError):
                return self._end("error", "", str(exc))
            # A bug or a database failure mid-turn: the answer must still end (never "streaming" for ever);
            # the details go to the log, which the transcript's reader may not be meant to see.
            log.exception("The tool loop of conversation %s stopped on an unexpected error", self.conversation_id)
            turns = sum(s["type"] == "model" for s in self.steps)
            return self._end("error", "", (
                f"The answer stopped on an unexpected error ({type(exc).__name__}) after {turns} model "
                f"turn{'s' if turns != 1 else ''}; it was logged for the administrator. Ask again to retry."))

    def _model_turn(self, messages: tuple[Message, ...], specs: tuple[ToolSpec, ...]) -> generation.Generation:
        request_id = f"{self.base}-m{len(self.request_ids) + 1}"
        self.request_ids.append(request_id)
        st = self.settings
        gen = generation.generate(generation.GenerationRequest(
            messages=messages, system=st.system_prompt, target=st.target, max_tokens=st.max_tokens,
            temperature=st.temperature, tags=TAGS, request_id=request_id, tools=specs), self.actor)
        self.target = gen.target
        self.steps.append({"type": "model", "request_id": request_id, "ledger_id": gen.ledger_id,
                           "target": gen.target, "text": gen.text, "cost": None if gen.cost is None else str(gen.cost),
                           "input_tokens": gen.usage.input_tokens, "output_tokens": gen.usage.output_tokens,
                           "tool_calls": len(gen.tool_calls)})
        if self.message_id is None:
            self._begin()
        return gen

    def _over_window(self, messages: tuple[Message, ...], specs: tuple[ToolSpec, ...]) -> str | None:
        """Why the next model turn must not be sent: its prompt and answer would not fit the window."""
        if self.window.tokens is None:
            return None
        st = self.settings
        answer = st.max_tokens or generation.DEFAULT_MAX_TOKENS
        prompt = tokens.count_request(Request(kind="text", model=_model(self.planned), messages=messages,
                                              system=st.system_prompt, tools=specs), "").tokens
        if prompt + answer <= self.window.tokens:
            return None
        return (f"Stopped before model turn {len(self.request_ids) + 1}: with the tool results the prompt takes "
                f"about {prompt:,} tokens, and with {answer:,} kept for the answer it would not fit "
                f"{self.planned.label}'s context window of {self.window.tokens:,} tokens, so it was not sent. "
                "Ask for less at a time, or choose a model with a larger context window.")

    def _call(self, call, by_name: dict) -> Message:
        tool = by_name.get(call.name)
        step: dict[str, Any] = {"type": "tool", "id": call.id, "name": call.name,
                                "arguments": dict(call.arguments) if call.arguments is not None else call.raw_arguments}
        if tool is None:
            ok, text = False, f"There is no tool called {call.name!r} here; use one of: {', '.join(by_name)}."
        elif call.arguments is None:
            ok, text = False, f"The arguments were not a JSON object: {call.raw_arguments[:200]!r}."
        else:
            step["connection_id"] = tool.connection_id
            try:
                outcome = self.toolbox.call_tool(self.actor, tool.connection_id, tool.name, dict(call.arguments))
                ok, text = outcome.ok, (outcome.text if outcome.ok else (outcome.error or outcome.text or "failed"))
            except MeterbookError as exc:  # our own refusal (connection gone, disabled, no right to use it)
                ok, text = False, str(exc)
        text = _clip(text)
        self.steps.append(step | {"ok": ok, "result": text})
        return Message("tool", text, tool_call_id=call.id, is_error=not ok)

    # --- storing --------------------------------------------------------------------------------

    def _charged(self) -> tuple[Decimal | None, int, int, int, int | None] | None:
        """Cost (None if any part is unpriced), tokens in/out, latency and last ledger id of every model turn."""
        with db.read_session() as s:
            rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.request_id.in_(self.request_ids))
                                  .order_by(LedgerEntry.id)))
        if not rows:
            return None
        costs = [r.cost for r in rows]
        return (None if any(c is None for c in costs) else sum(costs, Decimal(0)),
                sum(r.input_tokens for r in rows), sum(r.output_tokens for r in rows),
                sum(r.latency_ms or 0 for r in rows), rows[-1].id)

    def _begin(self) -> None:
        with db.transaction() as s:
            c = s.get(Conversation, self.conversation_id)
            if c is not None:
                self.message_id = _add_pair(s, c, self.text, self.base, self.target, "streaming")

    def _end(self, status: str, text: str, error: str | None) -> ToolTurn:
        charged = self._charged()
        cost = charged[0] if charged else None
        with db.transaction() as s:
            m = s.get(ConversationMessage, self.message_id) if self.message_id is not None else None
            if m is None and self.message_id is None and (c := s.get(Conversation, self.conversation_id)):
                self.message_id = _add_pair(s, c, self.text, self.base, self.target, status)
                m = s.get(ConversationMessage, self.message_id)
            if m is not None:
                m.content, m.status, m.error, m.target, m.tool_calls = text, status, error, self.target, self.steps
                if charged:
                    m.cost, m.input_tokens, m.output_tokens, m.latency_ms, m.ledger_id = charged
                s.get(Conversation, m.conversation_id).updated_at = utcnow()
        return ToolTurn(self.conversation_id, self.message_id, status, text, error, tuple(self.steps), cost)


def _add_pair(s: Session, c: Conversation, text: str, request_id: str, target: str | None, status: str) -> int:
    if c.title == conv.DEFAULT_TITLE and not s.scalar(select(ConversationMessage.id).where(
            ConversationMessage.conversation_id == c.id).limit(1)):
        c.title = conv._title_from(text)
    s.add(ConversationMessage(conversation_id=c.id, role="user", content=text, status="ok"))
    answer = ConversationMessage(conversation_id=c.id, role="assistant", status=status, target=target,
                                 request_id=request_id)
    s.add(answer)
    c.updated_at = utcnow()
    s.flush()
    return answer.id


def send(actor: Actor, conversation_id: int, text: str, *, toolbox=None, cap: int = DEFAULT_CAP) -> ToolTurn:
    """Answer ``text`` in a conversation with tools enabled, running the tools the model calls.

    ``toolbox`` is anything with the toolbox's ``tools_for`` and ``call_tool`` (default: the
    connectors package's). Refusals before any vendor answered raise and store nothing.
    """
    text = (text or "").strip()
    if not text:
        raise InvalidInput("Write a message first.")
    if len(text) > conv.MAX_MESSAGE_CHARS:
        raise InvalidInput(f"The message is {len(text):,} characters; keep it under {conv.MAX_MESSAGE_CHARS:,}.")
    if not 0 < cap <= 100:
        raise InvalidInput("The tool-call cap is between 1 and 100 calls per turn.")
    with db.read_session() as s:
        authorize(s, actor, "generate")
        c = conv._load(s, actor, conversation_id)
        s.expunge(c)
        turns = chat_context.answered_turns(conv._messages(s, c.id))
        target = chat_context.route_target(s, actor.workspace_id, c.target)
    if not c.tool_connections:
        raise InvalidInput("This conversation has no tools enabled; enable a connection's tools first.")
    toolbox = toolbox or _toolbox()
    tools = toolbox.tools_for(actor, list(c.tool_connections))
    if not tools:
        raise InvalidInput("None of the enabled connections offers a tool right now (disabled, or no tools listed).")
    window = chat_context.window_of(actor.workspace_id, target)
    reserved = c.max_tokens or generation.DEFAULT_MAX_TOKENS
    defined = _defined_tokens(window, tools, target, reserved)
    try:
        prompt = chat_context.fit(c.system_prompt, turns, Message("user", text), target,
                           chat_context.Window(window.tokens - defined, window.source) if defined else window, reserved)
    except InvalidInput as exc:
        if not defined:
            raise
        raise InvalidInput(f"{exc} (That is what the enabled connections' tool definitions, about {defined:,} "
                           f"tokens, leave of its {window.tokens:,}.)") from None
    return _Loop(actor, c, text, toolbox, cap, target, window).run(prompt.messages, tools)


def context_usage(actor: Actor, conversation_id: int, *, toolbox=None) -> chat_context.ContextUsage:
    """The Chat page's meter: the history, plus the tool definitions each model turn sends when tools are on.

    From the connections' last listings only: drawing a meter never starts a server.
    """
    view = conv.get_conversation(actor, conversation_id)
    tools = []
    if view.tool_connections:
        try:
            tools = (toolbox or _toolbox()).tools_for(actor, list(view.tool_connections), start=False)
        except Exception:  # noqa: BLE001 - a meter must not take the page down; sending says what is wrong
            log.warning("Reading the stored tool listings for conversation %s failed", conversation_id, exc_info=True)
    if not tools:
        return conv.context_usage(actor, conversation_id)
    text = tools_text(_specs(tools))
    return conv.context_usage(actor, conversation_id,
                              also_sent=lambda target: tokens.count(text, _model(target)) + tokens.PER_MESSAGE)


def _defined_tokens(window: chat_context.Window, tools: list, target: router.Target | None, reserved: int) -> int:
    """What the tool definitions take of a known window (0 when unknown): every model turn sends them."""
    if window.tokens is None:
        return 0
    defined = tokens.count(tools_text(_specs(tools)), _model(target)) + tokens.PER_MESSAGE
    if defined + reserved >= window.tokens:
        raise InvalidInput(
            f"The enabled connections' tool definitions alone take about {defined:,} tokens; with {reserved:,} "
            f"kept for the answer they leave no room in {target.label}'s context window of {window.tokens:,} "
            "tokens. Enable fewer connections, or lower max tokens in the model settings.")
    return defined


def describe_arguments(arguments: Any) -> str:
    """A tool call's arguments for the transcript."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, indent=2, ensure_ascii=False)
