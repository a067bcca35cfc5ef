"""`sparq eval qa`: the full ask path (retrieval included) on a SQuAD-format file, in a scratch store."""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.assistant import Assistant
from app.config import Settings
from app.evaluation.qa_metrics import score
from ingestion.sources import TextRecord
from model.prompting import language_of


@dataclass(frozen=True)
class QAItem:
    qid: str
    question: str
    answers: list[str]
    paragraph_key: str


def read_squad(path: Path) -> tuple[list[TextRecord], list[QAItem]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    records: list[TextRecord] = []
    items: list[QAItem] = []
    for a, article in enumerate(data["data"]):
        title = article.get("title") or f"article {a}"
        for p, paragraph in enumerate(article["paragraphs"]):
            key = f"{a:04d}-{p:03d}"
            records.append(TextRecord(key, paragraph["context"], title))
            for qa in paragraph["qas"]:
                answers = [x["text"] for x in qa.get("answers", []) if x.get("text")]
                if answers:
                    items.append(QAItem(str(qa["id"]), qa["question"], answers, key))
    return records, items


def evaluate_qa(
    squad_file: Path,
    *,
    limit: int = 200,
    settings: Settings | None = None,
    llm: Any = None,
    embedder: Any = None,
    store_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    records, items = read_squad(squad_file)
    items = items[:limit]
    if not items:
        raise ValueError(f"{squad_file} has no answerable questions")
    base = settings or Settings()
    if llm is None:
        # The model (and the default MoE's build cache) belongs to the real data dir, not the scratch store.
        llm = Assistant(base).llm
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = store_dir or Path(tmp)
        scratch = base.model_copy(update={"data_dir": data_dir, "database_url": None})
        assistant = Assistant(scratch, llm=llm)
        if embedder is not None:
            assistant._embedder = embedder
        assistant.ingest_records(records, collection="eval", total=len(records))
        rows = []
        for n, item in enumerate(items, start=1):
            answer = assistant.ask(item.question)
            language = language_of(item.question)
            metrics = score(answer.text, item.answers, language)
            hit = any(p["path"] == item.paragraph_key for p in answer.passages)
            rows.append((metrics, hit, answer))
            if progress:
                progress(n, len(items))
        info = assistant.llm.info
        assistant.close()
    n = len(rows)
    return {
        "n": n,
        "exact_match": sum(m["exact_match"] for m, _, _ in rows) / n,
        "f1": sum(m["f1"] for m, _, _ in rows) / n,
        "contains": sum(m["contains"] for m, _, _ in rows) / n,
        "retrieval_hit_at_k": sum(h for _, h, _ in rows) / n,
        "mean_cost_usd": statistics.fmean(a.cost.total_usd for _, _, a in rows),
        "mean_latency_ms": statistics.fmean(a.timings_ms.get("total", 0.0) for _, _, a in rows),
        "tokens_per_second": statistics.fmean(a.cost.tokens_per_second for _, _, a in rows),
        "mean_active_params_per_token": statistics.fmean(a.cost.active_params_per_token for _, _, a in rows),
        "model": info.name,
        "total_params": info.total_params,
        "k": base.ask_passages,
    }
