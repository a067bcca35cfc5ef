"""Prefill and decode speed of the dense source and the default MoE on each engine, interleaved.

    python bench/engines.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json [--rounds 3]
        [--dense PATH] [--moe PATH] [--engines llamacpp,ik_llama,llamacpp:norepack]

Each round asks every (engine, model) pair one RAG-shaped question (about 1,000 prompt tokens from SQuAD
paragraphs, greedy, up to 48 answer tokens), in an order that rotates from round to round, so a machine
that slows down mid-run slows every pair alike. Reported: prefill and decode tokens per second, and the
estimated seconds of a typical query (1,000 prompt + 20 answer tokens) with its ratio to the dense model
on llama.cpp. An engine named ``llamacpp:repack`` or ``llamacpp:norepack`` loads its models with
llama.cpp's weight repacking forced on or off (plain ``llamacpp`` decides per model, as the product does).
The engines' own expert counts say how many experts each MoE token used. Writes JSON
(default bench/results/engines.json). Speed only: answer quality is bench/ask_path.py's job.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.factory import create_engine
from model.moe.calibration import rag_messages

PROMPT_TOKENS, ANSWER_TOKENS = 1000, 20


def questions(squad: Path, n: int, target_tokens: int, count: Any) -> list[list[dict[str, str]]]:
    """RAG chats of about `target_tokens`: consecutive paragraphs of one article, then its first question."""
    data = json.loads(squad.read_text(encoding="utf-8"))
    chats = []
    for article in data["data"][20:]:  # away from the articles the quality benches score first
        paragraphs = article["paragraphs"]
        context: list[str] = []
        for p in paragraphs:
            context.append(p["context"])
            if count(rag_messages("\n\n".join(context), "?")) >= target_tokens:
                break
        chats.append(rag_messages("\n\n".join(context), paragraphs[0]["qas"][0]["question"]))
        if len(chats) >= n:
            break
    return chats


def engine_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """(backend, options) of an --engines entry: ``llamacpp``, ``ik_llama``, ``llamacpp:repack`` or
    ``llamacpp:norepack``."""
    backend, _, variant = spec.partition(":")
    if not variant:
        return backend, {}
    if backend != "llamacpp" or variant not in ("repack", "norepack"):
        raise SystemExit(f"--engines {spec!r}: only llamacpp takes a variant, :repack or :norepack")
    return backend, {"repack_weights": variant == "repack"}


def load_engine(spec: str, path: Path, threads: int | None) -> Any:
    """The engine an --engines entry names, serving the GGUF at ``path``, without KV-prefix reuse: each round
    prefills its whole prompt, so the figures are the kernels' and not the cache's (the prompts share a
    system turn)."""
    backend, opts = engine_spec(spec)
    return create_engine(backend, str(path), n_threads=threads, reuse_prefix=False, **opts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--squad", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dense", type=Path, help="dense GGUF (default: the shipped source)")
    parser.add_argument("--moe", type=Path, help="MoE GGUF (default: the built default in SPARQ_DATA_DIR)")
    parser.add_argument("--engines", default="llamacpp,ik_llama")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=Path("sparq-data"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/engines.json"))
    args = parser.parse_args(argv)

    from model.moe.build import ensure_default_model
    from model.moe.source_weights import DEFAULT_SOURCE, source_gguf

    models = {
        "dense": args.dense or source_gguf(DEFAULT_SOURCE, args.data_dir),
        "moe": args.moe or ensure_default_model(args.data_dir),
    }
    pairs = [(e, m) for e in args.engines.split(",") for m in models]
    engines = {(e, m): load_engine(e, models[m], args.threads) for e, m in pairs}
    first = engines[pairs[0]]
    chats = questions(args.squad, args.rounds + 1, PROMPT_TOKENS, first.count_chat_tokens)
    runs: dict[str, list[dict[str, float]]] = {f"{e}/{m}": [] for e, m in pairs}
    try:
        for engine in engines.values():  # warm-up, not recorded (page-in, thread pools)
            engine.generate(chats[0], max_tokens=8)
        for r, chat in enumerate(chats[1:]):
            order = pairs[r % len(pairs) :] + pairs[: r % len(pairs)]
            for pair in order:
                g = engines[pair].generate(chat, max_tokens=48)
                s = g.stats
                hist = s.expert_histogram
                runs[f"{pair[0]}/{pair[1]}"].append(
                    {
                        "prompt_tokens": s.prompt_tokens,
                        "completion_tokens": s.completion_tokens,
                        "prefill_tok_s": s.prompt_tokens / s.prefill_seconds if s.prefill_seconds else 0.0,
                        "decode_tok_s": (s.completion_tokens - 1) / s.decode_seconds
                        if s.decode_seconds
                        else 0.0,
                        "experts_measured": bool(hist),
                    }
                )
                print(
                    f"round {r + 1}: {pair[0]:9s} {pair[1]:5s} "
                    f"prefill {runs[f'{pair[0]}/{pair[1]}'][-1]['prefill_tok_s']:6.1f} "
                    f"decode {runs[f'{pair[0]}/{pair[1]}'][-1]['decode_tok_s']:5.1f} tok/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for engine in engines.values():
            engine.close()

    summary: dict[str, Any] = {}
    for key, rows in runs.items():
        prefill = statistics.fmean(r["prefill_tok_s"] for r in rows)
        decode = statistics.fmean(r["decode_tok_s"] for r in rows if r["decode_tok_s"] > 0)
        summary[key] = {
            "rounds": len(rows),
            "prompt_tokens": statistics.fmean(r["prompt_tokens"] for r in rows),
            "prefill_tok_s": prefill,
            "decode_tok_s": decode,
            "est_seconds_per_query": PROMPT_TOKENS / prefill + ANSWER_TOKENS / decode,
            "experts_measured": all(r["experts_measured"] for r in rows) if "moe" in key else None,
        }
    base = summary[f"{pairs[0][0]}/dense"]["est_seconds_per_query"]
    for row in summary.values():
        row["ratio_to_first_engine_dense"] = row["est_seconds_per_query"] / base
    result = {
        "machine": platform.platform(),
        "threads": args.threads,
        "models": {k: str(v) for k, v in models.items()},
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| engine / model | prompt tok | prefill tok/s | decode tok/s | est. s per query | ratio |")
    print("|---|---|---|---|---|---|")
    for key, row in summary.items():
        print(
            f"| {key} | {row['prompt_tokens']:.0f} | {row['prefill_tok_s']:.1f} | {row['decode_tok_s']:.1f} | "
            f"{row['est_seconds_per_query']:.1f} | {row['ratio_to_first_engine_dense']:.2f} |"
        )


if __name__ == "__main__":
    main()
