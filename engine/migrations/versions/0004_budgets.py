"""budgets: budgets with their period counters, reservations (holds) and alerts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('budgets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('scope_id', sa.Integer(), nullable=True),
    sa.Column('scope_value', sa.String(length=200), nullable=True),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('limit_usd', engine.dbtypes.Money(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('downgrade_to', sa.String(length=300), nullable=True),
    sa.Column('thresholds', sa.JSON(), nullable=False),
    sa.Column('owner_ids', sa.JSON(), nullable=False),
    sa.Column('webhook_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('webhook_nonce', sa.LargeBinary(), nullable=True),
    sa.Column('webhook_hint', sa.String(length=200), nullable=True),
    sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('period_start', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('spent', engine.dbtypes.Money(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_budgets_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_budgets_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budgets')),
    sa.UniqueConstraint('workspace_id', 'name', name=op.f('uq_budgets_workspace_id'))
    )
    op.create_table('budget_holds',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('budget_id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('amount', engine.dbtypes.Money(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('actual', engine.dbtypes.Money(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['budget_id'], ['budgets.id'], name=op.f('fk_budget_holds_budget_id_budgets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budget_holds')),
    sa.UniqueConstraint('budget_id', 'request_id', 'attempt', name=op.f('uq_budget_holds_budget_id'))
    )
    with op.batch_alter_table('budget_holds', schema=None) as batch_op:
        batch_op.create_index('ix_budget_holds_budget_state', ['budget_id', 'state'], unique=False)

    op.create_table('budget_alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('budget_id', sa.Integer(), nullable=True),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by', sa.Integer(), nullable=True),
    sa.Column('snoozed_until', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('delivery', sa.String(length=16), nullable=False),
    sa.Column('delivery_error', sa.Text(), nullable=True),
    sa.Column('delivery_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['acknowledged_by'], ['users.id'], name=op.f('fk_budget_alerts_acknowledged_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['budget_id'], ['budgets.id'], name=op.f('fk_budget_alerts_budget_id_budgets'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_budget_alerts_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budget_alerts')),
    sa.UniqueConstraint('workspace_id', 'key', name=op.f('uq_budget_alerts_workspace_id'))
    )
    with op.batch_alter_table('budget_alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_budget_alerts_budget_id'), ['budget_id'], unique=False)
        batch_op.create_index('ix_budget_alerts_workspace_created', ['workspace_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('budget_alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_budget_alerts_workspace_created')
        batch_op.drop_index(batch_op.f('ix_budget_alerts_budget_id'))

    op.drop_table('budget_alerts')
    with op.batch_alter_table('budget_holds', schema=None) as batch_op:
        batch_op.drop_index('ix_budget_holds_budget_state')

    op.drop_table('budget_holds')
    op.drop_table('budgets')
