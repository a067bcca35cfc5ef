"""Choosing the k hits from the fused list: rows are read a window at a time (a few more than still needed),
so the authoritative access check and the row reads stay proportional to k, not to the candidate depth.

Within each window, candidates that duplicate an already chosen hit go, then `retrieval.diversity` picks
(near-duplicate suppression, optional MMR) among the rest, in fused order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from retrieval.diversity import diversify
from retrieval.search_steps.fuse import Fused
from retrieval.search_steps.rows import ChunkRow

RowReader = Callable[[list[int]], dict[int, ChunkRow]]
"""Chunk ids -> the rows among them that exist and are readable now (`rows.ChunkRows.read`, bound)."""


@dataclass(frozen=True)
class Chosen:
    """One kept candidate, in the order it was kept (best first)."""

    chunk_id: int
    fused_score: float
    row: ChunkRow


def choose(
    fused: Fused,
    k: int,
    read: RowReader,
    *,
    duplicate_threshold: float,
    mmr_lambda: float | None,
) -> list[Chosen]:
    """Up to k readable, mutually distinct candidates, walking `fused` in order."""
    chosen: list[Chosen] = []
    kept_vectors: list[np.ndarray] = []
    start = 0
    batch = k + max(8, k // 2)
    while start < len(fused) and len(chosen) < k:
        window = fused[start : start + batch]
        start += batch
        rows = read([c for c, _ in window])
        ordered = [(c, s) for c, s in window if c in rows]
        if not ordered:
            continue
        vecs = np.stack([rows[c].vector for c, _ in ordered])
        scores = np.array([s for _, s in ordered], dtype=np.float32)
        if kept_vectors:
            # Candidates that duplicate an already kept hit go; then diversify within the window.
            prior = np.stack(kept_vectors)
            fresh = (vecs @ prior.T).max(axis=1) < duplicate_threshold
            ordered = [o for o, f in zip(ordered, fresh, strict=True) if f]
            vecs, scores = vecs[fresh], scores[fresh]
        picked = diversify(
            scores,
            vecs,
            k - len(chosen),
            duplicate_threshold=duplicate_threshold,
            mmr_lambda=mmr_lambda,
        )
        for j in picked:
            chunk_id, fused_score = ordered[j]
            row = rows[chunk_id]
            kept_vectors.append(row.vector)
            chosen.append(Chosen(chunk_id, fused_score, row))
    return chosen
