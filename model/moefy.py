"""MoEfication of one dense SwiGLU feed-forward block into a shared expert + routed experts.

Why this design (see issue 4 and its measurements): the dense block is *split*, never copied;
the neurons that matter for almost every token become an always-on shared expert (DeepSeekMoE),
the rest are grouped by co-activation into fine-grained equal-size experts (balanced k-means,
MoEfication / LLaMA-MoE), and a linear router is fitted per layer to pick the experts an oracle
(true output-norm of each expert) would pick, with a listwise classification loss.

Exactness trick for engines that softmax the router logits without renormalising the top-k
weights (Qwen2-MoE in llama.cpp and transformers): router logits are scaled down to ~1e-3 so
every selected weight is ~1/E (ranking preserved), and each expert's down projection is scaled
by E; the shared expert's sigmoid gate sees a tiny input (~0.5) and its down projection is scaled
by 2. With all experts active the MoE block therefore reproduces the dense block.

A ``--refit`` build also refits the down projection (``refit_lambda``) so that the output with the
router's top-k experts matches the dense output: the kept neurons make up for the dropped ones. That
gives up the all-experts equality for better quality at a low top-k on bench/moe.py's one-paragraph
questions, but it answers worse on the six-passage answer path (README, Answer quality), so the default
build keeps the exact split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

ROUTER_LOGIT_SCALE = 1e-3
SHARED_GATE_SCALE = 1e-4
# a refit gives up exactness with all experts active: keep it only for a clear (>2%) held-out gain
REFIT_MIN_GAIN = 0.98


@dataclass
class ExpertLayout:
    """How a dense FFN of ``dense_ffn`` neurons is cut: shared size + n_experts x expert_size."""

    dense_ffn: int
    n_experts: int
    expert_size: int
    shared_size: int

    def __post_init__(self) -> None:
        if self.shared_size + self.n_experts * self.expert_size != self.dense_ffn:
            raise ValueError(
                f"layout does not partition the FFN: {self.shared_size} + {self.n_experts} x "
                f"{self.expert_size} != {self.dense_ffn}"
            )
        if self.shared_size < 1 or self.expert_size < 1:
            raise ValueError("shared expert and routed experts need at least one neuron")


def choose_layout(
    dense_ffn: int, n_experts: int = 64, shared_fraction: float = 0.125, align: int = 32
) -> ExpertLayout:
    """Expert size a multiple of ``align`` (quantised blocks), expert count near ``n_experts``,
    shared remainder as close as possible to ``shared_fraction`` of the dense FFN."""
    best: tuple[float, ExpertLayout] | None = None
    for size in range(align, dense_ffn // 2 + 1, align):
        e = int(round(dense_ffn * (1.0 - shared_fraction) / size))
        if e < 2 or e * size >= dense_ffn:
            continue
        shared = dense_ffn - e * size
        score = abs(shared / dense_ffn - shared_fraction) + 0.002 * abs(e - n_experts)
        if best is None or score < best[0]:
            best = (score, ExpertLayout(dense_ffn, e, size, shared))
    if best is None:  # tiny test models: no alignment possible
        size = max(int(dense_ffn * (1.0 - shared_fraction) // n_experts), 1)
        return ExpertLayout(dense_ffn, n_experts, size, dense_ffn - n_experts * size)
    return best[1]


@dataclass
class MoELayer:
    """The split of one layer plus the fitted router (unscaled) and calibration figures."""

    shared_idx: np.ndarray  # [shared_size] neuron ids
    expert_idx: np.ndarray  # [n_experts, expert_size] neuron ids
    router: np.ndarray  # [n_experts, d] router weight, not yet scaled by ROUTER_LOGIT_SCALE
    metrics: dict[str, float] = field(default_factory=dict)
    down: np.ndarray | None = None  # refitted down projection [d, I] (None: the dense one, exact split)


def _swiglu(x: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor) -> torch.Tensor:
    return F.silu(x @ wg.T) * (x @ wu.T)


def _balanced_kmeans(feats: torch.Tensor, n_clusters: int, size: int, iters: int, seed: int) -> np.ndarray:
    """Group rows of ``feats`` into clusters of exactly ``size`` members (greedy balanced k-means)."""
    n = feats.shape[0]
    if n != n_clusters * size:
        raise ValueError("balanced k-means needs n == n_clusters * size")
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(feats, dim=1)
    cent = feats[torch.randperm(n, generator=g)[:n_clusters]].clone()
    assign = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        sims = (feats @ cent.T).numpy()
        order = np.argsort(-sims, axis=None)
        rows, cols = np.unravel_index(order, sims.shape)
        fill = np.zeros(n_clusters, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        left = n
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if done[r] or fill[c] >= size:
                continue
            assign[r] = c
            done[r] = True
            fill[c] += 1
            left -= 1
            if left == 0:
                break
        a = torch.from_numpy(assign)
        new = torch.zeros_like(cent).index_add_(0, a, feats)
        cent = F.normalize(new, dim=1)
    groups = np.stack([np.flatnonzero(assign == c) for c in range(n_clusters)])
    return groups


def expert_outputs_norm(h: torch.Tensor, wd: torch.Tensor, expert_idx: np.ndarray) -> torch.Tensor:
    """Oracle score: L2 norm of each expert's contribution to the block output, [N, E]."""
    out = torch.empty(h.shape[0], expert_idx.shape[0])
    for e, idx in enumerate(expert_idx):
        ii = torch.from_numpy(idx)
        out[:, e] = (h[:, ii] @ wd[:, ii].T).norm(dim=1)
    return out


def _fit_router(
    x: torch.Tensor, oracle: torch.Tensor, top_k: int, steps: int, seed: int, lr: float = 5e-3
) -> torch.Tensor:
    """Linear router trained to put the oracle's top-k experts on top (listwise cross-entropy)."""
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
    if wg.shape != wu.shape or wd.shape != (wg.shape[1], wg.shape[0]):
        raise ValueError(f"inconsistent FFN shapes {wg.shape} {wu.shape} {wd.shape}")
    if wg.shape[0] != layout.dense_ffn:
        raise ValueError(f"layout is for {layout.dense_ffn} neurons, block has {wg.shape[0]}")
    if not 1 <= top_k <= layout.n_experts:
        raise ValueError(f"top_k must be in 1..{layout.n_experts}")
    tg, tu, td = (torch.from_numpy(np.array(a, dtype=np.float32)) for a in (wg, wu, wd))
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    n = xt.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_hold = max(int(n * holdout), 1) if n > 10 else 0
    hold, fit = perm[:n_hold], perm[n_hold:]

    h = _swiglu(xt, tg, tu)  # [N, I]
    contrib = h.abs() * td.norm(dim=0)  # true per-neuron contribution magnitude
    mean_c = contrib[fit].mean(0)
    shared_idx = torch.topk(mean_c, layout.shared_size).indices.sort().values.numpy()
    rest = np.setdiff1d(np.arange(layout.dense_ffn), shared_idx)
    feats = contrib[fit][:, torch.from_numpy(rest)].T.contiguous()  # co-activation profile per neuron
    groups = _balanced_kmeans(feats, layout.n_experts, layout.expert_size, kmeans_iters, seed)
    expert_idx = rest[groups]

    oracle = expert_outputs_norm(h, td, expert_idx)
    router = _fit_router(xt[fit], oracle[fit], top_k, router_steps, seed)

    metrics: dict[str, float] = {"router_logit_absmax": float((xt @ router.T).abs().max())}
    if n_hold:
        metrics.update(evaluate_split(h[hold], td, xt[hold], shared_idx, expert_idx, router, oracle[hold], top_k))
    down = None
    if refit_lambda is not None and n_hold:
        new = _refit_down(h, td, xt, router, shared_idx, expert_idx, top_k, fit, refit_lambda)
        err_new = evaluate_split(h[hold], new, xt[hold], shared_idx, expert_idx, router, oracle[hold], top_k,
                                 reference=h[hold] @ td.T)["rel_err_router"]
        metrics["rel_err_router_refit"] = err_new
        if err_new < REFIT_MIN_GAIN * metrics["rel_err_router"]:
            down = new.numpy()
        metrics["refit_used"] = float(down is not None)
    return MoELayer(shared_idx=shared_idx, expert_idx=expert_idx, router=router.numpy(), metrics=metrics, down=down)


def selection_mask(
    n_ffn: int, shared_idx: np.ndarray, expert_idx: np.ndarray, selected: torch.Tensor
) -> torch.Tensor:
    """[N, I] 0/1 mask of the neurons each token uses: the shared ones plus its selected experts [N, k]."""
    n_exp = expert_idx.shape[0]
    mask = torch.zeros(selected.shape[0], n_ffn)
    mask[:, torch.from_numpy(shared_idx)] = 1.0
    em = torch.zeros(selected.shape[0], n_exp).scatter_(1, selected, 1.0)
    mask[:, torch.from_numpy(expert_idx.reshape(-1))] = em.repeat_interleave(expert_idx.shape[1], dim=1)
    return mask


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over tokens of ||y - reference|| / ||reference||."""
    return float(((y - reference).norm(dim=1) / reference.norm(dim=1).clamp_min(1e-9)).mean())


def _route_mask(
    h: torch.Tensor, x: torch.Tensor, router: torch.Tensor, shared_idx: np.ndarray, expert_idx: np.ndarray, top_k: int
) -> torch.Tensor:
    """[N, I] 0/1 mask of the neurons a token uses: shared + its router's top-k experts."""
    return selection_mask(h.shape[1], shared_idx, expert_idx, (x @ router.T).topk(top_k, dim=1).indices)


def _refit_down(
    h: torch.Tensor,
    wd: torch.Tensor,
    x: torch.Tensor,
    router: torch.Tensor,
    shared_idx: np.ndarray,
    expert_idx: np.ndarray,
    top_k: int,
    fit: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """Ridge LS for W' [d, I]: min ||(h*mask) W'^T - h W^T||^2 + lam*s*||W' - W||^2 on fit tokens."""
    hf = h[fit]
    hm = hf * _route_mask(hf, x[fit], router, shared_idx, expert_idx, top_k)
    a = hm.T @ hm
    b = hm.T @ (hf @ wd.T)
    reg = lam * float(a.diagonal().mean())
    a.diagonal().add_(reg)
    del hm
    return torch.linalg.solve(a, b + reg * wd.T).T.contiguous()


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


def expert_tensors(
    wg: np.ndarray, wu: np.ndarray, wd: np.ndarray, layer: MoELayer, d_model: int
) -> dict[str, np.ndarray]:
    """Qwen2-MoE tensors for one layer (numpy, row-major, GGUF/transformers orientation).

    Keys: router [E, d], gate_exps/up_exps [E, m, d], down_exps [E, d, m] (scaled by E),
    shexp_gate_inp [d], gate_shexp/up_shexp [S, d], down_shexp [d, S] (scaled by 2).
    """
    if layer.down is not None:
        wd = layer.down
    n_exp = layer.expert_idx.shape[0]
    router = layer.router.astype(np.float32)
    # tiny logits: softmax weights ~1/E, ordering kept (scaled by the largest calibration logit)
    spread = layer.metrics.get("router_logit_absmax") or float(np.abs(router).sum(axis=1).max()) or 1.0
    router_scaled = router * (ROUTER_LOGIT_SCALE / spread)
    rng = np.random.default_rng(0)
    gate_inp = (rng.standard_normal(d_model).astype(np.float32) * SHARED_GATE_SCALE / np.sqrt(d_model)).astype(
        np.float32
    )
    gate_inp[np.abs(gate_inp) < 1e-8] = 1e-8  # never an exact zero: llama.cpp computes sigmoid as silu(x)/x
    ei = layer.expert_idx
    return {
        "router": router_scaled,
        "gate_exps": np.ascontiguousarray(wg[ei]),
        "up_exps": np.ascontiguousarray(wu[ei]),
        "down_exps": np.ascontiguousarray(np.transpose(wd[:, ei], (1, 0, 2)) * float(n_exp)),
        "shexp_gate_inp": gate_inp,
        "gate_shexp": np.ascontiguousarray(wg[layer.shared_idx]),
        "up_shexp": np.ascontiguousarray(wu[layer.shared_idx]),
        "down_shexp": np.ascontiguousarray(wd[:, layer.shared_idx] * 2.0),
    }
