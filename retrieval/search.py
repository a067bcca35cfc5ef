"""Hybrid search: dense (FAISS) and keyword (BM25) rankings fused, diversified and access-checked.

Access control happens twice, both times inside retrieval: as one chunk mask that is both FAISS's
IDSelector bitmap and the BM25 index's filter (so unreadable chunks never compete for a rank), and again
when hits are read from SQL (the authoritative check against the database as it is at that moment).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Literal

import faiss
import numpy as np
from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from retrieval.access import Principal, filtered, readable_by, served, unrestricted, visible_documents
from retrieval.ann import IndexKind, search_parameters
from retrieval.diversity import diversify
from retrieval.filters import SearchFilters
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.keyword import KeywordHit
from retrieval.schema import Chunk, Collection, Document, DocumentGroup
from retrieval.store import DocumentStore
from retrieval.vector_index import NO_DOCUMENT

SearchMode = Literal["hybrid", "dense", "keyword"]
MODES: tuple[str, ...] = ("hybrid", "dense", "keyword")
MAX_QUERY_CHARS = 4000
RERANK_DEPTH = 2  # IVF-PQ: fetch this many times the candidates, keep the best by exact score


class SearchError(ValueError):
    """A search request that cannot be run as given (bad mode, k, or an empty query)."""


@dataclass
class Hit:
    """One retrieved chunk with where it comes from and how each ranking scored it (None: not ranked)."""

    chunk_id: int
    document_id: int
    collection: str
    path: str
    title: str | None
    text: str
    page: int | None
    slide: int | None
    sheet: str | None
    heading_path: str | None
    mime: str
    score_dense: float | None
    score_keyword: float | None
    score_fused: float
    rank: int
    rank_dense: int | None
    rank_keyword: int | None
    ocr_confidence: float | None = None  # read by OCR: the engine's mean word confidence (0-100)

    def to_dict(self) -> dict:
        """The hit as plain data, for JSON answers and logs."""
        return asdict(self)


@dataclass(frozen=True)
class _Access:
    """The documents a (principal, filters) pair may see, and the matching FAISS selector."""

    visible: (
        ColumnElement[bool] | None
    )  # SQL condition on Document (readable and filtered), None when unrestricted
    selector: faiss.IDSelector | None
    bitmap: np.ndarray | None  # kept alive for the selector
    allowed_chunks: int
    mask: np.ndarray | None = None  # chunk id -> may be returned (None: every live chunk)


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
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sparq-keyword")
        self._cache: OrderedDict[tuple, _Access] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._docmap_lock = threading.Lock()

    def close(self) -> None:
        """Stop the searcher's thread pool, letting searches in flight finish."""
        self._pool.shutdown(wait=True)

    # --- the call ------------------------------------------------------------------------------------
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
        self._refresh_vectors()
        access = self._access(principal, filters)
        n_candidates = max(self.candidates, 2 * k)

        keyword_future: Future[list[KeywordHit]] | None = None
        if mode != "dense":
            keyword_future = self._pool.submit(self._keyword, query, n_candidates, access)
        qvec: np.ndarray | None = None
        dense_ids: list[int] = []
        dense_scores: dict[int, float] = {}
        try:
            if mode != "keyword":
                qvec = np.asarray(self.encode_query(query), dtype=np.float32)
                dense_ids, dense_scores = self._dense(qvec, n_candidates, access)
        finally:
            keyword_hits = keyword_future.result() if keyword_future is not None else []
        keyword_ids = [h.chunk_id for h in keyword_hits]
        keyword_scores = {h.chunk_id: h.score for h in keyword_hits}

        if mode == "dense":
            fused = [(i, dense_scores[i]) for i in dense_ids]
        elif mode == "keyword":
            fused = [(h.chunk_id, h.score) for h in keyword_hits]
        else:
            fused = reciprocal_rank_fusion(
                [(dense_ids, self.dense_weight), (keyword_ids, self.keyword_weight)], rrf_k=self.rrf_k
            )
        rank_dense = {c: n for n, c in enumerate(dense_ids, start=1)}
        rank_keyword = {c: n for n, c in enumerate(keyword_ids, start=1)}
        return self._materialise(fused, k, principal, access, qvec, keyword_scores, rank_dense, rank_keyword)

    # --- access --------------------------------------------------------------------------------------
    def _refresh_vectors(self) -> None:
        vectors = self.store.vectors
        self.store.catch_up()  # one generation read; mirrors other processes' writes before this search
        if not vectors.documents_known:
            with self._docmap_lock:
                if not vectors.documents_known:
                    ids = vectors.ids()
                    with self.store.sessions() as session:
                        rows = session.execute(select(Chunk.id, Chunk.document_id)).all()
                    known = {int(r[0]): int(r[1]) for r in rows}
                    vectors.fill_documents(
                        ids, np.array([known.get(int(i), NO_DOCUMENT) for i in ids], dtype=np.int64)
                    )
        self.store.sync_keyword()

    def _access(self, principal: Principal, filters: SearchFilters | None) -> _Access:
        vectors = self.store.vectors
        if unrestricted(principal, filters):
            if not vectors.tombstones:
                return _Access(None, None, None, vectors.ntotal)
            doc_map = vectors.document_map()
            assert doc_map is not None
            return self._bitmap_access(None, doc_map >= 0)
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
        access = self._bitmap_access(condition, mask)
        if cacheable:
            with self._cache_lock:
                self._cache[key] = access
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return access

    @staticmethod
    def _bitmap_access(visible: ColumnElement[bool] | None, mask: np.ndarray) -> _Access:
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # n is in bytes
        return _Access(visible, selector, bitmap, int(np.count_nonzero(mask)), mask)

    # --- the two rankings ----------------------------------------------------------------------------
    def _dense(self, qvec: np.ndarray, n: int, access: _Access) -> tuple[list[int], dict[int, float]]:
        vectors = self.store.vectors
        if access.allowed_chunks == 0 or vectors.ntotal == 0:
            return [], {}

        def plan(kind: IndexKind, live: int) -> tuple[int, faiss.SearchParameters | None]:
            # Chosen for the index actually searched: a background rebuild may swap flat for HNSW any time.
            params = search_parameters(kind, access.selector, access.allowed_chunks / max(live, 1))
            return (RERANK_DEPTH * n if kind == "ivfpq" else n), params

        kind, scores, ids = vectors.search_planned(qvec[None, :], plan)
        out_ids: list[int] = []
        out_scores: dict[int, float] = {}
        for s, i in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
            if i >= 0 and i not in out_scores:
                out_ids.append(i)
                out_scores[i] = s
        if kind == "ivfpq":
            out_ids, out_scores = self._rerank_exact(qvec, out_ids, n)
        return out_ids, out_scores

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

    def _keyword(self, query: str, n: int, access: _Access) -> list[KeywordHit]:
        if access.allowed_chunks == 0:
            return []
        return self.store.keyword.search(query, n, access.mask)

    # --- from ids to hits ----------------------------------------------------------------------------
    def _materialise(
        self,
        fused: list[tuple[int, float]],
        k: int,
        principal: Principal,
        access: _Access,
        qvec: np.ndarray | None,
        keyword_scores: dict[int, float],
        rank_dense: dict[int, int],
        rank_keyword: dict[int, int],
    ) -> list[Hit]:
        hits: list[Hit] = []
        kept_vectors: list[np.ndarray] = []
        start = 0
        batch = k + max(8, k // 2)
        while start < len(fused) and len(hits) < k:
            window = fused[start : start + batch]
            start += batch
            rows = self._rows([c for c, _ in window], principal, access)
            ordered = [(c, s) for c, s in window if c in rows]
            if not ordered:
                continue
            vecs = np.stack([rows[c]["vector"] for c, _ in ordered])
            scores = np.array([s for _, s in ordered], dtype=np.float32)
            if kept_vectors:
                # Candidates that duplicate an already kept hit go; then diversify within the window.
                prior = np.stack(kept_vectors)
                fresh = (vecs @ prior.T).max(axis=1) < self.duplicate_threshold
                ordered = [o for o, f in zip(ordered, fresh, strict=True) if f]
                vecs, scores = vecs[fresh], scores[fresh]
            chosen = diversify(
                scores,
                vecs,
                k - len(hits),
                duplicate_threshold=self.duplicate_threshold,
                mmr_lambda=self.mmr_lambda,
            )
            for j in chosen:
                chunk_id, fused_score = ordered[j]
                row = rows[chunk_id]
                kept_vectors.append(row["vector"])
                hits.append(
                    Hit(
                        chunk_id=chunk_id,
                        document_id=row["document_id"],
                        collection=row["collection"],
                        path=row["path"],
                        title=row["title"],
                        text=row["text"],
                        page=row["page"],
                        slide=row["slide"],
                        sheet=row["sheet"],
                        heading_path=row["heading_path"],
                        mime=row["mime"],
                        score_dense=float(row["vector"] @ qvec) if qvec is not None else None,
                        score_keyword=keyword_scores.get(chunk_id),
                        score_fused=float(fused_score),
                        rank=len(hits) + 1,
                        rank_dense=rank_dense.get(chunk_id),
                        rank_keyword=rank_keyword.get(chunk_id),
                        ocr_confidence=row["ocr_confidence"],
                    )
                )
        return hits

    def _rows(self, chunk_ids: list[int], principal: Principal, access: _Access) -> dict[int, dict]:
        """Chunk rows for ids that still exist and are readable now (the authoritative ACL check)."""
        if not chunk_ids:
            return {}
        stmt = (
            select(
                Chunk.id,
                Chunk.document_id,
                Chunk.text,
                Chunk.page,
                Chunk.slide,
                Chunk.sheet,
                Chunk.heading_path,
                Chunk.embedding,
                Document.path,
                Document.title,
                Document.mime,
                Collection.name,
                Chunk.ocr_confidence,
            )
            .join(Document, Document.id == Chunk.document_id)
            .join(Collection, Collection.id == Document.collection_id)
            .where(Chunk.id.in_(chunk_ids), served(Document))
        )
        if access.visible is not None:
            stmt = stmt.where(access.visible)
        with self.store.sessions() as session:
            result = session.execute(stmt).all()
            rows = {
                int(r[0]): {
                    "document_id": int(r[1]),
                    "text": r[2],
                    "page": r[3],
                    "slide": r[4],
                    "sheet": r[5],
                    "heading_path": r[6],
                    "vector": np.frombuffer(r[7], dtype=np.float32),
                    "path": r[8],
                    "title": r[9],
                    "mime": r[10],
                    "collection": r[11],
                    "ocr_confidence": r[12],
                }
                for r in result
            }
            if not principal.is_admin and rows:
                self._show_readable_copy(session, rows, principal)
        return rows

    @staticmethod
    def _show_readable_copy(session: Session, rows: dict[int, dict], principal: Principal) -> None:
        """A chunk readable only through a duplicate is shown under the duplicate's id, path, title and
        collection: the stored original's may themselves be confidential. (Duplicates are found within one
        collection today, so the collection is the same; it is set anyway, so a change there cannot leak.)"""
        doc_ids = sorted({r["document_id"] for r in rows.values()})
        own = set(
            session.scalars(
                select(Document.id).where(
                    Document.id.in_(doc_ids),
                    select(DocumentGroup.document_id)
                    .where(
                        DocumentGroup.document_id == Document.id,
                        DocumentGroup.group.in_(sorted(principal.groups)),
                    )
                    .exists(),
                )
            )
        )
        via_copy = [d for d in doc_ids if d not in own]
        if not via_copy:
            return
        copies = session.execute(
            select(Document.duplicate_of, Document.id, Document.path, Document.title, Collection.name)
            .join(DocumentGroup, DocumentGroup.document_id == Document.id)
            .join(Collection, Collection.id == Document.collection_id)
            .where(Document.duplicate_of.in_(via_copy), DocumentGroup.group.in_(sorted(principal.groups)))
            .order_by(Document.id)
        ).all()
        shown: dict[int, tuple[int, str, str | None, str]] = {}
        for original, copy_id, path, title, collection in copies:
            assert original is not None  # the WHERE keeps only duplicates
            shown.setdefault(int(original), (int(copy_id), path, title, collection))
        for row in rows.values():
            copy = shown.get(row["document_id"])
            if copy is not None:
                row["document_id"], row["path"], row["title"], row["collection"] = (
                    copy[0],
                    copy[1],
                    copy[2] or row["title"],
                    copy[3],
                )
