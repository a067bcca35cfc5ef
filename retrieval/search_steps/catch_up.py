"""Before a search reads anything: the store mirrors other processes' writes, and the in-memory structures
the access mask and BM25 need are filled, so a search never sees a half-known corpus."""

from __future__ import annotations

import threading

import numpy as np
from sqlalchemy import select

from retrieval.schema import Chunk
from retrieval.store import DocumentStore
from retrieval.vector_index import NO_DOCUMENT


class CatchUp:
    """Called once per search; cheap when nothing changed (one generation read)."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._docmap_lock = threading.Lock()

    def __call__(self) -> None:
        vectors = self.store.vectors
        self.store.catch_up()  # one generation read; mirrors other processes' writes before this search
        if not vectors.documents_known:
            # The chunk->document map (for access bitmaps) is filled from SQL once, by one search at a time.
            with self._docmap_lock:
                if not vectors.documents_known:
                    ids = vectors.ids()
                    with self.store.sessions() as session:
                        rows = session.execute(select(Chunk.id, Chunk.document_id)).all()
                    known = {int(r[0]): int(r[1]) for r in rows}
                    vectors.fill_documents(
                        ids, np.array([known.get(int(i), NO_DOCUMENT) for i in ids], dtype=np.int64)
                    )
        self.store.sync_keyword()
