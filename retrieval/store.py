"""The document store: SQL rows and FAISS vectors changed together, so that they always agree.

Every write is one SQL transaction that also bumps `index_state.generation`; the in-memory FAISS index is
updated right after the commit and saved (atomically) with that generation. If the process dies between
the two, `open()` sees the generations differ and repairs FAISS from the embeddings stored in SQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from retrieval.ann import IndexKind, IndexPolicy, build_index
from retrieval.keyword import KeywordIndex
from retrieval.schema import Chunk, Collection, Document, DocumentGroup, IndexState, utcnow
from retrieval.vector_index import VectorIndex

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


@dataclass(frozen=True)
class DocumentMeta:
    path: str
    sha256: str
    size: int
    mtime: float
    mime: str
    title: str | None = None


@dataclass
class WriteResult:
    document_id: int
    chunks_added: int = 0
    chunks_removed: int = 0
    created: bool = False
    status: str = "ready"
    error: str | None = None


@dataclass
class ReconcileReport:
    added: int = 0
    removed: int = 0
    generation: int = 0
    rebuilt: bool = False
    notes: list[str] = field(default_factory=list)


class StoreError(RuntimeError):
    pass


KEYWORD_CACHE = "keyword.npz"


class DocumentStore:
    def __init__(self, engine: Engine, index_dir: Path, dim: int, *, embedding_model: str | None = None) -> None:
        self.engine = engine
        self.embedding_model = embedding_model
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.vectors = VectorIndex(index_dir, dim)
        # BM25 over the same chunks as `vectors`; its file in the index dir is only a cache.
        self.keyword = KeywordIndex(Path(index_dir) / KEYWORD_CACHE)
        self.dim = dim
        self._write_lock = threading.Lock()
        self.index_policy = IndexPolicy()
        self._rebuild: threading.Thread | None = None
        self._rebuild_error: BaseException | None = None
        # The database generation the in-memory index reflects (set by every write this store mirrors).
        self._mirrored: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> ReconcileReport:
        self._check_embedding_model()
        self.vectors.load()
        return self.reconcile()

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
                log.warning("this store predates embedding-model tracking; recording %r as the model of its vectors",
                            self.embedding_model)
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
        if session is None:
            with self.sessions() as s:
                return self.generation(s)
        value = session.scalar(select(IndexState.generation).where(IndexState.id == 1))
        return int(value or 0)

    def _bump(self, session: Session) -> int:
        updated = session.execute(
            update(IndexState).where(IndexState.id == 1).values(generation=IndexState.generation + 1)
        ).rowcount
        if not updated:
            session.add(IndexState(id=1, generation=1))
            session.flush()
        return self.generation(session)

    def reconcile(self) -> ReconcileReport:
        """Make FAISS hold exactly the chunk ids in SQL, using SQL's stored embeddings where it lags."""
        with self._write_lock, self.sessions() as session:
            generation = self.generation(session)
            report = ReconcileReport(generation=generation)
            if not self.vectors.documents_known:
                rows = session.execute(select(Chunk.id, Chunk.document_id)).all()
                self.vectors.fill_documents(
                    np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64)
                )
                report.notes.append("chunk->document map rebuilt from the database")
            if (
                self.vectors.generation == generation
                and self.vectors.read_pointer() is not None
                and not self.vectors.dirty
            ):
                self._mirrored = generation
                return report
            db_ids = np.fromiter(session.scalars(select(Chunk.id)), dtype=np.int64)
            index_ids = self.vectors.ids()
            missing = np.setdiff1d(db_ids, index_ids, assume_unique=True)
            extra = np.setdiff1d(index_ids, db_ids, assume_unique=True)
            if len(extra):
                report.removed = self.vectors.remove(extra)
            for start in range(0, len(missing), 10_000):
                batch = missing[start : start + 10_000].tolist()
                rows = session.execute(
                    select(Chunk.id, Chunk.embedding, Chunk.document_id).where(Chunk.id.in_(batch))
                ).all()
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
                self.vectors.add(ids, vecs, np.array([r[2] for r in rows], dtype=np.int64))
                report.added += len(rows)
            if report.added or report.removed:
                log.warning(
                    "vector index repaired from the database: %d added, %d removed (generation %s -> %d)",
                    report.added, report.removed, self.vectors.generation, generation,
                )
            self.vectors.save(generation)
            self._mirrored = generation
            return report

    def sync_keyword(self) -> int:
        """Bring the BM25 index to the vector index's chunk set (reading new chunks' text from SQL);
        returns the chunks it read. Searches call it; ingest calls it at the end so the first query after a
        large ingest does not pay for tokenising it."""
        vectors = self.vectors
        version = (id(vectors), vectors.version)  # read before the map: a change during the sync resyncs
        doc_map = vectors.document_map()
        if doc_map is None:
            return 0

        def fetch(ids: np.ndarray) -> list[tuple[int, str]]:
            with self.sessions() as session:
                rows = session.execute(select(Chunk.id, Chunk.search_text).where(Chunk.id.in_(ids.tolist())))
                return [(int(r[0]), r[1]) for r in rows]

        return self.keyword.sync(doc_map, fetch, version)

    def flush(self) -> None:
        """Persist the FAISS index if it changed since the last save. Does not wait for a background rebuild
        (it installs and saves itself) but reports one that failed."""
        self._raise_rebuild_error()
        with self._write_lock:
            if self.vectors.dirty:
                self.vectors.save(self.generation())

    # --- index choice and background rebuilds ----------------------------------------------------------
    def rebuild_needed(self) -> IndexKind | None:
        """The kind to rebuild into, when the policy says the current index no longer fits the corpus."""
        n = self.vectors.ntotal
        wanted = self.index_policy.kind_for(n)
        if wanted != self.vectors.kind:
            # Shrinking back to flat waits until the corpus is well under the threshold (no flapping).
            if wanted == "flat" and self.index_policy.choice == "auto" and n > self.index_policy.threshold // 2:
                return None
            return wanted
        if wanted == "flat":
            return None
        built = max(self.vectors.built_size, 1)
        if n >= self.index_policy.regrow_factor * built:
            return wanted
        total = n + self.vectors.tombstones
        if total and self.vectors.tombstones / total >= self.index_policy.tombstone_fraction:
            return wanted
        return None

    def start_rebuild(self, kind: IndexKind | None = None) -> bool:
        """Build a new index from SQL's embeddings on a background thread while writes keep flowing; the
        thread swaps it in itself (replaying writes made meanwhile) and saves it. The thread is not a
        daemon, so an ingest process finishes the rebuild before it exits."""
        kind = kind or self.rebuild_needed()
        if kind is None or (self._rebuild is not None and self._rebuild.is_alive()):
            return False
        self._raise_rebuild_error()
        self._rebuild = threading.Thread(target=self._rebuild_in_background, args=(kind,), name="sparq-index-rebuild")
        self._rebuild.start()
        return True

    def _raise_rebuild_error(self) -> None:
        if self._rebuild_error is not None:
            error, self._rebuild_error = self._rebuild_error, None
            raise StoreError(f"background index rebuild failed: {error!r}") from error

    def _rebuild_in_background(self, kind: IndexKind) -> None:
        try:
            ids, docs, vecs = self._snapshot_vectors()
            started = time.perf_counter()
            index = build_index(kind, self.dim, ids, vecs)
            del vecs
            log.info("built %s index over %d vectors in %.1f s", kind, len(ids), time.perf_counter() - started)
            self._install(kind, index, ids, docs)
        except BaseException as exc:  # kept and raised by the next flush/wait, never lost
            log.exception("background index rebuild failed")
            self._rebuild_error = exc

    def _snapshot_vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self.sessions() as session:
            n = int(session.scalar(select(func.count(Chunk.id))) or 0)
            ids = np.empty(n, dtype=np.int64)
            docs = np.empty(n, dtype=np.int64)
            vecs = np.empty((n, self.dim), dtype=np.float32)
            filled = 0
            last = -1
            while filled < n:
                rows = session.execute(
                    select(Chunk.id, Chunk.document_id, Chunk.embedding)
                    .where(Chunk.id > last).order_by(Chunk.id).limit(20_000)
                ).all()
                if not rows:
                    break
                rows = rows[: n - filled]
                take = len(rows)
                ids[filled : filled + take] = [r[0] for r in rows]
                docs[filled : filled + take] = [r[1] for r in rows]
                vecs[filled : filled + take] = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(
                    take, self.dim
                )
                filled += take
                last = int(rows[-1][0])
        return ids[:filled], docs[:filled], vecs[:filled]

    def _install(self, kind: IndexKind, index: object, snap_ids: np.ndarray, snap_docs: np.ndarray) -> None:
        """Swap a rebuilt index in, replaying chunks added, removed or moved since its snapshot."""
        with self._write_lock:
            live = self.vectors.ids()
            added = np.setdiff1d(live, snap_ids)
            gone = np.setdiff1d(snap_ids, live)
            docs = snap_docs.copy()
            doc_map = self.vectors.document_map()
            if doc_map is not None and len(snap_ids):
                inside = snap_ids < len(doc_map)
                current = doc_map[snap_ids[inside]]
                docs[inside] = np.where(current >= 0, current, docs[inside])
            self.vectors.replace(index, kind, docs)
            if len(gone):
                self.vectors.remove(gone)
            if len(added):
                with self.sessions() as session:
                    for start in range(0, len(added), 10_000):
                        batch = added[start : start + 10_000].tolist()
                        rows = session.execute(
                            select(Chunk.id, Chunk.embedding, Chunk.document_id).where(Chunk.id.in_(batch))
                        ).all()
                        self.vectors.add(
                            np.array([r[0] for r in rows], dtype=np.int64),
                            np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim),
                            np.array([r[2] for r in rows], dtype=np.int64),
                        )
            # The rebuild may finish after this process released the ingest lock and another process wrote
            # and saved: never overwrite a newer index with one that lacks that process's chunks.
            on_disk = self.vectors.read_pointer()
            mirrored = self._mirrored if self._mirrored is not None else self.generation()
            if on_disk is not None and on_disk.generation > mirrored:
                log.warning("rebuilt %s index not saved: another process saved generation %d meanwhile",
                            kind, on_disk.generation)
                return
            self.vectors.save(mirrored)

    def wait_for_rebuild(self) -> bool:
        """Block until a running background rebuild has been swapped in; raises if it failed."""
        thread = self._rebuild
        if thread is None:
            return False
        thread.join()
        self._rebuild = None
        self._raise_rebuild_error()
        return True

    def rebuild_index(self, kind: IndexKind | None = None) -> str:
        """Rebuild now (blocking) into `kind` or what the policy wants; returns the kind in use afterwards."""
        self.start_rebuild(kind or self.index_policy.kind_for(self.vectors.ntotal))
        self.wait_for_rebuild()
        return self.vectors.kind

    # --- collections ---------------------------------------------------------------------------------
    def collection_id(self, name: str, *, create: bool = False) -> int | None:
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
        with self.sessions() as session:
            return session.scalar(
                select(Document).where(Document.collection_id == collection_id, Document.path == path)
            )

    def documents_under(self, collection_id: int, prefix: str) -> list[tuple[int, str]]:
        with self.sessions() as session:
            rows = session.execute(
                select(Document.id, Document.path).where(Document.collection_id == collection_id)
            ).all()
        return [(i, p) for i, p in rows if p == prefix or p.startswith(prefix.rstrip("/") + "/")]

    def touch(self, document_id: int, mtime: float) -> None:
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
                        added_ids.append(new_ids)
                        added_vecs.append(item.vectors)
                        added_docs.append(np.full(len(new_ids), result.document_id, dtype=np.int64))
                self._mirrored = self._bump(session)
            # Committed: now mirror into FAISS. A crash here is repaired by reconcile() on next open.
            self.vectors.remove(np.array(removed_ids, dtype=np.int64))
            if added_ids:
                self.vectors.add(np.concatenate(added_ids), np.concatenate(added_vecs), np.concatenate(added_docs))
        self.start_rebuild()
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
                status, error = "failed", "same content as another file of this collection that failed to load"
        doc = session.scalar(
            select(Document).where(Document.collection_id == item.collection_id, Document.path == meta.path)
        )
        created = doc is None
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
                    token_count=c.token_count,
                    embedding=np.ascontiguousarray(v, dtype=np.float32).tobytes(),
                )
                for c, v in zip(item.chunks, item.vectors, strict=True)
            ]
            session.add_all(rows)
            session.flush()
            new_ids = np.array([r.id for r in rows], dtype=np.int64)
        return WriteResult(doc.id, len(new_ids), len(old_ids), created, status, error), old_ids, new_ids

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
        """Delete documents, their chunks and vectors; a duplicate inherits an original's chunks."""
        removed: list[int] = []
        moved: list[tuple[int, list[int]]] = []
        count = 0
        with self._write_lock:
            with self.sessions() as session, session.begin():
                for doc_id in document_ids:
                    doc = session.get(Document, doc_id)
                    if doc is None:
                        continue
                    heir = session.scalar(
                        select(Document).where(Document.duplicate_of == doc_id).order_by(Document.id).limit(1)
                    )
                    if heir is not None and doc.status == "ready":
                        moved.append((heir.id, list(session.scalars(select(Chunk.id).where(Chunk.document_id == doc_id)))))
                        session.execute(update(Chunk).where(Chunk.document_id == doc_id).values(document_id=heir.id))
                        session.execute(
                            update(Document)
                            .where(Document.duplicate_of == doc_id, Document.id != heir.id)
                            .values(duplicate_of=heir.id)
                        )
                        heir.status, heir.duplicate_of, heir.n_chunks = "ready", None, doc.n_chunks
                    else:
                        removed.extend(session.scalars(select(Chunk.id).where(Chunk.document_id == doc_id)))
                        session.execute(delete(Chunk).where(Chunk.document_id == doc_id))
                    session.delete(doc)
                    count += 1
                self._mirrored = self._bump(session)
            self.vectors.remove(np.array(removed, dtype=np.int64))
            for heir_id, chunk_ids in moved:
                self.vectors.set_documents(np.array(chunk_ids, dtype=np.int64), heir_id)
        self.flush()
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
            self._mirrored = self._bump(session)

    def delete_collection(self, name: str) -> int:
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
