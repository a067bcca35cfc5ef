"""server-side sign-in sessions, the shared sign-in throttle, and the must-change-password flag

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('must_change_password', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table('user_sessions',
    sa.Column('id', _ID, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', _ID, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('user_sessions') as batch:
        batch.create_index('ix_user_sessions_user_id', ['user_id'], unique=False)
        batch.create_index('ix_user_sessions_expires_at', ['expires_at'], unique=False)
    op.create_table('signin_failures',
    sa.Column('id', _ID, nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('signin_failures') as batch:
        batch.create_index('ix_signin_failures_key_created', ['key', 'created_at'], unique=False)
        batch.create_index('ix_signin_failures_created_at', ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('signin_failures') as batch:
        batch.drop_index('ix_signin_failures_created_at')
        batch.drop_index('ix_signin_failures_key_created')
    op.drop_table('signin_failures')
    with op.batch_alter_table('user_sessions') as batch:
        batch.drop_index('ix_user_sessions_expires_at')
        batch.drop_index('ix_user_sessions_user_id')
    op.drop_table('user_sessions')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('must_change_password')
