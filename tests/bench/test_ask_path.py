"""bench/ask_path.py's summary: the figures issue 15's targets are judged on."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ask_path.py"


@pytest.fixture(scope="module")
def ask_path():
    spec = importlib.util.spec_from_file_location("bench_ask_path", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(*, refused: bool, contains: bool, cites: bool, cited_has_gold: bool) -> dict:
    return {
        "exact_match": 0.0,
        "f1": 0.0,
        "contains": contains,
        "refused": refused,
        "gold_in_prompt": True,
        "cites": cites,
        "cited_passage_has_gold": cited_has_gold,
        "prompt_tokens": 900,
        "completion_tokens": 12,
        "prefill_tok_s": 80.0,
        "decode_tok_s": 15.0,
        "seconds": 12.0,
        "usd": 0.002,
        "active_params_per_token": 1.3e9,
    }


def test_a_refusal_is_not_an_answer_that_contains_the_gold_answer(ask_path):
    # SQuAD's scorer finds the gold answer "L" in "I could not find the answer ..."; the refusal cites nothing
    rows = [
        _row(refused=False, contains=True, cites=True, cited_has_gold=True),
        _row(refused=False, contains=True, cites=True, cited_has_gold=True),
        _row(refused=True, contains=True, cites=False, cited_has_gold=False),
        _row(refused=False, contains=False, cites=False, cited_has_gold=False),
    ]
    s = ask_path.summarize(rows)
    assert s["cited_passage_has_gold_when_contained"] == 100.0
    assert s["answers_citing"] == pytest.approx(200 / 3)
    assert s["answer_contained"] == 75.0 and s["refusals"] == 25.0


def test_engine_options_are_per_label_json_and_a_bad_spec_is_refused(ask_path):
    labels = ("dense", "moe", "nofuse")
    got = ask_path.parse_engine_options(["nofuse:fused_moe=false", "moe:n_batch=256"], labels)
    assert got == {"nofuse": {"fused_moe": False}, "moe": {"n_batch": 256}}
    for bad in ("other:fused_moe=false", "nofuse:fused_moe=off", "nofuse:fused_moe", "fused_moe=false"):
        with pytest.raises(ValueError, match="--engine-option"):
            ask_path.parse_engine_options([bad], labels)


def test_a_label_with_engine_options_records_another_build(ask_path, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF weights")
    info = SimpleNamespace(path=str(gguf), is_moe=True, n_experts_used=24)
    plain = ask_path.record_build(info, None)
    assert ask_path.record_build(info, {}) == plain
    assert ask_path.record_build(info, {"fused_moe": False}) == plain + ' {"fused_moe": false}'
    assert ask_path.record_build(info, {"fused_moe": True}) != ask_path.record_build(
        info, {"fused_moe": False}
    )
