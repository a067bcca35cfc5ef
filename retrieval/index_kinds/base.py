"""What one FAISS index type contributes; everything the kinds share stays in `retrieval.ann`.

`ann` wraps every inner index in an IndexIDMap2 (FAISS ids stay chunk ids), adds the vectors in slices
and works out how far a restrictive access selector widens the search, so a kind supplies only what differs:
how to make its inner index, how to spot it once loaded, and its own search parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import faiss
import numpy as np


class IndexKindSpec(ABC):
    """One index type. Instances are stateless; each kind's module holds one as `KIND`."""

    deletes_in_place: bool = True
    """False when removing an entry must leave a tombstone instead (its document becomes NO_DOCUMENT, searches
    exclude it, a rebuild drops it): HNSW cannot delete at all, and an IVF index behind the IndexIDMap2
    would keep its entries' old internal numbers while the id map is compacted, handing back other chunks'
    ids."""

    coarse_scores: bool = False
    """True when scores come from compressed codes, too coarse to order near neighbours: the searcher then
    fetches more candidates and re-scores them exactly from the embeddings kept in SQL."""

    @abstractmethod
    def empty(self, dim: int) -> faiss.Index:
        """An empty inner index that takes vectors as they come (a kind that must be trained raises)."""

    def trained(self, dim: int, vectors: np.ndarray) -> faiss.Index:
        """An empty inner index ready to hold `vectors`, trained on them where the kind needs training."""
        return self.empty(dim)

    @abstractmethod
    def recognises(self, inner: faiss.Index) -> bool:
        """Whether a loaded inner index (already downcast) is of this kind: the file, not a setting, decides
        which parameters a search may pass it."""

    def search_parameters(self, boost: float) -> faiss.SearchParameters | None:
        """This kind's parameters for one search, its beam widened `boost` times (>= 1) for a restrictive
        selector; None when the kind has none of its own (a selector still gets plain parameters)."""
        return None
