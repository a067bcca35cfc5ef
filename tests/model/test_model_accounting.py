"""Active-parameter and FLOP accounting from expert histograms."""

from __future__ import annotations

import pytest

from model.accounting import (
    build_stats,
    estimate_total_params,
    expert_params,
    forward_flops,
    measured_active_params,
    nominal_active_params,
)
from model.base import ModelInfo


def moe_info(**kw) -> ModelInfo:
    base = dict(
        name="t",
        backend="x",
        architecture="qwen2moe",
        context_window=1024,
        n_layers=4,
        hidden_size=64,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        vocab_size=1000,
        n_moe_layers=4,
        n_experts=8,
        n_experts_used=2,
        n_shared_experts=1,
        expert_ffn_size=32,
        shared_ffn_size=64,
        dense_ffn_size=320,
        total_params=0,
        active_params_per_token=0,
    )
    base.update(kw)
    info = ModelInfo(**base)
    from dataclasses import replace

    return replace(info, total_params=estimate_total_params(info))


def test_nominal_active_excludes_unselected_experts():
    info = moe_info()
    unused = 4 * (8 - 2) * expert_params(info)
    assert nominal_active_params(info) == info.total_params - unused
    assert expert_params(info) == 3 * 64 * 32


def test_measured_active_uses_histogram_and_per_layer_token_counts():
    info = moe_info()
    # 10 tokens, top-2 in every layer -> nominal
    hist = [[5, 5, 5, 5, 0, 0, 0, 0]] * 4
    assert measured_active_params(info, hist, 10) == pytest.approx(nominal_active_params(info))
    # last layer saw 1 token only (llama.cpp prefill): counts per row keep it exact
    hist2 = [[5, 5, 5, 5, 0, 0, 0, 0]] * 3 + [[1, 1, 0, 0, 0, 0, 0, 0]]
    assert measured_active_params(info, hist2, [10, 10, 10, 1]) == pytest.approx(nominal_active_params(info))
    # a layer where tokens used 4 experts on average costs more than nominal
    hist3 = [[10, 10, 10, 10, 0, 0, 0, 0]] + [[5, 5, 5, 5, 0, 0, 0, 0]] * 3
    more = measured_active_params(info, hist3, 10)
    assert more == pytest.approx(nominal_active_params(info) + 2 * expert_params(info))


def test_flops_follow_kaplan_formula():
    info = moe_info(tied_embeddings=True)
    n = 1_000_000
    # single token at position 1: 2N + 2 * n_layer * 1 * d_attn
    assert forward_flops(info, n, 0, 1) == pytest.approx(2 * n + 2 * 4 * 64)
    # three tokens at positions 1..3 -> context sum 6
    assert forward_flops(info, n, 0, 3) == pytest.approx(3 * 2 * n + 2 * 4 * 64 * 6)
    # untied: the input embedding lookup is not a matmul
    untied = moe_info(tied_embeddings=False)
    assert forward_flops(untied, n, 0, 1) == pytest.approx(2 * (n - 1000 * 64) + 2 * 4 * 64)


def test_build_stats_sparse_costs_less_than_dense():
    info = moe_info()
    hist = [[3, 3, 2, 2, 0, 0, 0, 0]] * 4
    s = build_stats(
        info,
        prompt_tokens=4,
        completion_tokens=1,
        prefill_seconds=0.5,
        decode_seconds=0.0,
        histogram=hist,
        histogram_tokens=5,
        accounting="measured",
    )
    assert s.accounting == "measured"
    assert s.active_params_per_token < info.total_params
    assert s.flops_prefill < s.dense_flops_prefill
    assert s.prefill_tokens_per_second == pytest.approx(8.0)
    assert s.expert_histogram == hist
