"""The report tables: saved reports, each delivery of one (with its real outcome), and a workspace's mail server.

A report's schedule is not here: it is a row of the ``schedules`` table (``kind='report'``,
``target_id`` = the report's id), which the sidecar fires into ``enqueue_scheduled``.

A delivery is one attempt to get one rendering of a report to its recipients:

    queued → sending (claimed under a lease) → sent | failed | skipped (nothing to report)
       ↑________ a failure that may pass (the mail server) goes back to queued, later

``fire_time`` is set for scheduled deliveries only and is unique per report, so the same firing
enqueued twice is one delivery. When a delivery fails for good its owner is told once:
``notice`` goes ``pending`` → ``sent``, and a notice that cannot be sent yet stays pending.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.dbtypes import utcnow
from engine.models import Base, BigId

SOURCES = ("notebook", "dashboard")
FORMATS = ("csv", "xlsx", "pdf")
KINDS = ("scheduled", "now", "test", "resend")
STATUSES = ("queued", "sending", "sent", "failed", "skipped")
FINISHED = ("sent", "failed", "skipped")
SECURITY = ("starttls", "tls", "none")


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # SOURCES
    # A deleted notebook leaves the report in place, saying what is missing when it next runs.
    notebook_id: Mapped[int | None] = mapped_column(ForeignKey("notebooks.id", ondelete="SET NULL"))
    view: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # engine.dashboards.View's fields
    formats: Mapped[list[str]] = mapped_column(JSON, default=list)  # attachments: FORMATS
    recipient_user_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    recipient_addresses: Mapped[list[str]] = mapped_column(JSON, default=list)
    skip_if_empty: Mapped[bool] = mapped_column(default=True)
    # A notebook's SQL cells are run again (as the owner) before each send, so a weekly mail never
    # carries last month's numbers; prompt cells are not, since they spend money.
    rerun_queries: Mapped[bool] = mapped_column(default=True)
    paused: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReportDelivery(Base):
    __tablename__ = "report_deliveries"
    __table_args__ = (
        UniqueConstraint("report_id", "fire_time"),  # NULLs are distinct: only scheduled ones collide
        Index("ix_report_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_report_deliveries_report_created", "report_id", "created_at"),
        Index("ix_report_deliveries_notice", "notice"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # KINDS
    fire_time: Mapped[datetime | None]  # the schedule's nominal time (UTC), scheduled deliveries only
    as_of: Mapped[datetime]  # the moment the report's period is counted back from
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)  # the last failure (the mail server's words)
    note: Mapped[str | None] = mapped_column(Text)  # why it was skipped
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    recipients: Mapped[list[str] | None] = mapped_column(JSON)  # the addresses it went (or was to go) to
    message_id: Mapped[str | None] = mapped_column(String(300))
    resend_of: Mapped[int | None] = mapped_column(ForeignKey("report_deliveries.id", ondelete="SET NULL"))
    notice: Mapped[str] = mapped_column(String(16), default="none")  # none | pending | sent
    notice_attempts: Mapped[int] = mapped_column(default=0)
    notice_next_at: Mapped[datetime | None]
    notice_error: Mapped[str | None] = mapped_column(Text)
    notice_sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class WorkspaceSmtp(Base):
    """A workspace's own mail server; without one, the ``METERBOOK_SMTP_*`` settings are used."""

    __tablename__ = "workspace_smtp"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int]
    security: Mapped[str] = mapped_column(String(16))  # SECURITY
    username: Mapped[str | None] = mapped_column(String(320))
    from_address: Mapped[str] = mapped_column(String(320))
    password_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    password_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    password_hint: Mapped[str | None] = mapped_column(String(32))
    last_test_at: Mapped[datetime | None]
    last_test_ok: Mapped[bool | None]
    last_test_error: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
