"""ik_llama.cpp engine against the llama.cpp engine: the shipped SmolLM2-135M GGUF and tiny qwen2/qwen2moe GGUFs."""

from __future__ import annotations

import numpy as np
import pytest

from model.base import ContextTooLong, Generation, ModelError, ModelNotFound
from tests.model.conftest import check_prefix_reuse

MSGS = [
    {"role": "system", "content": "Answer briefly."},
    {
        "role": "user",
        "content": "Context: The Eiffel Tower is in Paris.\nQuestion: In which city is the Eiffel Tower?",
    },
]
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 2 + 2?",
    "Who wrote Romeo and Juliet?",
    "Translate 'thank you' into French.",
    "What colour is the sky on a clear day?",
]
LONG = " ".join(["The river flows past the old tower in the city, and the people walk along its banks."] * 6)


@pytest.fixture(scope="session")
def ik_mod():
    return pytest.importorskip("ik_llama_cpp", reason="ik-llama-cpp-python is not installed (extra 'ik')")


@pytest.fixture(scope="module")
def ik_engine(smollm2_gguf, ik_mod):
    from model.ik_llama_engine import IkLlamaEngine

    eng = IkLlamaEngine(smollm2_gguf, n_ctx=1024, n_threads=1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def ll_engine(smollm2_gguf):
    from model.llamacpp_engine import LlamaCppEngine

    eng = LlamaCppEngine(smollm2_gguf, n_ctx=1024, n_threads=1)
    yield eng
    eng.close()


# ---- chat template (no ik needed: the renderer must equal llama-cpp-python's) -----------------------

TEMPLATES = [
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}",
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
    "{% generation %}[{{ m['role'] }}] {{ m['content'] | tojson }}{% endgeneration %}\n{% endfor %}{{ eos_token }}",
    "{% if messages[0]['role'] == 'user' %}{{ raise_exception('system first') }}{% endif %}ok",
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_chat_template_renders_as_llama_cpp_formatter(template, llama_cpp_mod):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from model.chat_template import ChatTemplate

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": 'Où est "la" tour?'}]
    ours = ChatTemplate(template, bos_token="<s>", eos_token="</s>")
    theirs = Jinja2ChatFormatter(template=template, eos_token="</s>", bos_token="<s>")
    assert ours.render(msgs) == theirs(messages=msgs).prompt
    with pytest.raises(ValueError, match="system first"):
        ChatTemplate(TEMPLATES[2], bos_token="", eos_token="").render(msgs[1:])


def test_chat_prompt_and_token_counts_equal_llamacpp(ik_engine, ll_engine):
    for msgs in (MSGS, MSGS[1:], [{"role": "user", "content": "hello world"}]):
        assert ik_engine.chat_prompt(msgs) == ll_engine.chat_prompt(msgs)
        assert ik_engine.chat_tokens(msgs) == ll_engine.chat_tokens(msgs)
        assert ik_engine.count_chat_tokens(msgs) == ll_engine.count_chat_tokens(msgs)
    assert ik_engine.count_tokens("hello world") == ll_engine.count_tokens("hello world")
    assert ik_engine.count_chat_tokens(MSGS) > ik_engine.count_tokens(MSGS[1]["content"]) + 3


# ---- dense model -----------------------------------------------------------------------------------


def test_info_names_the_engine(ik_engine):
    info = ik_engine.info
    assert info.backend == "ik_llama" and info.architecture == "llama" and not info.is_moe
    # ik counts a tied head twice (it makes its own output tensor); accounting uses the header's count
    assert info.tied_embeddings
    assert info.extra["llama_n_params"] == info.total_params + info.vocab_size * info.hidden_size
    assert info.context_window == 1024
    assert info.extra["fused_moe_up_gate"] and info.extra["threads"] == 1


def test_large_batches_of_q4_1_rows_are_computed_correctly(ik_engine, ll_engine):
    """SmolLM2 is Q4_1 with rows of 576: ik 0.1.5 gets such products wrong in batches of >= 32 tokens
    (the whole logit range off), so the engine caps its batch; the 80-token logits then track llama.cpp's."""
    toks = ll_engine.tokenize(LONG)
    assert len(toks) >= 64
    assert ik_engine.n_batch < 32 and "ik_batch_cap" in ik_engine.info.extra
    ref = ll_engine.last_logits(LONG)
    got = ik_engine.last_logits(LONG)
    assert got.argmax() == ref.argmax()
    assert float(np.abs(got - ref).max()) < 0.1 * float(np.abs(ref).max())


def test_q4_1_large_batch_defect_is_still_in_ik(smollm2_gguf, ik_mod, ll_engine, monkeypatch):
    """Canary for the cap above: without it the logits are wrong. When this fails, ik fixed the defect
    and model.ik_llama_engine._ik_batch_cap can go."""
    import model.ik_llama_engine as ike

    monkeypatch.setattr(ike, "_ik_batch_cap", lambda _path: None)
    with ike.IkLlamaEngine(smollm2_gguf, n_ctx=256, n_threads=1, n_batch=128) as eng:
        assert eng.n_batch == 128
        got = eng.last_logits(LONG)
    ref = ll_engine.last_logits(LONG)
    assert float(np.abs(got - ref).max()) > 0.3 * float(np.abs(ref).max())


def test_greedy_answers_match_llamacpp(ik_engine, ll_engine):
    """Both engines are llama.cpp, but quantized products differ in rounding (ik quantizes activations
    differently): the first token always agrees and most 8-token greedy answers are identical."""
    same = 0
    for q in PROMPTS:
        msgs = [{"role": "user", "content": q}]
        a = ik_engine.generate(msgs, max_tokens=8).text
        b = ll_engine.generate(msgs, max_tokens=8).text
        t_a, t_b = ik_engine.tokenize(a), ll_engine.tokenize(b)
        assert t_a[:1] == t_b[:1], (q, a, b)
        same += a == b
    assert same >= len(PROMPTS) - 2


def test_stream_yields_text_then_one_generation(ik_engine):
    items = list(ik_engine.stream(MSGS, max_tokens=12))
    assert isinstance(items[-1], Generation)
    assert all(isinstance(i, str) for i in items[:-1])
    gen = items[-1]
    assert gen.text == "".join(items[:-1])
    assert gen.finish_reason in ("stop", "length")
    s = gen.stats
    assert s.prompt_tokens == ik_engine.count_chat_tokens(MSGS)
    assert 1 <= s.completion_tokens <= 12
    assert s.prefill_seconds > 0 and s.flops_prefill > 0
    assert s.accounting == "measured" and s.expert_histogram is None  # dense: nothing to route
    assert "paris" in gen.text.lower()


def test_generate_is_deterministic_and_stops_at_eog(ik_engine):
    a = ik_engine.generate(MSGS, max_tokens=64)
    b = ik_engine.generate(MSGS, max_tokens=64)
    assert a.text == b.text
    assert a.finish_reason == "stop" and a.stats.completion_tokens < 64  # the end-of-turn token ended it
    assert "<|im_end|>" not in a.text


def test_sampling_with_temperature_varies_and_stays_in_vocab(ik_engine):
    from model.ik_llama_engine import sample_token

    rng = np.random.default_rng(0)
    logits = ik_engine.last_logits("The capital of France is")
    picks = {sample_token(logits, 1.0, rng) for _ in range(200)}
    assert int(np.argmax(logits)) in picks and len(picks) > 1
    top40 = set(np.argsort(-logits)[:40].tolist())
    assert picks <= top40
    assert sample_token(logits, 0.0, rng) == int(np.argmax(logits))


def test_stop_string_cuts_output(ik_engine):
    full = ik_engine.generate(MSGS, max_tokens=16).text
    if len(full) < 4:
        pytest.skip("model answer too short to cut")
    stop = full[2:4]
    cut = ik_engine.generate(MSGS, max_tokens=16, stop=[stop])
    assert stop not in cut.text and cut.finish_reason == "stop"
    assert full.startswith(cut.text)


def test_context_too_long_is_raised_before_generating(ik_engine):
    with pytest.raises(ContextTooLong) as ei:
        ik_engine.generate([{"role": "user", "content": "word " * 1200}], max_tokens=8)
    assert ei.value.window == 1024
    n = ik_engine.count_chat_tokens(MSGS)
    with pytest.raises(ContextTooLong):
        ik_engine.generate(MSGS, max_tokens=1024 - n + 1)


def test_prefix_reuse_gives_the_cold_answer_faster(smollm2_gguf, ik_mod):
    from model.ik_llama_engine import IkLlamaEngine

    check_prefix_reuse(lambda **kw: IkLlamaEngine(smollm2_gguf, n_ctx=1024, n_threads=1, **kw))


def test_missing_file_and_missing_package(tmp_path, ik_mod, monkeypatch):
    import importlib.util

    from model import create_engine
    from model.ik_llama_engine import _Ik

    with pytest.raises(ModelNotFound, match="not found"):
        create_engine("ik_llama", str(tmp_path / "nope.gguf"))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "ik_llama_cpp" else real(n, *a)
    )
    with pytest.raises(ModelError, match=r"pip install ik-llama-cpp-python==0\.1\.5"):
        _Ik()
    with pytest.raises(ModelError, match="ik-llama-cpp-python"):
        create_engine("ik_llama", None, data_dir=tmp_path)  # refused before any default-model build
    assert not (tmp_path / "models").exists()


def test_factory_builds_ik_engine(smollm2_gguf, ik_mod):
    from model import create_engine
    from model.factory import BACKENDS
    from model.ik_llama_engine import IkLlamaEngine

    assert "ik_llama" in BACKENDS
    with create_engine("ik_llama", str(smollm2_gguf), n_threads=1, n_ctx=256) as eng:
        assert isinstance(eng, IkLlamaEngine) and eng.info.context_window == 256


# ---- qwen2moe written by the MoEfication pipeline from a tiny random dense qwen2 -----------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, smollm2_gguf, ik_mod):
    """(dense qwen2 GGUF, MoE qwen2moe GGUF with 8 experts, top-2, split tensors of each layer)."""
    from model.tiny import build_tiny_moe_gguf

    samples = [
        [{"role": "user", "content": f"Sample {i}: the river flows past the old tower in the city."}]
        for i in range(30)
    ]
    return build_tiny_moe_gguf(
        tmp_path_factory.mktemp("tinymoe_ik"),
        smollm2_gguf,
        samples,
        calib_tokens=400,
        router_steps=40,
        n_threads=1,
    )


def test_moe_histogram_totals_are_tokens_times_top_k(tiny_pair):
    from model.ik_llama_engine import IkLlamaEngine

    _, moe, _ = tiny_pair
    msgs = [
        {"role": "system", "content": "Tell the story."},
        {"role": "user", "content": "Tell me about the river."},
    ]
    with IkLlamaEngine(moe, n_ctx=256, n_threads=1) as eng:
        assert eng.info.n_experts == 8 and eng.info.n_experts_used == 2
        g = eng.generate(msgs, max_tokens=6)
        s = g.stats
        assert s.accounting == "measured"
        hist = np.array(s.expert_histogram)
        assert hist.shape == (2, 8)
        rows = eng.capture.layer_tokens
        n_eval = s.prompt_tokens + s.completion_tokens - 1  # the last sampled token is never evaluated
        assert rows[0] == n_eval  # every token went through layer 0 (the last layer skips non-output rows)
        assert (hist.sum(axis=1) == 2 * rows).all()  # every token chose exactly top-k experts per layer
        assert eng.info.total_params > s.active_params_per_token > 0
        assert s.flops_prefill < s.dense_flops_prefill
        # a second question with the same system turn counts only the tokens it evaluated
        g2 = eng.generate([msgs[0], {"role": "user", "content": "Where is the tower?"}], max_tokens=4)
        reused = eng.last_reused_tokens
        assert reused > 0
        h2 = np.array(g2.stats.expert_histogram)
        assert h2[0].sum() == 2 * (g2.stats.prompt_tokens - reused + g2.stats.completion_tokens - 1)


def test_moe_with_all_experts_reproduces_dense_logits(tiny_pair):
    from model.ik_llama_engine import IkLlamaEngine
    from model.llamacpp_engine import LlamaCppEngine

    dense, moe, _ = tiny_pair
    text = "The old tower stands by the river."
    with IkLlamaEngine(dense, n_ctx=256, n_threads=1) as de:
        ld = de.last_logits(text)
    with LlamaCppEngine(dense, n_ctx=256, n_threads=1) as le:
        ll = le.last_logits(text)
    scale = float(np.abs(ld).max())
    assert float(np.abs(ld - ll).max()) < 0.005 * scale  # F32 weights: the two libraries agree
    for fused in (True, False):
        with IkLlamaEngine(moe, n_ctx=256, n_threads=1, top_k=8, fused_moe=fused) as me:
            assert me.info.n_experts_used == 8 and me.info.extra["fused_moe_up_gate"] is fused
            lm = me.last_logits(text)
        assert float(np.abs(lm - ld).max()) < 0.01 * scale  # F16 experts: tiny rounding only
    with IkLlamaEngine(moe, n_ctx=256, n_threads=1, top_k=2) as me2:
        l2 = me2.last_logits(text)
    assert float(np.abs(l2 - ld).max()) > 0.05 * scale  # top-2 of 8 really drops experts
    with pytest.raises(ValueError, match="top_k"):
        IkLlamaEngine(moe, top_k=9)


def test_expert_capture_matches_numpy_router(tiny_pair):
    from model.ik_llama_engine import IkLlamaEngine

    _, moe, layers = tiny_pair
    with IkLlamaEngine(moe, n_ctx=256, n_threads=1, capture_ffn_input=True) as eng:
        seen: list[tuple[int, np.ndarray]] = []
        eng.capture.on_topk = lambda il, ids: seen.append((il, ids))
        toks = eng.tokenize("Where does the river flow past the tower?")
        eng.eval_tokens(toks)
        for il in (0, 1):
            x = eng.capture.ffn_inputs[il][0]
            ids = next(ids for i, ids in seen if i == il)
            assert ids.shape == (len(toks), 2) and x.shape[0] == len(toks)
            ref = np.argsort(-(x @ layers[il]["router"].T), axis=1)[:, :2]
            assert (np.sort(ref, axis=1) == np.sort(ids, axis=1)).all()


def test_ffn_input_capture_equals_llamacpp(tiny_pair):
    """ik names the FFN-input node differently (the norm's source carries ``ffn_norm-<il>``); the captured
    rows are still the normalized FFN inputs llama.cpp gives, for dense and MoE layers."""
    from model.ik_llama_engine import IkLlamaEngine
    from model.llamacpp_engine import LlamaCppEngine

    text = "Where does the river flow past the tower?"
    for path in tiny_pair[:2]:
        with LlamaCppEngine(
            path, n_ctx=256, n_threads=1, capture_experts=False, capture_ffn_input=True
        ) as le:
            toks = le.tokenize(text)
            le.eval_tokens(toks)
            ref = {il: v[0] for il, v in le.capture.ffn_inputs.items()}
        with IkLlamaEngine(path, n_ctx=256, n_threads=1, capture_experts=False, capture_ffn_input=True) as ie:
            ie.eval_tokens(toks)
            got = {il: v[0] for il, v in ie.capture.ffn_inputs.items()}
        assert sorted(got) == sorted(ref) == [0, 1]
        for il in ref:
            assert got[il].shape == ref[il].shape == (len(toks), 64)
            assert float(np.abs(got[il] - ref[il]).max()) < 1e-3 * float(np.abs(ref[il]).max())
