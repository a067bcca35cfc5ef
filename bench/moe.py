"""Benchmark the embedded MoE default against its dense source, on SQuAD v1.1 dev.

For the dense source and the MoE at several top-k values (each in a fresh process, so peak RSS
is per configuration): decode and prefill tokens/s, peak RSS, measured active parameters per
token, FLOPs per token, and answer quality (exact match / F1 with the gold paragraph as context).

    python -m bench.moe --n 200 --top-k 16,20,24 [--squad FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import re
import resource
import string
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# --squad, else SPARQ_SQUAD_PATH, else the shared public data beside the repository (never a machine's layout)
SHARED_SQUAD = ROOT.parent / "shared" / "data" / "squad_v1.1_dev" / "dev-v1.1.json"
SQUAD = Path(os.environ.get("SPARQ_SQUAD_PATH") or SHARED_SQUAD)


def normalize(s: str) -> str:
    """Official SQuAD v1.1 answer normalisation."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(pred: str, gold: str) -> float:
    p, g = normalize(pred).split(), normalize(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def squad_questions(path: Path, n: int) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    out: list[dict[str, Any]] = []
    for art in data:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                out.append(
                    {
                        "id": qa["id"],
                        "context": para["context"],
                        "question": qa["question"],
                        "answers": [a["text"] for a in qa["answers"]],
                    }
                )
                if len(out) >= n:
                    return out
    return out


def run_config(
    label: str,
    path: str,
    top_k: int | None,
    questions: list[dict[str, Any]],
    max_tokens: int,
    threads: int,
    q: Any,
) -> None:
    """One configuration in its own process; puts a result dict on ``q``."""
    try:
        from model.llamacpp_engine import LlamaCppEngine
        from model.moe.calibration import rag_messages

        eng = LlamaCppEngine(path, n_ctx=2048, n_threads=threads, top_k=top_k)
        info = eng.info
        em = f1 = 0.0
        p_tok = p_s = d_tok = d_s = 0.0
        act = flops = dflops = 0.0
        n_tok_total = 0
        answers = []
        for item in questions:
            g = eng.generate(
                rag_messages(item["context"], item["question"]), max_tokens=max_tokens, stop=["\n"]
            )
            pred = g.text.strip().rstrip(".")
            em += max(float(normalize(pred) == normalize(a)) for a in item["answers"])
            f1 += max(f1_score(pred, a) for a in item["answers"])
            s = g.stats
            p_tok += s.prompt_tokens
            p_s += s.prefill_seconds
            d_tok += max(s.completion_tokens - 1, 0)
            d_s += s.decode_seconds
            n = s.prompt_tokens + s.completion_tokens
            act += s.active_params_per_token * n
            flops += s.flops_prefill + s.flops_decode
            dflops += s.dense_flops_prefill + s.dense_flops_decode
            n_tok_total += n
            answers.append({"id": item["id"], "pred": pred})
            if len(answers) % 25 == 0:
                print(
                    f"  {label}: {len(answers)}/{len(questions)} F1 so far {100 * f1 / len(answers):.1f}",
                    file=sys.stderr,
                    flush=True,
                )
        nq = len(questions)
        ffn_frac = 1.0
        if info.is_moe:
            ffn_frac = (
                info.shared_ffn_size + info.n_experts_used * info.expert_ffn_size
            ) / info.dense_ffn_size
        q.put(
            {
                "label": label,
                "path": path,
                "top_k": info.n_experts_used if info.is_moe else None,
                "n_experts": info.n_experts,
                "questions": nq,
                "exact_match": 100 * em / nq,
                "f1": 100 * f1 / nq,
                "decode_tok_s": d_tok / d_s if d_s else 0.0,
                "prefill_tok_s": p_tok / p_s if p_s else 0.0,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "total_params": info.total_params,
                "active_params_per_token": act / n_tok_total if n_tok_total else 0.0,
                "active_ffn_fraction": ffn_frac,
                "flops_per_token": flops / n_tok_total if n_tok_total else 0.0,
                "dense_equiv_flops_per_token": dflops / n_tok_total if n_tok_total else 0.0,
                "accounting": "measured",
                "threads": threads,
                "answers": answers,
            }
        )
    except BaseException as exc:
        q.put({"label": label, "error": f"{type(exc).__name__}: {exc}"})
        raise


def run_speed(
    configs: list[tuple[str, str, int | None]],
    questions: list[dict[str, Any]],
    max_tokens: int,
    threads: int,
    q: Any,
) -> None:
    """All configurations loaded in one process and interleaved question by question, so that
    tokens/s are compared under the same machine load (the bench host is shared)."""
    try:
        from model.llamacpp_engine import LlamaCppEngine
        from model.moe.calibration import rag_messages

        engines = {
            label: LlamaCppEngine(path, n_ctx=2048, n_threads=threads, top_k=k) for label, path, k in configs
        }
        acc = {label: [0.0, 0.0, 0.0, 0.0] for label in engines}
        for i, item in enumerate(questions):
            order = list(engines.items())
            order = order[i % len(order) :] + order[: i % len(order)]
            for label, eng in order:
                s = eng.generate(rag_messages(item["context"], item["question"]), max_tokens=max_tokens).stats
                a = acc[label]
                a[0] += s.prompt_tokens
                a[1] += s.prefill_seconds
                a[2] += max(s.completion_tokens - 1, 0)
                a[3] += s.decode_seconds
        q.put(
            {
                label: {
                    "prefill_tok_s": a[0] / a[1] if a[1] else 0.0,
                    "decode_tok_s": a[2] / a[3] if a[3] else 0.0,
                    "decode_tokens": a[2],
                }
                for label, a in acc.items()
            }
        )
    except BaseException as exc:
        q.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _result(p: Any, q: Any, label: str) -> dict[str, Any]:
    """Wait for a worker's result without hanging if it dies natively (llama.cpp aborts)."""
    import queue

    while True:
        try:
            res = q.get(timeout=5)
            p.join()
            return res
        except queue.Empty:
            if not p.is_alive():
                return {"label": label, "error": f"worker died with exit code {p.exitcode}"}


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    tmp.replace(path)


def markdown_table(doc: dict[str, Any]) -> str:
    """README table from a results JSON."""
    rows = [r for r in doc["results"] if "error" not in r]
    dense = next((r for r in rows if r["label"] == "dense"), None)
    out = [
        "| config | top-k | active FFN vs dense | active params/token | EM | F1 | F1 vs dense | "
        "decode tok/s | prefill tok/s | peak RSS MB | GFLOP/token |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rel = r["f1"] / dense["f1"] if dense and dense["f1"] else float("nan")
        out.append(
            f"| {r['label']} | {r['top_k'] or '-'} | {r['active_ffn_fraction']:.0%} | "
            f"{r['active_params_per_token'] / 1e6:.0f}M of {r['total_params'] / 1e6:.0f}M | "
            f"{r['exact_match']:.1f} | {r['f1']:.1f} | {rel:.2f} | {r['decode_tok_s']:.1f} | "
            f"{r['prefill_tok_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['flops_per_token'] / 1e9:.2f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="sparq-data")
    ap.add_argument("--source", default=None, help="source model key (default: the product default)")
    ap.add_argument("--moe", default=None, help="MoE GGUF (default: the built default model)")
    ap.add_argument("--dense", default=None, help="dense GGUF (default: the joined source)")
    ap.add_argument("--n", type=int, default=200, help="first N SQuAD dev questions")
    ap.add_argument("--top-k", default="20,24", help="comma-separated top-k values for the MoE")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--squad",
        default=str(SQUAD),
        help="SQuAD v1.1 dev JSON (default: $SPARQ_SQUAD_PATH, else "
        "../shared/data/squad_v1.1_dev/dev-v1.1.json beside the repository)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "moe.json"))
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument(
        "--label", default="moe", help="label prefix of the MoE rows (e.g. refit, to merge a variant)"
    )
    ap.add_argument(
        "--speed-questions",
        type=int,
        default=12,
        help="questions for the interleaved speed run (long answers: max_tokens 64, no stop)",
    )
    ap.add_argument(
        "--merge",
        default=None,
        help="results JSON of an earlier run on the same questions: its configurations are reused",
    )
    ap.add_argument("--table-from", default=None, help="print the README table of an existing results JSON")
    args = ap.parse_args(argv)
    if args.table_from:
        print(markdown_table(json.loads(Path(args.table_from).read_text(encoding="utf-8"))))
        return 0

    squad = Path(args.squad)
    if not squad.is_file():
        print(f"SQuAD dev set not found at {squad}; nothing to benchmark", file=sys.stderr)
        return 2
    from model.moe.manifest import model_dir
    from model.moe.source_weights import DEFAULT_SOURCE, source_gguf

    source = args.source or DEFAULT_SOURCE
    data_dir = Path(args.data_dir)
    moe = args.moe or str(model_dir(data_dir, source) / "model-q4_k_m.gguf")
    if not Path(moe).is_file():
        print(f"MoE model {moe} not found: run `sparq model build-default` first", file=sys.stderr)
        return 2
    dense = args.dense or str(source_gguf(source, data_dir))
    questions = squad_questions(squad, args.n)
    configs: list[tuple[str, str, int | None]] = [] if args.no_dense else [("dense", dense, None)]
    configs += [(f"{args.label} k={k}", moe, int(k)) for k in args.top_k.split(",") if k.strip()]

    ctx = mp.get_context("spawn")
    results: list[dict[str, Any]] = []
    if args.merge:
        prev = [
            r for r in json.loads(Path(args.merge).read_text(encoding="utf-8"))["results"] if "error" not in r
        ]
        prev = [r for r in prev if r.get("questions") == len(questions)]
        results.extend(prev)
        done = {r["label"] for r in prev}
        all_configs = configs if any(c[0] == "dense" for c in configs) else [("dense", dense, None)] + configs
        all_configs += [
            (r["label"], r["path"], r["top_k"])
            for r in prev
            if r["label"] != "dense" and r["label"] not in {c[0] for c in all_configs}
        ]
        speed_configs = sorted(all_configs, key=lambda c: (c[2] is not None, c[2] or 0))
        configs = [c for c in configs if c[0] not in done]
    else:
        speed_configs = configs
    t0 = time.time()
    for label, path, k in configs:
        q = ctx.Queue()
        p = ctx.Process(target=run_config, args=(label, path, k, questions, args.max_tokens, args.threads, q))
        p.start()
        res = _result(p, q, label)
        results.append(res)
        _write(Path(args.out).with_suffix(".partial.json"), {"partial": True, "results": results})
        if "error" in res:
            print(f"{label}: FAILED {res['error']}", file=sys.stderr)
        else:
            print(
                f"{label}: F1 {res['f1']:.1f} EM {res['exact_match']:.1f} decode {res['decode_tok_s']:.1f} tok/s "
                f"({time.time() - t0:.0f} s elapsed)",
                flush=True,
            )
    speed: dict[str, Any] = {}
    if args.speed_questions > 0:
        q = ctx.Queue()
        p = ctx.Process(
            target=run_speed, args=(speed_configs, questions[: args.speed_questions], 64, args.threads, q)
        )
        p.start()
        speed = _result(p, q, "speed run")
        if "error" in speed:
            print(f"speed run FAILED {speed['error']}", file=sys.stderr)
    for r in results:
        if r.get("label") in speed:
            r["decode_tok_s_quality_run"] = r["decode_tok_s"]
            r["prefill_tok_s_quality_run"] = r["prefill_tok_s"]
            r["decode_tok_s"] = speed[r["label"]]["decode_tok_s"]
            r["prefill_tok_s"] = speed[r["label"]]["prefill_tok_s"]
    ok = [r for r in results if "error" not in r]
    dense_r = next((r for r in ok if r["label"] == "dense"), None)
    header = (
        f"{'config':<10} {'k':>3} {'EM':>6} {'F1':>6} {'F1/dense':>8} {'decode t/s':>10} {'prefill t/s':>11} "
        f"{'RSS MB':>7} {'active params':>13} {'FFN act.':>8} {'GFLOP/tok':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in ok:
        rel = r["f1"] / dense_r["f1"] if dense_r and dense_r["f1"] else float("nan")
        r["f1_vs_dense"] = rel
        print(
            f"{r['label']:<10} {r['top_k'] or '-':>3} {r['exact_match']:6.1f} {r['f1']:6.1f} {rel:8.2f} "
            f"{r['decode_tok_s']:10.1f} {r['prefill_tok_s']:11.1f} {r['peak_rss_mb']:7.0f} "
            f"{r['active_params_per_token'] / 1e6:12.0f}M {r['active_ffn_fraction']:8.2f} "
            f"{r['flops_per_token'] / 1e9:9.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(
            {
                "questions": len(questions),
                "squad": str(squad),
                "source": source,
                "moe": moe,
                "dense": dense,
                "max_tokens": args.max_tokens,
                "threads": args.threads,
                "seconds": round(time.time() - t0, 1),
                "speed_run": speed,
                "speed_questions": args.speed_questions,
                "results": results,
            },
            indent=1,
        )
    )
    tmp.replace(out)
    print(f"wrote {out}")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
