"""Choosing the fusion weights and RRF constant on a training split, never on the test queries.

Each query is searched once per ranking (dense, keyword) at full depth; every (dense_weight,
keyword_weight, rrf_k) candidate is then scored by fusing those stored rankings exactly as
`retrieval.fusion.reciprocal_rank_fusion` does at query time, so a grid costs no extra searches.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.assistant import Assistant
from app.config import Settings
from app.evaluation.beir import load_beir
from app.evaluation.metrics import ndcg_at_k
from app.evaluation.retrieval import CHUNK_DEPTH, COLLECTION
from ingestion.sources import TextRecord
from retrieval.fusion import reciprocal_rank_fusion

DENSE_WEIGHTS = (1.0,)
KEYWORD_WEIGHTS = (0.6, 0.8, 1.0, 1.2, 1.5, 2.0)
RRF_KS = (10, 20, 40, 60, 100)


@dataclass(frozen=True)
class FusionChoice:
    """The fusion weights and RRF constant that scored best on the training split, with that score."""

    dense_weight: float
    keyword_weight: float
    rrf_k: int
    ndcg_at_10: float
    queries: int
    split: str


def _doc_ranking(chunk_ids: list[int], doc_of: dict[int, str]) -> list[str]:
    ranked: list[str] = []
    seen: set[str] = set()
    for c in chunk_ids:
        d = doc_of[c]
        if d not in seen:
            seen.add(d)
            ranked.append(d)
    return ranked


def tune_fusion(
    root: Path,
    *,
    split: str = "train",
    store_dir: Path | None = None,
    embedding_model: str | None = None,
    limit_queries: int | None = None,
) -> list[FusionChoice]:
    """All grid points with their nDCG@10 on `split`, best first."""
    data = load_beir(Path(root), split=split)
    qids = list(data.qrels)[:limit_queries] if limit_queries else list(data.qrels)
    runs: list[tuple[str, list[int], list[int]]] = []
    doc_of: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="sparq-tune-") as tmp:
        settings = Settings(
            data_dir=Path(store_dir) if store_dir else Path(tmp), embedding_model=embedding_model
        )
        with Assistant(settings) as assistant:
            assistant.ingest_records(
                (TextRecord(d.doc_id, d.text, d.title) for d in data.corpus()),
                collection=COLLECTION,
                total=data.corpus_size,
            )
            for n, qid in enumerate(qids, start=1):
                dense = assistant.search(data.queries[qid], k=CHUNK_DEPTH, mode="dense")
                keyword = assistant.search(data.queries[qid], k=CHUNK_DEPTH, mode="keyword")
                for h in (*dense, *keyword):
                    doc_of[h.chunk_id] = h.path
                runs.append((qid, [h.chunk_id for h in dense], [h.chunk_id for h in keyword]))
                if n % 100 == 0:
                    print(f"  {n}/{len(qids)} {split} queries searched", file=sys.stderr, flush=True)
    choices = []
    for wd, wk, rrf_k in itertools.product(DENSE_WEIGHTS, KEYWORD_WEIGHTS, RRF_KS):
        total = 0.0
        for qid, dense_ids, keyword_ids in runs:
            fused = reciprocal_rank_fusion([(dense_ids, wd), (keyword_ids, wk)], rrf_k=rrf_k)
            total += ndcg_at_k(_doc_ranking([c for c, _ in fused], doc_of), data.qrels[qid], 10)
        choices.append(FusionChoice(wd, wk, rrf_k, total / max(1, len(runs)), len(runs), split))
    return sorted(choices, key=lambda c: -c.ndcg_at_10)
