"""The ``mcp_connections`` table (migration 0012): one MCP server a workspace connected.

A row is a catalog entry's server or a custom one (any stdio command or URL). Its secrets
(environment variables for a stdio child, headers for a remote server) are one JSON object
encrypted by the vault; ``secret_hints`` holds their masked last four for the page. ``fields``
copies what the server needs at connect time, so a later catalog change cannot strand a row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import true as sa_true

from engine.dbtypes import utcnow
from engine.models import Base


class McpConnection(Base):
    __tablename__ = "mcp_connections"
    __table_args__ = (UniqueConstraint("workspace_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(32))  # the prefix of qualified tool names: github__create_issue
    name: Mapped[str] = mapped_column(String(100))
    catalog_key: Mapped[str | None] = mapped_column(String(40))
    transport: Mapped[str] = mapped_column(String(8))  # stdio | http
    command: Mapped[str | None] = mapped_column(String(500))
    args: Mapped[list[str]] = mapped_column(JSON, default=list)
    url: Mapped[str | None] = mapped_column(String(2000))
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    settings: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # non-secret env values
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_hints: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    tools: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # the last listing
    tools_listed_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
