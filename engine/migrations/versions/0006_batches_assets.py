"""batches and the asset library: batches and their rows; titles, descriptions, tags, favourites and archiving on assets

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 04:58:49.641913
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('template', sa.Text(), nullable=False),
    sa.Column('system', sa.Text(), nullable=True),
    sa.Column('target', sa.String(length=300), nullable=True),
    sa.Column('max_tokens', sa.Integer(), nullable=False),
    sa.Column('temperature', sa.Double(), nullable=True),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('columns', sa.JSON(), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('estimated_cost', engine.dbtypes.Money(), nullable=True),
    sa.Column('estimate_exact', sa.Boolean(), nullable=False),
    sa.Column('claimed_by', sa.String(length=100), nullable=True),
    sa.Column('heartbeat_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_batches_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_batches_project_id_projects'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_batches_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches'))
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('ix_batches_workspace_created', ['workspace_id', 'created_at'], unique=False)

    op.create_table('batch_rows',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('target', sa.String(length=300), nullable=True),
    sa.Column('cost', engine.dbtypes.Money(), nullable=True),
    sa.Column('estimated_cost', engine.dbtypes.Money(), nullable=True),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('ledger_id', sa.BigInteger(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_batch_rows_batch_id_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_rows')),
    sa.UniqueConstraint('batch_id', 'position', name=op.f('uq_batch_rows_batch_id'))
    )
    with op.batch_alter_table('batch_rows', schema=None) as batch_op:
        batch_op.create_index('ix_batch_rows_batch_status', ['batch_id', 'status'], unique=False)

    # Existing assets get the defaults: no tags, not a favourite, not archived.
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('title', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('description', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('tags', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('favourite', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('archived_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_column('archived_at')
        batch_op.drop_column('favourite')
        batch_op.drop_column('tags')
        batch_op.drop_column('description')
        batch_op.drop_column('title')

    with op.batch_alter_table('batch_rows', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_rows_batch_status')

    op.drop_table('batch_rows')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('ix_batches_workspace_created')

    op.drop_table('batches')
