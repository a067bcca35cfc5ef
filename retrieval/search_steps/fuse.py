"""One ordering from the rankings the mode ran: a single ranking as it is, both by reciprocal rank fusion
(which needs no common score scale between cosine and BM25)."""

from __future__ import annotations

from retrieval.fusion import reciprocal_rank_fusion
from retrieval.search_steps.ranking import Ranking, SearchMode

Fused = list[tuple[int, float]]
"""(chunk id, fused score), best first: what diversification walks."""


def fuse(
    mode: SearchMode,
    dense: Ranking,
    keyword: Ranking,
    *,
    dense_weight: float,
    keyword_weight: float,
    rrf_k: int,
) -> Fused:
    """The candidates in fused order; single-ranking modes keep that ranking's own scores."""
    if mode == "dense":
        return [(i, dense.scores[i]) for i in dense.ids]
    if mode == "keyword":
        return [(i, keyword.scores[i]) for i in keyword.ids]
    return reciprocal_rank_fusion([(dense.ids, dense_weight), (keyword.ids, keyword_weight)], rrf_k=rrf_k)
