"""End-to-end build of the embedded default on the shipped 0.5B source (slow), and `model info`."""

from __future__ import annotations

import json
import time

import pytest

from model.base import ModelNotFound


@pytest.fixture(scope="module")
def qwen05_available():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from model.moe.source_weights import SOURCES, part_files

    try:
        part_files(SOURCES["qwen2.5-coder-0.5b"])
    except ModelNotFound as exc:
        pytest.skip(str(exc))


def test_describe_model_without_build_says_how(tmp_path):
    from model.moe.info import describe_model

    with pytest.raises(ModelNotFound, match="sparq model build-default"):
        describe_model(tmp_path)


def test_default_serves_the_exact_split_at_24_of_30_and_a_refit_at_its_trained_20():
    from model.moe.build import DEFAULT_LAYOUT, REFIT_LAMBDA, build_top_k
    from model.moe.split import choose_layout

    src = "qwen2.5-coder-1.5b"
    lay = DEFAULT_LAYOUT[src]
    layout = choose_layout(
        8960, n_experts=lay.n_experts, shared_fraction=lay.shared_fraction, align=lay.align
    )
    assert (layout.n_experts, layout.expert_size, layout.shared_size) == (30, 256, 1280)  # Q4_K/Q6_K rows
    assert build_top_k(src, None, None, None) == (20, 24)  # full ask path: dense's answers at 24 (README)
    assert build_top_k(src, None, None, REFIT_LAMBDA) == (20, 20)  # a refit serves what it was fitted to
    assert build_top_k(src, 30, None, REFIT_LAMBDA) == (20, 30)  # an explicit top-k wins
    assert build_top_k(src, None, 20, REFIT_LAMBDA) == (20, 20)  # a refit serves what it was fitted to
    assert build_top_k("another-source", None, None, None) == (16, 16)


def test_model_info_summary_of_shipped_dense_gguf(smollm2_gguf):
    from model.moe.info import describe_model

    s = describe_model(smollm2_gguf.parent, str(smollm2_gguf))
    assert s["architecture"] == "llama" and s["experts"] == 0 and s["top_k"] == 0
    assert s["active_params_per_token"] == s["total_params"] and s["active_fraction"] == 1.0


@pytest.mark.slow
def test_build_default_on_small_source_is_idempotent_and_runs(tmp_path, qwen05_available):
    from model.llamacpp_engine import LlamaCppEngine
    from model.moe.build import build_default_model
    from model.moe.info import model_info_summary

    calib = [
        [
            {
                "role": "user",
                "content": f"Context: sample {i}. The city of Paris lies on the Seine river. "
                "Question: which river flows through Paris?",
            },
            {"role": "assistant", "content": "The Seine"},
        ]
        for i in range(12)
    ]
    steps: list[str] = []
    t0 = time.time()
    path = build_default_model(
        tmp_path,
        source="qwen2.5-coder-0.5b",
        calib_tokens=512,
        router_steps=30,
        calibration=calib,
        n_threads=2,
        progress=lambda m, f: steps.append(m),
    )
    first = time.time() - t0
    assert path.is_file() and any("layer 24/24" in s for s in steps)
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["architecture"] == "qwen2moe"
    assert manifest["source_sha256"] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert (
        manifest["shared_expert_size"] + manifest["n_experts"] * manifest["expert_size"]
        == manifest["dense_ffn"]
    )
    assert 0 < manifest["calibration"]["mean"]["router_recall"] <= 1
    t1 = time.time()
    again = build_default_model(
        tmp_path,
        source="qwen2.5-coder-0.5b",
        calib_tokens=512,
        router_steps=30,
        calibration=calib,
        n_threads=2,
    )
    assert again == path and time.time() - t1 < min(5.0, first / 4)
    summary = model_info_summary(path)
    assert summary["architecture"] == "qwen2moe" and summary["experts"] == manifest["n_experts"]
    assert summary["top_k"] == manifest["top_k"] and summary["shared_experts"] == 1
    assert summary["active_params_per_token"] < summary["total_params"]
    assert summary["active_ffn_fraction_vs_dense"] == pytest.approx(manifest["active_ffn_fraction"], abs=1e-3)
    with LlamaCppEngine(path, n_ctx=512, n_threads=2) as eng:
        g = eng.generate([{"role": "user", "content": "Say hello."}], max_tokens=6)
        assert g.stats.accounting == "measured" and g.stats.completion_tokens >= 1
    # changing the served top-k re-targets the built file in place, without a rebuild
    t2 = time.time()
    again = build_default_model(
        tmp_path,
        source="qwen2.5-coder-0.5b",
        top_k=10,
        calib_tokens=512,
        router_steps=30,
        calibration=calib,
        n_threads=2,
    )
    assert again == path and time.time() - t2 < first / 3  # a checksum + 4-byte patch, not a rebuild
    assert model_info_summary(path)["top_k"] == 10
    assert json.loads((path.parent / "manifest.json").read_text())["train_top_k"] == manifest["train_top_k"]


def test_model_info_of_checkpoint_dir_without_loading_weights(tmp_path):
    pytest.importorskip("transformers")
    from model.moe.info import describe_model
    from model.tiny import save_tiny_checkpoint

    d = save_tiny_checkpoint("qwen2_moe", tmp_path / "ckpt")
    s = describe_model(tmp_path, str(d))
    assert s["architecture"] == "qwen2_moe" and s["experts"] == 8 and s["top_k"] == 2
    assert s["shared_experts"] == 1 and s["active_params_per_token"] < s["total_params"]
