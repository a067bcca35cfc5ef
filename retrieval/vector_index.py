"""The FAISS index on local disk, keyed by chunk id, saved atomically with the database generation it reflects.

Layout of `index_dir`:
    CURRENT                  JSON pointer {"file": ..., "generation": ..., "dim": ..., "kind": ...}
    vectors-<generation>.faiss

A save writes a new file (temp name, fsync, rename) and then swaps CURRENT the same way, so a reader or a
crash only ever sees a complete index. Readers compare CURRENT with what they loaded and reload when it moved.
"""

from __future__ import annotations

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


class VectorIndexError(RuntimeError):
    pass


def new_flat_index(dim: int) -> faiss.Index:
    """Exact inner-product search over normalized vectors (cosine), with removable ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class VectorIndex:
    """A FAISS index whose ids are chunk ids. Thread-safe for one writer and many readers."""

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

    # --- persistence -------------------------------------------------------------------------------
    def read_pointer(self) -> IndexPointer | None:
        path = self.index_dir / POINTER
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return IndexPointer(raw["file"], int(raw["generation"]), int(raw["dim"]), raw.get("kind", "flat"))
        except (ValueError, KeyError) as exc:
            raise VectorIndexError(f"corrupt index pointer {path}: {exc}") from exc

    @property
    def generation(self) -> int | None:
        return self._loaded.generation if self._loaded else None

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
        with self._lock:
            self._index = index
            self._loaded = pointer
            self.kind = pointer.kind
            self.dirty = False
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
        with self._lock:
            data = faiss.serialize_index(self._index)
            kind = self.kind
        target = self.index_dir / name
        atomic_write_bytes(target, data.tobytes())
        pointer = IndexPointer(name, generation, self.dim, kind)
        atomic_write_bytes(self.index_dir / POINTER, json.dumps(pointer.__dict__).encode())
        with self._lock:
            self._loaded = pointer
            self.dirty = False
        for old in self.index_dir.glob("vectors-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return target

    # --- mutation ------------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        with self._lock:
            self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
            self.dirty = True

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        with self._lock:
            removed = int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))
            self.dirty = True
        return removed

    def replace(self, index: faiss.Index, kind: str) -> None:
        with self._lock:
            self._index = index
            self.kind = kind
            self.dirty = True

    # --- reading -------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64) if self.ntotal else np.empty(
                0, dtype=np.int64
            )

    def search(
        self, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            index = self._index
        if index.ntotal == 0:
            n = queries.shape[0]
            return np.empty((n, 0), dtype=np.float32), np.empty((n, 0), dtype=np.int64)
        k = min(k, index.ntotal)
        scores, ids = index.search(queries, k, params=params) if params is not None else index.search(queries, k)
        return scores, ids

    @property
    def faiss_index(self) -> faiss.Index:
        return self._index
