"""The document store: SQL rows (collections, documents, their groups and chunks) and what keeps the indexes
agreeing with them.

Every write is one SQL transaction that also bumps `index_state.generation`; right after the commit the store
hands the change to its `VectorMirror` (`retrieval.vector_mirror`), which updates the in-memory FAISS index,
saves it (atomically) labelled with that generation, repairs it from the embeddings stored in SQL when the
process died between the two or another process wrote, and rebuilds it in the background when the index
policy asks. BM25 follows the vector index's chunk set through `KeywordSync` (`retrieval.keyword_sync`).
This module keeps only the rows: what a write, a delete or a duplicate does to them, and in which order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from sqlalchemy import CursorResult, Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from retrieval.ann import IndexKind, IndexPolicy, build_index
from retrieval.errors import StoreError
from retrieval.keyword import KeywordIndex
from retrieval.keyword_sync import KeywordSync
from retrieval.schema import Chunk, Collection, Document, DocumentGroup, IndexState, utcnow
from retrieval.vector_index import VectorIndex
from retrieval.vector_mirror import ReconcileReport, VectorMirror

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk as ingestion hands it over: located text plus what the keyword index should see."""

    text: str
    search_text: str
    position: int
    token_count: int
    page: int | None = None
    slide: int | None = None
    sheet: str | None = None
    heading_path: str | None = None
    ocr_confidence: float | None = None  # read by OCR: the engine's mean word confidence (0-100)


@dataclass(frozen=True)
class DocumentMeta:
    """What the store records about a document's file: what change detection compares, plus mime and title."""

    path: str
    sha256: str
    size: int
    mtime: float
    mime: str
    title: str | None = None


@dataclass
class WriteResult:
    """What writing one document did (its id, chunks added and removed, status), for the ingest summary."""

    document_id: int
    chunks_added: int = 0
    chunks_removed: int = 0
    created: bool = False
    status: str = "ready"
    error: str | None = None


KEYWORD_CACHE = "keyword.npz"
# A document whose last good chunks are still there to serve (its own, or its original's).
LAST_GOOD_STATUSES = ("ready", "stale", "duplicate")
PENDING_ORIGINAL_GONE = (
    "the identical file it was stored with changed, failed or was deleted; "
    "waiting to be read from its own file"
)


class DocumentStore:
    """Documents in SQL with their FAISS and keyword indexes: every write goes through here, so they agree.

    The rows are written here; `mirror` (a `VectorMirror`) keeps FAISS following them and `keyword_sync`
    keeps BM25 following FAISS. One write lock, created here and shared with the mirror, serialises a
    write's transaction and its mirroring against catch-ups, saves and rebuild installs."""

    def __init__(
        self, engine: Engine, index_dir: Path, dim: int, *, embedding_model: str | None = None
    ) -> None:
        self.engine = engine
        self.embedding_model = embedding_model
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.vectors = VectorIndex(index_dir, dim)
        # BM25 over the same chunks as `vectors`; its file in the index dir is only a cache.
        self.keyword = KeywordIndex(Path(index_dir) / KEYWORD_CACHE)
        self.dim = dim
        self._write_lock = threading.Lock()
        # `build` is looked up here, not in the mirror, so a test that swaps `retrieval.store.build_index`
        # (tests/retrieval/test_rebuild_crash.py) still reaches the rebuild.
        self.mirror = VectorMirror(
            self.vectors, self.sessions, self.generation, self._write_lock, build=build_index
        )
        self.keyword_sync = KeywordSync(self.keyword, self.vectors, self.sessions)

    @property
    def index_policy(self) -> IndexPolicy:
        """Which FAISS kind the mirror builds for the corpus size (set by the composition root)."""
        return self.mirror.policy

    @index_policy.setter
    def index_policy(self, policy: IndexPolicy) -> None:
        self.mirror.policy = policy

    # --- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> ReconcileReport:
        """Load the saved index and repair it from SQL where they differ; call before serving searches."""
        self._check_embedding_model()
        return self.mirror.load()

    def _check_embedding_model(self) -> None:
        """Refuse to serve vectors made by another embedding model; record the model on first use."""
        if self.embedding_model is None:
            return
        with self.sessions() as session:
            state = session.get(IndexState, 1)
            recorded = state.embedding_model if state is not None else None
            if recorded == self.embedding_model:
                return
            if recorded is not None:
                raise StoreError(
                    f"the stored vectors were made by the embedding model {recorded!r}, but {self.embedding_model!r} "
                    "is configured: searching one model's vectors with the other's queries returns unrelated "
                    "passages. Set SPARQ_EMBEDDING_MODEL back, or use a new data dir/database and ingest again."
                )
            if session.scalar(select(Chunk.id).limit(1)) is not None:
                log.warning(
                    "this store predates embedding-model tracking; recording %r as the model of its vectors",
                    self.embedding_model,
                )
            if state is None:
                session.add(IndexState(id=1, generation=0, embedding_model=self.embedding_model))
            else:
                state.embedding_model = self.embedding_model
            try:
                session.commit()
            except IntegrityError:  # another process recorded it first: check what it recorded
                session.rollback()
                return self._check_embedding_model()

    def generation(self, session: Session | None = None) -> int:
        """The database's generation: one primary-key row read. Without a session it runs on a bare pooled
        connection (a third of a Session's cost), since every search asks."""
        query = select(IndexState.generation).where(IndexState.id == 1)
        if session is None:
            with self.engine.connect() as conn:
                value = conn.scalar(query)
        else:
            value = session.scalar(query)
        return int(value or 0)

    def _bump(self, session: Session) -> int:
        """Bump the generation inside a write's transaction and return the new one (for `mirror.follow`)."""
        # A bulk UPDATE returns a CursorResult (Session.execute is typed for any statement: plain Result).
        updated = cast(
            CursorResult[Any],
            session.execute(
                update(IndexState).where(IndexState.id == 1).values(generation=IndexState.generation + 1)
            ),
        ).rowcount
        if not updated:
            session.add(IndexState(id=1, generation=1))
            session.flush()
        return self.generation(session)

    # --- the mirror and keyword sync, as callers have always reached them ------------------------------
    def reconcile(self) -> ReconcileReport:
        """Make FAISS hold exactly the chunk ids in SQL and save it (see `VectorMirror.reconcile`)."""
        return self.mirror.reconcile()

    def catch_up(self) -> int:
        """Bring FAISS to other processes' writes before a search (see `VectorMirror.catch_up`)."""
        return self.mirror.catch_up()

    def sync_keyword(self) -> int:
        """Bring BM25 to the vector index's chunk set; returns the chunks read. Searches call it; ingest calls
        it at the end so the first query after a large ingest does not pay for tokenising it."""
        return self.keyword_sync.sync()

    def flush(self) -> None:
        """Persist FAISS if it changed, under the generation it mirrors (see `VectorMirror.flush`)."""
        self.mirror.flush()

    def rebuild_needed(self) -> IndexKind | None:
        """The kind the index policy wants rebuilt into, or None (see `VectorMirror.rebuild_needed`)."""
        return self.mirror.rebuild_needed()

    def start_rebuild(self, kind: IndexKind | None = None) -> bool:
        """Start a background rebuild when needed (see `VectorMirror.start_rebuild`)."""
        return self.mirror.start_rebuild(kind)

    def wait_for_rebuild(self) -> bool:
        """Block until a running background rebuild has been swapped in; raises if it failed."""
        return self.mirror.wait_for_rebuild()

    def rebuild_index(self, kind: IndexKind | None = None) -> str:
        """Rebuild now (blocking) into `kind` or what the policy wants; returns the kind in use afterwards."""
        return self.mirror.rebuild_index(kind)

    def _snapshot_vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kept for bench/search.py, which reads it: `mirror.snapshot()`."""
        return self.mirror.snapshot()

    # --- collections ---------------------------------------------------------------------------------
    def collection_id(self, name: str, *, create: bool = False) -> int | None:
        """The id of collection `name`, created on demand with `create`; None when it does not exist."""
        name = name.strip()
        if not name:
            raise StoreError("a collection needs a non-empty name")
        with self.sessions() as session:
            found = session.scalar(select(Collection.id).where(Collection.name == name))
            if found is not None or not create:
                return found
            session.add(Collection(name=name))
            try:
                session.commit()
            except Exception:  # a concurrent creator won the race; read its row
                session.rollback()
            return session.scalar(select(Collection.id).where(Collection.name == name))

    # --- documents -----------------------------------------------------------------------------------
    def find_document(self, collection_id: int, path: str) -> Document | None:
        """The stored document at `path` in a collection, or None: ingest compares the file with it."""
        with self.sessions() as session:
            return session.scalar(
                select(Document).where(Document.collection_id == collection_id, Document.path == path)
            )

    def documents_under(self, collection_id: int, prefix: str) -> list[tuple[int, str]]:
        """Ids and paths of a collection's documents at or below `prefix`: what a re-listed source may have lost."""
        with self.sessions() as session:
            rows = session.execute(
                select(Document.id, Document.path).where(Document.collection_id == collection_id)
            ).all()
        return [(i, p) for i, p in rows if p == prefix or p.startswith(prefix.rstrip("/") + "/")]

    def touch(self, document_id: int, mtime: float) -> None:
        """Record a new mtime for a document whose content did not change, so the next run need not hash it again."""
        with self.sessions() as session, session.begin():
            session.execute(update(Document).where(Document.id == document_id).values(mtime=mtime))

    def write_documents(self, items: Sequence[DocumentWrite]) -> list[WriteResult]:
        """Write a batch of documents in one transaction: all of them land, or none does."""
        results: list[WriteResult] = []
        added_ids: list[np.ndarray] = []
        added_vecs: list[np.ndarray] = []
        added_docs: list[np.ndarray] = []
        removed_ids: list[int] = []
        with self._write_lock:
            with self.sessions() as session, session.begin():
                for item in items:
                    result, old_ids, new_ids = self._write_one(session, item)
                    results.append(result)
                    removed_ids.extend(old_ids)
                    if len(new_ids):
                        assert item.vectors is not None  # _write_one refuses chunks without vectors
                        added_ids.append(new_ids)
                        added_vecs.append(item.vectors)
                        added_docs.append(np.full(len(new_ids), result.document_id, dtype=np.int64))
                self.mirror.follow(self._bump(session))
            # Committed: now mirror into FAISS. A crash here is repaired by reconcile() on next open.
            self.mirror.apply(
                np.array(removed_ids, dtype=np.int64),
                (np.concatenate(added_ids), np.concatenate(added_vecs), np.concatenate(added_docs))
                if added_ids
                else None,
            )
        self.mirror.start_rebuild()
        return results

    def _write_one(self, session: Session, item: DocumentWrite) -> tuple[WriteResult, list[int], np.ndarray]:
        meta = item.meta
        status, error, duplicate_of = item.status, item.error, item.duplicate_of
        if status == "duplicate" and duplicate_of is None:
            # Resolved inside the transaction so an original written earlier in the same batch is found.
            duplicate_of = session.scalar(
                select(Document.id)
                .where(
                    Document.collection_id == item.collection_id,
                    Document.sha256 == meta.sha256,
                    Document.status == "ready",
                    Document.path != meta.path,
                )
                .order_by(Document.id)
                .limit(1)
            )
            if duplicate_of is None:
                # Its original changed, failed or went away since the content was hashed: read it on its own.
                status, error = "pending", PENDING_ORIGINAL_GONE
        doc = session.scalar(
            select(Document).where(Document.collection_id == item.collection_id, Document.path == meta.path)
        )
        created = doc is None
        if status == "stale":
            if doc is not None and doc.status in LAST_GOOD_STATUSES:
                return self._keep_last_good(session, doc, item), [], np.empty(0, dtype=np.int64)
            status = "failed"  # no good version to keep: recorded as failed, with the reason
        old_ids: list[int] = []
        if doc is None:
            doc = Document(collection_id=item.collection_id, path=meta.path)
            session.add(doc)
        else:
            old_ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
            if old_ids:
                session.execute(delete(Chunk).where(Chunk.document_id == doc.id))
        doc.sha256, doc.size, doc.mtime, doc.mime = meta.sha256, meta.size, meta.mtime, meta.mime
        doc.title = meta.title
        doc.status = status
        doc.error = error
        doc.duplicate_of = duplicate_of
        doc.updated_at = utcnow()
        doc.n_chunks = len(item.chunks)
        if item.groups is not None:
            wanted = sorted(set(item.groups))
            current = {g.group for g in doc.groups}
            if current != set(wanted):
                doc.groups.clear()
                session.flush()
                doc.groups.extend(DocumentGroup(group=g) for g in wanted)
        session.flush()
        if not created:
            self._recheck_duplicates(session, doc)
        new_ids = np.empty(0, dtype=np.int64)
        if item.chunks:
            if item.vectors is None or len(item.vectors) != len(item.chunks):
                raise StoreError(f"{meta.path}: {len(item.chunks)} chunks but vectors do not match")
            rows = [
                Chunk(
                    document_id=doc.id,
                    position=c.position,
                    text=c.text,
                    search_text=c.search_text,
                    page=c.page,
                    slide=c.slide,
                    sheet=c.sheet,
                    heading_path=c.heading_path,
                    ocr_confidence=c.ocr_confidence,
                    token_count=c.token_count,
                    embedding=np.ascontiguousarray(v, dtype=np.float32).tobytes(),
                )
                for c, v in zip(item.chunks, item.vectors, strict=True)
            ]
            session.add_all(rows)
            session.flush()
            new_ids = np.array([r.id for r in rows], dtype=np.int64)
        return WriteResult(doc.id, len(new_ids), len(old_ids), created, status, error), old_ids, new_ids

    def _keep_last_good(self, session: Session, doc: Document, item: DocumentWrite) -> WriteResult:
        """A re-read failed: keep the chunks (and the sha256, size and mtime describing them), record why.

        A half-copied or briefly unreadable file must not delete the last version that could be read; the
        next successful read replaces it and clears the error."""
        doc.status, doc.error, doc.updated_at = "stale", item.error, utcnow()
        if item.groups is not None:
            wanted = sorted(set(item.groups))
            if {g.group for g in doc.groups} != set(wanted):
                doc.groups.clear()
                session.flush()
                doc.groups.extend(DocumentGroup(group=g) for g in wanted)
        session.flush()
        self._recheck_duplicates(session, doc)
        return WriteResult(doc.id, 0, 0, False, "stale", item.error)

    @staticmethod
    def _recheck_duplicates(session: Session, doc: Document) -> int:
        """After `doc` was rewritten: the duplicates that read through its chunks keep doing so only while
        `doc` is ready with their very content. One identical to `doc`'s own original now points there;
        every other one is set "pending" (no chunks, no link: nothing to read) until it is re-read from its
        own file. Returns how many were set pending."""
        pending = 0
        for dup in session.scalars(select(Document).where(Document.duplicate_of == doc.id)).all():
            if dup.sha256 == doc.sha256 and doc.status == "ready":
                continue
            if dup.sha256 == doc.sha256 and doc.status == "duplicate" and doc.duplicate_of is not None:
                dup.duplicate_of = doc.duplicate_of
                continue
            dup.status, dup.duplicate_of, dup.n_chunks, dup.error = "pending", None, 0, PENDING_ORIGINAL_GONE
            dup.updated_at = utcnow()
            pending += 1
        if pending:
            session.flush()
        return pending

    def find_original(self, collection_id: int, sha256: str, exclude_path: str) -> int | None:
        """A ready document in the collection with the same content (for storing duplicates once)."""
        with self.sessions() as session:
            return session.scalar(
                select(Document.id)
                .where(
                    Document.collection_id == collection_id,
                    Document.sha256 == sha256,
                    Document.status == "ready",
                    Document.path != exclude_path,
                )
                .order_by(Document.id)
                .limit(1)
            )

    def delete_documents(self, document_ids: Iterable[int]) -> int:
        """Delete documents, their chunks and vectors; an identical duplicate inherits an original's chunks
        (and the other identical ones then read through it); a duplicate whose content differs is set
        "pending", to be read from its own file by the next ingest of the collection."""
        removed: list[int] = []
        moved: list[tuple[int, list[int]]] = []
        count = 0
        with self._write_lock:
            with self.sessions() as session, session.begin():
                for doc_id in document_ids:
                    doc = session.get(Document, doc_id)
                    if doc is None:
                        continue
                    identical = (
                        Document.duplicate_of == doc_id,
                        Document.sha256 == doc.sha256,
                        Document.status.in_(("duplicate", "stale")),
                    )
                    heir = session.scalar(select(Document).where(*identical).order_by(Document.id).limit(1))
                    if heir is not None and doc.status in ("ready", "stale"):
                        moved.append(
                            (
                                heir.id,
                                list(session.scalars(select(Chunk.id).where(Chunk.document_id == doc_id))),
                            )
                        )
                        session.execute(
                            update(Chunk).where(Chunk.document_id == doc_id).values(document_id=heir.id)
                        )
                        session.execute(
                            update(Document)
                            .where(*identical, Document.id != heir.id)
                            .values(duplicate_of=heir.id)
                        )
                        if heir.status == "duplicate":  # a stale heir stays stale: its own file is unreadable
                            heir.status, heir.error = "ready", None
                        heir.duplicate_of, heir.n_chunks = None, doc.n_chunks
                    else:
                        removed.extend(session.scalars(select(Chunk.id).where(Chunk.document_id == doc_id)))
                        session.execute(delete(Chunk).where(Chunk.document_id == doc_id))
                    # Copies that did not inherit have nothing left to read through: re-read them on their own.
                    session.flush()
                    session.execute(
                        update(Document)
                        .where(Document.duplicate_of == doc_id)
                        .values(status="pending", duplicate_of=None, n_chunks=0, error=PENDING_ORIGINAL_GONE)
                    )
                    session.delete(doc)
                    count += 1
                self.mirror.follow(self._bump(session))
            self.mirror.apply(np.array(removed, dtype=np.int64), moved=moved)
        self.mirror.flush()
        return count

    def set_document_groups(self, document_id: int, groups: Iterable[str]) -> None:
        """Change who may read a document; bumps the generation so cached access bitmaps are dropped."""
        wanted = sorted({g.strip() for g in groups if g.strip()})
        with self._write_lock, self.sessions() as session, session.begin():
            doc = session.get(Document, document_id)
            if doc is None:
                raise StoreError(f"no document with id {document_id}")
            doc.groups.clear()
            session.flush()
            doc.groups.extend(DocumentGroup(group=g) for g in wanted)
            self.mirror.follow(self._bump(session))

    def delete_collection(self, name: str) -> int:
        """Delete a collection with its documents, chunks and vectors; returns how many documents went."""
        cid = self.collection_id(name)
        if cid is None:
            raise StoreError(f"no collection named {name!r}")
        with self.sessions() as session:
            doc_ids = list(session.scalars(select(Document.id).where(Document.collection_id == cid)))
        removed = self.delete_documents(doc_ids)
        with self._write_lock, self.sessions() as session, session.begin():
            session.execute(delete(Collection).where(Collection.id == cid))
        return removed

    # --- reading -------------------------------------------------------------------------------------
    def chunk_count(self) -> int:
        """Chunks stored in SQL (the source of truth, not the FAISS cache)."""
        with self.sessions() as session:
            return int(session.scalar(select(func.count(Chunk.id))) or 0)


@dataclass
class DocumentWrite:
    """One document's new state. `groups=None` leaves existing groups untouched."""

    collection_id: int
    meta: DocumentMeta
    status: str = "ready"
    chunks: list[ChunkRecord] = field(default_factory=list)
    vectors: np.ndarray | None = None
    groups: list[str] | None = None
    error: str | None = None
    duplicate_of: int | None = None
