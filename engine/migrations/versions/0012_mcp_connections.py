"""mcp connections: MCP servers per workspace (catalog or custom), secrets in the vault

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('mcp_connections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('catalog_key', sa.String(length=40), nullable=True),
    sa.Column('transport', sa.String(length=8), nullable=False),
    sa.Column('command', sa.String(length=500), nullable=True),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=True),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('secret_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('secret_nonce', sa.LargeBinary(), nullable=True),
    sa.Column('secret_hints', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('tools', sa.JSON(), nullable=True),
    sa.Column('tools_listed_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_error_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_mcp_connections_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_mcp_connections_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mcp_connections')),
    sa.UniqueConstraint('workspace_id', 'slug', name=op.f('uq_mcp_connections_workspace_id'))
    )
    with op.batch_alter_table('mcp_connections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mcp_connections_workspace_id'), ['workspace_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mcp_connections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mcp_connections_workspace_id'))
    op.drop_table('mcp_connections')
