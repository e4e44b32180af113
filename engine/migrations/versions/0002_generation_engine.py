"""generation engine: provider connections, routes, health, assets, priced ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:30:28.523057
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('provider_connections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('provider_type', sa.String(length=32), nullable=False),
    sa.Column('base_url', sa.String(length=500), nullable=True),
    sa.Column('price_provider', sa.String(length=64), nullable=True),
    sa.Column('secret_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('secret_nonce', sa.LargeBinary(), nullable=True),
    sa.Column('secret_hint', sa.String(length=16), nullable=True),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('last_tested_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_test_ok', sa.Boolean(), nullable=True),
    sa.Column('last_test_error', sa.Text(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_provider_connections_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_provider_connections_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_connections')),
    sa.UniqueConstraint('workspace_id', 'name', name=op.f('uq_provider_connections_workspace_id'))
    )
    op.create_table('route_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('strategy', sa.String(length=16), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('retries_per_target', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_route_policies_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_route_policies')),
    sa.UniqueConstraint('workspace_id', 'kind', name=op.f('uq_route_policies_workspace_id'))
    )
    op.create_table('workspace_keys',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('master_key_id', sa.String(length=16), nullable=False),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_workspace_keys_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('workspace_id', name=op.f('pk_workspace_keys'))
    )
    op.create_table('route_targets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('context_window', sa.Integer(), nullable=True),
    sa.Column('rpm_limit', sa.Integer(), nullable=True),
    sa.Column('tpm_limit', sa.Integer(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['provider_connections.id'], name=op.f('fk_route_targets_connection_id_provider_connections'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_route_targets_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_route_targets')),
    sa.UniqueConstraint('workspace_id', 'kind', 'connection_id', 'model', name=op.f('uq_route_targets_workspace_id'))
    )
    with op.batch_alter_table('route_targets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_route_targets_connection_id'), ['connection_id'], unique=False)

    op.create_table('target_health',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('opened_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_ok_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_failure_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('calls', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['provider_connections.id'], name=op.f('fk_target_health_connection_id_provider_connections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_target_health')),
    sa.UniqueConstraint('connection_id', 'model', name=op.f('uq_target_health_connection_id'))
    )
    op.create_table('assets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('ledger_id', sa.BigInteger(), nullable=True),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('mime', sa.String(length=100), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_assets_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_assets_project_id_projects'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_assets_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assets'))
    )
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.create_index('ix_assets_workspace_created', ['workspace_id', 'created_at'], unique=False)

    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('attempt', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('connection_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('priced', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('price_source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('price_version', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('cost_input', engine.dbtypes.Money(), nullable=True))
        batch_op.add_column(sa.Column('cost_cached_input', engine.dbtypes.Money(), nullable=True))
        batch_op.add_column(sa.Column('cost_cache_write', engine.dbtypes.Money(), nullable=True))
        batch_op.add_column(sa.Column('cost_output', engine.dbtypes.Money(), nullable=True))
        batch_op.add_column(sa.Column('cost_images', engine.dbtypes.Money(), nullable=True))
        batch_op.add_column(sa.Column('cost_characters', engine.dbtypes.Money(), nullable=True))
        batch_op.add_column(sa.Column('cost_seconds', engine.dbtypes.Money(), nullable=True))
        batch_op.create_unique_constraint('uq_usage_ledger_request_attempt', ['request_id', 'attempt'])
        batch_op.create_foreign_key(batch_op.f('fk_usage_ledger_connection_id_provider_connections'), 'provider_connections', ['connection_id'], ['id'], ondelete='SET NULL')



def downgrade() -> None:
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_usage_ledger_connection_id_provider_connections'), type_='foreignkey')
        batch_op.drop_constraint('uq_usage_ledger_request_attempt', type_='unique')
        batch_op.drop_column('cost_seconds')
        batch_op.drop_column('cost_characters')
        batch_op.drop_column('cost_images')
        batch_op.drop_column('cost_output')
        batch_op.drop_column('cost_cache_write')
        batch_op.drop_column('cost_cached_input')
        batch_op.drop_column('cost_input')
        batch_op.drop_column('price_version')
        batch_op.drop_column('price_source')
        batch_op.drop_column('priced')
        batch_op.drop_column('connection_id')
        batch_op.drop_column('attempt')
        batch_op.drop_column('request_id')

    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_index('ix_assets_workspace_created')

    op.drop_table('assets')
    op.drop_table('target_health')
    with op.batch_alter_table('route_targets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_route_targets_connection_id'))

    op.drop_table('route_targets')
    op.drop_table('workspace_keys')
    op.drop_table('route_policies')
    op.drop_table('provider_connections')
