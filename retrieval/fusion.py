"""Reciprocal rank fusion: merging the dense and keyword rankings without comparing their score scales.

score(d) = sum over rankings r of weight_r / (rrf_k + rank_r(d)), rank starting at 1 (Cormack et al., 2009).
"""

from __future__ import annotations

from collections.abc import Sequence


def reciprocal_rank_fusion(
    rankings: Sequence[tuple[Sequence[int], float]], *, rrf_k: int = 60
) -> list[tuple[int, float]]:
    """Fuse ranked id lists, each with its weight; returns (id, fused score), best first, ties by first seen."""
    if rrf_k < 0:
        raise ValueError("rrf_k must be >= 0")
    scores: dict[int, float] = {}
    for ids, weight in rankings:
        if weight == 0:
            continue
        for rank, item in enumerate(ids, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
    order = {item: n for n, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
