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
from typing import Any, cast

import faiss
import numpy as np
from sqlalchemy import CursorResult, Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from retrieval.ann import IndexKind, IndexPolicy, build_index
from retrieval.keyword import KeywordIndex
from retrieval.schema import Chunk, Collection, Document, DocumentGroup, IndexState, utcnow
from retrieval.vector_index import NO_DOCUMENT, VectorIndex, index_ids, with_documents

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


@dataclass
class ReconcileReport:
    """What bringing FAISS back in line with SQL changed (on open, after a crash), so the repair is logged."""

    added: int = 0
    removed: int = 0
    generation: int = 0
    rebuilt: bool = False
    notes: list[str] = field(default_factory=list)


class StoreError(RuntimeError):
    """A store operation refused: bad input, another embedding model's vectors, a missing collection."""


KEYWORD_CACHE = "keyword.npz"
# A document whose last good chunks are still there to serve (its own, or its original's).
LAST_GOOD_STATUSES = ("ready", "stale", "duplicate")
PENDING_ORIGINAL_GONE = (
    "the identical file it was stored with changed, failed or was deleted; "
    "waiting to be read from its own file"
)


class DocumentStore:
    """Documents in SQL with their FAISS and keyword indexes: every write goes through here, so they agree."""

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
        self.index_policy = IndexPolicy()
        self._rebuild: threading.Thread | None = None
        self._rebuild_error: BaseException | None = None
        # The database generation the in-memory index reflects (set by every write this store mirrors).
        self._mirrored: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> ReconcileReport:
        """Load the saved index and repair it from SQL where they differ; call before serving searches."""
        self._check_embedding_model()
        with self._write_lock:
            if self.vectors.load():
                self._mirrored = self.vectors.generation  # a saved file is labelled with what it holds
            return self._reconcile_locked()

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

    def _bump(self, session: Session) -> int | None:
        """Bump the generation inside a write's transaction. Returns what `_mirrored` becomes once the caller
        has applied its change to the in-memory index: the new generation when that index mirrored the one
        just before it, else None (another process wrote meanwhile, unseen here: flush and searches then
        catch up from SQL instead of labelling this index with a state it does not hold)."""
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
        new = self.generation(session)
        return new if self._mirrored == new - 1 else None

    def reconcile(self) -> ReconcileReport:
        """Make FAISS hold exactly the chunk ids in SQL (from SQL's stored embeddings where it lags), and save
        it under the generation it then mirrors."""
        with self._write_lock:
            return self._reconcile_locked()

    def _reconcile_locked(self) -> ReconcileReport:
        report = self._catch_up_locked()
        pointer = self.vectors.read_pointer()
        if self.vectors.dirty or pointer is None or pointer.generation != self._mirrored:
            self._save_locked()
        return report

    def catch_up(self) -> int:
        """Searches call this first. Costs one indexed row read (the generation) while nothing changed; when
        another process (another replica on a shared PostgreSQL, or another process on this data dir)
        changed the database, the in-memory index catches up before this search runs: incrementally, never
        by a rebuild (see `_catch_up_locked`). Not saved here: the next write or flush saves it. Returns the
        generation the index now mirrors."""
        generation = self.generation()
        if generation == self._mirrored and self.vectors.documents_known:
            return generation
        with self._write_lock:
            report = self._catch_up_locked()
        if (report.added or report.removed) and self._rebuild_error is None:
            self.start_rebuild()  # a replica that only reads still follows the index policy
        return report.generation

    def _catch_up_locked(self) -> ReconcileReport:
        """Bring the in-memory index to the database's current generation (the caller holds _write_lock).

        A newer index file another process saved on this data dir is loaded first; whatever SQL holds beyond
        what the index mirrors is then applied as a difference: chunks missing here are added from their
        stored embeddings, chunks gone from SQL removed, chunks an heir inherited from a deleted original
        given the heir's document id. The generation is read before the difference, so the label is never
        newer than what the index holds."""
        with self.sessions() as session:
            generation = self.generation(session)
            report = ReconcileReport(generation=generation)
            if self._mirrored != generation:
                pointer = self.vectors.read_pointer()
                if (
                    pointer is not None
                    and pointer != self.vectors.loaded_pointer
                    and (self._mirrored is None or pointer.generation > self._mirrored)
                    and self.vectors.load()
                ):
                    loaded = self.vectors.loaded_pointer
                    self._mirrored = loaded.generation if loaded is not None else None
                    report.notes.append(
                        f"loaded the index another process saved at generation {self._mirrored}"
                    )
            if not self.vectors.documents_known:
                rows = session.execute(select(Chunk.id, Chunk.document_id)).all()
                self.vectors.fill_documents(
                    np.array([r[0] for r in rows], dtype=np.int64),
                    np.array([r[1] for r in rows], dtype=np.int64),
                )
                report.notes.append("chunk->document map rebuilt from the database")
            if self._mirrored == generation:
                return report
            db_ids = np.fromiter(session.scalars(select(Chunk.id)), dtype=np.int64)
            index_ids = self.vectors.ids()
            missing = np.setdiff1d(db_ids, index_ids, assume_unique=True)
            extra = np.setdiff1d(index_ids, db_ids, assume_unique=True)
            if len(extra):
                report.removed = self.vectors.remove(extra)
            for start in range(0, len(missing), 10_000):
                batch = missing[start : start + 10_000].tolist()
                embedded = session.execute(
                    select(Chunk.id, Chunk.embedding, Chunk.document_id).where(Chunk.id.in_(batch))
                ).all()
                ids = np.array([r[0] for r in embedded], dtype=np.int64)
                vecs = np.frombuffer(b"".join(r[1] for r in embedded), dtype=np.float32).reshape(
                    len(embedded), self.dim
                )
                self.vectors.add(ids, vecs, np.array([r[2] for r in embedded], dtype=np.int64))
                report.added += len(embedded)
            moved = self._relabel_inherited(session)
            if moved:
                report.notes.append(f"{moved} chunks given to the duplicate that inherited them")
            if report.added or report.removed:
                log.info(
                    "vector index caught up with the database: %d added, %d removed (generation %s -> %d)",
                    report.added,
                    report.removed,
                    self._mirrored,
                    generation,
                )
            self._mirrored = generation
            return report

    def _relabel_inherited(self, session: Session) -> int:
        """Chunks whose document (in the map) no longer exists but which SQL still has: a duplicate inherited
        them when the original was deleted. Gives them the heir's id, so access bitmaps keep finding them."""
        doc_map = self.vectors.document_map()
        if doc_map is None:
            return 0
        live = np.flatnonzero(doc_map >= 0)
        if not len(live):
            return 0
        db_docs = np.fromiter(session.scalars(select(Document.id)), dtype=np.int64)
        orphans = live[~np.isin(doc_map[live], db_docs)]
        moved = 0
        for start in range(0, len(orphans), 10_000):
            batch = orphans[start : start + 10_000].tolist()
            rows = session.execute(select(Chunk.id, Chunk.document_id).where(Chunk.id.in_(batch))).all()
            heirs: dict[int, list[int]] = {}
            for chunk_id, document_id in rows:
                heirs.setdefault(int(document_id), []).append(int(chunk_id))
            for heir, chunk_ids in heirs.items():
                self.vectors.set_documents(np.array(chunk_ids, dtype=np.int64), heir)
                moved += len(chunk_ids)
        return moved

    def _save_locked(self) -> bool:
        """Save under the generation the in-memory index mirrors (the caller holds _write_lock); never over a
        newer file another process saved, and never with a label the index does not reflect."""
        mirrored = self._mirrored
        if mirrored is None:
            raise StoreError(
                "the vector index is not known to mirror any database generation; catch up first"
            )
        on_disk = self.vectors.read_pointer()
        # A file newer than the database itself is left over from another database (a reset or a restore).
        if on_disk is not None and mirrored < on_disk.generation <= self.generation():
            log.info(
                "vector index (generation %d) not saved: another process saved generation %d",
                mirrored,
                on_disk.generation,
            )
            return False
        self.vectors.save(mirrored)
        return True

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
        """Persist the FAISS index if it changed since the last save, under the generation it mirrors. When
        the database moved past that generation unseen by this process (another process wrote), it catches
        up from SQL first rather than label the index with a state it does not hold. Does not wait for a
        background rebuild (it installs and saves itself) but reports one that failed."""
        self._raise_rebuild_error()
        with self._write_lock:
            if not self.vectors.dirty:
                return
            if self._mirrored != self.generation() or not self.vectors.documents_known:
                self._catch_up_locked()
            if self.vectors.dirty:
                self._save_locked()

    # --- index choice and background rebuilds ----------------------------------------------------------
    def rebuild_needed(self) -> IndexKind | None:
        """The kind to rebuild into, when the policy says the current index no longer fits the corpus."""
        n = self.vectors.ntotal
        wanted = self.index_policy.kind_for(n)
        if wanted != self.vectors.kind:
            # Shrinking back to flat waits until the corpus is well under the threshold (no flapping).
            if (
                wanted == "flat"
                and self.index_policy.choice == "auto"
                and n > self.index_policy.threshold // 2
            ):
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
        self._rebuild = threading.Thread(
            target=self._rebuild_in_background, args=(kind,), name="sparq-index-rebuild"
        )
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
            log.info(
                "built %s index over %d vectors in %.1f s", kind, len(ids), time.perf_counter() - started
            )
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
                    .where(Chunk.id > last)
                    .order_by(Chunk.id)
                    .limit(20_000)
                ).all()
                if not rows:
                    break
                rows = rows[: n - filled]
                take = len(rows)
                ids[filled : filled + take] = [r[0] for r in rows]
                docs[filled : filled + take] = [r[1] for r in rows]
                vecs[filled : filled + take] = np.frombuffer(
                    b"".join(r[2] for r in rows), dtype=np.float32
                ).reshape(take, self.dim)
                filled += take
                last = int(rows[-1][0])
        return ids[:filled], docs[:filled], vecs[:filled]

    def _install(
        self, kind: IndexKind, index: faiss.Index, snap_ids: np.ndarray, snap_docs: np.ndarray
    ) -> None:
        """Swap a rebuilt index in, after replaying into it (while it is still private, so searches never
        wait for the replay) the chunks added, removed or moved since its snapshot."""
        with self._write_lock:
            live = self.vectors.ids()
            added = np.setdiff1d(live, snap_ids)
            gone = np.setdiff1d(snap_ids, live)
            doc_map = self.vectors.document_map()
            added_docs: list[np.ndarray] = []
            if len(added):
                with self.sessions() as session:
                    for start in range(0, len(added), 10_000):
                        batch = added[start : start + 10_000].tolist()
                        rows = session.execute(
                            select(Chunk.id, Chunk.embedding, Chunk.document_id).where(Chunk.id.in_(batch))
                        ).all()
                        if rows:
                            index.add_with_ids(
                                np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
                                    len(rows), self.dim
                                ),
                                np.array([r[0] for r in rows], dtype=np.int64),
                            )
                            added_docs.append(np.array([[r[0], r[2]] for r in rows], dtype=np.int64))
            if len(gone) and kind != "hnsw":
                # HNSW: tombstones, below. faiss's stub types remove_ids as IDSelector-only; its Python wrapper
                # also takes an int64 id array (faiss/class_wrappers.py, replacement_remove_ids).
                index.remove_ids(np.ascontiguousarray(gone, dtype=np.int64))  # type: ignore[arg-type]
            if doc_map is None:  # unknown in memory: the snapshot's documents and those of the replayed rows
                doc_map = with_documents(None, snap_ids, snap_docs)
                for pairs in added_docs:
                    doc_map = with_documents(doc_map, pairs[:, 0], pairs[:, 1])
            doc_map = with_documents(doc_map, gone, NO_DOCUMENT)  # HNSW keeps them as tombstones
            final = index_ids(index)
            docs = np.full(len(final), NO_DOCUMENT, dtype=np.int64)
            inside = final < len(doc_map)
            docs[inside] = doc_map[final[inside]]
            self.vectors.replace(index, kind, docs, built_size=len(snap_ids))
            # The rebuild may finish after this process released the ingest lock and another process wrote
            # and saved: never overwrite a newer index with one that lacks that process's chunks.
            if self._mirrored is None:
                log.info(
                    "rebuilt %s index not saved yet: it is behind the database (the next flush saves it)",
                    kind,
                )
                return
            if not self._save_locked():
                log.warning(
                    "rebuilt %s index not saved: another process saved a newer generation meanwhile", kind
                )

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
                self._mirrored = self._bump(session)
            # Committed: now mirror into FAISS. A crash here is repaired by reconcile() on next open.
            self.vectors.remove(np.array(removed_ids, dtype=np.int64))
            if added_ids:
                self.vectors.add(
                    np.concatenate(added_ids), np.concatenate(added_vecs), np.concatenate(added_docs)
                )
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
