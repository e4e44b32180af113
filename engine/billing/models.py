"""Billing's tables: each workspace's Stripe account and subscription state, the Stripe events
already processed, the meter-event outbox and the invoice cache."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from engine.dbtypes import utcnow
from engine.models import Base, BigId


class BillingAccount(Base):
    """One per workspace that has touched billing. Its state is only ever copied from Stripe's
    current subscription (fetched by the webhook handler), never set from a checkout redirect."""

    __tablename__ = "billing_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    plan: Mapped[str] = mapped_column(String(32), default="free")
    # Stripe's subscription status (active, trialing, past_due, unpaid, canceled, incomplete…) or "none"
    status: Mapped[str] = mapped_column(String(32), default="none")
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    current_period_start: Mapped[datetime | None]
    current_period_end: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    past_due_since: Mapped[datetime | None]  # first time Stripe said past_due; the grace period counts from it
    synced_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CheckoutAttempt(Base):
    """A checkout someone started. Its id is in the idempotency key of the session's POST, so a
    retried or double-clicked checkout gets back the same Stripe session, never a second one."""

    __tablename__ = "billing_checkouts"
    __table_args__ = (Index("ix_billing_checkouts_workspace_created", "workspace_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    plan: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    stripe_session_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StripeEvent(Base):
    """A webhook event whose effects are committed, written in the same transaction as them."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspaces.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(32))  # processed, ignored
    processed_at: Mapped[datetime] = mapped_column(default=utcnow)


class MeterOutbox(Base):
    """One billable ledger row waiting to be (or already) reported to Stripe's meter.

    Written in the ledger row's own transaction. ``identifier`` is fixed when the row is made,
    so every resend is the same meter event and Stripe refuses the copies.
    """

    __tablename__ = "billing_meter_outbox"
    __table_args__ = (
        Index("ix_billing_meter_outbox_state_id", "state", "id"),
        Index("ix_billing_meter_outbox_workspace_created", "workspace_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    ledger_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255))
    identifier: Mapped[str] = mapped_column(String(100), unique=True)
    cost: Mapped[Decimal]  # the ledger row's exact cost
    value: Mapped[int] = mapped_column(BigInteger)  # what the meter receives: cost in meter units
    event_at: Mapped[datetime]  # the ledger row's time, sent as the event's timestamp
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, rejected
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InvoiceCache(Base):
    """Invoices as Stripe last listed them, so the Billing page opens without a Stripe call."""

    __tablename__ = "billing_invoices"
    __table_args__ = (Index("ix_billing_invoices_workspace_created", "workspace_id", "created"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    number: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(8))
    amount_due: Mapped[Decimal]
    amount_paid: Mapped[Decimal]
    total: Mapped[Decimal]
    created: Mapped[datetime]
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    invoice_pdf: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
