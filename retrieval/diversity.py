"""Keeping the top results varied: near-duplicate suppression and optional maximal marginal relevance.

Overlapping chunks, the same paragraph quoted in three reports, or a page ingested twice under different
names would otherwise fill the first results with one passage.
"""

from __future__ import annotations

import numpy as np


def diversify(
    scores: np.ndarray,
    vectors: np.ndarray,
    k: int,
    *,
    duplicate_threshold: float = 0.95,
    mmr_lambda: float | None = None,
) -> list[int]:
    """Indices (into `scores`/`vectors`, which are in ranked order) of up to k results to keep.

    A candidate whose cosine similarity to an already kept one reaches `duplicate_threshold` is dropped.
    With `mmr_lambda` set, the choice is greedy MMR: lambda * relevance - (1 - lambda) * max similarity,
    relevance being `scores` rescaled to [0, 1].
    """
    n = len(scores)
    if n == 0 or k <= 0:
        return []
    vectors = np.asarray(vectors, dtype=np.float32)
    similarity = vectors @ vectors.T
    kept: list[int] = []
    if mmr_lambda is None:
        for i in range(n):
            if kept and float(similarity[i, kept].max()) >= duplicate_threshold:
                continue
            kept.append(i)
            if len(kept) == k:
                break
        return kept
    span = float(scores.max() - scores.min()) or 1.0
    relevance = (scores - scores.min()) / span
    remaining = list(range(n))
    while remaining and len(kept) < k:
        if kept:
            max_sim = similarity[np.ix_(remaining, kept)].max(axis=1)
        else:
            max_sim = np.zeros(len(remaining), dtype=np.float32)
        value = mmr_lambda * relevance[remaining] - (1 - mmr_lambda) * max_sim
        order = np.argsort(-value, kind="stable")
        chosen = None
        for j in order:
            if max_sim[j] < duplicate_threshold:
                chosen = remaining[int(j)]
                break
        if chosen is None:
            break
        kept.append(chosen)
        remaining.remove(chosen)
    return kept
