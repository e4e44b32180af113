"""chat tools: the MCP connections a conversation offers the model, and each answer's tool calls

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('conversations') as batch:
        batch.add_column(sa.Column('tool_connections', sa.JSON(), nullable=True))
    with op.batch_alter_table('conversation_messages') as batch:
        batch.add_column(sa.Column('tool_calls', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('conversation_messages') as batch:
        batch.drop_column('tool_calls')
    with op.batch_alter_table('conversations') as batch:
        batch.drop_column('tool_connections')
