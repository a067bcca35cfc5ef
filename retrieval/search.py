"""Hybrid search: dense (FAISS) and keyword (BM25) rankings fused, diversified and access-checked.

Access control happens twice, both times inside retrieval: as one chunk mask that is both FAISS's
IDSelector bitmap and the BM25 index's filter (so unreadable chunks never compete for a rank), and again
when hits are read from SQL (the authoritative check against the database as it is at that moment).

`HybridSearcher.search` is the sequence; each step is a module of `retrieval.search_steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from retrieval.access import Principal
from retrieval.filters import SearchFilters
from retrieval.search_steps.access_mask import AccessMask, AccessMasks
from retrieval.search_steps.catch_up import CatchUp
from retrieval.search_steps.dense import DenseRanking
from retrieval.search_steps.diversify import choose
from retrieval.search_steps.fuse import fuse
from retrieval.search_steps.hits import Hit, build_hits
from retrieval.search_steps.keyword import KeywordRanking
from retrieval.search_steps.ranking import MODES, Ranking, SearchMode
from retrieval.search_steps.rows import ChunkRows
from retrieval.store import DocumentStore

__all__ = ["MAX_QUERY_CHARS", "MODES", "Hit", "HybridSearcher", "SearchError", "SearchMode"]

MAX_QUERY_CHARS = 4000


class SearchError(ValueError):
    """A search request that cannot be run as given (bad mode, k, or an empty query)."""


class HybridSearcher:
    """Searches a DocumentStore as a principal. Thread-safe; one instance serves all users."""

    def __init__(
        self,
        store: DocumentStore,
        encode_query: Callable[[str], np.ndarray],
        *,
        dense_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        candidates: int = 100,
        duplicate_threshold: float = 0.95,
        mmr_lambda: float | None = None,
        cache_size: int = 64,
    ) -> None:
        if dense_weight < 0 or keyword_weight < 0 or dense_weight + keyword_weight == 0:
            raise ValueError("fusion weights must be >= 0 and not both 0")
        self.store = store
        self.encode_query = encode_query
        self.dense_weight = dense_weight
        self.keyword_weight = keyword_weight
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.duplicate_threshold = duplicate_threshold
        self.mmr_lambda = mmr_lambda
        self.catch_up = CatchUp(store)
        self.access_masks = AccessMasks(store, cache_size)
        self.dense = DenseRanking(store)
        self.keyword = KeywordRanking(store)
        self.rows = ChunkRows(store)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sparq-keyword")

    def close(self) -> None:
        """Stop the searcher's thread pool, letting searches in flight finish."""
        self._pool.shutdown(wait=True)

    def search(
        self,
        query: str,
        *,
        principal: Principal,
        k: int = 8,
        filters: SearchFilters | None = None,
        mode: SearchMode = "hybrid",
    ) -> list[Hit]:
        """The k best chunks the principal may read, best first."""
        if mode not in MODES:
            raise SearchError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if k < 1:
            raise SearchError("k must be at least 1")
        if not isinstance(principal, Principal):
            raise SearchError("every search runs as a Principal")
        query = (query or "").strip()[:MAX_QUERY_CHARS]
        if not query:
            return []
        self.catch_up()
        access = self.access_masks.for_search(principal, filters)
        qvec, dense, keyword = self._rank(query, mode, max(self.candidates, 2 * k), access)
        fused = fuse(
            mode,
            dense,
            keyword,
            dense_weight=self.dense_weight,
            keyword_weight=self.keyword_weight,
            rrf_k=self.rrf_k,
        )
        chosen = choose(
            fused,
            k,
            lambda ids: self.rows.read(ids, principal, access),
            duplicate_threshold=self.duplicate_threshold,
            mmr_lambda=self.mmr_lambda,
        )
        return build_hits(chosen, qvec, dense, keyword)

    def _rank(
        self, query: str, mode: SearchMode, n: int, access: AccessMask
    ) -> tuple[np.ndarray | None, Ranking, Ranking]:
        """Dense and keyword side by side (BM25 on the pool while this thread encodes and searches FAISS);
        a ranking the mode does not use stays empty. Returns the query vector too (None in keyword mode)."""
        keyword_future: Future[Ranking] | None = None
        if mode != "dense":
            keyword_future = self._pool.submit(self.keyword.rank, query, n, access)
        qvec: np.ndarray | None = None
        dense = Ranking([], {})
        try:
            if mode != "keyword":
                qvec = np.asarray(self.encode_query(query), dtype=np.float32)
                dense = self.dense.rank(qvec, n, access)
        finally:
            keyword = keyword_future.result() if keyword_future is not None else Ranking([], {})
        return qvec, dense, keyword

    # --- single steps, for measuring one alone (bench/search.py, tests) ------------------------------
    def _access(self, principal: Principal, filters: SearchFilters | None) -> AccessMask:
        return self.access_masks.for_search(principal, filters)

    def _dense(self, qvec: np.ndarray, n: int, access: AccessMask) -> tuple[list[int], dict[int, float]]:
        ranking = self.dense.rank(qvec, n, access)
        return ranking.ids, ranking.scores
