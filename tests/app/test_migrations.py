"""Migrations apply both ways on the real backend: 0002 drops the database full-text index, and a
downgrade restores it as 0001 made it, filled with the chunks already stored."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from app.database import alembic_config, make_engine, upgrade


def test_keyword_index_migration_round_trip(database_url, assistant, example_docs_dir):
    assistant.ingest(example_docs_dir / "README.md", collection="c")
    engine = make_engine(database_url)
    try:
        sqlite = engine.dialect.name == "sqlite"

        def full_text_present() -> bool:
            if sqlite:
                return "chunks_fts" in inspect(engine).get_table_names()
            return "search_tsv" in {c["name"] for c in inspect(engine).get_columns("chunks")}

        assert not full_text_present()
        command.downgrade(alembic_config(engine), "0001")
        assert full_text_present()
        with engine.connect() as conn:
            if sqlite:
                found = conn.execute(
                    text("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'documents'")
                )
            else:
                found = conn.execute(
                    text("SELECT count(*) FROM chunks WHERE search_tsv @@ to_tsquery('english', 'documents')")
                )
            assert found.scalar_one() > 0
        upgrade(engine)
        assert not full_text_present()
    finally:
        engine.dispose()
