"""The dense ranking: FAISS nearest neighbours of the query vector among the chunks the mask allows.

Search parameters are chosen for the index actually searched (a background rebuild may swap flat for HNSW
at any moment); a kind whose scores are coarse (IVF-PQ codes) gets more candidates, re-scored exactly.
"""

from __future__ import annotations

import faiss
import numpy as np
from sqlalchemy import select

from retrieval.ann import IndexKind, search_parameters
from retrieval.index_kinds import index_kind
from retrieval.schema import Chunk
from retrieval.search_steps.access_mask import AccessMask
from retrieval.search_steps.ranking import Ranking
from retrieval.store import DocumentStore

RERANK_DEPTH = 2  # coarse kinds (IVF-PQ): fetch this many times the candidates, keep the best by exact score


class DenseRanking:
    """Ranks by cosine over one store's vector index. Thread-safe (the index takes a read lock)."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    def rank(self, qvec: np.ndarray, n: int, access: AccessMask) -> Ranking:
        """Up to `n` chunks nearest `qvec`, best first, each once."""
        vectors = self.store.vectors
        if access.allowed_chunks == 0 or vectors.ntotal == 0:
            return Ranking([], {})

        def plan(kind: IndexKind, live: int) -> tuple[int, faiss.SearchParameters | None]:
            # Chosen for the index actually searched: a background rebuild may swap flat for HNSW any time.
            params = search_parameters(kind, access.selector, access.allowed_chunks / max(live, 1))
            return (RERANK_DEPTH * n if index_kind(kind).coarse_scores else n), params

        kind, scores, ids = vectors.search_planned(qvec[None, :], plan)
        out_ids: list[int] = []
        out_scores: dict[int, float] = {}
        for s, i in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
            if i >= 0 and i not in out_scores:
                out_ids.append(i)
                out_scores[i] = s
        if index_kind(kind).coarse_scores:
            out_ids, out_scores = self._rerank_exact(qvec, out_ids, n)
        return Ranking(out_ids, out_scores)

    def _rerank_exact(self, qvec: np.ndarray, ids: list[int], n: int) -> tuple[list[int], dict[int, float]]:
        """IVF-PQ scores come from 48-byte codes, too coarse to order near neighbours; SQL keeps every
        chunk's embedding, so the candidates are re-scored exactly (memory stays compressed)."""
        if not ids:
            return [], {}
        with self.store.sessions() as session:
            rows = session.execute(select(Chunk.id, Chunk.embedding).where(Chunk.id.in_(ids))).all()
        found = {int(r[0]): np.frombuffer(r[1], dtype=np.float32) for r in rows}
        kept = [i for i in ids if i in found]
        if not kept:
            return [], {}
        exact = np.stack([found[i] for i in kept]) @ qvec
        order = np.argsort(-exact, kind="stable")[:n]
        return [kept[j] for j in order], {kept[j]: float(exact[j]) for j in order}
