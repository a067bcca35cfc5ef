"""The FAISS index on local disk, keyed by chunk id, saved atomically with the database generation it reflects.

Layout of `index_dir`:
    CURRENT                  JSON pointer {"file": ..., "generation": ..., "dim": ..., "kind": ..., "docs": ...}
    vectors-<generation>.faiss
    docs-<generation>.npy    (chunk id, document id) pairs of the same index, for access-control bitmaps

A save writes a new file (temp name, fsync, rename) and then swaps CURRENT the same way, so a reader or a
crash only ever sees a complete index. Readers compare CURRENT with what they loaded and reload when it moved.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import faiss
import numpy as np

from retrieval.ann import IndexKind
from retrieval.index_kinds import index_kind
from retrieval.rwlock import ReadWriteLock

POINTER = "CURRENT"


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (the folder's entry, not just the file's data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` so that a crash leaves the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True)
class IndexPointer:
    """What CURRENT says: which index file (and chunk->document map) holds which generation, dim and kind."""

    file: str
    generation: int
    dim: int
    kind: IndexKind
    docs: str | None = None


class VectorIndexError(RuntimeError):
    """The index on disk is unreadable, or does not fit the configured embedding model."""


def new_flat_index(dim: int) -> faiss.Index:
    """Exact inner-product search over normalized vectors (cosine), with removable ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


NO_DOCUMENT = -1
HNSW_ADD_BATCH = 256  # HNSW inserts are slow: add in slices so searches wait for one slice, not a whole batch

SearchPlan = Callable[[IndexKind, int], tuple[int, "faiss.SearchParameters | None"]]
"""(index kind, live entries) -> (k, search parameters): chosen under the lock, so they fit the index searched."""


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def index_ids(index: faiss.Index) -> np.ndarray:
    """The ids an IndexIDMap2 holds (tombstones included), in its order."""
    if not index.ntotal:
        return np.empty(0, dtype=np.int64)
    # Every index here is built as an IndexIDMap2 (retrieval/ann.py); read_index hands back that subclass.
    return faiss.vector_to_array(cast(faiss.IndexIDMap, index).id_map).astype(np.int64)


def with_documents(doc_of: np.ndarray | None, ids: np.ndarray, documents: np.ndarray | int) -> np.ndarray:
    """A new read-only chunk->document map: `doc_of` (None: empty) grown to hold `ids`, with theirs set."""
    doc_of = np.full(0, NO_DOCUMENT, dtype=np.int64) if doc_of is None else doc_of
    ids = np.asarray(ids, dtype=np.int64)
    size = max(len(doc_of), int(ids.max()) + 1) if len(ids) else len(doc_of)
    grown = np.full(size, NO_DOCUMENT, dtype=np.int64)
    grown[: len(doc_of)] = doc_of
    grown[ids] = documents
    return _frozen(grown)


class VectorIndex:
    """A FAISS index whose ids are chunk ids, plus each chunk's document id (for access-control bitmaps).

    Thread-safe: searches share a readers-writer lock, add/remove/replace/load take it exclusively (FAISS must
    not be searched while it is mutated). The chunk->document map is copy-on-write: `document_map()` hands
    out a read-only snapshot that no later write changes, so bitmaps built from it are never torn.
    Kinds that cannot delete in place (HNSW, IVF behind the id map) keep removed ids as tombstones: their
    document becomes NO_DOCUMENT, so every search excludes them until a rebuild.
    """

    def __init__(self, index_dir: Path, dim: int) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.index_dir = Path(index_dir)
        self.dim = dim
        self._lock = ReadWriteLock()
        self._index: faiss.Index = new_flat_index(dim)
        self._loaded: IndexPointer | None = None
        self.kind: IndexKind = "flat"
        self.dirty = False
        # _doc_of[chunk_id] = document id, NO_DOCUMENT when absent or tombstoned; None = not known yet.
        # Never written in place: every change installs a new read-only array.
        self._doc_of: np.ndarray | None = _frozen(np.full(0, NO_DOCUMENT, dtype=np.int64))
        self.tombstones = 0
        self.built_size = 0  # entries when an ANN index was last (re)built; growth past it triggers a rebuild
        self.version = 0  # bumped on every in-memory change, so readers can cache derived bitmaps

    # --- persistence -------------------------------------------------------------------------------
    def read_pointer(self) -> IndexPointer | None:
        """What CURRENT points to now (None: nothing saved yet); read fresh to notice another process's save."""
        path = self.index_dir / POINTER
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return IndexPointer(
                raw["file"], int(raw["generation"]), int(raw["dim"]), raw.get("kind", "flat"), raw.get("docs")
            )
        except (ValueError, KeyError) as exc:
            raise VectorIndexError(f"corrupt index pointer {path}: {exc}") from exc

    @property
    def generation(self) -> int | None:
        """The generation of the file this index was last loaded from or saved to (None: neither)."""
        loaded = self._loaded
        return loaded.generation if loaded else None

    @property
    def loaded_pointer(self) -> IndexPointer | None:
        """The pointer of the file last loaded or saved: compared with CURRENT to see whether it moved."""
        return self._loaded

    @property
    def documents_known(self) -> bool:
        """Whether the chunk->document map is known; access bitmaps cannot be built without it."""
        return self._doc_of is not None

    def load(self) -> bool:
        """Load the index CURRENT points to; False when none was saved yet."""
        pointer = self.read_pointer()
        if pointer is None:
            return False
        if pointer.dim != self.dim:
            raise VectorIndexError(
                f"index on disk has dimension {pointer.dim}, the embedding model produces {self.dim}; "
                "re-embed the collection or point SPARQ_EMBEDDING_MODEL at the original model"
            )
        file = self.index_dir / pointer.file
        try:
            index = faiss.read_index(str(file))
        except RuntimeError as exc:
            raise VectorIndexError(f"cannot read FAISS index {file}: {exc}") from exc
        doc_of: np.ndarray | None = None
        tombstones = 0
        built = 0
        if pointer.docs:
            docs_file = self.index_dir / pointer.docs
            try:
                raw = np.load(docs_file, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise VectorIndexError(f"cannot read chunk->document map {docs_file}: {exc}") from exc
            ids, docs = raw[0], raw[1]
            doc_of = np.full(int(ids.max()) + 1 if len(ids) else 0, NO_DOCUMENT, dtype=np.int64)
            doc_of[ids] = docs
            doc_of = _frozen(doc_of)
            tombstones = int(index.ntotal) - int(np.count_nonzero(docs != NO_DOCUMENT))
            built = int(raw[2][0]) if raw.shape[0] > 2 and raw.shape[1] else 0
        with self._lock.write():
            self._index = index
            self._loaded = pointer
            self.kind = pointer.kind
            self._doc_of = doc_of
            self.tombstones = tombstones
            self.built_size = built
            self.dirty = False
            self.version += 1
        return True

    def reload_if_changed(self) -> bool:
        """Load the file CURRENT points to when another process saved a new one (discarding this one's
        in-memory state: the store decides when that is safe, see DocumentStore.catch_up)."""
        pointer = self.read_pointer()
        if pointer is None or pointer == self._loaded:
            return False
        return self.load()

    def save(self, generation: int) -> Path:
        """Write the index under `generation`; the caller vouches that it reflects that database state."""
        self.index_dir.mkdir(parents=True, exist_ok=True)
        name = f"vectors-{generation}.faiss"
        docs_name = f"docs-{generation}.npy"
        with self._lock.read():  # shared: searches go on, writers wait until the copy is taken
            data = faiss.serialize_index(self._index)
            kind = self.kind
            docs_blob = self._docs_blob()
            version = self.version
        target = self.index_dir / name
        atomic_write_bytes(target, data.tobytes())
        if docs_blob is not None:
            atomic_write_bytes(self.index_dir / docs_name, docs_blob)
        pointer = IndexPointer(name, generation, self.dim, kind, docs_name if docs_blob is not None else None)
        atomic_write_bytes(self.index_dir / POINTER, json.dumps(pointer.__dict__).encode())
        with self._lock.write():
            self._loaded = pointer
            if self.version == version:  # a change after the copy keeps the index dirty
                self.dirty = False
        for old in [*self.index_dir.glob("vectors-*.faiss"), *self.index_dir.glob("docs-*.npy")]:
            if old.name not in (name, docs_name):
                old.unlink(missing_ok=True)
        return target

    def _docs_blob(self) -> bytes | None:
        doc_of = self._doc_of
        if doc_of is None:
            return None
        ids = self._all_ids()
        docs = doc_of[ids] if len(ids) else np.empty(0, dtype=np.int64)
        meta = np.zeros(len(ids), dtype=np.int64)
        if len(ids):
            meta[0] = self.built_size
        buffer = io.BytesIO()
        np.save(buffer, np.stack([ids, docs, meta]), allow_pickle=False)
        return buffer.getvalue()

    # --- mutation (exclusive) ------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray, documents: np.ndarray | None = None) -> None:
        """Add vectors under chunk ids; `documents` gives each chunk's document id (needed for ACL bitmaps)."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if documents is not None:
            documents = np.asarray(documents, dtype=np.int64)
            if len(documents) != len(ids):
                raise ValueError(f"{len(ids)} ids but {len(documents)} document ids")
        step = HNSW_ADD_BATCH if self.kind == "hnsw" else len(ids)
        for start in range(0, len(ids), step):
            part = slice(start, start + step)
            with self._lock.write():
                self._index.add_with_ids(vectors[part], ids[part])
                if self._doc_of is not None:
                    if documents is None:
                        self._doc_of = None  # unknown now: the store refills it from SQL
                    else:
                        self._doc_of = with_documents(self._doc_of, ids[part], documents[part])
                self.dirty = True
                self.version += 1

    def remove(self, ids: np.ndarray) -> int:
        """Remove chunk ids (tombstoned in a kind that cannot delete in place); returns how many were there."""
        if len(ids) == 0:
            return 0
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock.write():
            doc_of = self._doc_of
            if not index_kind(self.kind).deletes_in_place:
                if doc_of is None:
                    raise VectorIndexError(
                        f"a {self.kind} index needs its chunk->document map to delete entries"
                    )
                known = ids[ids < len(doc_of)]
                known = known[doc_of[known] != NO_DOCUMENT]
                self._doc_of = with_documents(doc_of, known, NO_DOCUMENT)
                self.tombstones += len(known)
                removed = len(known)
            else:
                # faiss's stub types remove_ids as IDSelector-only; its Python wrapper also takes an int64 id
                # array (faiss/class_wrappers.py, replacement_remove_ids).
                removed = int(self._index.remove_ids(ids))  # type: ignore[arg-type]
                if doc_of is not None:
                    self._doc_of = with_documents(doc_of, ids[ids < len(doc_of)], NO_DOCUMENT)
            self.dirty = True
            self.version += 1
        return removed

    def set_documents(self, ids: np.ndarray, document_id: int) -> None:
        """Chunks that moved to another document (a duplicate inherited them when its original was deleted)."""
        if len(ids) == 0:
            return
        ids = np.asarray(ids, dtype=np.int64)
        with self._lock.write():
            if self._doc_of is not None:
                self._doc_of = with_documents(self._doc_of, ids, document_id)
                self.dirty = True
                self.version += 1

    def fill_documents(self, ids: np.ndarray, documents: np.ndarray) -> None:
        """Set the whole chunk->document map (after loading an index saved without one)."""
        ids = np.asarray(ids, dtype=np.int64)
        doc_of = with_documents(None, ids, np.asarray(documents, dtype=np.int64))
        with self._lock.write():
            self._doc_of = doc_of
            self.dirty = True
            self.version += 1

    def replace(
        self,
        index: faiss.Index,
        kind: IndexKind,
        documents: np.ndarray | None = None,
        *,
        built_size: int | None = None,
    ) -> None:
        """Swap in a rebuilt index; `documents` is its chunk->document map (ids from the index itself;
        NO_DOCUMENT marks an entry kept as a tombstone). `built_size`: entries it was built from."""
        doc_of: np.ndarray | None = None
        tombstones = 0
        if documents is not None:
            documents = np.asarray(documents, dtype=np.int64)
            ids = index_ids(index)  # the new index is not shared yet: no lock needed to read it
            doc_of = with_documents(None, ids, documents)
            tombstones = int(np.count_nonzero(documents == NO_DOCUMENT))
        with self._lock.write():
            self._index = index
            self.kind = kind
            self.tombstones = tombstones
            self.built_size = int(index.ntotal) if built_size is None else built_size
            if doc_of is not None:
                self._doc_of = doc_of
            self.dirty = True
            self.version += 1

    # --- reading (shared) ----------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Live entries (tombstones excluded)."""
        with self._lock.read():
            return int(self._index.ntotal) - self.tombstones

    def _all_ids(self) -> np.ndarray:
        return index_ids(self._index)

    def ids(self) -> np.ndarray:
        """Live chunk ids in the index."""
        with self._lock.read():
            ids = self._all_ids()
            doc_of = self._doc_of
            if self.tombstones and doc_of is not None and len(ids):
                ids = ids[doc_of[ids] != NO_DOCUMENT]
            return ids

    def document_map(self) -> np.ndarray | None:
        """chunk id -> document id (NO_DOCUMENT for absent/tombstoned); None while unknown. A read-only
        snapshot: later writes install a new array and never change this one."""
        return self._doc_of

    def search(
        self, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live-or-tombstoned entries (callers exclude tombstones with a selector)."""
        _, scores, ids = self.search_planned(queries, lambda _kind, _n: (k, params))
        return scores, ids

    def search_planned(
        self, queries: np.ndarray, plan: SearchPlan
    ) -> tuple[IndexKind, np.ndarray, np.ndarray]:
        """Search with k and parameters chosen by `plan` for the index actually searched (a rebuild may swap
        flat for HNSW at any moment, and HNSW refuses flat parameters); returns that index's kind too."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock.read():
            index, kind = self._index, self.kind
            total = int(index.ntotal)
            if total == 0:
                n = queries.shape[0]
                return kind, np.empty((n, 0), dtype=np.float32), np.empty((n, 0), dtype=np.int64)
            k, params = plan(kind, total - self.tombstones)
            k = min(k, total)
            scores, ids = (
                index.search(queries, k, params=params) if params is not None else index.search(queries, k)
            )
        return kind, scores, ids

    @property
    def faiss_index(self) -> faiss.Index:
        """The FAISS object itself, for identity and inspection only: searching or changing it directly
        bypasses the lock (use `search`)."""
        return self._index
