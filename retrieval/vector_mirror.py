"""The in-memory FAISS index as a mirror of SQL: following the database's generation, repairing, saving, rebuilding.

SQL is the source of truth; FAISS is a cache of the embeddings stored there. Every database write bumps
`index_state.generation`, and this mirror keeps track of which generation the in-memory index reflects, so it
can tell when another process (or a crash between commit and mirror) left it behind, catch up incrementally
from SQL's embeddings, save it atomically labelled with what it holds, and rebuild it into another index kind
on a background thread while writes keep flowing. It is its own module because none of this is about rows:
the document store (`retrieval.store`) writes rows and hands each committed change to the mirror.

Locking: one write lock, owned by whoever composes the mirror (the store) and passed in, serialises every
write's transaction-plus-mirror and every catch-up, save and rebuild install, in that order: the lock first,
then a session.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import faiss
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from retrieval.ann import IndexKind, IndexPolicy, build_index
from retrieval.errors import StoreError
from retrieval.index_kinds import index_kind
from retrieval.schema import Chunk, Document
from retrieval.vector_index import NO_DOCUMENT, VectorIndex, index_ids, with_documents

log = logging.getLogger(__name__)

IndexBuilder = Callable[[IndexKind, int, np.ndarray, np.ndarray], faiss.Index]
"""Builds an index of a kind over (dim, ids, vectors): `retrieval.ann.build_index`, or a test's stand-in."""


class GenerationReader(Protocol):
    """Reads the database's generation (`index_state.generation`), in `session` or on a pooled connection."""

    def __call__(self, session: Session | None = None) -> int: ...


@dataclass
class ReconcileReport:
    """What bringing FAISS back in line with SQL changed (on open, after a crash), so the repair is logged."""

    added: int = 0
    removed: int = 0
    generation: int = 0
    rebuilt: bool = False
    notes: list[str] = field(default_factory=list)


class VectorMirror:
    """Keeps a `VectorIndex` equal to the chunks in SQL, labelled with the generation it mirrors."""

    def __init__(
        self,
        vectors: VectorIndex,
        sessions: sessionmaker[Session],
        generation: GenerationReader,
        write_lock: threading.Lock,
        policy: IndexPolicy | None = None,
        *,
        build: IndexBuilder = build_index,
    ) -> None:
        self.vectors = vectors
        self.dim = vectors.dim
        self.policy = policy if policy is not None else IndexPolicy()
        self._sessions = sessions
        self._generation = generation
        self._lock = write_lock
        self._build = build
        self._rebuild: threading.Thread | None = None
        self._rebuild_error: BaseException | None = None
        # The database generation the in-memory index reflects (set by every write this mirror follows).
        self._mirrored: int | None = None

    @property
    def mirrored(self) -> int | None:
        """The generation the in-memory index is known to reflect; None when that is unknown."""
        return self._mirrored

    # --- following writes (the caller holds the write lock) -------------------------------------------
    def follow(self, new_generation: int) -> None:
        """A write inside its transaction just bumped the generation to `new_generation`. The index will
        mirror it once the write is applied when it mirrored the one just before; otherwise another process
        wrote meanwhile, unseen here, and the label becomes unknown (flush and searches then catch up from
        SQL instead of labelling this index with a state it does not hold)."""
        self._mirrored = new_generation if self._mirrored == new_generation - 1 else None

    def apply(
        self,
        removed: np.ndarray,
        added: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        moved: Sequence[tuple[int, list[int]]] = (),
    ) -> None:
        """Mirror a committed write: drop `removed` chunk ids, add (ids, vectors, document ids), and give
        each (heir, chunk ids) in `moved` to its heir. A crash before this is repaired by the next load."""
        self.vectors.remove(removed)
        if added is not None:
            self.vectors.add(*added)
        for heir_id, chunk_ids in moved:
            self.vectors.set_documents(np.array(chunk_ids, dtype=np.int64), heir_id)

    # --- loading, catching up, saving ---------------------------------------------------------------------
    def load(self) -> ReconcileReport:
        """Load the saved index and repair it from SQL where they differ; call before serving searches."""
        with self._lock:
            if self.vectors.load():
                self._mirrored = self.vectors.generation  # a saved file is labelled with what it holds
            return self._reconcile_locked()

    def reconcile(self) -> ReconcileReport:
        """Make FAISS hold exactly the chunk ids in SQL (from SQL's stored embeddings where it lags), and save
        it under the generation it then mirrors."""
        with self._lock:
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
        generation = self._generation()
        if generation == self._mirrored and self.vectors.documents_known:
            return generation
        with self._lock:
            report = self._catch_up_locked()
        if (report.added or report.removed) and self._rebuild_error is None:
            self.start_rebuild()  # a replica that only reads still follows the index policy
        return report.generation

    def _catch_up_locked(self) -> ReconcileReport:
        """Bring the in-memory index to the database's current generation (the caller holds the write lock).

        A newer index file another process saved on this data dir is loaded first; whatever SQL holds beyond
        what the index mirrors is then applied as a difference: chunks missing here are added from their
        stored embeddings, chunks gone from SQL removed, chunks an heir inherited from a deleted original
        given the heir's document id. The generation is read before the difference, so the label is never
        newer than what the index holds."""
        with self._sessions() as session:
            generation = self._generation(session)
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
        """Save under the generation the in-memory index mirrors (the caller holds the write lock); never over
        a newer file another process saved, and never with a label the index does not reflect."""
        mirrored = self._mirrored
        if mirrored is None:
            raise StoreError(
                "the vector index is not known to mirror any database generation; catch up first"
            )
        on_disk = self.vectors.read_pointer()
        # A file newer than the database itself is left over from another database (a reset or a restore).
        if on_disk is not None and mirrored < on_disk.generation <= self._generation():
            log.info(
                "vector index (generation %d) not saved: another process saved generation %d",
                mirrored,
                on_disk.generation,
            )
            return False
        self.vectors.save(mirrored)
        return True

    def flush(self) -> None:
        """Persist the FAISS index if it changed since the last save, under the generation it mirrors. When
        the database moved past that generation unseen by this process (another process wrote), it catches
        up from SQL first rather than label the index with a state it does not hold. Does not wait for a
        background rebuild (it installs and saves itself) but reports one that failed."""
        self._raise_rebuild_error()
        with self._lock:
            if not self.vectors.dirty:
                return
            if self._mirrored != self._generation() or not self.vectors.documents_known:
                self._catch_up_locked()
            if self.vectors.dirty:
                self._save_locked()

    # --- index choice and background rebuilds ----------------------------------------------------------
    def rebuild_needed(self) -> IndexKind | None:
        """The kind to rebuild into, when the policy says the current index no longer fits the corpus."""
        n = self.vectors.ntotal
        wanted = self.policy.kind_for(n)
        if wanted != self.vectors.kind:
            # Shrinking back to flat waits until the corpus is well under the threshold (no flapping).
            if wanted == "flat" and self.policy.choice == "auto" and n > self.policy.threshold // 2:
                return None
            return wanted
        if wanted == "flat":
            return None
        built = max(self.vectors.built_size, 1)
        if n >= self.policy.regrow_factor * built:
            return wanted
        total = n + self.vectors.tombstones
        if total and self.vectors.tombstones / total >= self.policy.tombstone_fraction:
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
            ids, docs, vecs = self.snapshot()
            started = time.perf_counter()
            index = self._build(kind, self.dim, ids, vecs)
            del vecs
            log.info(
                "built %s index over %d vectors in %.1f s", kind, len(ids), time.perf_counter() - started
            )
            self._install(kind, index, ids, docs)
        except BaseException as exc:  # kept and raised by the next flush/wait, never lost
            log.exception("background index rebuild failed")
            self._rebuild_error = exc

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every chunk's (ids, document ids, embeddings) as SQL holds them now, read in id order in pages:
        what a rebuild builds from (without the write lock; `_install` replays what changed meanwhile)."""
        with self._sessions() as session:
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
        with self._lock:
            live = self.vectors.ids()
            added = np.setdiff1d(live, snap_ids)
            gone = np.setdiff1d(snap_ids, live)
            doc_map = self.vectors.document_map()
            added_docs: list[np.ndarray] = []
            if len(added):
                with self._sessions() as session:
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
            if len(gone) and index_kind(kind).deletes_in_place:
                # Otherwise tombstones, below. faiss's stub types remove_ids as IDSelector-only; its Python wrapper
                # also takes an int64 id array (faiss/class_wrappers.py, replacement_remove_ids).
                index.remove_ids(np.ascontiguousarray(gone, dtype=np.int64))  # type: ignore[arg-type]
            if doc_map is None:  # unknown in memory: the snapshot's documents and those of the replayed rows
                doc_map = with_documents(None, snap_ids, snap_docs)
                for pairs in added_docs:
                    doc_map = with_documents(doc_map, pairs[:, 0], pairs[:, 1])
            doc_map = with_documents(doc_map, gone, NO_DOCUMENT)  # tombstones where not deleted in place
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
        self.start_rebuild(kind or self.policy.kind_for(self.vectors.ntotal))
        self.wait_for_rebuild()
        return self.vectors.kind
