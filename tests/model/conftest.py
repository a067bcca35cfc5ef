"""Fixtures for the model-layer tests: shipped small weights, tiny generated models."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip @slow model tests unless SPARQ_RUN_SLOW=1 or --run-slow (if the root conftest defines it)."""
    try:
        run_slow = bool(config.getoption("--run-slow"))
    except ValueError:
        run_slow = False
    if run_slow or os.environ.get("SPARQ_RUN_SLOW") == "1":
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="slow: set SPARQ_RUN_SLOW=1 (or --run-slow) to run")
    for item in items:
        if "slow" in item.keywords and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def llama_cpp_mod():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")


@pytest.fixture(scope="session")
def smollm2_gguf(llama_cpp_mod) -> Path:
    from model.base import ModelNotFound
    from model.moe.source_weights import smollm2_path

    try:
        return smollm2_path()
    except ModelNotFound as exc:
        pytest.skip(f"SmolLM2 weights not installed ({exc})")


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_gguf):
    from model.llamacpp_engine import LlamaCppEngine

    eng = LlamaCppEngine(smollm2_gguf, n_ctx=512, n_threads=1)
    yield eng
    eng.close()


# SPARQ_SQUAD_PATH, else the shared public data beside the repository (never a machine's layout)
SHARED_SQUAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad_v1.1_dev" / "dev-v1.1.json"


@pytest.fixture(scope="session")
def squad_path() -> Path:
    """The SQuAD v1.1 dev JSON; the test is skipped where it is absent."""
    p = Path(os.environ.get("SPARQ_SQUAD_PATH") or SHARED_SQUAD)
    if not p.is_file():
        pytest.skip(f"SQuAD dev set not found at {p}")
    return p


REUSE_SYSTEM = "You are a careful assistant. " + " ".join(
    f"Rule {i}: answer only from the passages and cite the passage number." for i in range(30)
)


def check_prefix_reuse(make_engine: Callable[..., Any]) -> None:
    """An engine keeping its KV cache computes only what follows the prompt part it already holds, and
    answers exactly as from an empty cache. By default that part ends with the system turn, which every
    user's prompt starts with: a prompt repeated in full (another user's question, say) is not answered
    faster, so an answer's time tells nothing about the prompt before it."""
    from model.token_stream import common_prefix

    a = [
        {"role": "system", "content": REUSE_SYSTEM},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    b = [
        {"role": "system", "content": REUSE_SYSTEM},
        {"role": "user", "content": "Who wrote Romeo and Juliet?"},
    ]
    with make_engine(reuse_prefix="off") as eng:
        eng.generate(a, max_tokens=8)
        cold = eng.generate(b, max_tokens=8)
        assert eng.last_reused_tokens == 0
    with make_engine(reuse_prefix="all") as eng:
        first = eng.generate(a, max_tokens=8)
        assert eng.last_reused_tokens == 0
        shared = common_prefix(eng.chat_tokens(a), eng.chat_tokens(b))
        assert shared > 400
        warm = eng.generate(b, max_tokens=8)
        assert eng.last_reused_tokens == shared
        again = eng.generate(b, max_tokens=8)  # the same prompt: all but its last token come from the cache
        assert eng.last_reused_tokens == len(eng.chat_tokens(b)) - 1
        back = eng.generate(a, max_tokens=8)  # a shorter shared part: the cache is cut back, not mixed
        assert eng.last_reused_tokens == shared
    assert warm.text == cold.text == again.text and back.text == first.text
    assert warm.stats.prompt_tokens == cold.stats.prompt_tokens
    assert warm.stats.prefill_seconds < 0.5 * cold.stats.prefill_seconds
    assert warm.stats.flops_prefill < 0.2 * cold.stats.flops_prefill  # only the new tokens were computed
    with make_engine() as eng:  # the default: the system turn only
        system_turn = common_prefix(
            eng.chat_tokens([a[0], {"role": "user", "content": ""}]), eng.chat_tokens(b)
        )
        assert 400 < system_turn <= shared
        eng.generate(a, max_tokens=8)
        assert eng.generate(b, max_tokens=8).text == cold.text
        assert eng.last_reused_tokens == system_turn
        eng.generate(b, max_tokens=8)  # the very same prompt again: still only the system turn
        assert eng.last_reused_tokens == system_turn
        eng.generate([{"role": "user", "content": "Who wrote Romeo and Juliet?"}], max_tokens=4)
        assert eng.last_reused_tokens == 0  # no system turn, nothing public to reuse
    with pytest.raises(ValueError, match="reuse_prefix='sometimes'"):
        make_engine(reuse_prefix="sometimes")
