"""The cut of one dense SwiGLU feed-forward block into an always-on shared expert + routed experts.

Why this design (see issue 4 and its measurements): the dense block is *split*, never copied, so with
every expert active the MoE computes exactly the dense block. The neurons that matter for almost every
token become the shared expert (DeepSeekMoE); the rest are grouped by co-activation into fine-grained
equal-size experts (balanced k-means, MoEfication / LLaMA-MoE), so that a token's useful neurons fall
into few experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# the default expert alignment: a multiple of every llama.cpp quant block (32); 256 keeps Q4_K/Q6_K (issue 15)
DEFAULT_ALIGN = 32


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
    dense_ffn: int, n_experts: int = 64, shared_fraction: float = 0.125, align: int = DEFAULT_ALIGN
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


def swiglu(x: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor) -> torch.Tensor:
    """The FFN's hidden activations silu(x Wg^T) * (x Wu^T), [N, I]."""
    return F.silu(x @ wg.T) * (x @ wu.T)


def neuron_contributions(h: torch.Tensor, wd: torch.Tensor) -> torch.Tensor:
    """[N, I] magnitude of each neuron's contribution to each token's block output."""
    return h.abs() * wd.norm(dim=0)


def balanced_kmeans(feats: torch.Tensor, n_clusters: int, size: int, iters: int, seed: int) -> np.ndarray:
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


def split_neurons(
    contrib: torch.Tensor, layout: ExpertLayout, kmeans_iters: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(shared neuron ids [S], expert neuron ids [E, m]) from calibration contributions [N, I].

    The shared expert takes the neurons with the largest mean contribution; the rest are clustered by
    their co-activation profile over the calibration tokens."""
    mean_c = contrib.mean(0)
    shared_idx = torch.topk(mean_c, layout.shared_size).indices.sort().values.numpy()
    rest = np.setdiff1d(np.arange(layout.dense_ffn), shared_idx)
    feats = contrib[:, torch.from_numpy(rest)].T.contiguous()  # co-activation profile per neuron
    groups = balanced_kmeans(feats, layout.n_experts, layout.expert_size, kmeans_iters, seed)
    return shared_idx, rest[groups]


def expert_outputs_norm(h: torch.Tensor, wd: torch.Tensor, expert_idx: np.ndarray) -> torch.Tensor:
    """Oracle score: L2 norm of each expert's contribution to the block output, [N, E]."""
    out = torch.empty(h.shape[0], expert_idx.shape[0])
    for e, idx in enumerate(expert_idx):
        ii = torch.from_numpy(idx)
        out[:, e] = (h[:, ii] @ wd[:, ii].T).norm(dim=1)
    return out


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
