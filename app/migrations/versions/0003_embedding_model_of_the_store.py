"""index_state records which embedding model made the stored vectors

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('index_state') as batch:
        batch.add_column(sa.Column('embedding_model', sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('index_state') as batch:
        batch.drop_column('embedding_model')
