"""MoEfication of one dense SwiGLU FFN layer: split, router fit, figures, optional refit.

The one entry point both paths share (the GGUF build and the transformers model), so that a layer is
made the same way whichever engine serves it. A fifth of the calibration tokens is held out for the
figures and for the refit's keep-or-drop decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from model.moe.refit import refit_if_better
from model.moe.router import evaluate_split, fit_router
from model.moe.split import ExpertLayout, expert_outputs_norm, neuron_contributions, split_neurons, swiglu


@dataclass
class MoELayer:
    """The split of one layer plus the fitted router (unscaled) and calibration figures."""

    shared_idx: np.ndarray  # [shared_size] neuron ids
    expert_idx: np.ndarray  # [n_experts, expert_size] neuron ids
    router: np.ndarray  # [n_experts, d] router weight, not yet scaled by tensors.ROUTER_LOGIT_SCALE
    metrics: dict[str, float] = field(default_factory=dict)
    down: np.ndarray | None = None  # refitted down projection [d, I] (None: the dense one, exact split)


def _check_shapes(wg: np.ndarray, wu: np.ndarray, wd: np.ndarray, layout: ExpertLayout, top_k: int) -> None:
    if wg.shape != wu.shape or wd.shape != (wg.shape[1], wg.shape[0]):
        raise ValueError(f"inconsistent FFN shapes {wg.shape} {wu.shape} {wd.shape}")
    if wg.shape[0] != layout.dense_ffn:
        raise ValueError(f"layout is for {layout.dense_ffn} neurons, block has {wg.shape[0]}")
    if not 1 <= top_k <= layout.n_experts:
        raise ValueError(f"top_k must be in 1..{layout.n_experts}")


def moefy_ffn(
    wg: np.ndarray,
    wu: np.ndarray,
    wd: np.ndarray,
    x: np.ndarray,
    layout: ExpertLayout,
    *,
    top_k: int,
    router_steps: int = 300,
    kmeans_iters: int = 6,
    holdout: float = 0.2,
    seed: int = 0,
    refit_lambda: float | None = None,
) -> MoELayer:
    """Split one dense SwiGLU block (wg, wu: [I, d]; wd: [d, I]) using calibration inputs x [N, d].

    ``refit_lambda``: optionally refit the down projection by ridge least squares so that the
    output *under the router's own top-k masks* matches the dense output (compensating dropped
    experts). It is kept only if it lowers the held-out error by more than 2%. A refitted model is no longer
    exactly the dense model with all experts active, so it is off by default.
    """
    _check_shapes(wg, wu, wd, layout, top_k)
    tg, tu, td = (torch.from_numpy(np.array(a, dtype=np.float32)) for a in (wg, wu, wd))
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    n = xt.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_hold = max(int(n * holdout), 1) if n > 10 else 0
    hold, fit = perm[:n_hold], perm[n_hold:]

    h = swiglu(xt, tg, tu)  # [N, I]
    shared_idx, expert_idx = split_neurons(neuron_contributions(h, td)[fit], layout, kmeans_iters, seed)
    oracle = expert_outputs_norm(h, td, expert_idx)
    router = fit_router(xt[fit], oracle[fit], top_k, router_steps, seed)

    metrics: dict[str, float] = {"router_logit_absmax": float((xt @ router.T).abs().max())}
    if n_hold:
        metrics.update(
            evaluate_split(h[hold], td, xt[hold], shared_idx, expert_idx, router, oracle[hold], top_k)
        )
    down = None
    if refit_lambda is not None and n_hold:
        down, refit_metrics = refit_if_better(
            h,
            td,
            xt,
            router,
            shared_idx,
            expert_idx,
            oracle,
            top_k,
            fit,
            hold,
            refit_lambda,
            metrics["rel_err_router"],
        )
        metrics.update(refit_metrics)
    return MoELayer(
        shared_idx=shared_idx, expert_idx=expert_idx, router=router.numpy(), metrics=metrics, down=down
    )
