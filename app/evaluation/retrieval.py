"""`sparq eval retrieval`: ingest a BEIR folder into a scratch store, search every query, score the ranking.

A document's score is its best chunk's score. The timed call is the whole `Assistant.search` (query
embedding, both rankings, fusion, access check, reading the hits) at the depth the metrics need.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.assistant import Assistant
from app.config import Settings
from app.evaluation.beir import load_beir
from app.evaluation.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k
from ingestion.sources import TextRecord

COLLECTION = "beir"
DOC_DEPTH = 100
CHUNK_DEPTH = 300  # chunks fetched per query so that at least ~100 distinct documents are ranked


@dataclass
class RetrievalReport:
    """The retrieval metrics of one run, in the documented JSON keys; `details` says what was measured."""

    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    mrr_at_10: float
    latency_ms_p50: float
    latency_ms_p95: float
    mode: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Exactly the documented JSON keys; `details` (sizes, timings, settings) is printed separately."""
        return {
            "ndcg_at_10": round(self.ndcg_at_10, 4),
            "recall_at_10": round(self.recall_at_10, 4),
            "recall_at_100": round(self.recall_at_100, 4),
            "mrr_at_10": round(self.mrr_at_10, 4),
            "latency_ms_p50": round(self.latency_ms_p50, 2),
            "latency_ms_p95": round(self.latency_ms_p95, 2),
            "mode": self.mode,
        }


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def evaluate_beir(
    root: Path,
    *,
    mode: str = "hybrid",
    limit_queries: int | None = None,
    split: str = "test",
    store_dir: Path | None = None,
    embedding_model: str | None = None,
    progress: bool = False,
    settings_overrides: dict | None = None,
    sample_queries: int | None = None,
) -> RetrievalReport:
    """Ingest a BEIR corpus (into a temporary store unless `store_dir`) and score `mode` search on its
    queries, so a retrieval change is measured on a public benchmark, not guessed."""
    if mode not in ("hybrid", "dense", "keyword"):
        raise ValueError(f"mode must be hybrid, dense or keyword, not {mode!r}")
    data = load_beir(Path(root), split=split)
    query_ids = list(data.qrels)
    if limit_queries:
        query_ids = query_ids[:limit_queries]
    if sample_queries and sample_queries < len(query_ids):
        # A seeded random sample: unlike the first N, it spans the whole set (all SQuAD articles, say).
        chosen = set(random.Random(0).sample(query_ids, sample_queries))
        query_ids = [q for q in query_ids if q in chosen]
    with tempfile.TemporaryDirectory(prefix="sparq-eval-") as tmp:
        data_dir = Path(store_dir) if store_dir else Path(tmp)
        settings = Settings(data_dir=data_dir, embedding_model=embedding_model, **(settings_overrides or {}))
        with Assistant(settings) as assistant:
            started = time.perf_counter()
            summary = assistant.ingest_records(
                (TextRecord(d.doc_id, d.text, d.title) for d in data.corpus()),
                collection=COLLECTION,
                total=data.corpus_size,
            )
            ingest_s = time.perf_counter() - started
            if summary.files_failed:
                raise ValueError(
                    f"{summary.files_failed} corpus documents failed to ingest: {summary.failures[:3]}"
                )
            _say(
                progress,
                f"ingested {data.corpus_size} documents ({summary.files_new} new, "
                f"{summary.chunks_added} chunks added) in {ingest_s:.1f} s; {len(query_ids)} queries",
            )
            ndcg = r10 = r100 = mrr = 0.0
            latencies: list[float] = []
            assistant.search("warm up", k=10, mode=mode)
            for n, qid in enumerate(query_ids, start=1):
                t0 = time.perf_counter()
                hits = assistant.search(data.queries[qid], k=CHUNK_DEPTH, mode=mode)
                latencies.append(1000 * (time.perf_counter() - t0))
                ranked: list[str] = []
                seen: set[str] = set()
                for h in hits:  # best chunk first, so a document's first hit is its best chunk
                    if h.path not in seen:
                        seen.add(h.path)
                        ranked.append(h.path)
                relevant = data.qrels[qid]
                ndcg += ndcg_at_k(ranked, relevant, 10)
                r10 += recall_at_k(ranked, relevant, 10)
                r100 += recall_at_k(ranked, relevant, DOC_DEPTH)
                mrr += mrr_at_k(ranked, relevant, 10)
                if progress and n % 100 == 0:
                    _say(progress, f"  {n}/{len(query_ids)} queries, nDCG@10 so far {ndcg / n:.4f}")
            nq = max(1, len(query_ids))
            details = {
                "queries": len(query_ids),
                "corpus_documents": data.corpus_size,
                "chunks": assistant.store.chunk_count(),
                "ingest_seconds": round(ingest_s, 1),
                "embedding_model": assistant.embedder.name,
                "chunk_depth": CHUNK_DEPTH,
                "index_kind": assistant.store.vectors.kind,
                "sampled": bool(sample_queries),
                "dense_weight": settings.dense_weight,
                "keyword_weight": settings.keyword_weight,
                "rrf_k": settings.rrf_k,
            }
        return RetrievalReport(
            ndcg / nq,
            r10 / nq,
            r100 / nq,
            mrr / nq,
            percentile(latencies, 50),
            percentile(latencies, 95),
            mode,
            details,
        )
