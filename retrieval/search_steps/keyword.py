"""The keyword ranking: BM25 over the store's keyword index, through the same mask as the dense ranking."""

from __future__ import annotations

from retrieval.search_steps.access_mask import AccessMask
from retrieval.search_steps.ranking import Ranking
from retrieval.store import DocumentStore


class KeywordRanking:
    """Ranks by BM25; runs on the searcher's pool beside the dense ranking. Thread-safe."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    def rank(self, query: str, n: int, access: AccessMask) -> Ranking:
        """Up to `n` chunks matching the query's terms, best first."""
        if access.allowed_chunks == 0:
            return Ranking([], {})
        hits = self.store.keyword.search(query, n, access.mask)
        return Ranking([h.chunk_id for h in hits], {h.chunk_id: h.score for h in hits})
