"""llama.cpp engine on the shipped SmolLM2-135M GGUF and on tiny generated qwen2/qwen2moe GGUFs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model.base import ContextTooLong, Generation, ModelError, ModelNotFound, UnsupportedArchitecture
from tests.model.conftest import check_prefix_reuse

MSGS = [
    {"role": "system", "content": "Answer briefly."},
    {
        "role": "user",
        "content": "Context: The Eiffel Tower is in Paris.\nQuestion: In which city is the Eiffel Tower?",
    },
]


def test_info_of_dense_gguf(smollm2_engine):
    info = smollm2_engine.info
    assert info.architecture == "llama"
    assert info.n_experts == 0 and not info.is_moe
    assert info.context_window == 512
    assert info.total_params == info.extra["llama_n_params"]  # header count agrees with llama.cpp
    assert info.n_layers == 30 and info.hidden_size == 576


def test_token_counts_include_chat_template(smollm2_engine):
    raw = smollm2_engine.count_tokens("hello world")
    assert 1 <= raw <= 3
    n_chat = smollm2_engine.count_chat_tokens([{"role": "user", "content": "hello world"}])
    assert n_chat > raw + 3  # role markers and assistant header are counted


def test_stream_yields_text_then_one_generation(smollm2_engine):
    items = list(smollm2_engine.stream(MSGS, max_tokens=12))
    assert isinstance(items[-1], Generation)
    assert all(isinstance(i, str) for i in items[:-1])
    gen = items[-1]
    assert gen.text == "".join(items[:-1])
    assert gen.finish_reason in ("stop", "length")
    s = gen.stats
    assert s.prompt_tokens == smollm2_engine.count_chat_tokens(MSGS)
    assert 1 <= s.completion_tokens <= 12
    assert s.prefill_seconds > 0 and s.flops_prefill > 0
    assert s.accounting == "measured" and s.expert_histogram is None  # dense: nothing to route
    assert s.flops_prefill == pytest.approx(s.dense_flops_prefill)
    assert "paris" in gen.text.lower()


def test_generate_is_deterministic_at_temperature_zero(smollm2_engine):
    a = smollm2_engine.generate(MSGS, max_tokens=8)
    b = smollm2_engine.generate(MSGS, max_tokens=8)
    assert a.text == b.text


def test_stop_string_cuts_output(smollm2_engine):
    full = smollm2_engine.generate(MSGS, max_tokens=16).text
    if len(full) < 4:
        pytest.skip("model answer too short to cut")
    stop = full[2:4]
    cut = smollm2_engine.generate(MSGS, max_tokens=16, stop=[stop])
    assert stop not in cut.text and cut.finish_reason == "stop"
    assert full.startswith(cut.text)


def test_context_too_long_is_raised_before_generating(smollm2_engine):
    long_text = "word " * 600
    with pytest.raises(ContextTooLong) as ei:
        smollm2_engine.generate([{"role": "user", "content": long_text}], max_tokens=8)
    assert ei.value.window == 512 and ei.value.n_tokens > 512
    n = smollm2_engine.count_chat_tokens(MSGS)
    with pytest.raises(ContextTooLong):  # prompt fits but prompt + max_tokens does not
        smollm2_engine.generate(MSGS, max_tokens=512 - n + 1)


def test_missing_file(tmp_path, llama_cpp_mod):
    from model.llamacpp_engine import LlamaCppEngine

    with pytest.raises(ModelNotFound, match="not found"):
        LlamaCppEngine(tmp_path / "missing.gguf")


def test_not_a_gguf_file(tmp_path, llama_cpp_mod):
    from model.llamacpp_engine import LlamaCppEngine

    p = tmp_path / "bad.gguf"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ModelError, match="not a GGUF"):
        LlamaCppEngine(p)


def test_truncated_gguf(tmp_path, smollm2_gguf):
    from model.llamacpp_engine import LlamaCppEngine

    p = tmp_path / "cut.gguf"
    with smollm2_gguf.open("rb") as src, p.open("wb") as dst:
        dst.write(src.read(4 << 20))
    with pytest.raises(ModelError, match="corrupt|truncated"):
        LlamaCppEngine(p)


def test_unsupported_architecture(tmp_path, llama_cpp_mod):
    import gguf

    from model.llamacpp_engine import LlamaCppEngine

    p = tmp_path / "t5.gguf"
    w = gguf.GGUFWriter(str(p), "t5")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedArchitecture, match="'t5'"):
        LlamaCppEngine(p)


# ---- qwen2moe written by the MoEfication pipeline from a tiny random dense qwen2 -----------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, smollm2_gguf):
    """(dense qwen2 GGUF, MoE qwen2moe GGUF with 8 experts, split tensors of layer 0)."""
    from model.tiny import build_tiny_moe_gguf

    samples = [
        [{"role": "user", "content": f"Sample {i}: the river flows past the old tower in the city."}]
        for i in range(30)
    ]
    return build_tiny_moe_gguf(
        tmp_path_factory.mktemp("tinymoe"),
        smollm2_gguf,
        samples,
        calib_tokens=400,
        router_steps=40,
        n_threads=1,
    )


def test_moe_with_all_experts_reproduces_dense_logits(tiny_pair):
    from model.llamacpp_engine import LlamaCppEngine

    dense, moe, _ = tiny_pair
    text = "The old tower stands by the river."
    with LlamaCppEngine(dense, n_ctx=256, n_threads=1) as de:
        ld = de.last_logits(text)
    with LlamaCppEngine(moe, n_ctx=256, n_threads=1, top_k=8) as me:
        assert me.info.architecture == "qwen2moe" and me.info.n_experts == 8 and me.info.n_experts_used == 8
        lm = me.last_logits(text)
    with LlamaCppEngine(moe, n_ctx=256, n_threads=1, top_k=2) as me2:
        l2 = me2.last_logits(text)
    scale = float(np.abs(ld).max())
    assert float(np.abs(lm - ld).max()) < 0.01 * scale  # F16 experts: tiny rounding only
    assert float(np.abs(l2 - ld).max()) > 0.05 * scale  # top-2 of 8 really drops experts


def test_expert_capture_matches_numpy_router(tiny_pair):
    from model.llamacpp_engine import LlamaCppEngine

    _, moe, layers = tiny_pair
    with LlamaCppEngine(moe, n_ctx=256, n_threads=1, capture_ffn_input=True) as eng:
        seen: list[tuple[int, np.ndarray]] = []
        eng.capture.on_topk = lambda il, ids: seen.append((il, ids))
        toks = eng.tokenize("Where does the river flow past the tower?")
        eng.eval_tokens(toks)
        x0 = eng.capture.ffn_inputs[0][0]
        ids0 = next(ids for il, ids in seen if il == 0)
        assert ids0.shape == (len(toks), 2)
        ref = np.argsort(-(x0 @ layers[0]["router"].T), axis=1)[:, :2]
        assert (np.sort(ref, axis=1) == np.sort(ids0, axis=1)).all()


def test_moe_generation_reports_measured_histogram(tiny_pair):
    from model.llamacpp_engine import LlamaCppEngine

    _, moe, _ = tiny_pair
    with LlamaCppEngine(moe, n_ctx=256, n_threads=1) as eng:
        g = eng.generate([{"role": "user", "content": "Tell me about the river."}], max_tokens=6)
        s = g.stats
        assert s.accounting == "measured"
        hist = np.array(s.expert_histogram)
        assert hist.shape == (2, 8)
        n_eval = s.prompt_tokens + s.completion_tokens - 1  # the last sampled token is never evaluated
        assert hist[0].sum() == 2 * n_eval  # every token chose exactly 2 experts in layer 0
        assert eng.info.total_params > s.active_params_per_token > 0
        assert s.flops_prefill < s.dense_flops_prefill


def test_moe_reusing_a_prefix_counts_experts_of_the_computed_tokens_only(tiny_pair):
    from model.llamacpp_engine import LlamaCppEngine

    _, moe, _ = tiny_pair
    system = {"role": "system", "content": "Answer from the passages about the river and the old tower."}
    with LlamaCppEngine(moe, n_ctx=256, n_threads=1) as eng:
        eng.generate([system, {"role": "user", "content": "Tell me about the river."}], max_tokens=4)
        g = eng.generate([system, {"role": "user", "content": "Where is the tower?"}], max_tokens=4)
        reused = eng.last_reused_tokens
        assert reused > 10  # the system turn came from the cache
        s = g.stats
        n_eval = s.prompt_tokens - reused + s.completion_tokens - 1
        assert np.array(s.expert_histogram)[0].sum() == 2 * n_eval  # what ran, not what was reused
        assert s.prompt_tokens == eng.count_chat_tokens(
            [system, {"role": "user", "content": "Where is the tower?"}]
        )


def test_prefix_reuse_gives_the_cold_answer_faster(smollm2_gguf):
    from model.llamacpp_engine import LlamaCppEngine

    check_prefix_reuse(lambda **kw: LlamaCppEngine(smollm2_gguf, n_ctx=1024, n_threads=1, **kw))


def test_top_k_beyond_graph_budget_is_refused(tiny_pair, tmp_path):
    from model.llamacpp_engine import LlamaCppEngine

    _, moe, _ = tiny_pair
    with pytest.raises(ValueError, match="top_k"):
        LlamaCppEngine(moe, top_k=9)  # more than the 8 experts
    copy = tmp_path / "m.gguf"
    shutil.copy(moe, copy)
    with LlamaCppEngine(copy, n_ctx=128, n_threads=1, top_k=1) as eng:
        assert eng.info.n_experts_used == 1
        assert Path(eng.info.path) == copy


def test_configured_top_k_reaches_the_served_model(tiny_pair, tmp_path):
    """SPARQ_LLM_TOP_K changes the experts each token uses, measured in the generation's histogram."""
    from app.assistant import Assistant
    from app.config import Settings

    _, moe, _ = tiny_pair
    settings = Settings(
        data_dir=tmp_path, llm_model=str(moe), llm_top_k=4, llm_threads=1, llm_context_window=256
    )
    assistant = Assistant(settings)
    try:
        llm = assistant.llm
        assert llm.info.n_experts_used == 4
        s = llm.generate([{"role": "user", "content": "Tell me about the river."}], max_tokens=3).stats
        n_eval = s.prompt_tokens + s.completion_tokens - 1
        assert np.array(s.expert_histogram)[0].sum() == 4 * n_eval
    finally:
        assistant.close()
    with pytest.raises(ValueError, match="llm_top_k"):
        Settings(llm_top_k=0)


# ---- weight repacking: off only for MoE models with 256-aligned experts (issue 15) -----------------


def _repack_buffer_logged(path: Path, capfd: pytest.CaptureFixture[str], **kw: object) -> bool:
    """Whether llama.cpp's load log reports a CPU_REPACK weight buffer for this engine."""
    from model.llamacpp_engine import LlamaCppEngine

    capfd.readouterr()
    with LlamaCppEngine(path, n_ctx=128, n_threads=1, verbose=True, **kw):  # type: ignore[arg-type]
        pass
    out, err = capfd.readouterr()
    return "CPU_REPACK" in out + err


def test_dense_weights_are_repacked_unless_turned_off(smollm2_gguf, capfd):
    assert _repack_buffer_logged(smollm2_gguf, capfd)  # the default for a dense model
    assert not _repack_buffer_logged(smollm2_gguf, capfd, repack_weights=False)


def test_only_moe_models_with_256_aligned_experts_are_left_unrepacked(tiny_pair):
    from dataclasses import replace

    from model.llamacpp_engine import LlamaCppEngine, repack_by_default

    dense, moe, _ = tiny_pair
    with LlamaCppEngine(dense, n_ctx=128, n_threads=1) as de:
        assert de.info.extra["repacked_weights"] is True
    with LlamaCppEngine(moe, n_ctx=128, n_threads=1) as me:
        assert me.info.expert_ffn_size == 16 and me.info.extra["repacked_weights"] is True
        info = me.info
    with LlamaCppEngine(moe, n_ctx=128, n_threads=1, repack_weights=False) as me:
        assert me.info.extra["repacked_weights"] is False
    assert not repack_by_default(replace(info, expert_ffn_size=256))  # e.g. 30 x 256 + a 1,280 shared
    assert repack_by_default(replace(info, expert_ffn_size=128))  # the default split's experts
