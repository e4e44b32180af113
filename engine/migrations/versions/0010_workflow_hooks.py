"""workflow hooks: webhook triggers per workflow (token as SHA-256, signing secret in the vault)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 00:31:12.883049
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('workflow_hooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('workflow_id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('token_hint', sa.String(length=8), nullable=False),
    sa.Column('require_signature', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('secret_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('secret_nonce', sa.LargeBinary(), nullable=True),
    sa.Column('secret_hint', sa.String(length=40), nullable=True),
    sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_workflow_hooks_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workflow_id'], ['workflows.id'], name=op.f('fk_workflow_hooks_workflow_id_workflows'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_workflow_hooks_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_hooks')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_workflow_hooks_token_sha256'))
    )
    with op.batch_alter_table('workflow_hooks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workflow_hooks_workflow_id'), ['workflow_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('workflow_hooks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workflow_hooks_workflow_id'))

    op.drop_table('workflow_hooks')
