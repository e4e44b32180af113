"""Chat conversations: their messages, model settings, cost and context-window use, and sending a turn.

A conversation belongs to the member who started it; anyone else reads it as not found.
Its settings (target, system prompt, temperature, max tokens) apply to the next answer, so
the model can be switched mid-conversation: each answer keeps the target that gave it.

Sending a turn (``send``) goes through ``engine.generation.stream`` like every other call.
The history sent with the new message is trimmed to fit the model's context window by
``engine.chat_context``, which also says how much of the window a prompt takes. What is
stored follows what reached a vendor:

* the call is refused before any vendor answered (bad input, no route, a budget, a refused
  connection): nothing is stored and the error is raised, so the page can keep the draft;
* the answer starts: the user message and an assistant message marked ``streaming`` are
  stored at once, so neither is lost if the process stops mid-answer;
* the answer ends, fails or is abandoned: the assistant message is completed as ``ok``,
  ``error`` or ``cancelled`` with the words received, its ledger id, tokens and the cost of
  every attempt of the request (``charge_of``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from engine import audit, chat_context, db, generation, router, routes
from engine.chat_models import Conversation, ConversationMessage
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, MeterbookError, NotFound
from engine.models import LedgerEntry, ProviderConnection
from engine.permissions import Actor, authorize
from providers.base import Message

DEFAULT_TITLE = "New conversation"
MAX_TITLE = 200
TITLE_FROM_MESSAGE = 60  # an untitled conversation is named after the start of its first message
MAX_MESSAGE_CHARS = 100_000
MAX_SYSTEM_CHARS = 20_000
NOT_FOUND = "That conversation does not exist (it may have been deleted)."


# --- what callers get back ----------------------------------------------------------------


@dataclass(frozen=True)
class MessageView:
    id: int
    role: str
    content: str
    status: str  # ok, error, cancelled, streaming
    error: str | None
    target: str | None
    ledger_id: int | None
    input_tokens: int | None
    output_tokens: int | None
    cost: Decimal | None
    latency_ms: int | None
    ttft_ms: int | None
    created_at: datetime
    tool_steps: tuple[dict, ...] = ()  # an answer that used tools: its model turns and calls (chat_tools)

    @property
    def unpriced(self) -> bool:
        """An answer that reached a vendor whose price is unknown (never shown as $0)."""
        return self.role == "assistant" and self.ledger_id is not None and self.cost is None


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    target: str | None
    message_count: int
    cost: Decimal
    unpriced: int  # answers whose price is unknown, not in ``cost``
    updated_at: datetime


@dataclass(frozen=True)
class ConversationView:
    id: int
    title: str
    target: str | None  # None: the workspace's text route
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None
    messages: tuple[MessageView, ...]
    cost: Decimal
    unpriced: int
    created_at: datetime
    updated_at: datetime
    tool_connections: tuple[int, ...] = ()  # MCP connections whose tools the model may call


@dataclass(frozen=True)
class Charge:
    """What one request's attempts cost, read from the ledger; ``ledger_id`` is the last attempt's."""

    ledger_id: int
    target: str
    attempts: int
    cost: Decimal | None  # every attempt together; None when any attempt's price is unknown
    input_tokens: int
    output_tokens: int
    latency_ms: int | None
    ttft_ms: int | None


def charge_of(request_id: str) -> Charge | None:
    """The ledger's record of one request, or None when no attempt reached a vendor."""
    with db.read_session() as s:
        rows = s.execute(
            select(LedgerEntry, ProviderConnection.name)
            .outerjoin(ProviderConnection, ProviderConnection.id == LedgerEntry.connection_id)
            .where(LedgerEntry.request_id == request_id)
            .order_by(LedgerEntry.attempt)
        ).all()
    if not rows:
        return None
    last, name = rows[-1]
    costs = [r.cost for r, _ in rows]
    return Charge(
        ledger_id=last.id, target=f"{name or last.provider}/{last.model}", attempts=len(rows),
        cost=None if any(c is None for c in costs) else sum(costs, Decimal(0)),
        input_tokens=last.input_tokens, output_tokens=last.output_tokens, latency_ms=last.latency_ms,
        ttft_ms=last.ttft_ms,
    )


# --- validation ---------------------------------------------------------------------------


def _title(title: str | None) -> str:
    title = " ".join((title or "").split())
    if not title:
        raise InvalidInput("Give the conversation a title.")
    if len(title) > MAX_TITLE:
        raise InvalidInput(f"A title is at most {MAX_TITLE} characters.")
    return title


def _title_from(text: str) -> str:
    words = " ".join(text.split())
    return words if len(words) <= TITLE_FROM_MESSAGE else words[: TITLE_FROM_MESSAGE - 1].rstrip() + "…"


@dataclass(frozen=True)
class _Settings:
    target: str | None
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None


def _settings(actor: Actor, target: str | None, system_prompt: str | None, temperature, max_tokens) -> _Settings:
    target = (target or "").strip() or None
    if target is not None and target not in routes.choices(actor, "text"):
        raise InvalidInput(f"{target} is not one of this workspace's text models. Choose one from the list, "
                           "or add it to the text route under Providers.")
    system_prompt = (system_prompt or "").strip() or None
    if system_prompt is not None and len(system_prompt) > MAX_SYSTEM_CHARS:
        raise InvalidInput(f"The system prompt is {len(system_prompt):,} characters; keep it under "
                           f"{MAX_SYSTEM_CHARS:,}.")
    if temperature is not None:
        try:
            temperature = float(temperature)
        except (TypeError, ValueError):
            raise InvalidInput("Temperature must be a number between 0 and 2.") from None
        if not 0 <= temperature <= 2:
            raise InvalidInput("Temperature must be between 0 and 2.")
    if max_tokens is not None:
        max_tokens = chat_context.check_max_tokens(actor, target, max_tokens)
    return _Settings(target, system_prompt, temperature, max_tokens)


# --- reading ------------------------------------------------------------------------------


def _load(s: Session, actor: Actor, conversation_id: int) -> Conversation:
    c = s.get(Conversation, conversation_id)
    if c is None or c.workspace_id != actor.workspace_id or c.owner_id != actor.user_id:
        raise NotFound(NOT_FOUND)
    return c


def _messages(s: Session, conversation_id: int) -> list[ConversationMessage]:
    return list(s.scalars(select(ConversationMessage).where(ConversationMessage.conversation_id == conversation_id)
                          .order_by(ConversationMessage.id)))


def _message_view(m: ConversationMessage) -> MessageView:
    return MessageView(m.id, m.role, m.content, m.status, m.error, m.target, m.ledger_id, m.input_tokens,
                       m.output_tokens, m.cost, m.latency_ms, m.ttft_ms, m.created_at, tuple(m.tool_calls or ()))


def _view(c: Conversation, messages: list[ConversationMessage]) -> ConversationView:
    views = tuple(_message_view(m) for m in messages)
    return ConversationView(
        c.id, c.title, c.target, c.system_prompt, c.temperature, c.max_tokens, views,
        sum((m.cost for m in views if m.cost is not None), Decimal(0)), sum(m.unpriced for m in views),
        c.created_at, c.updated_at, tuple(c.tool_connections or ()),
    )


def get_conversation(actor: Actor, conversation_id: int) -> ConversationView:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        c = _load(s, actor, conversation_id)
        return _view(c, _messages(s, c.id))


def list_conversations(actor: Actor, search: str = "") -> list[ConversationSummary]:
    """The actor's conversations, latest first; ``search`` matches titles and message text."""
    m = ConversationMessage
    query = (
        select(Conversation, func.count(m.id), func.sum(m.cost),
               func.count(case((and_(m.ledger_id.is_not(None), m.cost.is_(None)), 1))))
        .outerjoin(m, m.conversation_id == Conversation.id)
        .where(Conversation.workspace_id == actor.workspace_id, Conversation.owner_id == actor.user_id)
        .group_by(Conversation.id)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    )
    term = " ".join((search or "").split()).lower()
    if term:
        inner = ConversationMessage.__table__.alias("searched")
        query = query.where(or_(
            func.lower(Conversation.title).contains(term, autoescape=True),
            exists().where(inner.c.conversation_id == Conversation.id,
                           func.lower(inner.c.content).contains(term, autoescape=True)),
        ))
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        rows = s.execute(query).all()
    return [ConversationSummary(c.id, c.title, c.target, count, total or Decimal(0), unpriced, c.updated_at)
            for c, count, total, unpriced in rows]


def context_usage(actor: Actor, conversation_id: int, *,
                  also_sent: Callable[[router.Target | None], int] | None = None) -> chat_context.ContextUsage:
    """What the next prompt would take of the model's window, before the new message is added.

    ``also_sent(target)``: tokens every request carries besides the history (chat_tools passes the
    tool definitions); they are taken off the window before the history is fitted, as a turn does.
    """
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        c = _load(s, actor, conversation_id)
        turns = chat_context.answered_turns(_messages(s, c.id))
        target = chat_context.route_target(s, actor.workspace_id, c.target)
        system, max_tokens = c.system_prompt, c.max_tokens or generation.DEFAULT_MAX_TOKENS
    window = chat_context.window_of(actor.workspace_id, target)
    extra = also_sent(target) if also_sent else 0
    fit_in = chat_context.Window(window.tokens - extra, window.source) if extra and window.tokens else window
    prompt = chat_context.fit(system, turns, None, target, fit_in, max_tokens)
    return chat_context.ContextUsage(target.label if target else c.target, window, prompt.tokens + extra, prompt.exact,
                                     prompt.turns_sent, prompt.turns_total, max_tokens, tool_tokens=extra)


# --- writing ------------------------------------------------------------------------------


def create_conversation(actor: Actor, title: str | None = None, *, target: str | None = None,
                        system_prompt: str | None = None, temperature: float | None = None,
                        max_tokens: int | None = None) -> ConversationView:
    with db.read_session() as s:
        authorize(s, actor, "generate")
    settings = _settings(actor, target, system_prompt, temperature, max_tokens)
    with db.transaction() as s:
        authorize(s, actor, "generate")
        c = Conversation(workspace_id=actor.workspace_id, owner_id=actor.user_id,
                         title=_title(title) if (title or "").strip() else DEFAULT_TITLE, target=settings.target,
                         system_prompt=settings.system_prompt, temperature=settings.temperature,
                         max_tokens=settings.max_tokens)
        s.add(c)
        s.flush()
        return _view(c, [])


def rename_conversation(actor: Actor, conversation_id: int, title: str) -> ConversationView:
    title = _title(title)
    with db.transaction() as s:
        authorize(s, actor, "workspace.read")
        c = _load(s, actor, conversation_id)
        c.title, c.updated_at = title, utcnow()
        return _view(c, _messages(s, c.id))


def update_settings(actor: Actor, conversation_id: int, *, target: str | None, system_prompt: str | None,
                    temperature: float | None, max_tokens: int | None) -> ConversationView:
    """Change the model settings for the answers from now on; earlier answers keep their own."""
    with db.read_session() as s:
        authorize(s, actor, "generate")
        _load(s, actor, conversation_id)
    settings = _settings(actor, target, system_prompt, temperature, max_tokens)
    with db.transaction() as s:
        authorize(s, actor, "generate")
        c = _load(s, actor, conversation_id)
        c.target, c.system_prompt = settings.target, settings.system_prompt
        c.temperature, c.max_tokens = settings.temperature, settings.max_tokens
        c.updated_at = utcnow()
        return _view(c, _messages(s, c.id))


def delete_conversation(actor: Actor, conversation_id: int) -> str:
    """Delete a conversation and its messages; their ledger rows stay. Returns the title."""
    with db.transaction() as s:
        authorize(s, actor, "workspace.read")
        c = _load(s, actor, conversation_id)
        title = c.title
        count = s.scalar(select(func.count(ConversationMessage.id))
                         .where(ConversationMessage.conversation_id == c.id))
        s.delete(c)
        audit.record_for(s, actor, "conversation.deleted", "conversation", conversation_id, title=title,
                         messages=count)
    return title


# --- sending a turn -----------------------------------------------------------------------


class ChatTurn:
    """One answer as it arrives: iterate it for text (``st.write_stream`` takes it), ``close`` to stop.

    It stores the turn as the module docstring describes. After it ends, ``status`` is ok,
    error or cancelled, ``stored`` says whether anything was kept, ``conversation_id`` is
    the conversation it was kept in (a new one when the turn started it), ``message_id`` the
    assistant message's id, and ``context`` describes the prompt that was sent.
    """

    def __init__(self, actor: Actor, conversation_id: int | None, text: str, stream: generation.GenerationStream,
                 request_id: str, target: str | None, context: chat_context.ContextUsage):
        self._actor = actor
        self._text = text
        self._stream = stream
        self._request_id = request_id
        self._target = target
        self._pieces: list[str] = []
        self._run = self._pump()
        self.conversation_id = conversation_id
        self.context = context
        self.message_id: int | None = None
        self.status: str | None = None
        self.error: str | None = None

    @property
    def stored(self) -> bool:
        return self.message_id is not None

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._run)

    def close(self) -> None:
        """Stop: the provider stream is closed and the words so far are kept as a cancelled answer."""
        self._run.close()

    def _pump(self) -> Iterator[str]:
        begun = False
        try:
            for piece in self._stream:
                if not begun:
                    self._begin()
                    begun = True
                self._pieces.append(piece)
                yield piece
        except GeneratorExit:
            self._stream.close()
            self._end("cancelled", "Stopped before the answer was complete.")
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, MeterbookError) else f"The answer failed unexpectedly ({type(exc).__name__})."
            self._end("error", reason)
            raise
        self._end("ok", None)

    def _conversation(self, s: Session) -> Conversation | None:
        """The conversation to store in: made now for a turn that starts one; None if deleted meanwhile."""
        if self.conversation_id is not None:
            return s.get(Conversation, self.conversation_id)
        c = Conversation(workspace_id=self._actor.workspace_id, owner_id=self._actor.user_id,
                         title=_title_from(self._text))
        s.add(c)
        s.flush()
        self.conversation_id = c.id
        return c

    def _begin(self) -> None:
        """The answer has started: keep the question and an open answer, in case the process stops."""
        with db.transaction() as s:
            if (c := self._conversation(s)) is not None:
                self.message_id = self._add_pair(s, c, status="streaming")

    def _add_pair(self, s: Session, c: Conversation, *, status: str) -> int:
        if c.title == DEFAULT_TITLE and not s.scalar(select(exists().where(ConversationMessage.conversation_id == c.id))):
            c.title = _title_from(self._text)
        s.add(ConversationMessage(conversation_id=c.id, role="user", content=self._text, status="ok"))
        answer = ConversationMessage(conversation_id=c.id, role="assistant", status=status, target=self._target,
                                     request_id=self._request_id)
        s.add(answer)
        c.updated_at = utcnow()
        s.flush()
        return answer.id

    def _end(self, status: str, error: str | None) -> None:
        self.status, self.error = status, error
        result = self._stream.result if status == "ok" else None
        charge = charge_of(self._request_id)
        if self.message_id is None and charge is None:
            return  # nothing reached a vendor: nothing to keep, nothing was charged
        with db.transaction() as s:
            if self.message_id is None:
                if (c := self._conversation(s)) is None:
                    return
                self.message_id = self._add_pair(s, c, status=status)
            m = s.get(ConversationMessage, self.message_id)
            if m is None:  # its conversation was deleted while the answer streamed
                return
            m.content, m.status, m.error = self.text, status, error
            source = result or charge
            m.target, m.ledger_id, m.latency_ms, m.ttft_ms = source.target, source.ledger_id, source.latency_ms, source.ttft_ms
            usage = result.usage if result is not None else charge
            m.input_tokens, m.output_tokens = usage.input_tokens, usage.output_tokens
            m.cost = charge.cost if charge is not None else None
            s.get(Conversation, m.conversation_id).updated_at = utcnow()


def send(actor: Actor, conversation_id: int | None, text: str) -> ChatTurn:
    """Start the answer to ``text``; iterate the returned turn to receive it.

    ``conversation_id`` None starts a new conversation (with the route's model and no system
    prompt), made only once the answer starts or something was charged. Errors found before
    any vendor is called (an empty or too long message, no model, a permission) are raised
    here and nothing is stored.
    """
    text = (text or "").strip()
    if not text:
        raise InvalidInput("Write a message first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidInput(f"The message is {len(text):,} characters; keep it under {MAX_MESSAGE_CHARS:,}.")
    with db.read_session() as s:
        authorize(s, actor, "generate")
        if conversation_id is None:
            turns, settings = [], _Settings(None, None, None, None)
        else:
            c = _load(s, actor, conversation_id)
            turns = chat_context.answered_turns(_messages(s, c.id))
            settings = _Settings(c.target, c.system_prompt, c.temperature, c.max_tokens)
        target = chat_context.route_target(s, actor.workspace_id, settings.target)
    window = chat_context.window_of(actor.workspace_id, target)
    reserved = settings.max_tokens or generation.DEFAULT_MAX_TOKENS
    prompt = chat_context.fit(settings.system_prompt, turns, Message("user", text), target, window, reserved)
    request_id = uuid.uuid4().hex
    stream = generation.stream(generation.GenerationRequest(
        messages=prompt.messages, system=settings.system_prompt, target=settings.target,
        max_tokens=settings.max_tokens, temperature=settings.temperature, tags=("chat",), request_id=request_id,
    ), actor)
    label = target.label if target else settings.target
    context = chat_context.ContextUsage(label, window, prompt.tokens, prompt.exact, prompt.turns_sent,
                                        prompt.turns_total, reserved)
    return ChatTurn(actor, conversation_id, text, stream, request_id, label, context)
