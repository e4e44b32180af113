"""notebooks: notebooks and their cells (SQL, chart and Markdown) with their last results

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 04:33:24.823005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.dbtypes

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('notebooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('shared', sa.Boolean(), nullable=False),
    sa.Column('created_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_notebooks_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_notebooks_workspace_id_workspaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notebooks'))
    )
    with op.batch_alter_table('notebooks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notebooks_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index('ix_notebooks_workspace_updated', ['workspace_id', 'updated_at'], unique=False)

    op.create_table('notebook_cells',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('notebook_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('result', sa.LargeBinary(), nullable=True),
    sa.Column('result_rows', sa.Integer(), nullable=True),
    sa.Column('result_truncated', sa.Boolean(), nullable=False),
    sa.Column('result_ms', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('ran_at', engine.dbtypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['notebook_id'], ['notebooks.id'], name=op.f('fk_notebook_cells_notebook_id_notebooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notebook_cells'))
    )
    with op.batch_alter_table('notebook_cells', schema=None) as batch_op:
        batch_op.create_index('ix_notebook_cells_notebook_position', ['notebook_id', 'position'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('notebook_cells', schema=None) as batch_op:
        batch_op.drop_index('ix_notebook_cells_notebook_position')

    op.drop_table('notebook_cells')
    with op.batch_alter_table('notebooks', schema=None) as batch_op:
        batch_op.drop_index('ix_notebooks_workspace_updated')
        batch_op.drop_index(batch_op.f('ix_notebooks_owner_id'))

    op.drop_table('notebooks')
