"""The chunks a (principal, filters) pair may see, as one mask that is both FAISS's IDSelector bitmap and the
BM25 index's filter, so unreadable chunks never compete for a rank in either ranking.

The mask is a pre-filter; hits are checked again row by row when read (`rows`). Masks are cached per
(generation, index version, principal's groups, filters): building one reads every visible document id.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import faiss
import numpy as np
from sqlalchemy import ColumnElement, and_

from retrieval.access import Principal, filtered, readable_by, served, unrestricted, visible_documents
from retrieval.filters import SearchFilters
from retrieval.schema import Document
from retrieval.store import DocumentStore


@dataclass(frozen=True)
class AccessMask:
    """The documents a (principal, filters) pair may see, and the matching FAISS selector."""

    visible: (
        ColumnElement[bool] | None
    )  # SQL condition on Document (readable and filtered), None when unrestricted
    selector: faiss.IDSelector | None
    bitmap: np.ndarray | None  # kept alive for the selector
    allowed_chunks: int
    mask: np.ndarray | None = None  # chunk id -> may be returned (None: every live chunk)


def bitmap_mask(visible: ColumnElement[bool] | None, mask: np.ndarray) -> AccessMask:
    """An AccessMask over a boolean chunk-id mask, packed into the bitmap FAISS's selector reads."""
    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # n is in bytes
    return AccessMask(visible, selector, bitmap, int(np.count_nonzero(mask)), mask)


class AccessMasks:
    """Builds and caches access masks for one store. Thread-safe."""

    def __init__(self, store: DocumentStore, cache_size: int = 64) -> None:
        self.store = store
        self._cache: OrderedDict[tuple, AccessMask] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def for_search(self, principal: Principal, filters: SearchFilters | None) -> AccessMask:
        """The mask for one search: none at all when nothing is restricted and nothing is tombstoned."""
        vectors = self.store.vectors
        if unrestricted(principal, filters):
            if not vectors.tombstones:
                return AccessMask(None, None, None, vectors.ntotal)
            doc_map = vectors.document_map()
            assert doc_map is not None
            return bitmap_mask(None, doc_map >= 0)
        key = (
            self.store.generation(),
            vectors.version,
            id(vectors.faiss_index),
            principal.is_admin,
            principal.groups,
            filters,
        )
        cacheable = filters is None or not filters.time_dependent
        if cacheable:
            with self._cache_lock:
                found = self._cache.get(key)
                if found is not None:
                    self._cache.move_to_end(key)
                    return found
        with self.store.sessions() as session:
            allowed = np.fromiter(session.scalars(visible_documents(principal, filters)), dtype=np.int64)
        doc_map = vectors.document_map()
        assert doc_map is not None
        if len(allowed):
            doc_ok = np.zeros(int(allowed.max()) + 1, dtype=bool)
            doc_ok[allowed] = True
            safe = np.where((doc_map >= 0) & (doc_map < len(doc_ok)), doc_map, 0)
            mask = doc_ok[safe] & (doc_map >= 0) & (doc_map < len(doc_ok))
        else:
            mask = np.zeros(len(doc_map), dtype=bool)
        # Hits are re-checked row by row with the same rule (a few correlated EXISTS, not the whole set).
        condition = and_(served(Document), readable_by(Document.id, principal), filtered(Document, filters))
        access = bitmap_mask(condition, mask)
        if cacheable:
            with self._cache_lock:
                self._cache[key] = access
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return access
