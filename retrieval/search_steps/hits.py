"""The search's answer: each chosen chunk with where it comes from and how every ranking placed it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from retrieval.search_steps.diversify import Chosen
from retrieval.search_steps.ranking import Ranking


@dataclass
class Hit:
    """One retrieved chunk with where it comes from and how each ranking scored it (None: not ranked)."""

    chunk_id: int
    document_id: int
    collection: str
    path: str
    title: str | None
    text: str
    page: int | None
    slide: int | None
    sheet: str | None
    heading_path: str | None
    mime: str
    score_dense: float | None
    score_keyword: float | None
    score_fused: float
    rank: int
    rank_dense: int | None
    rank_keyword: int | None
    ocr_confidence: float | None = None  # read by OCR: the engine's mean word confidence (0-100)

    def to_dict(self) -> dict:
        """The hit as plain data, for JSON answers and logs."""
        return asdict(self)


def build_hits(chosen: list[Chosen], qvec: np.ndarray | None, dense: Ranking, keyword: Ranking) -> list[Hit]:
    """Hits in chosen order; the dense score is the exact cosine to the stored embedding (None without a
    query vector, i.e. keyword mode), so it reads the same whichever index kind found the chunk."""
    rank_dense = dense.ranks()
    rank_keyword = keyword.ranks()
    hits: list[Hit] = []
    for rank, c in enumerate(chosen, start=1):
        row = c.row
        hits.append(
            Hit(
                chunk_id=c.chunk_id,
                document_id=row.document_id,
                collection=row.collection,
                path=row.path,
                title=row.title,
                text=row.text,
                page=row.page,
                slide=row.slide,
                sheet=row.sheet,
                heading_path=row.heading_path,
                mime=row.mime,
                score_dense=float(row.vector @ qvec) if qvec is not None else None,
                score_keyword=keyword.scores.get(c.chunk_id),
                score_fused=float(c.fused_score),
                rank=rank,
                rank_dense=rank_dense.get(c.chunk_id),
                rank_keyword=rank_keyword.get(c.chunk_id),
                ocr_confidence=row.ocr_confidence,
            )
        )
    return hits
