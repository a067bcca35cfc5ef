"""keyword ranking moves to an in-memory BM25 index (retrieval/keyword.py): drop the database
full-text structures, which every chunk write paid for and no query reads any more

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def _initial_schema() -> ModuleType:
    """Revision 0001, whose keyword-index DDL a downgrade restores as it was (one definition, not two)."""
    source = Path(__file__).with_name("0001_initial_schema.py")
    spec = importlib.util.spec_from_file_location("sparq_migration_0001", source)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load migration 0001 from {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    _initial_schema()._drop_keyword_index()
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_chunks_search_tsv")
        op.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS search_tsv")


def downgrade() -> None:
    _initial_schema()._create_keyword_index()
    if op.get_bind().dialect.name == "sqlite":  # the FTS5 table starts empty; PostgreSQL's column is generated
        op.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
