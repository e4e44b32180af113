"""The webhook trigger table: one row per URL that starts a workflow's runs (migration 0010).

The URL's token is kept only as its SHA-256 (and its last four characters, to tell hooks apart
in a list), so a copy of the database does not open any hook. A hook's optional signing
secret is encrypted by the vault like every other secret.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false as sa_false
from sqlalchemy.sql.expression import true as sa_true

from engine.dbtypes import utcnow
from engine.models import Base


class WorkflowHook(Base):
    """A webhook trigger; its runs run as ``created_by``, so that member's role and plan apply."""

    __tablename__ = "workflow_hooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    token_hint: Mapped[str] = mapped_column(String(8))
    require_signature: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_hint: Mapped[str | None] = mapped_column(String(40))
    enabled: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
