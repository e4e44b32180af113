"""What of a chat fits the model's context window: the window, the prompt's size, trimming history.

The window is the route target's setting, else the provider's model list (an HTTP call for
some vendors, so kept for ``MODEL_LIST_TTL_S``), else unknown; an unknown window sends the
whole history and ``ContextUsage`` says so. The history is trimmed oldest turns first so the
prompt and ``max_tokens`` of answer fit. Plain chat turns (``engine.conversations``), turns
with tools (``engine.chat_tools``) and Compare's max-tokens check all ask here; nothing here
reads or writes a conversation.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

import providers
from engine import connections, db, router, tokens
from engine.chat_models import ConversationMessage
from engine.errors import InvalidInput
from engine.models import ProviderConnection, RouteTarget
from engine.permissions import Actor, authorize
from providers.base import Message

log = logging.getLogger(__name__)

MAX_TOKENS_LIMIT = 1_000_000  # the generation path's own bound
MODEL_LIST_TTL_S = 300.0  # how long a provider's model list (and a failure to get it) is reused


@dataclass(frozen=True)
class Window:
    """A model's context window in tokens, and where that figure came from; None when unknown."""

    tokens: int | None
    source: str | None  # "the route settings" or "the provider's model list"


@dataclass(frozen=True)
class ContextUsage:
    """How much of the model's context window the conversation's next prompt takes."""

    target: str | None  # the model the figures are for; None when no model is set up
    window: Window
    prompt_tokens: int  # system prompt and the history that would be sent
    exact: bool  # counted with the vendor's own tokenizer
    turns_sent: int
    turns_total: int
    reserved_output: int  # max tokens kept free for the answer
    tool_tokens: int = 0  # of prompt_tokens, the tool definitions every model turn sends

    @property
    def fraction(self) -> float | None:
        return None if not self.window.tokens else self.prompt_tokens / self.window.tokens

    @property
    def trimmed(self) -> int:
        return self.turns_total - self.turns_sent


# --- context windows ----------------------------------------------------------------------


_model_lists: dict[tuple[int, int, str], tuple[float, dict[str, int | None]]] = {}
_model_lists_lock = threading.Lock()


def _listed_windows(workspace_id: int, target: router.Target) -> dict[str, int | None]:
    """The provider's model list as {model: window}, kept for a while: it may be an HTTP call."""
    key = (workspace_id, target.connection_id, target.version)
    now = time.monotonic()
    with _model_lists_lock:
        cached = _model_lists.get(key)
        if cached and now - cached[0] < MODEL_LIST_TTL_S:
            return cached[1]
    try:
        view, config = connections.provider_config(None, workspace_id, target.connection_id)
        listed = {m.id: m.context_window for m in providers.build(view.provider_type, config, name=view.name).models()}
    except Exception as exc:  # a list we cannot get is an unknown window, not a failed page
        log.info("Could not list the models of %s: %s", target.connection_name, type(exc).__name__)
        listed = {}
    with _model_lists_lock:
        for stale in [k for k, (at, _) in _model_lists.items() if now - at >= MODEL_LIST_TTL_S]:
            del _model_lists[stale]
        _model_lists[key] = (now, listed)
    return listed


def route_target(s: Session, workspace_id: int, label: str | None) -> router.Target | None:
    """The target a call would go to: the one named, else the first of the text route."""
    if label is None:
        targets = router.load_targets(s, workspace_id, "text")
        return targets[0] if targets else None
    name, _, model = label.partition("/")
    row = s.execute(
        select(ProviderConnection, RouteTarget)
        .outerjoin(RouteTarget, and_(RouteTarget.connection_id == ProviderConnection.id, RouteTarget.kind == "text",
                                     RouteTarget.model == model))
        .where(ProviderConnection.workspace_id == workspace_id, ProviderConnection.name == name)
    ).first()
    return router.target_for(row[0], model, row[1]) if row else None


def window_of(workspace_id: int, target: router.Target | None) -> Window:
    if target is None:
        return Window(None, None)
    if target.context_window:
        return Window(target.context_window, "the route settings")
    listed = _listed_windows(workspace_id, target).get(target.model)
    return Window(listed, "the provider's model list") if listed else Window(None, None)


def context_window(actor: Actor, target: str | None) -> tuple[str, Window]:
    """The label of the model a call to ``target`` (None: the route) goes to first, and its window."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        resolved = route_target(s, actor.workspace_id, target)
    label = resolved.label if resolved else (target or "the route")
    return label, window_of(actor.workspace_id, resolved)


def check_max_tokens(actor: Actor, target: str | None, max_tokens) -> int:
    """A whole number within the generation path's bound and, when known, below the model's window."""
    try:
        n = int(max_tokens)
    except (TypeError, ValueError):
        n = 0
    if isinstance(max_tokens, float) and not max_tokens.is_integer():
        n = 0
    if not 0 < n <= MAX_TOKENS_LIMIT:
        raise InvalidInput(f"Max tokens must be a whole number between 1 and {MAX_TOKENS_LIMIT:,}.")
    label, window = context_window(actor, target)
    if window.tokens is not None and n >= window.tokens:
        raise InvalidInput(f"Max tokens ({n:,}) does not fit {label}'s context window of {window.tokens:,} tokens "
                           f"(from {window.source}), which must also hold the prompt. Choose fewer.")
    return n


# --- building the prompt ------------------------------------------------------------------


def answered_turns(messages: list[ConversationMessage]) -> list[tuple[Message, Message]]:
    """User messages with the answer they got; a failed answer (no words) leaves its question out."""
    turns = []
    for question, answer in zip(messages, messages[1:]):
        if (question.role == "user" and answer.role == "assistant" and answer.content
                and answer.status in ("ok", "cancelled")):
            turns.append((Message("user", question.content), Message("assistant", answer.content)))
    return turns


@dataclass(frozen=True)
class Prompt:
    messages: tuple[Message, ...]
    tokens: int
    exact: bool
    turns_sent: int
    turns_total: int


def fit(system: str | None, turns: list[tuple[Message, Message]], new: Message | None, target: router.Target | None,
        window: Window, max_tokens: int) -> Prompt:
    """Drop the oldest turns until the prompt and ``max_tokens`` of answer fit the window (when known)."""
    model = target.model if target else "gpt-4o"
    exact = target is not None and target.price_provider in tokens.EXACT_FOR

    def size(m: Message) -> int:
        return tokens.count(m.content, model) + tokens.PER_MESSAGE

    fixed = tokens.REPLY_PRIMING + (tokens.count(system, model) + tokens.PER_MESSAGE if system else 0)
    fixed += size(new) if new else 0
    sizes = [size(q) + size(a) for q, a in turns]
    used, keep = fixed + sum(sizes), len(turns)
    if window.tokens is not None:
        room = window.tokens - max_tokens
        if new is not None and fixed > room:
            what = "Your message" + (" with the system prompt" if system else "")
            raise InvalidInput(
                f"{what} takes about {fixed:,} tokens; with {max_tokens:,} kept for the answer it does not fit "
                f"{target.label}'s context window of {window.tokens:,} tokens. Shorten it, or lower max tokens "
                "in the model settings.")
        while keep and used > room:
            used -= sizes[len(turns) - keep]
            keep -= 1
    kept = turns[len(turns) - keep:] if keep else []
    messages = tuple(m for pair in kept for m in pair) + ((new,) if new else ())
    return Prompt(messages, used, exact, keep, len(turns))
