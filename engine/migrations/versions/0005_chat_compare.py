"""chat and compare: conversations, their messages, and members' ratings of answers

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 10:12:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('conversations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('target', sa.String(length=300), nullable=True),
    sa.Column('system_prompt', sa.Text(), nullable=True),
    sa.Column('temperature', sa.Double(), nullable=True),
    sa.Column('max_tokens', sa.Integer(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_conversations_owner_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_conversations_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations'))
    )
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.create_index('ix_conversations_owner_updated', ['workspace_id', 'owner_id', 'updated_at'], unique=False)

    op.create_table('conversation_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('target', sa.String(length=300), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('ledger_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('cost', engine.dbtypes.Money(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('ttft_ms', sa.Integer(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_conversation_messages_conversation_id_conversations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['ledger_id'], ['usage_ledger.id'], name=op.f('fk_conversation_messages_ledger_id_usage_ledger'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversation_messages'))
    )
    with op.batch_alter_table('conversation_messages', schema=None) as batch_op:
        batch_op.create_index('ix_conversation_messages_conversation_id', ['conversation_id', 'id'], unique=False)

    op.create_table('answer_ratings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('ledger_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('rating', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ledger_id'], ['usage_ledger.id'], name=op.f('fk_answer_ratings_ledger_id_usage_ledger'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_answer_ratings_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_answer_ratings_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_answer_ratings')),
    sa.UniqueConstraint('ledger_id', 'user_id', name=op.f('uq_answer_ratings_ledger_id'))
    )
    with op.batch_alter_table('answer_ratings', schema=None) as batch_op:
        batch_op.create_index('ix_answer_ratings_workspace_created', ['workspace_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('answer_ratings', schema=None) as batch_op:
        batch_op.drop_index('ix_answer_ratings_workspace_created')

    op.drop_table('answer_ratings')
    with op.batch_alter_table('conversation_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_conversation_messages_conversation_id')

    op.drop_table('conversation_messages')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_index('ix_conversations_owner_updated')

    op.drop_table('conversations')
