"""reports: reports, deliveries, workspace SMTP

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 00:31:51.291394
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('workspace_smtp',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('security', sa.String(length=16), nullable=False),
    sa.Column('username', sa.String(length=320), nullable=True),
    sa.Column('from_address', sa.String(length=320), nullable=False),
    sa.Column('password_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('password_nonce', sa.LargeBinary(), nullable=True),
    sa.Column('password_hint', sa.String(length=32), nullable=True),
    sa.Column('last_test_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_test_ok', sa.Boolean(), nullable=True),
    sa.Column('last_test_error', sa.Text(), nullable=True),
    sa.Column('updated_by', sa.Integer(), nullable=True),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['updated_by'], ['users.id'], name=op.f('fk_workspace_smtp_updated_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_workspace_smtp_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workspace_smtp')),
    sa.UniqueConstraint('workspace_id', name=op.f('uq_workspace_smtp_workspace_id'))
    )
    op.create_table('reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('notebook_id', sa.Integer(), nullable=True),
    sa.Column('view', sa.JSON(), nullable=True),
    sa.Column('formats', sa.JSON(), nullable=False),
    sa.Column('recipient_user_ids', sa.JSON(), nullable=False),
    sa.Column('recipient_addresses', sa.JSON(), nullable=False),
    sa.Column('skip_if_empty', sa.Boolean(), nullable=False),
    sa.Column('rerun_queries', sa.Boolean(), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['notebook_id'], ['notebooks.id'], name=op.f('fk_reports_notebook_id_notebooks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_reports_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_reports_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reports')),
    sa.UniqueConstraint('workspace_id', 'name', name=op.f('uq_reports_workspace_id'))
    )
    op.create_table('report_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('fire_time', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('as_of', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('requested_by', sa.Integer(), nullable=True),
    sa.Column('recipients', sa.JSON(), nullable=True),
    sa.Column('message_id', sa.String(length=300), nullable=True),
    sa.Column('resend_of', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('notice', sa.String(length=16), nullable=False),
    sa.Column('notice_attempts', sa.Integer(), nullable=False),
    sa.Column('notice_next_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('notice_error', sa.Text(), nullable=True),
    sa.Column('notice_sent_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['report_id'], ['reports.id'], name=op.f('fk_report_deliveries_report_id_reports'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['requested_by'], ['users.id'], name=op.f('fk_report_deliveries_requested_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['resend_of'], ['report_deliveries.id'], name=op.f('fk_report_deliveries_resend_of_report_deliveries'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_report_deliveries_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_deliveries')),
    sa.UniqueConstraint('report_id', 'fire_time', name=op.f('uq_report_deliveries_report_id'))
    )
    with op.batch_alter_table('report_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_report_deliveries_notice', ['notice'], unique=False)
        batch_op.create_index('ix_report_deliveries_report_created', ['report_id', 'created_at'], unique=False)
        batch_op.create_index('ix_report_deliveries_status_next', ['status', 'next_attempt_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('report_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_report_deliveries_status_next')
        batch_op.drop_index('ix_report_deliveries_report_created')
        batch_op.drop_index('ix_report_deliveries_notice')

    op.drop_table('report_deliveries')
    op.drop_table('reports')
    op.drop_table('workspace_smtp')
