"""Which FAISS index a corpus gets, how it is built, and how well it agrees with exact search.

Exact (flat) search is cheap and perfect for small corpora. Past `threshold` vectors an approximate index
takes over: HNSW (fast, memory ~ flat + graph) or IVF-PQ (compressed, for when memory matters). Every
kind is wrapped in an IndexIDMap2 so that FAISS ids stay chunk ids.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "hnsw", "ivfpq"]
IndexChoice = Literal["auto", "flat", "hnsw", "ivfpq"]

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96
PQ_BYTES = 48  # 384 dims / 48 sub-quantizers = 8 dims each, 8 bits per code
IVF_NPROBE = 24


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

    def kind_for(self, n: int) -> IndexKind:
        """The kind for a corpus of `n` vectors: the fixed choice, or flat below `threshold` (exact is cheap there)."""
        if self.choice != "auto":
            return self.choice
        return self.large_kind if n >= self.threshold else "flat"


def _ivf_lists(n: int) -> int:
    return int(min(65_536, max(64, 4 * math.sqrt(max(n, 1)))))


def empty_index(kind: IndexKind, dim: int) -> faiss.Index:
    """An untrained/empty index of `kind`; IVF-PQ needs `build_index` (training) before use."""
    inner: faiss.Index
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        inner = hnsw
    elif kind == "ivfpq":
        raise ValueError("an IVF-PQ index needs training vectors; use build_index")
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    return faiss.IndexIDMap2(inner)


def build_index(kind: IndexKind, dim: int, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    """A new index of `kind` holding exactly `vectors` under `ids` (trained on them where needed)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    index: faiss.Index
    if kind == "ivfpq":
        nlist = _ivf_lists(len(vectors))
        if len(vectors) < 39 * nlist:
            nlist = max(1, len(vectors) // 39)
        quantizer = faiss.IndexFlatIP(dim)
        m = PQ_BYTES if dim % PQ_BYTES == 0 else next(d for d in (32, 24, 16, 8, 4, 2, 1) if dim % d == 0)
        inner = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        inner.own_fields = True
        quantizer.this.disown()  # type: ignore[attr-defined]  # SWIG's `this` proxy: absent from faiss's stubs
        rng = np.random.default_rng(0)
        sample = (
            vectors if len(vectors) <= 100_000 else vectors[rng.choice(len(vectors), 100_000, replace=False)]
        )
        inner.train(sample)
        inner.nprobe = IVF_NPROBE
        inner.make_direct_map()  # lets remove_ids and reconstruct work by id
        index = faiss.IndexIDMap2(inner)
    else:
        index = empty_index(kind, dim)
    for start in range(0, len(vectors), 65_536):
        index.add_with_ids(vectors[start : start + 65_536], ids[start : start + 65_536])
    return index


def kind_of(index: faiss.Index) -> IndexKind:
    """The kind of a built or loaded index, read from the index itself, so searches pick parameters it accepts."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivfpq"
    return "flat"


def search_parameters(
    kind: IndexKind, selector: faiss.IDSelector | None, selectivity: float
) -> faiss.SearchParameters | None:
    """Parameters for one search; a restrictive selector widens the ANN beam so filtered recall holds up."""
    boost = 1.0 if selectivity >= 0.5 else min(16.0, 0.5 / max(selectivity, 1e-6))
    params: faiss.SearchParameters
    if kind == "hnsw":
        hnsw = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # exists in faiss, absent from its stubs
        hnsw.efSearch = int(HNSW_EF_SEARCH * boost)
        params = hnsw
    elif kind == "ivfpq":
        ivf = faiss.SearchParametersIVF()
        ivf.nprobe = int(IVF_NPROBE * boost)
        params = ivf
    else:
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
