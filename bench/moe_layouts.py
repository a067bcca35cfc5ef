"""How much of the dense feed-forward output can static experts keep? Oracle errors of expert layouts.

For a few layers of the default's dense source, on held-out calibration tokens: the relative error of
the block output when each token keeps (a) its own best neurons (the neuron-level oracle: the ceiling of
any split) and (b) the shared expert plus its best experts (the expert-level oracle: a perfect router)
for several layouts and clusterings at the same active fraction. If (b) stays far above (a) for every
layout, the loss comes from grouping neurons statically, not from the router or the clustering details.

    python bench/moe_layouts.py --data-dir sparq-data --tokens 2048 --layers 0,6,13,20,27

With ``--refit-lambdas``, it measures instead the build's own split and fitted router before and after
the ridge refit of the down projection to the router's top-k masks (``refit_lambda`` of the build),
writing ``moe_refit.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_OUT = str(ROOT / "bench" / "results" / "moe_layouts.json")

# name -> (routed experts, neurons per expert, active FFN fraction, clustering features, k-means iterations)
LAYOUTS: dict[str, tuple[int, int, float, str, int]] = {
    "default 61x128, shared 1152 (50%)": (61, 128, 0.5, "contrib", 6),
    "default 61x128, shared 1152 (63%, k=35)": (61, 128, 0.63, "contrib", 6),
    "binarised co-activation features": (61, 128, 0.5, "binary", 6),
    "log-scaled features": (61, 128, 0.5, "log", 6),
    "k-means 20 iterations": (61, 128, 0.5, "contrib", 20),
    "shared 2304 + 52x128": (52, 128, 0.5, "contrib", 6),
    "shared 3328 + 44x128": (44, 128, 0.5, "contrib", 6),
    "shared 2304 + 52x128 (63%)": (52, 128, 0.63, "contrib", 6),
    "finer: 122x64, shared 1152": (122, 64, 0.5, "contrib", 6),
}


def layer_errors(
    wg: np.ndarray, wu: np.ndarray, wd: np.ndarray, x: np.ndarray, n_hold: int
) -> dict[str, Any]:
    from model.moe.split import balanced_kmeans, expert_outputs_norm, relative_error, selection_mask, swiglu

    tg, tu, td = (torch.from_numpy(np.array(a, dtype=np.float32)) for a in (wg, wu, wd))
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    n_ffn = tg.shape[0]
    perm = torch.randperm(xt.shape[0], generator=torch.Generator().manual_seed(0))
    hold, fit = perm[:n_hold], perm[n_hold:]
    h = swiglu(xt, tg, tu)
    dense = h[hold] @ td.T
    contrib = h.abs() * td.norm(dim=0)  # per-neuron contribution magnitude, as the build uses
    out: dict[str, Any] = {}
    for frac in (0.5, 0.63):
        c = contrib[hold]
        keep = torch.zeros_like(c).scatter_(1, c.topk(int(n_ffn * frac), dim=1).indices, 1.0)
        out[f"neuron oracle ({frac:.0%})"] = {
            "rel_err": relative_error((h[hold] * keep) @ td.T, dense),
            "active": frac,
        }
    for name, (n_exp, size, frac, feats_kind, iters) in LAYOUTS.items():
        shared = n_ffn - n_exp * size
        shared_idx = torch.topk(contrib[fit].mean(0), shared).indices.sort().values.numpy()
        rest = np.setdiff1d(np.arange(n_ffn), shared_idx)
        feats = contrib[fit][:, torch.from_numpy(rest)]
        if feats_kind == "binary":
            feats = (feats > feats.median(dim=1, keepdim=True).values).float()
        elif feats_kind == "log":
            feats = torch.log1p(feats / feats.mean())
        expert_idx = rest[balanced_kmeans(feats.T.contiguous(), n_exp, size, iters, 0)]
        k = max(1, round((frac * n_ffn - shared) / size))
        best = expert_outputs_norm(h[hold], td, expert_idx).topk(k, dim=1).indices
        mask = selection_mask(n_ffn, shared_idx, expert_idx, best)
        out[name] = {
            "rel_err": relative_error((h[hold] * mask) @ td.T, dense),
            "top_k": k,
            "active": (shared + k * size) / n_ffn,
        }
    return out


def refit_errors(
    wg: np.ndarray, wu: np.ndarray, wd: np.ndarray, x: np.ndarray, lambdas: list[float], ks: list[int]
) -> dict[str, Any]:
    """The build's own split and fitted router, before and after the ridge refit of the down projection."""
    from model.moe.layer import moefy_ffn
    from model.moe.split import choose_layout

    layout = choose_layout(wg.shape[0])
    out: dict[str, Any] = {}
    for k in ks:
        for lam in lambdas:
            m = moefy_ffn(wg, wu, wd, x, layout, top_k=k, refit_lambda=lam).metrics
            out[f"k={k} lambda={lam:g}"] = {
                key: m[key] for key in ("rel_err_router", "rel_err_oracle", "rel_err_router_refit")
            }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="sparq-data")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--holdout", type=int, default=400)
    ap.add_argument("--layers", default="0,6,13,20,27")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--refit-lambdas",
        default="",
        help="instead of the layouts: router vs ridge-refitted error of the build's split, e.g. 0.01,0.1,1",
    )
    ap.add_argument("--refit-top-k", default="26,35")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import gguf

    from model.moe.calibration import default_calibration_samples
    from model.moe.capture import capture_ffn_inputs
    from model.moe.gguf_reader import dequant_ffn
    from model.moe.source_weights import DEFAULT_SOURCE, source_gguf

    torch.set_num_threads(args.threads)
    src = source_gguf(DEFAULT_SOURCE, Path(args.data_dir))
    t0 = time.time()
    xs = capture_ffn_inputs(src, default_calibration_samples(), args.tokens, n_threads=args.threads)
    reader = gguf.GGUFReader(str(src))
    layers = [int(v) for v in args.layers.split(",")]
    if args.refit_lambdas:
        return _refit_main(args, reader, xs, layers, t0)
    results = {}
    for il in layers:
        wg, wu, wd = dequant_ffn(reader, il)
        results[il] = layer_errors(wg, wu, wd, xs[il], args.holdout)
        print(
            f"layer {il}: " + ", ".join(f"{n}={r['rel_err']:.3f}" for n, r in results[il].items()), flush=True
        )
    names = list(results[layers[0]])
    mean = {n: float(np.mean([results[il][n]["rel_err"] for il in layers])) for n in names}
    doc = {
        "source": DEFAULT_SOURCE,
        "tokens": args.tokens,
        "holdout": args.holdout,
        "layers": results,
        "mean_rel_err": mean,
        "seconds": time.time() - t0,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print("| selection (oracle) | active FFN | mean rel. error of the block output |")
    print("|---|---|---|")
    for n in names:
        print(f"| {n} | {results[layers[0]][n]['active']:.0%} | {mean[n]:.3f} |")
    print(f"wrote {args.out}")
    return 0


def _refit_main(
    args: argparse.Namespace, reader: Any, xs: dict[int, np.ndarray], layers: list[int], t0: float
) -> int:
    from model.moe.gguf_reader import dequant_ffn
    from model.moe.source_weights import DEFAULT_SOURCE

    lambdas = [float(v) for v in args.refit_lambdas.split(",")]
    ks = [int(v) for v in args.refit_top_k.split(",")]
    results = {}
    for il in layers:
        results[il] = refit_errors(*dequant_ffn(reader, il), xs[il], lambdas, ks)
        print(
            f"layer {il}: "
            + ", ".join(
                f"{n}: {r['rel_err_router']:.3f} -> {r['rel_err_router_refit']:.3f}"
                for n, r in results[il].items()
            ),
            flush=True,
        )
    names = list(results[layers[0]])
    mean = {
        n: {key: float(np.mean([results[il][n][key] for il in layers])) for key in results[layers[0]][n]}
        for n in names
    }
    doc = {
        "source": DEFAULT_SOURCE,
        "tokens": args.tokens,
        "layers": results,
        "mean": mean,
        "seconds": time.time() - t0,
    }
    out = Path(args.out).with_name("moe_refit.json") if args.out == DEFAULT_OUT else Path(args.out)
    out.write_text(json.dumps(doc, indent=1))
    print("| router top-k, ridge lambda | oracle | router | router after refit |")
    print("|---|---|---|---|")
    for n in names:
        m = mean[n]
        print(
            f"| {n} | {m['rel_err_oracle']:.3f} | {m['rel_err_router']:.3f} | {m['rel_err_router_refit']:.3f} |"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
