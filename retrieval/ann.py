"""Which FAISS index a corpus gets, how it is built, and how well it agrees with exact search.

Exact (flat) search is cheap and perfect for small corpora. Past `threshold` vectors an approximate index
takes over: HNSW (fast, memory ~ flat + graph) or IVF-PQ (compressed, for when memory matters). Every
kind is wrapped in an IndexIDMap2 so that FAISS ids stay chunk ids. What differs between kinds lives in
one module per kind, found through the registry in `retrieval.index_kinds`; nothing here names a kind but
the default ones the policy picks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

from retrieval.index_kinds import KINDS, index_kind, unknown_kind

IndexKind = str
"""A name registered in `retrieval.index_kinds.KINDS` (a str, so a new kind needs no type edited)."""
IndexChoice = str
"""'auto' or an IndexKind."""

ADD_SLICE = 65_536  # vectors per add_with_ids call when building


@dataclass(frozen=True)
class IndexPolicy:
    """What the store builds: `choice` 'auto' means flat below `threshold` vectors, HNSW above."""

    choice: IndexChoice = "auto"
    threshold: int = 50_000
    large_kind: IndexKind = "hnsw"
    # An ANN index is rebuilt when the corpus grew by this factor since it was built, or when this
    # fraction of its entries are tombstones (HNSW cannot delete in place).
    regrow_factor: float = 2.0
    tombstone_fraction: float = 0.2

    def __post_init__(self) -> None:
        # Checked here, not at the first rebuild (perhaps hours later, in a background thread).
        if self.choice != "auto" and self.choice not in KINDS:
            raise ValueError(unknown_kind(self.choice) + " (or auto)")
        if self.large_kind not in KINDS:
            raise ValueError(unknown_kind(self.large_kind))

    def kind_for(self, n: int) -> IndexKind:
        """The kind for a corpus of `n` vectors: the fixed choice, or flat below `threshold` (exact is cheap there)."""
        if self.choice != "auto":
            return self.choice
        return self.large_kind if n >= self.threshold else "flat"


def empty_index(kind: IndexKind, dim: int) -> faiss.Index:
    """An empty index of `kind`; a kind that needs training (IVF-PQ) refuses: use `build_index`."""
    return faiss.IndexIDMap2(index_kind(kind).empty(dim))


def build_index(kind: IndexKind, dim: int, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    """A new index of `kind` holding exactly `vectors` under `ids` (trained on them where needed)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    index = faiss.IndexIDMap2(index_kind(kind).trained(dim, vectors))
    for start in range(0, len(vectors), ADD_SLICE):
        index.add_with_ids(vectors[start : start + ADD_SLICE], ids[start : start + ADD_SLICE])
    return index


def kind_of(index: faiss.Index) -> IndexKind:
    """The kind of a built or loaded index, read from the index itself, so searches pick parameters it accepts."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    for name in KINDS:
        if index_kind(name).recognises(inner):
            return name
    raise ValueError(f"a {type(inner).__name__} is no registered index kind ({', '.join(KINDS)})")


def search_parameters(
    kind: IndexKind, selector: faiss.IDSelector | None, selectivity: float
) -> faiss.SearchParameters | None:
    """Parameters for one search; a restrictive selector widens the ANN beam so filtered recall holds up."""
    boost = 1.0 if selectivity >= 0.5 else min(16.0, 0.5 / max(selectivity, 1e-6))
    params = index_kind(kind).search_parameters(boost)
    if params is None:
        if selector is None:
            return None
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params


@dataclass(frozen=True)
class RecallReport:
    """Recall@k of an approximate index against exact search on the same vectors and queries."""

    kind: str
    k: int
    queries: int
    recall: float
    ann_ms_per_query: float
    exact_ms_per_query: float


def measure_recall(
    index: faiss.Index, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int = 10
) -> RecallReport:
    """Compare `index` with brute force over (ids, vectors) for `queries`, one query at a time."""
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    hits = 0
    ann_s = exact_s = 0.0
    params = search_parameters(kind_of(index), None, 1.0)
    for q in queries:
        q = q[None, :]
        t0 = time.perf_counter()
        _, truth = exact.search(q, k)
        t1 = time.perf_counter()
        _, got = index.search(q, k, params=params) if params is not None else index.search(q, k)
        t2 = time.perf_counter()
        exact_s += t1 - t0
        ann_s += t2 - t1
        hits += len(set(ids[truth[0][truth[0] >= 0]].tolist()) & set(got[0][got[0] >= 0].tolist()))
    n = len(queries)
    return RecallReport(
        kind_of(index), k, n, hits / max(1, n * k), 1000 * ann_s / max(n, 1), 1000 * exact_s / max(n, 1)
    )
