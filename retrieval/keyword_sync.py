"""Keeps the BM25 index following the vector index's chunk set, reading new chunks' text from SQL.

The keyword index (`retrieval.keyword`) knows nothing of SQL and the vector index knows nothing of BM25: this
is the seam between them. The vector index's chunk->document map is the set both serve; whenever it changed
(its version moved), the keyword index is brought to it, tokenising only chunks it has not seen.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from retrieval.keyword import KeywordIndex
from retrieval.schema import Chunk
from retrieval.vector_index import VectorIndex


class KeywordSync:
    """Brings a `KeywordIndex` to a `VectorIndex`'s chunk set, fetching `search_text` through `sessions`."""

    def __init__(self, keyword: KeywordIndex, vectors: VectorIndex, sessions: sessionmaker[Session]) -> None:
        self.keyword = keyword
        self.vectors = vectors
        self._sessions = sessions

    def sync(self) -> int:
        """Bring the BM25 index to the vector index's chunk set (reading new chunks' text from SQL);
        returns the chunks it read. A no-op while the vector index's version is the one last synced."""
        vectors = self.vectors
        version = (id(vectors), vectors.version)  # read before the map: a change during the sync resyncs
        doc_map = vectors.document_map()
        if doc_map is None:
            return 0
        return self.keyword.sync(doc_map, self._fetch, version)

    def _fetch(self, ids: np.ndarray) -> list[tuple[int, str]]:
        """(chunk id, search text) of `ids`, as the keyword index asks for chunks it has not tokenised."""
        with self._sessions() as session:
            rows = session.execute(select(Chunk.id, Chunk.search_text).where(Chunk.id.in_(ids.tolist())))
            return [(int(r[0]), r[1]) for r in rows]
