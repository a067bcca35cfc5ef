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
import threading
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

POINTER = "CURRENT"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class IndexPointer:
    file: str
    generation: int
    dim: int
    kind: str
    docs: str | None = None


class VectorIndexError(RuntimeError):
    pass


def new_flat_index(dim: int) -> faiss.Index:
    """Exact inner-product search over normalized vectors (cosine), with removable ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


NO_DOCUMENT = -1


class VectorIndex:
    """A FAISS index whose ids are chunk ids, plus each chunk's document id (for access-control bitmaps).

    Thread-safe for one writer and many readers. Kinds that cannot delete in place (HNSW) keep removed ids
    as tombstones: their document becomes NO_DOCUMENT, so every search excludes them until a rebuild.
    """

    def __init__(self, index_dir: Path, dim: int) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.index_dir = Path(index_dir)
        self.dim = dim
        self._lock = threading.RLock()
        self._index: faiss.Index = new_flat_index(dim)
        self._loaded: IndexPointer | None = None
        self.kind = "flat"
        self.dirty = False
        # _doc_of[chunk_id] = document id, NO_DOCUMENT when absent or tombstoned; None = not known yet.
        self._doc_of: np.ndarray | None = np.full(0, NO_DOCUMENT, dtype=np.int64)
        self.tombstones = 0
        self.built_size = 0  # entries when an ANN index was last (re)built; growth past it triggers a rebuild
        self.version = 0  # bumped on every in-memory change, so readers can cache derived bitmaps

    # --- persistence -------------------------------------------------------------------------------
    def read_pointer(self) -> IndexPointer | None:
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
        return self._loaded.generation if self._loaded else None

    @property
    def documents_known(self) -> bool:
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
            tombstones = int(index.ntotal) - int(np.count_nonzero(docs != NO_DOCUMENT))
            built = int(raw[2][0]) if raw.shape[0] > 2 and raw.shape[1] else 0
        with self._lock:
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
        """Readers call this before searching so that another process's save becomes visible."""
        pointer = self.read_pointer()
        if pointer is None or pointer == self._loaded:
            return False
        return self.load()

    def save(self, generation: int) -> Path:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        name = f"vectors-{generation}.faiss"
        docs_name = f"docs-{generation}.npy"
        with self._lock:
            data = faiss.serialize_index(self._index)
            kind = self.kind
            docs_blob = self._docs_blob()
        target = self.index_dir / name
        atomic_write_bytes(target, data.tobytes())
        if docs_blob is not None:
            atomic_write_bytes(self.index_dir / docs_name, docs_blob)
        pointer = IndexPointer(name, generation, self.dim, kind, docs_name if docs_blob is not None else None)
        atomic_write_bytes(self.index_dir / POINTER, json.dumps(pointer.__dict__).encode())
        with self._lock:
            self._loaded = pointer
            self.dirty = False
        for old in [*self.index_dir.glob("vectors-*.faiss"), *self.index_dir.glob("docs-*.npy")]:
            if old.name not in (name, docs_name):
                old.unlink(missing_ok=True)
        return target

    def _docs_blob(self) -> bytes | None:
        if self._doc_of is None:
            return None
        ids = self._all_ids()
        docs = self._doc_of[ids] if len(ids) else np.empty(0, dtype=np.int64)
        meta = np.zeros(len(ids), dtype=np.int64)
        if len(ids):
            meta[0] = self.built_size
        buffer = io.BytesIO()
        np.save(buffer, np.stack([ids, docs, meta]), allow_pickle=False)
        return buffer.getvalue()

    # --- mutation ------------------------------------------------------------------------------------
    def _ensure_capacity(self, max_id: int) -> None:
        assert self._doc_of is not None
        if max_id >= len(self._doc_of):
            grown = np.full(max(max_id + 1, 2 * len(self._doc_of)), NO_DOCUMENT, dtype=np.int64)
            grown[: len(self._doc_of)] = self._doc_of
            self._doc_of = grown

    def add(self, ids: np.ndarray, vectors: np.ndarray, documents: np.ndarray | None = None) -> None:
        """Add vectors under chunk ids; `documents` gives each chunk's document id (needed for ACL bitmaps)."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            self._index.add_with_ids(vectors, ids)
            if self._doc_of is not None:
                if documents is None:
                    self._doc_of = None  # unknown now: the store refills it from SQL
                else:
                    self._ensure_capacity(int(ids.max()))
                    self._doc_of[ids] = np.asarray(documents, dtype=np.int64)
            self.dirty = True
            self.version += 1

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            if self.kind == "hnsw":
                if self._doc_of is None:
                    raise VectorIndexError("an HNSW index needs its chunk->document map to delete entries")
                known = ids[ids < len(self._doc_of)]
                known = known[self._doc_of[known] != NO_DOCUMENT]
                self._doc_of[known] = NO_DOCUMENT
                self.tombstones += len(known)
                removed = len(known)
            else:
                removed = int(self._index.remove_ids(ids))
                if self._doc_of is not None:
                    known = ids[ids < len(self._doc_of)]
                    self._doc_of[known] = NO_DOCUMENT
            self.dirty = True
            self.version += 1
        return removed

    def set_documents(self, ids: np.ndarray, document_id: int) -> None:
        """Chunks that moved to another document (a duplicate inherited them when its original was deleted)."""
        if len(ids) == 0:
            return
        with self._lock:
            if self._doc_of is not None:
                ids = np.asarray(ids, dtype=np.int64)
                self._ensure_capacity(int(ids.max()))
                self._doc_of[ids] = document_id
                self.dirty = True
                self.version += 1

    def fill_documents(self, ids: np.ndarray, documents: np.ndarray) -> None:
        """Set the whole chunk->document map (after loading an index saved without one)."""
        with self._lock:
            self._doc_of = np.full(0, NO_DOCUMENT, dtype=np.int64)
            if len(ids):
                self._ensure_capacity(int(np.max(ids)))
                self._doc_of[np.asarray(ids, dtype=np.int64)] = np.asarray(documents, dtype=np.int64)
            self.dirty = True
            self.version += 1

    def replace(self, index: faiss.Index, kind: str, documents: np.ndarray | None = None) -> None:
        """Swap in a rebuilt index; `documents` is its chunk->document map (ids from the index itself)."""
        with self._lock:
            self._index = index
            self.kind = kind
            self.tombstones = 0
            self.built_size = int(index.ntotal)
            if documents is not None:
                ids = self._all_ids()
                self._doc_of = np.full(0, NO_DOCUMENT, dtype=np.int64)
                if len(ids):
                    self._ensure_capacity(int(ids.max()))
                    self._doc_of[ids] = documents
            self.dirty = True
            self.version += 1

    # --- reading -------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Live entries (tombstones excluded)."""
        return int(self._index.ntotal) - self.tombstones

    def _all_ids(self) -> np.ndarray:
        if not self._index.ntotal:
            return np.empty(0, dtype=np.int64)
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def ids(self) -> np.ndarray:
        """Live chunk ids in the index."""
        with self._lock:
            ids = self._all_ids()
            if self.tombstones and self._doc_of is not None and len(ids):
                ids = ids[self._doc_of[ids] != NO_DOCUMENT]
            return ids

    def document_map(self) -> np.ndarray | None:
        """chunk id -> document id (NO_DOCUMENT for absent/tombstoned); None while unknown."""
        return self._doc_of

    def search(
        self, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            index = self._index
        if index.ntotal == 0:
            n = queries.shape[0]
            return np.empty((n, 0), dtype=np.float32), np.empty((n, 0), dtype=np.int64)
        k = min(k, int(index.ntotal))
        scores, ids = index.search(queries, k, params=params) if params is not None else index.search(queries, k)
        return scores, ids

    @property
    def faiss_index(self) -> faiss.Index:
        return self._index
