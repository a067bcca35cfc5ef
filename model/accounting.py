"""Active-parameter and FLOP accounting from the experts each token actually used.

Convention (documented so numbers are comparable across engines):
* total params = everything in the checkpoint (embeddings, attention, norms, routers, all experts, head);
* active params per token = total minus the routed experts a token did *not* use, i.e.
  attention + norms + routers + shared experts + selected routed experts + embeddings/head;
* FLOPs per token ~= 2 x (active params that are matmuls: all but the input-embedding lookup,
  the head counts even when tied) + the attention term 2 x n_layer x context x d_attn
  (Kaplan et al. 2020), context being the token's position in the sequence;
* the dense reference is a dense model of the same total size (every expert active).
"""

from __future__ import annotations

from collections.abc import Sequence

from model.base import Accounting, GenerationStats, ModelInfo


def expert_params(info: ModelInfo) -> int:
    """Parameters of one routed expert (gated FFN: gate, up, down)."""
    return 3 * info.hidden_size * info.expert_ffn_size


def attention_params(info: ModelInfo) -> int:
    """Q, K, V, O projection weights of one layer (biases ignored, they are negligible)."""
    d, hd = info.hidden_size, info.head_dim
    return d * info.n_heads * hd * 2 + 2 * d * info.n_kv_heads * hd


def estimate_total_params(info: ModelInfo) -> int:
    """Total parameters from shapes, for backends that cannot count them (remote servers)."""
    d = info.hidden_size
    dense_layers = info.n_layers - info.n_moe_layers
    moe_layer = (
        info.n_experts * expert_params(info)
        + 3 * d * info.shared_ffn_size
        + info.n_experts * d
        + (d if info.shared_ffn_size else 0)
    )
    per_layer_common = attention_params(info) + 2 * d
    emb = info.vocab_size * d * (1 if info.tied_embeddings else 2)
    return (
        emb
        + info.n_layers * per_layer_common
        + dense_layers * 3 * d * info.dense_ffn_size
        + info.n_moe_layers * moe_layer
        + d
    )


def nominal_active_params(info: ModelInfo, total_params: int | None = None) -> int:
    """Active params per token if every MoE layer uses exactly top-k experts."""
    total = info.total_params if total_params is None else total_params
    unused = info.n_moe_layers * max(info.n_experts - info.n_experts_used, 0) * expert_params(info)
    return int(total - unused)


def measured_active_params(
    info: ModelInfo, histogram: Sequence[Sequence[int]], n_tokens: int | Sequence[int]
) -> float:
    """Average active params per token from a (MoE layers x experts) selection histogram.

    ``n_tokens`` is the number of tokens that went through each MoE layer (one number, or one
    per histogram row: llama.cpp skips non-output rows in the last layer during prefill).
    """
    counts = [int(n_tokens)] * len(histogram) if isinstance(n_tokens, int) else [int(c) for c in n_tokens]
    if not histogram or len(counts) != len(histogram) or min(counts, default=0) <= 0:
        return float(nominal_active_params(info))
    ep = expert_params(info)
    unused = 0.0
    for row, n in zip(histogram, counts, strict=True):
        used = sum(row) / n
        unused += (len(row) - used) * ep
    # layers that are MoE but had no rows captured are counted at nominal top-k
    missing = info.n_moe_layers - len(histogram)
    if missing > 0:
        unused += missing * max(info.n_experts - info.n_experts_used, 0) * ep
    return float(info.total_params - unused)


def matmul_params(info: ModelInfo, active_params: float) -> float:
    """Active params that cost 2 FLOPs each per token: all but the input-embedding lookup."""
    lookup = 0 if info.tied_embeddings else info.vocab_size * info.hidden_size
    return max(active_params - lookup, 0.0)


def forward_flops(info: ModelInfo, active_params: float, start_pos: int, n_tokens: int) -> float:
    """FLOPs to process ``n_tokens`` tokens at positions start_pos+1 .. start_pos+n_tokens."""
    if n_tokens <= 0:
        return 0.0
    d_attn = info.n_heads * info.head_dim
    ctx_sum = n_tokens * start_pos + n_tokens * (n_tokens + 1) / 2
    return 2.0 * matmul_params(info, active_params) * n_tokens + 2.0 * info.n_layers * d_attn * ctx_sum


def build_stats(
    info: ModelInfo,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    prefill_seconds: float,
    decode_seconds: float,
    histogram: list[list[int]] | None,
    histogram_tokens: int | Sequence[int],
    accounting: Accounting,
) -> GenerationStats:
    """Turn counts, timings and the expert histogram into a GenerationStats."""
    if histogram:
        active = measured_active_params(info, histogram, histogram_tokens)
    else:
        active = float(nominal_active_params(info))
    dense = float(info.total_params)
    fp = forward_flops(info, active, 0, prompt_tokens)
    fd = forward_flops(info, active, prompt_tokens, completion_tokens)
    return GenerationStats(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prefill_seconds=prefill_seconds,
        decode_seconds=decode_seconds,
        tokens_per_second=(completion_tokens / decode_seconds) if decode_seconds > 0 else 0.0,
        prefill_tokens_per_second=(prompt_tokens / prefill_seconds) if prefill_seconds > 0 else 0.0,
        expert_histogram=histogram,
        active_params_per_token=active,
        flops_prefill=fp,
        flops_decode=fd,
        dense_flops_prefill=forward_flops(info, dense, 0, prompt_tokens),
        dense_flops_decode=forward_flops(info, dense, prompt_tokens, completion_tokens),
        accounting=accounting,
    )
