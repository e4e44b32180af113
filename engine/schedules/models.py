"""The schedule tables: schedules, their firings and the sidecar's scheduler lease.

``schedule_fires`` is unique on (schedule, nominal fire time): whoever fires writes that row
first, so a second firing of the same moment (two sidecars, a restart, a retry) loses on the key
and starts nothing. ``version`` goes up on every change a person makes, which is what the
sidecar compares to replace its job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false as sa_false

from engine.dbtypes import utcnow
from engine.models import Base, BigId

KINDS = ("workflow", "report")
MISFIRE_POLICIES = ("coalesce", "skip")
FIRE_STATUSES = ("firing", "fired", "missed", "skipped", "failed")
SCHEDULER_LEASE = "scheduler"  # the one lease name whose holder fires schedules


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_target", "kind", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[int]  # a workflow's or a report's id, by kind
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    paused: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    no_overlap: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    misfire: Mapped[str] = mapped_column(String(16), default="coalesce")
    grace_s: Mapped[int] = mapped_column(default=300)
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)
    # Firings before this are neither run nor "missed": the schedule did not exist, or was paused.
    resumed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Written by the sidecar.
    last_fire_time: Mapped[datetime | None]
    last_fired_at: Mapped[datetime | None]
    next_fire_time: Mapped[datetime | None]


class ScheduleFire(Base):
    __tablename__ = "schedule_fires"
    __table_args__ = (UniqueConstraint("schedule_id", "fire_time", name="uq_schedule_fires_once"),
                      Index("ix_schedule_fires_workspace", "workspace_id", "recorded_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    fire_time: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="firing")
    coalesced: Mapped[int] = mapped_column(default=1)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    late_ms: Mapped[int] = mapped_column(default=0)
    run_id: Mapped[int | None] = mapped_column(BigId)
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    detail: Mapped[str | None] = mapped_column(Text)


class SidecarLease(Base):
    """Who schedules: one row per lease name, taken when free or lapsed, renewed by its holder.

    ``generation`` goes up at each takeover, so a holder that lost the lease without noticing
    can be told apart from the one that has it now.
    """

    __tablename__ = "sidecar_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    generation: Mapped[int] = mapped_column(default=1)
