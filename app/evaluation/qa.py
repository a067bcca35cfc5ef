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
from model.moe.source_weights import sha256_file
from model.prompting import language_of


@dataclass(frozen=True)
class QAItem:
    """One SQuAD question with its gold answers and the paragraph that holds them."""

    qid: str
    question: str
    answers: list[str]
    paragraph_key: str


def read_squad(path: Path) -> tuple[list[TextRecord], list[QAItem]]:
    """A SQuAD file as paragraphs to ingest and the questions over them that have an answer."""
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
    records_file: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Ask the first ``limit`` questions through the full path and score them.

    ``records_file`` (JSON lines, one per question) makes a long run resumable: questions already
    recorded there by the same model are not asked again, so an interrupted run continues where it
    stopped and the summary covers every recorded question.
    """
    records, items = read_squad(squad_file)
    items = items[:limit]
    if not items:
        raise ValueError(f"{squad_file} has no answerable questions")
    base = settings or Settings()
    if llm is None:
        # The model (and the default MoE's build cache) belongs to the real data dir, not the scratch store.
        llm = Assistant(base).llm
    model_name = llm.info.name
    build = model_build_id(llm.info) if records_file else ""
    done = _read_records(records_file, model_name, build) if records_file else {}
    rows = [done[i.qid] for i in items if i.qid in done]
    todo = [i for i in items if i.qid not in done]
    if progress and rows:
        progress(len(rows), len(items))
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = store_dir or Path(tmp)
            scratch = base.model_copy(update={"data_dir": data_dir, "database_url": None})
            assistant = Assistant(scratch, llm=llm)
            if embedder is not None:
                assistant._embedder = embedder
            try:
                assistant.ingest_records(records, collection="eval", total=len(records))
                for item in todo:
                    row = _ask_one(assistant, item, model_name)
                    if build:
                        row["model_build"] = build
                    rows.append(row)
                    if records_file:
                        with Path(records_file).open("a", encoding="utf-8") as fh:
                            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    if progress:
                        progress(len(rows), len(items))
            finally:
                assistant.close()
    return summarize(rows, model=model_name, total_params=llm.info.total_params, k=base.ask_passages)


def _ask_one(assistant: Assistant, item: QAItem, model_name: str) -> dict[str, Any]:
    answer = assistant.ask(item.question)
    metrics = score(answer.text, item.answers, language_of(item.question))
    return {
        "qid": item.qid,
        "model": model_name,
        "question": item.question,
        "prediction": answer.text,
        "answers": item.answers,
        **metrics,
        "hit": any(p["path"] == item.paragraph_key for p in answer.passages),
        "cost_usd": answer.cost.total_usd,
        "latency_ms": answer.timings_ms.get("total", 0.0),
        "prefill_ms": answer.timings_ms.get("prefill", 0.0),
        "decode_ms": answer.timings_ms.get("decode", 0.0),
        "prompt_tokens": answer.cost.prompt_tokens,
        "completion_tokens": answer.cost.completion_tokens,
        "tokens_per_second": answer.cost.tokens_per_second,
        "active_params_per_token": answer.cost.active_params_per_token,
    }


def model_build_id(info: Any) -> str:
    """Which weights and routing answered: the file's checksum and the experts per token.

    The GGUF's name alone is the same for the exact split and a --refit build and says nothing of the
    top-k, so a records file could otherwise be resumed by another build and mix two models' figures.
    """
    path = Path(info.path) if info.path else None
    digest = sha256_file(path)[:16] if path is not None and path.is_file() else "no-file"
    return f"{digest} top-k {info.n_experts_used}" if info.is_moe else digest


def _read_records(path: Path, model_name: str, build: str) -> dict[str, dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return {}
    done: dict[str, dict[str, Any]] = {}
    for line_no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}:{line_no}: not a JSON record ({exc}); remove the line to resume") from exc
        # rows written before builds were fingerprinted carry the model's name only
        if row.get("model") != model_name or row.get("model_build", build) != build:
            raise ValueError(
                f"{p}:{line_no}: recorded by model {row.get('model')!r} ({row.get('model_build', 'build unknown')}), "
                f"not {model_name!r} ({build}); use one records file per model build"
            )
        done[row["qid"]] = row
    return done


def summarize(rows: list[dict[str, Any]], *, model: str, total_params: int, k: int) -> dict[str, Any]:
    """The mean of each per-question figure, labelled with the model, its size and the retrieval depth k."""
    n = len(rows)

    def mean(key: str) -> float:
        return statistics.fmean(float(r[key]) for r in rows)

    return {
        "n": n,
        "exact_match": mean("exact_match"),
        "f1": mean("f1"),
        "contains": mean("contains"),
        "retrieval_hit_at_k": mean("hit"),
        "mean_cost_usd": mean("cost_usd"),
        "mean_latency_ms": mean("latency_ms"),
        "mean_prefill_ms": mean("prefill_ms"),
        "mean_decode_ms": mean("decode_ms"),
        "mean_prompt_tokens": mean("prompt_tokens"),
        "tokens_per_second": mean("tokens_per_second"),
        "mean_active_params_per_token": mean("active_params_per_token"),
        "model": model,
        "total_params": total_params,
        "k": k,
    }
