"""The system of record: ``Base`` and the shared tables, as SQLAlchemy 2.0 ORM classes.

Here are the tables the generation path and the services around it read (people and
workspaces, the ledger, prices, providers and routes, assets, notebooks, budgets). A
domain's own tables live in its own models module (``chat_models``, ``batch_models``,
``workflows/models``, …), imported at the end of this one so that ``Base.metadata``, which
Alembic and the tests compare, always holds every table.

Schema changes go through Alembic (``engine/migrations``); a test checks that the
migrations and these classes describe the same schema.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sqlalchemy.sql.expression import false as sa_false
from sqlalchemy.sql.expression import true as sa_true

from engine.dbtypes import ExactDecimal, Money, UTCDateTime, utcnow

# BIGINT keys, except on SQLite where only INTEGER PRIMARY KEY is the fast rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("owner", "admin", "editor", "viewer")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), Decimal: Money(), dict[str, Any]: JSON()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    oidc_subject: Mapped[str | None] = mapped_column(String(400), unique=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)
    workspace: Mapped[Workspace] = relationship(lazy="joined", innerjoin=True)


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AuthSession(Base):
    """A signed-in browser: the cookie holds a random token, this row holds its hash."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_workspace_created", "workspace_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str | None] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Client(Base):
    __tablename__ = "clients"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str | None] = mapped_column(String(320))
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[datetime | None]


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    budget_usd: Mapped[Decimal | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[datetime | None]


class PriceOverride(Base):
    """A negotiated or self-hosted price that replaces the catalog's for one workspace.

    Rates are USD per million tokens (per unit for images, per 1k characters for speech).
    """

    __tablename__ = "price_overrides"
    __table_args__ = (UniqueConstraint("workspace_id", "provider", "model", "effective_from"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    input_mtok: Mapped[Decimal] = mapped_column(default=Decimal(0))
    output_mtok: Mapped[Decimal] = mapped_column(default=Decimal(0))
    cache_read_mtok: Mapped[Decimal | None]
    cache_write_mtok: Mapped[Decimal | None]
    per_image: Mapped[Decimal | None]
    per_1k_characters: Mapped[Decimal | None]
    per_second: Mapped[Decimal | None]
    effective_from: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntry(Base):
    """One attempt that reached a provider: who, what for, what it used and what it cost.

    ``input_tokens`` counts every prompt token, cached ones included (the genai-prices
    convention); ``cached_input_tokens`` and ``cache_write_tokens`` say how many of those were
    cache reads and cache writes. Links to runs, notebooks and reports are plain ids until
    those tables exist.
    """

    __tablename__ = "usage_ledger"
    __table_args__ = (
        Index("ix_usage_ledger_workspace_created", "workspace_id", "created_at"),
        Index("ix_usage_ledger_project_created", "project_id", "created_at"),
        # A retried request never writes an attempt twice.
        UniqueConstraint("request_id", "attempt", name="uq_usage_ledger_request_attempt"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    workflow_run_id: Mapped[int | None] = mapped_column(BigInteger)
    notebook_id: Mapped[int | None] = mapped_column(BigInteger)
    report_id: Mapped[int | None] = mapped_column(BigInteger)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), default="text")
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cached_input_tokens: Mapped[int] = mapped_column(default=0)
    cache_write_tokens: Mapped[int] = mapped_column(default=0)
    images: Mapped[int] = mapped_column(default=0)
    characters: Mapped[int] = mapped_column(default=0)
    seconds: Mapped[Decimal | None] = mapped_column(ExactDecimal(3))
    estimated_cost: Mapped[Decimal | None]
    cost: Mapped[Decimal | None]
    latency_ms: Mapped[int | None]
    ttft_ms: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # The generation path's own fields; rows written before it (the demo) leave them empty.
    request_id: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(default=1, server_default="1")
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("provider_connections.id", ondelete="SET NULL"))
    # False: no price was known, so ``cost`` is NULL — never a silent $0.
    priced: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    price_source: Mapped[str | None] = mapped_column(String(16))  # "catalog" or "override"
    price_version: Mapped[str | None] = mapped_column(String(80))
    cost_input: Mapped[Decimal | None]
    cost_cached_input: Mapped[Decimal | None]
    cost_cache_write: Mapped[Decimal | None]
    cost_output: Mapped[Decimal | None]
    cost_images: Mapped[Decimal | None]
    cost_characters: Mapped[Decimal | None]
    cost_seconds: Mapped[Decimal | None]


class WorkspaceKey(Base):
    """A workspace's data key, stored only wrapped (AES-256-GCM) by the master key, which never is."""

    __tablename__ = "workspace_keys"

    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(16))  # which master key wrapped it (a fingerprint)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[datetime | None]


class ProviderConnection(Base):
    """One vendor account a workspace can call: its type, where it lives, and its key, encrypted.

    ``name`` is how the workspace knows it ("openai", "groq", "local-ollama"); ``price_provider``
    is the catalog's provider id used to price its calls (a Groq endpoint is priced as Groq).
    """

    __tablename__ = "provider_connections"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    provider_type: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str | None] = mapped_column(String(500))
    price_provider: Mapped[str | None] = mapped_column(String(64))
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_hint: Mapped[str | None] = mapped_column(String(16))  # "sk-…abcd", safe to show
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    last_tested_at: Mapped[datetime | None]
    last_test_ok: Mapped[bool | None]
    last_test_error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoutePolicy(Base):
    """How a workspace picks among its targets for one kind of call."""

    __tablename__ = "route_policies"
    __table_args__ = (UniqueConstraint("workspace_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    strategy: Mapped[str] = mapped_column(String(16), default="priority")  # priority, cost, latency
    max_attempts: Mapped[int] = mapped_column(default=4)  # retries × fallbacks, all told
    retries_per_target: Mapped[int] = mapped_column(default=2)


class RouteTarget(Base):
    """One provider/model a kind of call may go to, in the workspace's order of preference."""

    __tablename__ = "route_targets"
    __table_args__ = (UniqueConstraint("workspace_id", "kind", "connection_id", "model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(default=0)
    connection_id: Mapped[int] = mapped_column(ForeignKey("provider_connections.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    context_window: Mapped[int | None]
    rpm_limit: Mapped[int | None]
    tpm_limit: Mapped[int | None]
    enabled: Mapped[bool] = mapped_column(default=True)


class TargetHealth(Base):
    """The circuit breaker and recent record of one connection/model, kept for the router and the UI."""

    __tablename__ = "target_health"
    __table_args__ = (UniqueConstraint("connection_id", "model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("provider_connections.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="closed")  # closed, open, half_open
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    opened_at: Mapped[datetime | None]
    last_ok_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None]  # moving average of successful calls
    calls: Mapped[int] = mapped_column(default=0)
    failures: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Asset(Base):
    """A generated file (image, audio, video or long text) kept under the assets directory."""

    __tablename__ = "assets"
    __table_args__ = (Index("ix_assets_workspace_created", "workspace_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    ledger_id: Mapped[int | None] = mapped_column(BigInteger)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    mime: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(String(500))  # relative to the assets directory
    size_bytes: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The library's own fields (engine.asset_library): what people call it, how they find it again.
    title: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    favourite: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    archived_at: Mapped[datetime | None]


class Notebook(Base):
    """An analysis notebook: an ordered list of cells, private to its owner unless shared with the workspace."""

    __tablename__ = "notebooks"
    __table_args__ = (Index("ix_notebooks_workspace_updated", "workspace_id", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    shared: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotebookCell(Base):
    """One cell and its last result: a SQL cell's rows as Parquet, a chart's options, a note's Markdown."""

    __tablename__ = "notebook_cells"
    __table_args__ = (Index("ix_notebook_cells_notebook_position", "notebook_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    notebook_id: Mapped[int] = mapped_column(ForeignKey("notebooks.id", ondelete="CASCADE"))
    position: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))  # markdown, sql, chart
    source: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[bytes | None] = mapped_column(LargeBinary)  # Parquet, capped in engine.notebooks
    result_rows: Mapped[int | None]
    result_truncated: Mapped[bool] = mapped_column(default=False)
    result_ms: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    ran_at: Mapped[datetime | None]


class Budget(Base):
    """A spending limit on one scope (workspace, client, project, provider, model, user, API key or tag).

    ``period_start`` and ``spent`` are the running counter for the current period, changed only
    under the budget row's lock; what is held for calls in flight is the sum of live
    ``budget_holds``. The webhook URL is a bearer secret, so it is kept encrypted like a provider key.
    """

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))  # workspace, client, project, provider, model, user, api_key, tag
    scope_id: Mapped[int | None]  # client, project, user or API key id
    scope_value: Mapped[str | None] = mapped_column(String(200))  # provider, model or tag
    period: Mapped[str] = mapped_column(String(16))  # daily, weekly, monthly, total
    limit_usd: Mapped[Decimal]
    action: Mapped[str] = mapped_column(String(16))  # block, warn, downgrade
    downgrade_to: Mapped[str | None] = mapped_column(String(300))  # "connection/model"
    thresholds: Mapped[list[int]] = mapped_column(JSON, default=list)
    owner_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    webhook_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    webhook_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    webhook_hint: Mapped[str | None] = mapped_column(String(200))  # "hooks.slack.com/…abcd", safe to show
    enabled: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    period_start: Mapped[datetime | None]
    spent: Mapped[Decimal] = mapped_column(default=Decimal(0))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetHold(Base):
    """One attempt's worst-case cost reserved against one budget: held, then settled or released once.

    A hold still ``held`` after ``expires_at`` (its process died) no longer counts against the budget.
    """

    __tablename__ = "budget_holds"
    __table_args__ = (
        UniqueConstraint("budget_id", "request_id", "attempt"),
        Index("ix_budget_holds_budget_state", "budget_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int]
    amount: Mapped[Decimal]
    state: Mapped[str] = mapped_column(String(16), default="held")  # held, settled, released
    actual: Mapped[Decimal | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class BudgetAlert(Base):
    """An alert: a budget threshold or forecast crossed, or a spend spike. ``key`` makes each fire once."""

    __tablename__ = "budget_alerts"
    __table_args__ = (
        UniqueConstraint("workspace_id", "key"),
        Index("ix_budget_alerts_workspace_created", "workspace_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    budget_id: Mapped[int | None] = mapped_column(ForeignKey("budgets.id", ondelete="SET NULL"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # threshold, forecast, spike
    title: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    snoozed_until: Mapped[datetime | None]
    # pending → sending → sent, partial (some channels failed), failed, or in_app (no channel to send to)
    delivery: Mapped[str] = mapped_column(String(16), default="pending")
    delivery_error: Mapped[str | None] = mapped_column(Text)
    delivery_at: Mapped[datetime | None]  # when sending last started, then when it finished


from engine import batch_models as _batch_models  # noqa: E402,F401  (batches and their rows; engine/batches.py)
from engine import chat_models as _chat_models  # noqa: E402,F401  (conversations, messages, answer ratings)
from engine.workflows import models as _workflow_models  # noqa: E402,F401  (the workflow tables)
from engine.billing import models as _billing_models  # noqa: E402,F401  (billing tables; see engine/billing/models.py)
from engine.schedules import models as _schedule_models  # noqa: E402,F401  (schedules, firings, the lease)
from engine.workflows import hook_models as _hook_models  # noqa: E402,F401  (webhook triggers; engine/workflows/hooks.py)
from engine.reports import models as _report_models  # noqa: E402,F401  (reports, deliveries, workspace SMTP)
from engine.connectors import models as _connector_models  # noqa: E402,F401  (MCP connections; engine/connectors/)
