"""billing: accounts, checkouts, processed Stripe events, meter outbox, invoice cache

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:25:55.615970
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('billing_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('stripe_customer_id', sa.String(length=255), nullable=True),
    sa.Column('plan', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('stripe_subscription_id', sa.String(length=255), nullable=True),
    sa.Column('current_period_start', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('current_period_end', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancel_at_period_end', sa.Boolean(), nullable=False),
    sa.Column('past_due_since', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('synced_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_billing_accounts_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_accounts')),
    sa.UniqueConstraint('stripe_customer_id', name=op.f('uq_billing_accounts_stripe_customer_id')),
    sa.UniqueConstraint('workspace_id', name=op.f('uq_billing_accounts_workspace_id'))
    )
    with op.batch_alter_table('billing_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_accounts_stripe_subscription_id'), ['stripe_subscription_id'], unique=False)

    op.create_table('billing_checkouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('plan', sa.String(length=32), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('stripe_session_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_billing_checkouts_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_billing_checkouts_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_checkouts'))
    )
    with op.batch_alter_table('billing_checkouts', schema=None) as batch_op:
        batch_op.create_index('ix_billing_checkouts_workspace_created', ['workspace_id', 'created_at'], unique=False)

    op.create_table('billing_invoices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('stripe_invoice_id', sa.String(length=255), nullable=False),
    sa.Column('number', sa.String(length=100), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=True),
    sa.Column('currency', sa.String(length=8), nullable=False),
    sa.Column('amount_due', engine.dbtypes.Money(), nullable=False),
    sa.Column('amount_paid', engine.dbtypes.Money(), nullable=False),
    sa.Column('total', engine.dbtypes.Money(), nullable=False),
    sa.Column('created', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('period_start', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('period_end', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('hosted_invoice_url', sa.Text(), nullable=True),
    sa.Column('invoice_pdf', sa.Text(), nullable=True),
    sa.Column('fetched_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_billing_invoices_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_invoices')),
    sa.UniqueConstraint('stripe_invoice_id', name=op.f('uq_billing_invoices_stripe_invoice_id'))
    )
    with op.batch_alter_table('billing_invoices', schema=None) as batch_op:
        batch_op.create_index('ix_billing_invoices_workspace_created', ['workspace_id', 'created'], unique=False)

    op.create_table('billing_meter_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('ledger_id', sa.BigInteger(), nullable=False),
    sa.Column('stripe_customer_id', sa.String(length=255), nullable=False),
    sa.Column('identifier', sa.String(length=100), nullable=False),
    sa.Column('cost', engine.dbtypes.Money(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('event_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_billing_meter_outbox_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_meter_outbox')),
    sa.UniqueConstraint('identifier', name=op.f('uq_billing_meter_outbox_identifier')),
    sa.UniqueConstraint('ledger_id', name=op.f('uq_billing_meter_outbox_ledger_id'))
    )
    with op.batch_alter_table('billing_meter_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_billing_meter_outbox_state_id', ['state', 'id'], unique=False)
        batch_op.create_index('ix_billing_meter_outbox_workspace_created', ['workspace_id', 'created_at'], unique=False)

    op.create_table('stripe_events',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('processed_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_stripe_events_workspace_id_workspaces'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stripe_events'))
    )


def downgrade() -> None:
    op.drop_table('stripe_events')
    with op.batch_alter_table('billing_meter_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_meter_outbox_workspace_created')
        batch_op.drop_index('ix_billing_meter_outbox_state_id')

    op.drop_table('billing_meter_outbox')
    with op.batch_alter_table('billing_invoices', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_invoices_workspace_created')

    op.drop_table('billing_invoices')
    with op.batch_alter_table('billing_checkouts', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_checkouts_workspace_created')

    op.drop_table('billing_checkouts')
    with op.batch_alter_table('billing_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_accounts_stripe_subscription_id'))

    op.drop_table('billing_accounts')
