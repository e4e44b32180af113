"""schedules: schedules, their firings, the sidecar lease

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:44:15.852719
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    
    op.create_table('sidecar_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('acquired_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_sidecar_leases'))
    )
    op.create_table('schedules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('cron', sa.String(length=120), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('paused', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('no_overlap', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('misfire', sa.String(length=16), nullable=False),
    sa.Column('grace_s', sa.Integer(), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('resumed_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_fire_time', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_fired_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_fire_time', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_schedules_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_schedules_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedules'))
    )
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.create_index('ix_schedules_target', ['kind', 'target_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_schedules_workspace_id'), ['workspace_id'], unique=False)

    op.create_table('schedule_fires',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('fire_time', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('coalesced', sa.Integer(), nullable=False),
    sa.Column('recorded_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('late_ms', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], name=op.f('fk_schedule_fires_schedule_id_schedules'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_schedule_fires_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedule_fires')),
    sa.UniqueConstraint('schedule_id', 'fire_time', name='uq_schedule_fires_once')
    )
    with op.batch_alter_table('schedule_fires', schema=None) as batch_op:
        batch_op.create_index('ix_schedule_fires_workspace', ['workspace_id', 'recorded_at'], unique=False)




def downgrade() -> None:
    
    with op.batch_alter_table('schedule_fires', schema=None) as batch_op:
        batch_op.drop_index('ix_schedule_fires_workspace')

    op.drop_table('schedule_fires')
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schedules_workspace_id'))
        batch_op.drop_index('ix_schedules_target')

    op.drop_table('schedules')
    op.drop_table('sidecar_leases')

