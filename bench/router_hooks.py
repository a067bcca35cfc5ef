"""Cost of measured expert accounting in the transformers engine: forward passes with and without the
router hooks (`RouterRecorder`), interleaved, on a random-weight model with a real MoE's shape.

Random weights are enough here: routing cost does not depend on what the weights encode, and no
checkpoint has to be downloaded. Prints a table and writes JSON.

    python bench/router_hooks.py --preset qwen1.5-moe-a2.7b --device cuda --dtype bfloat16
    python bench/router_hooks.py --preset tiny --device cpu          # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Shapes of published MoE checkpoints (their config.json), built here with random weights.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen1.5-moe-a2.7b": (
        "qwen2_moe",
        dict(
            vocab_size=151936,
            hidden_size=2048,
            num_hidden_layers=24,
            num_attention_heads=16,
            num_key_value_heads=16,
            intermediate_size=5632,
            moe_intermediate_size=1408,
            shared_expert_intermediate_size=5632,
            num_experts=60,
            num_experts_per_tok=4,
            max_position_embeddings=8192,
            norm_topk_prob=False,
        ),
    ),
    "olmoe-1b-7b": (
        "olmoe",
        dict(
            vocab_size=50304,
            hidden_size=2048,
            num_hidden_layers=16,
            num_attention_heads=16,
            num_key_value_heads=16,
            intermediate_size=1024,
            num_experts=64,
            num_experts_per_tok=8,
            max_position_embeddings=4096,
        ),
    ),
}


def build_model(preset: str, device: str, dtype: str) -> Any:
    import torch
    import transformers as tf

    if preset == "tiny":
        from model.tiny import tiny_config

        cfg = tiny_config("qwen2_moe")
    else:
        family, kw = PRESETS[preset]
        cfg = tf.AutoConfig.for_model(family, **kw)
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    return model.eval()


def timed_generation(model: Any, prompt: Any, n_decode: int, cache_kw: str) -> tuple[float, float]:
    """Seconds for the prefill and for ``n_decode`` greedy decode steps (device synchronised)."""
    import torch

    from model.transformers_engine import output_cache

    def sync() -> None:
        if prompt.is_cuda:
            torch.cuda.synchronize()

    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        out = model(prompt, use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        sync()
        t1 = time.perf_counter()
        past = output_cache(out)
        for _ in range(n_decode):
            out = model(tok, use_cache=True, **{cache_kw: past})
            past = output_cache(out)
            tok = out.logits[:, -1:].argmax(-1)
        sync()
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen1.5-moe-a2.7b", choices=[*PRESETS, "tiny"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--out", default=None, help="JSON path (default bench/results/router_hooks_<device>.json)"
    )
    args = ap.parse_args(argv)

    import torch

    from model.transformers_engine import RouterRecorder, cache_keyword, info_from_model

    torch.manual_seed(0)
    model = build_model(args.preset, args.device, args.dtype)
    info = info_from_model(model, name=args.preset, path=None, context_window=None)
    cache_kw = cache_keyword(model)
    prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt_tokens), device=args.device)
    for _ in range(2):  # warm-up: kernels, allocator, clocks
        timed_generation(model, prompt, args.decode_tokens, cache_kw)

    runs: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            rec = RouterRecorder(model, info.n_experts) if mode == "on" else None
            runs[mode].append(timed_generation(model, prompt, args.decode_tokens, cache_kw))
            if rec is not None:
                hist, tokens = rec.histogram()
                rec.remove()
                evaluated = args.prompt_tokens + args.decode_tokens
                # Every evaluated token is counted once per layer, top-k times: the hooks saw everything.
                assert all(t == evaluated for t in tokens), tokens
                assert all(sum(row) == evaluated * info.n_experts_used for row in hist)

    def rates(mode: str) -> dict[str, float]:
        pre = statistics.median(p for p, _ in runs[mode])
        dec = statistics.median(d for _, d in runs[mode])
        return {"prefill_tok_s": args.prompt_tokens / pre, "decode_tok_s": args.decode_tokens / dec}

    off, on = rates("off"), rates("on")
    doc = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "total_params": info.total_params,
        "active_params_per_token": info.active_params_per_token,
        "n_moe_layers": info.n_moe_layers,
        "n_experts": info.n_experts,
        "top_k": info.n_experts_used,
        "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens,
        "repeats": args.repeats,
        "hooks_off": off,
        "hooks_on": on,
        "decode_ratio_on_off": on["decode_tok_s"] / off["decode_tok_s"],
        "prefill_ratio_on_off": on["prefill_tok_s"] / off["prefill_tok_s"],
        "raw_seconds": runs,
    }
    out = Path(args.out or ROOT / "bench" / "results" / f"router_hooks_{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(
        f"{args.preset} on {doc['device']} ({args.dtype}): {info.total_params / 1e9:.2f}B total, "
        f"{info.active_params_per_token / 1e9:.2f}B active/token, {info.n_moe_layers} MoE layers, "
        f"top-{info.n_experts_used} of {info.n_experts}"
    )
    print("| router hooks | prefill tok/s | decode tok/s |")
    print("|---|---|---|")
    for label, r in (("off", off), ("on (measured accounting)", on)):
        print(f"| {label} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} |")
    print(f"ratio on/off: prefill {doc['prefill_ratio_on_off']:.3f}, decode {doc['decode_ratio_on_off']:.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
