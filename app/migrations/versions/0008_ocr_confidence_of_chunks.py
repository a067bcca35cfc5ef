"""chunks.ocr_confidence: text read by OCR carries the engine's mean word confidence for its page

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable ADD COLUMN: existing chunks came from text layers (NULL), nothing is copied or rewritten.
    op.add_column("chunks", sa.Column("ocr_confidence", sa.Float(), nullable=True))


def downgrade() -> None:
    # SQLite (3.35+) drops a column in place; a batch copy of chunks would lose its AUTOINCREMENT, and
    # with it the guarantee that a chunk id (the FAISS id) is never reused.
    op.drop_column("chunks", "ocr_confidence")
