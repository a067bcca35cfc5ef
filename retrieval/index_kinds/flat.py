"""Exact inner-product search: perfect and cheap below the ANN threshold, the kind every store starts as."""

from __future__ import annotations

import faiss

from retrieval.index_kinds.base import IndexKindSpec


class Flat(IndexKindSpec):
    """Brute force over every vector; deletes in place, needs no training and no parameters."""

    def empty(self, dim: int) -> faiss.Index:
        return faiss.IndexFlatIP(dim)

    def recognises(self, inner: faiss.Index) -> bool:
        return isinstance(inner, faiss.IndexFlat)


KIND = Flat()
