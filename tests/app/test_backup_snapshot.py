"""A backup is one snapshot: rows another connection commits while the dump is reading are in no table of
it, so the backup never holds a chunk whose document it lacks (SQLite and PostgreSQL)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from sqlalchemy import event, insert, select

from app.backup import dump
from app.database import make_engine, open_database
from retrieval.schema import Chunk, Collection, Document


def _document(collection_id: int, path: str) -> dict:
    return {
        "collection_id": collection_id,
        "path": path,
        "sha256": path.ljust(64, "0")[:64],
        "size": 1,
        "mtime": 0.0,
        "mime": "text/plain",
        "status": "ready",
        "n_chunks": 1,
    }


def _chunk(document_id: int, text: str) -> dict:
    return {
        "document_id": document_id,
        "position": 0,
        "text": text,
        "search_text": text,
        "token_count": 1,
        "embedding": b"\x00" * 16,
    }


def _rows(backup: Path, table: str) -> list[dict]:
    with gzip.open(backup / "tables" / f"{table}.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_dump_does_not_see_rows_committed_while_it_reads(database_url: str, tmp_path: Path) -> None:
    engine = open_database(database_url)
    writer = make_engine(database_url)  # another connection pool, as another process would have
    with writer.begin() as conn:
        cid = conn.execute(insert(Collection).values(name="c").returning(Collection.id)).scalar_one()
        old_doc = conn.execute(
            insert(Document).values(_document(cid, "old.txt")).returning(Document.id)
        ).scalar_one()
        conn.execute(insert(Chunk).values(_chunk(old_doc, "old")))

    committed: list[int] = []

    def commit_between_tables(_conn, _cursor, statement: str, *_args) -> None:
        """Just before the dump reads `chunks` (it read `documents` already), commit a new document with
        its chunk from the other pool."""
        if committed or "FROM chunks" not in statement:
            return
        with writer.begin() as conn:
            doc = conn.execute(
                insert(Document).values(_document(cid, "new.txt")).returning(Document.id)
            ).scalar_one()
            conn.execute(insert(Chunk).values(_chunk(doc, "new")))
        committed.append(doc)

    event.listen(engine, "before_cursor_execute", commit_between_tables)
    try:
        manifest = dump(engine, tmp_path / "no-index", None, tmp_path / "backup")
    finally:
        event.remove(engine, "before_cursor_execute", commit_between_tables)
    assert committed, "the dump never read the chunks table"
    with writer.connect() as conn:  # the new rows did commit: they are simply after the snapshot
        assert conn.execute(select(Chunk.document_id).where(Chunk.text == "new")).scalar() == committed[0]

    documents = {r["id"] for r in _rows(tmp_path / "backup", "documents")}
    chunk_docs = [r["document_id"] for r in _rows(tmp_path / "backup", "chunks")]
    assert documents == {old_doc}
    assert set(chunk_docs) <= documents, (
        f"chunks of documents missing from the backup: {set(chunk_docs) - documents}"
    )
    assert chunk_docs == [old_doc] and manifest["rows"]["chunks"] == 1
    writer.dispose()
    engine.dispose()
