"""What the two rankings hand to fusion and to the hits: candidate ids best first, with their scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SearchMode = Literal["hybrid", "dense", "keyword"]
MODES: tuple[str, ...] = ("hybrid", "dense", "keyword")


@dataclass(frozen=True)
class Ranking:
    """One ranking's candidates (dense: cosine, keyword: BM25); empty when the mode does not run it."""

    ids: list[int] = field(default_factory=list)  # best first, each once
    scores: dict[int, float] = field(default_factory=dict)

    def ranks(self) -> dict[int, int]:
        """Chunk id -> its place in this ranking, from 1 (what a hit reports as rank_dense/rank_keyword)."""
        return {c: n for n, c in enumerate(self.ids, start=1)}
