"""IVF-PQ: inverted lists of 48-byte product-quantised codes, for when memory matters more than recall.

It must be trained on the vectors it will hold, so it has no empty form; its scores come from the codes,
so the searcher re-scores its candidates exactly (`coarse_scores`).
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from retrieval.index_kinds.base import IndexKindSpec

PQ_BYTES = 48  # 384 dims / 48 sub-quantizers = 8 dims each, 8 bits per code
IVF_NPROBE = 24
TRAINING_SAMPLE = 100_000


def ivf_lists(n: int) -> int:
    """Inverted lists for `n` vectors: ~4 sqrt(n), within FAISS's useful range."""
    return int(min(65_536, max(64, 4 * math.sqrt(max(n, 1)))))


class IvfPq(IndexKindSpec):
    """Trained k-means lists plus PQ codes; nprobe widens for restrictive selectors."""

    deletes_in_place = False

    coarse_scores = True

    def empty(self, dim: int) -> faiss.Index:
        raise ValueError("an IVF-PQ index needs training vectors; use build_index")

    def trained(self, dim: int, vectors: np.ndarray) -> faiss.Index:
        nlist = ivf_lists(len(vectors))
        if len(vectors) < 39 * nlist:
            nlist = max(1, len(vectors) // 39)
        quantizer = faiss.IndexFlatIP(dim)
        m = PQ_BYTES if dim % PQ_BYTES == 0 else next(d for d in (32, 24, 16, 8, 4, 2, 1) if dim % d == 0)
        inner = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        inner.own_fields = True
        quantizer.this.disown()  # type: ignore[attr-defined]  # SWIG's `this` proxy: absent from faiss's stubs
        rng = np.random.default_rng(0)
        sample = (
            vectors
            if len(vectors) <= TRAINING_SAMPLE
            else vectors[rng.choice(len(vectors), TRAINING_SAMPLE, replace=False)]
        )
        inner.train(sample)
        inner.nprobe = IVF_NPROBE
        inner.make_direct_map()  # reconstruct by id; removal is by tombstone (deletes_in_place)
        return inner

    def recognises(self, inner: faiss.Index) -> bool:
        return isinstance(inner, faiss.IndexIVFPQ)

    def search_parameters(self, boost: float) -> faiss.SearchParameters:
        params = faiss.SearchParametersIVF()
        params.nprobe = int(IVF_NPROBE * boost)
        return params


KIND = IvfPq()
