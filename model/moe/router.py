"""The per-layer router: a linear map fitted to pick the experts an oracle would pick, and its quality.

The oracle is each expert's true output norm on a calibration token (:func:`model.moe.split.expert_outputs_norm`);
a listwise classification loss puts the oracle's top-k on top, with the experts' relative norms as a soft
secondary signal. The quality figures (output error with the router's vs the oracle's selection, and the
router's recall of the oracle top-k) go into the build's manifest.
"""

from __future__ import annotations

import numpy as np
import torch

from model.moe.split import relative_error, selection_mask


def fit_router(
    x: torch.Tensor, oracle: torch.Tensor, top_k: int, steps: int, seed: int, lr: float = 5e-3
) -> torch.Tensor:
    """Linear router [E, d] trained to put the oracle's top-k experts on top (listwise cross-entropy)."""
    torch.manual_seed(seed)
    n_exp = oracle.shape[1]
    scale = x.pow(2).mean(0).sqrt().clamp_min(1e-6)
    xs = x / scale
    target = torch.zeros_like(oracle)
    target.scatter_(1, oracle.topk(top_k, dim=1).indices, 1.0 / top_k)
    # soft secondary signal: experts' relative output norm (helps ties beyond the top-k)
    soft = torch.softmax(torch.log(oracle.clamp_min(1e-9)) * 2.0, dim=1)
    target = 0.8 * target + 0.2 * soft
    w = torch.zeros(xs.shape[1], n_exp, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        logits = xs @ w
        loss = -(target * torch.log_softmax(logits, dim=1)).sum(1).mean() + 1e-4 * w.pow(2).sum()
        loss.backward()
        opt.step()
    return (w.detach() / scale[:, None]).T.contiguous()  # [E, d]


def route_mask(
    h: torch.Tensor,
    x: torch.Tensor,
    router: torch.Tensor,
    shared_idx: np.ndarray,
    expert_idx: np.ndarray,
    top_k: int,
) -> torch.Tensor:
    """[N, I] 0/1 mask of the neurons a token uses: shared + its router's top-k experts."""
    return selection_mask(h.shape[1], shared_idx, expert_idx, (x @ router.T).topk(top_k, dim=1).indices)


def evaluate_split(
    h: torch.Tensor,
    wd: torch.Tensor,
    x: torch.Tensor,
    shared_idx: np.ndarray,
    expert_idx: np.ndarray,
    router: torch.Tensor,
    oracle: torch.Tensor,
    top_k: int,
    reference: torch.Tensor | None = None,
) -> dict[str, float]:
    """Relative output error of router vs oracle selection and router recall of the oracle top-k."""
    dense = h @ wd.T if reference is None else reference

    def run(sel: torch.Tensor) -> float:
        return relative_error((h * selection_mask(h.shape[1], shared_idx, expert_idx, sel)) @ wd.T, dense)

    osel = oracle.topk(top_k, dim=1).indices
    rsel = (x @ router.T).topk(top_k, dim=1).indices
    om = torch.zeros_like(oracle).scatter_(1, osel, 1.0)
    rm = torch.zeros_like(oracle).scatter_(1, rsel, 1.0)
    return {
        "rel_err_router": run(rsel),
        "rel_err_oracle": run(osel),
        "rel_err_shared_only": run(torch.zeros(h.shape[0], 0, dtype=torch.long)),
        "router_recall": float((om * rm).sum() / om.sum()),
    }
