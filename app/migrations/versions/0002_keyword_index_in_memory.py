"""keyword ranking moves to an in-memory BM25 index (retrieval/keyword.py): drop the database
full-text structures, which every chunk write paid for and no query reads any more

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_SQLITE_FTS = [
    """CREATE VIRTUAL TABLE chunks_fts USING fts5(
        search_text, content='chunks', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER chunks_fts_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, search_text) VALUES (new.id, new.search_text); END""",
    """CREATE TRIGGER chunks_fts_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text); END""",
    """CREATE TRIGGER chunks_fts_au AFTER UPDATE OF search_text ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text);
        INSERT INTO chunks_fts(rowid, search_text) VALUES (new.id, new.search_text); END""",
    "INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("chunks_fts_ai", "chunks_fts_ad", "chunks_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS chunks_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_chunks_search_tsv")
        op.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS search_tsv")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute("""ALTER TABLE chunks ADD COLUMN search_tsv tsvector
            GENERATED ALWAYS AS (to_tsvector('english', search_text)) STORED""")
        op.execute("CREATE INDEX ix_chunks_search_tsv ON chunks USING GIN (search_tsv)")
