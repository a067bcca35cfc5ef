"""Keyword sync on its own: BM25 following a real vector index's chunk set, text read from a real database."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from retrieval.keyword import KeywordIndex
from retrieval.keyword_sync import KeywordSync
from retrieval.schema import Chunk, Collection, Document
from retrieval.vector_index import VectorIndex

DIM = 8
TEXTS = ["the heron stands in the reeds", "a kettle of hawks over the ridge", "reeds bend in the wind"]


def test_sync_reads_only_new_chunks_and_drops_removed_ones(engine: Engine, tmp_path: Path) -> None:
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions() as session, session.begin():
        collection = Collection(name="c")
        session.add(collection)
        session.flush()
        doc = Document(collection_id=collection.id, path="a.txt", sha256="0" * 64, size=1, mtime=0.0)
        session.add(doc)
        session.flush()
        session.add_all(
            Chunk(document_id=doc.id, position=i, text=t, search_text=t, token_count=5, embedding=b"")
            for i, t in enumerate(TEXTS)
        )
    with sessions() as session:
        ids = np.array(sorted(session.scalars(select(Chunk.id))), dtype=np.int64)
        doc_id = doc.id
    vectors = VectorIndex(tmp_path / "index", DIM)
    vectors.add(ids, np.eye(len(ids), DIM, dtype=np.float32), np.full(len(ids), doc_id, dtype=np.int64))
    sync = KeywordSync(KeywordIndex(), vectors, sessions)

    assert sync.sync() == 3
    assert sync.sync() == 0  # the vector index did not change: nothing read
    assert {h.chunk_id for h in sync.keyword.search("reeds", 5)} == {int(ids[0]), int(ids[2])}

    vectors.remove(ids[:1])
    sync.sync()
    assert [h.chunk_id for h in sync.keyword.search("reeds", 5)] == [int(ids[2])]
