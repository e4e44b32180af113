"""The chat and compare tables (migration 0005): conversations, their messages, ratings of answers.

Only the Chat and Compare services use them (``engine.conversations``, ``chat_context``,
``chat_tools``, ``compare``); what an answer cost is its ledger row's, which a message and a
rating point to.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.dbtypes import utcnow
from engine.models import Base, BigId


class Conversation(Base):
    """A chat: private to the member who started it, with its model settings for the next answer.

    ``target`` is "connection/model", or NULL for the workspace's text route; changing it
    mid-conversation affects only the answers after the change (each message keeps its own).
    """

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_owner_updated", "workspace_id", "owner_id", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    target: Mapped[str | None] = mapped_column(String(300))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    temperature: Mapped[float | None]
    max_tokens: Mapped[int | None]
    # MCP connection ids whose tools the model may call (engine/chat_tools.py); NULL or []: none
    tool_connections: Mapped[list[int] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationMessage(Base):
    """One message of a chat. An assistant message carries what its answer used and cost.

    ``status``: ok; error (the answer failed; ``error`` says why); cancelled (stopped, the words
    received are kept); streaming (still arriving, or the process stopped before it ended).
    ``cost`` covers every attempt of the request (a fallback's failed attempts too); NULL on an
    answer means its price is unknown, never zero.
    """

    __tablename__ = "conversation_messages"
    __table_args__ = (Index("ix_conversation_messages_conversation_id", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # user, assistant
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(String(300))  # the model that answered (or was asked)
    request_id: Mapped[str | None] = mapped_column(String(64))
    ledger_id: Mapped[int | None] = mapped_column(ForeignKey("usage_ledger.id", ondelete="SET NULL"))
    input_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    cost: Mapped[Decimal | None]
    latency_ms: Mapped[int | None]
    ttft_ms: Mapped[int | None]
    # An answer that used tools: each model turn and each call with its result, in order (chat_tools.py)
    tool_calls: Mapped[list[dict] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnswerRating(Base):
    """A member's mark on one generated answer ("rate this answer"), kept for the analytics.

    One per member and ledger row; rating again replaces the mark. ``rating`` is 1 (good) or
    -1 (bad); ``source`` says where it was given (compare, chat).
    """

    __tablename__ = "answer_ratings"
    __table_args__ = (
        UniqueConstraint("ledger_id", "user_id"),
        Index("ix_answer_ratings_workspace_created", "workspace_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    ledger_id: Mapped[int] = mapped_column(ForeignKey("usage_ledger.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    rating: Mapped[int]
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
