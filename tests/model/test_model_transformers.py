"""transformers engine: MoE loading + router hooks for each family on tiny random-weight configs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from model.base import ContextTooLong, Generation, ModelError, ModelNotFound, UnsupportedArchitecture
from model.tiny import FAMILY_NAMES, save_tiny_checkpoint
from model.transformers_engine import TransformersEngine

MSGS = [{"role": "user", "content": "what is the capital of france"}]
# CPU by default (CI); SPARQ_TEST_DEVICE=cuda repeats the engine tests on a GPU.
DEVICE = os.environ.get("SPARQ_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family_engine(request, tmp_path_factory):
    d = save_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param) / "ckpt", seed=1)
    eng = TransformersEngine(d, device=DEVICE, n_threads=2)
    yield request.param, eng
    eng.close()


def test_family_loads_as_moe(family_engine):
    fam, eng = family_engine
    info = eng.info
    assert info.architecture == fam
    assert info.n_moe_layers == 2 and info.n_experts == 8 and info.n_experts_used == 2
    assert info.expert_ffn_size == 16
    assert 0 < info.active_params_per_token < info.total_params
    if fam == "qwen2_moe":
        assert info.n_shared_experts == 1 and info.shared_ffn_size == 32
    if fam.startswith("deepseek"):
        assert info.n_shared_experts == 1


def test_router_hooks_count_every_token(family_engine):
    _fam, eng = family_engine
    items = list(eng.stream(MSGS, max_tokens=4))
    gen = items[-1]
    assert isinstance(gen, Generation) and all(isinstance(i, str) for i in items[:-1])
    s = gen.stats
    assert s.accounting == "measured"
    hist = np.array(s.expert_histogram)
    assert hist.shape == (2, 8)
    evaluated = s.prompt_tokens + s.completion_tokens - 1
    assert (hist.sum(axis=1) == 2 * evaluated).all()
    assert s.active_params_per_token == pytest.approx(eng.info.active_params_per_token)


def test_top_k_override_changes_routing(tmp_path):
    d = save_tiny_checkpoint("olmoe", tmp_path / "o", seed=2)
    eng = TransformersEngine(d, device=DEVICE, top_k=4)
    g = eng.generate(MSGS, max_tokens=2)
    hist = np.array(g.stats.expert_histogram)
    assert (hist.sum(axis=1) == 4 * (g.stats.prompt_tokens + g.stats.completion_tokens - 1)).all()
    assert eng.info.n_experts_used == 4
    eng2 = TransformersEngine(d, device=DEVICE, top_k=2)
    assert g.stats.active_params_per_token > eng2.info.active_params_per_token


def test_context_too_long(tmp_path):
    d = save_tiny_checkpoint("mixtral", tmp_path / "m")
    eng = TransformersEngine(d, device=DEVICE, context_window=16)
    with pytest.raises(ContextTooLong) as ei:
        eng.generate([{"role": "user", "content": "the cat " * 10}], max_tokens=4)
    assert ei.value.window == 16


def test_missing_and_bad_checkpoints(tmp_path):
    with pytest.raises(ModelNotFound):
        TransformersEngine(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="config.json"):
        TransformersEngine(tmp_path / "empty")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(UnsupportedArchitecture, match="'bert'"):
        TransformersEngine(bert)
    d = save_tiny_checkpoint("qwen3_moe", tmp_path / "q")
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelError):
        TransformersEngine(d)


def test_dense_equivalence_qwen2_to_qwen2moe():
    """MoEfied model with every expert active reproduces the dense model's logits."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from model.moe.hf_model import moefy_qwen2_model
    from model.moe.split import ExpertLayout
    from model.transformers_engine import set_top_k

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    dense = Qwen2ForCausalLM(cfg).eval()
    calib = torch.randint(0, 128, (4, 64))
    moe = moefy_qwen2_model(dense, calib, ExpertLayout(160, 8, 16, 32), top_k=8, router_steps=30)
    test = torch.randint(0, 128, (1, 24), device=DEVICE)
    dense.to(DEVICE)
    moe.to(DEVICE)
    with torch.no_grad():
        ld = dense(test).logits
        lm = moe(test).logits
        assert (ld - lm).abs().max().item() < 1e-3 * ld.abs().max().item() + 1e-4
        set_top_k(moe, 3)
        l3 = moe(test).logits
    assert (ld - l3).abs().max().item() > 1e-2  # fewer experts really changes the function
    # experts are a split, not copies: every dense neuron appears exactly once
    mlp = moe.model.layers[0].mlp
    gu = mlp.experts.gate_up_proj.detach()
    gate_rows = torch.cat([gu[:, :16, :].reshape(-1, 64), mlp.shared_expert.gate_proj.weight.detach()])
    dense_rows = dense.model.layers[0].mlp.gate_proj.weight.detach()
    assert gate_rows.shape == dense_rows.shape
    match = torch.cdist(gate_rows, dense_rows).argmin(dim=1)
    assert sorted(match.tolist()) == list(range(160))


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v3"])
def test_gpu_half_precision_generation(tmp_path, family):
    """On a GPU, bf16 weights: generation runs and every evaluated token is counted in every MoE layer."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    d = save_tiny_checkpoint(family, tmp_path / family, seed=3)
    eng = TransformersEngine(d, device="cuda", dtype="bfloat16")
    assert next(eng.model.parameters()).dtype == torch.bfloat16
    g = eng.generate(MSGS, max_tokens=4)
    s = g.stats
    hist = np.array(s.expert_histogram)
    assert (hist.sum(axis=1) == 2 * (s.prompt_tokens + s.completion_tokens - 1)).all()
    assert s.accounting == "measured" and s.completion_tokens >= 1
    eng.close()
