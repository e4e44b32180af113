"""The batch tables: ``batches`` (one CSV run through one prompt template) and ``batch_rows``.

Only the Batch page's services read them (``engine.batches`` starts and steers a batch,
``engine.batch_worker`` works its rows); each row's call is charged through the generation
path and its ledger row, which is why a row keeps the request id it was given at creation.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.dbtypes import utcnow
from engine.models import Base, BigId


class Batch(Base):
    """Rows of a CSV run through one prompt template, one generation per row, as queued work.

    A worker owns a batch while ``claimed_by`` names it and ``heartbeat_at`` stays fresh; a
    ``running`` batch whose heartbeat has gone stale lost its worker, and any process may claim
    it and carry on. Pause and cancel are flags here that the worker reads between rows.
    """

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_workspace_created", "workspace_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))  # whose calls
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued, running, paused, cancelled, done, failed
    template: Mapped[str] = mapped_column(Text)
    system: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(String(300))  # "connection/model"; None: the workspace route
    max_tokens: Mapped[int]
    temperature: Mapped[float | None]
    concurrency: Mapped[int] = mapped_column(default=4)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    row_count: Mapped[int]
    estimated_cost: Mapped[Decimal | None]  # the worst case, summed over the rows, when it was started
    estimate_exact: Mapped[bool] = mapped_column(default=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    heartbeat_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class BatchRow(Base):
    """One row of a batch: its values, the prompt they made, and what the call returned and cost."""

    __tablename__ = "batch_rows"
    __table_args__ = (
        UniqueConstraint("batch_id", "position"),
        Index("ix_batch_rows_batch_status", "batch_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    position: Mapped[int]  # 1-based, as the rows were in the file
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prompt: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str] = mapped_column(String(64))  # fixed at creation: a row is never charged twice
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, running, ok, error, cancelled
    output: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(String(300))
    cost: Mapped[Decimal | None]
    estimated_cost: Mapped[Decimal | None]
    input_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    ledger_id: Mapped[int | None] = mapped_column(BigInteger)
    latency_ms: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
