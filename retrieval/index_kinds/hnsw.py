"""HNSW: a navigable graph over full vectors, fast at scale with memory ~ flat plus the graph.

HNSW cannot delete in place: the vector index keeps removed ids as tombstones until a rebuild.
"""

from __future__ import annotations

import faiss

from retrieval.index_kinds.base import IndexKindSpec

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96


class Hnsw(IndexKindSpec):
    """Built incrementally (no training); a search's beam (efSearch) widens for restrictive selectors."""

    deletes_in_place = False

    def empty(self, dim: int) -> faiss.Index:
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        return hnsw

    def recognises(self, inner: faiss.Index) -> bool:
        return isinstance(inner, faiss.IndexHNSWFlat)

    def search_parameters(self, boost: float) -> faiss.SearchParameters:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # exists in faiss, absent from its stubs
        params.efSearch = int(HNSW_EF_SEARCH * boost)
        return params


KIND = Hnsw()
