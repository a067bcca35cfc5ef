"""Attribution on the ask path: a real store, embedder and query log, and the small real model through
llama.cpp whose reply is replaced by a scripted one (its token counting, stats and cost stay real), so what
the model "said" is known and the citations sparq adds can be checked exactly."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import QueryLog
from model.base import Generation, LLMEngine

DOCS = {
    "policy.md": "# Travel policy\n\nEmployees book economy class for flights under six hours.\n\n"
    "# Expenses\n\nMeals are reimbursed up to 40 euros per day.\n",
    "it.md": "# IT\n\nThe VPN server is vpn.example.com. Passwords expire every 90 days.\n",
}


class _ScriptedEngine(LLMEngine):
    """The real engine, but every reply is `reply` (streamed in two pieces, with the real stats)."""

    def __init__(self, inner: LLMEngine, reply: str) -> None:
        self.inner = inner
        self.info = inner.info
        self.reply = reply

    @property
    def engine_name(self) -> str:
        return self.inner.engine_name

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_chat_tokens(self, messages) -> int:
        return self.inner.count_chat_tokens(messages)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None) -> Iterator[str | Generation]:
        items = list(self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature))
        half = len(self.reply) // 2
        yield self.reply[:half]
        yield self.reply[half:]
        yield dataclasses.replace(items[-1], text=self.reply)


@pytest.fixture
def ready(assistant, small_llm, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    assistant.use_llm(small_llm)
    assistant.settings.max_answer_tokens = 8
    assistant.ingest(folder, collection="hr", groups=["staff"])
    assistant.users.add("alice", groups=["staff"])
    yield assistant
    assistant.use_llm(small_llm)


def _ask(assistant, small_llm, reply: str, question: str):
    assistant.use_llm(_ScriptedEngine(small_llm, reply))
    return assistant.ask(question, user="alice")


def _ref_of(answer, needle: str) -> int:
    return next(p["ref"] for p in answer.passages if needle in p["text"])


def _row(assistant, query_id: int) -> QueryLog:
    with Session(assistant.engine) as s:
        row = s.scalar(select(QueryLog).where(QueryLog.id == query_id))
    assert row is not None
    return row


def test_uncited_sentence_gets_the_passage_that_holds_it(ready, small_llm):
    answer = _ask(
        ready,
        small_llm,
        "Meals are reimbursed up to 40 euros per day.",
        "How much are meals reimbursed per day?",
    )
    ref = _ref_of(answer, "40 euros")
    assert answer.status == "ok"
    assert answer.text == f"Meals are reimbursed up to 40 euros per day [{ref}]."
    assert [(c.ref, c.attributed) for c in answer.citations] == [(ref, True)]
    assert "40 euros" in answer.citations[0].snippet
    assert "attribute" in answer.timings_ms
    assert answer.to_dict()["citations"][0]["attributed"] is True
    row = _row(ready, answer.query_id)
    assert row.answer == answer.text
    assert [(c["ref"], c["attributed"]) for c in row.details["citations"]] == [(ref, True)]


def test_wrong_model_citation_is_removed_and_the_right_passage_cited(ready, small_llm):
    probe = _ask(ready, small_llm, "x", "When do passwords expire?")
    right = _ref_of(probe, "90 days")
    wrong = next(p["ref"] for p in probe.passages if p["ref"] != right)
    answer = _ask(ready, small_llm, f"Passwords expire every 90 days [{wrong}].", "When do passwords expire?")
    assert _ref_of(answer, "90 days") == right  # the same retrieval as the probe
    assert answer.unsupported_citations == [wrong]
    assert answer.text == f"Passwords expire every 90 days [{right}]."
    assert [(c.ref, c.attributed) for c in answer.citations] == [(right, True)]


def test_model_citation_is_kept_and_not_marked_attributed(ready, small_llm):
    probe = _ask(ready, small_llm, "x", "When do passwords expire?")
    right = _ref_of(probe, "90 days")
    answer = _ask(ready, small_llm, f"Passwords expire every 90 days [{right}].", "When do passwords expire?")
    assert answer.text == f"Passwords expire every 90 days [{right}]."
    assert [(c.ref, c.attributed) for c in answer.citations] == [(right, False)]


def test_unsupported_sentence_is_never_cited(ready, small_llm):
    answer = _ask(ready, small_llm, "The canteen serves fish on Fridays.", "What does the canteen serve?")
    assert answer.status == "ok" and answer.passages
    assert answer.text == "The canteen serves fish on Fridays." and answer.citations == []


def test_refusal_gets_no_citation(ready, small_llm):
    from model.prompting import NOT_FOUND

    answer = _ask(ready, small_llm, NOT_FOUND["en"], "How much are meals reimbursed per day?")
    assert answer.status == "no_answer" and answer.citations == []
    assert "attribute" not in answer.timings_ms


def test_cost_record_names_the_engine_and_the_query_log_keeps_it(ready, small_llm):
    answer = ready.ask("When do passwords expire?", user="alice")
    assert small_llm.engine_name.startswith("llama.cpp (llama-cpp-python ")
    assert answer.cost.engine == small_llm.engine_name
    assert answer.to_dict()["cost"]["engine"] == small_llm.engine_name
    assert _row(ready, answer.query_id).details["cost"]["engine"] == small_llm.engine_name


def test_engine_name_falls_back_to_the_backend(small_llm):
    from model.base import ENGINE_NAMES

    class Bare(_ScriptedEngine):
        engine_name = LLMEngine.engine_name  # the base class's, from ModelInfo.backend

    bare = Bare(small_llm, "")
    assert bare.engine_name == ENGINE_NAMES["llamacpp"] == "llama.cpp"
    bare.info = dataclasses.replace(small_llm.info, backend="vllm-custom")
    assert bare.engine_name == "vllm-custom"


def test_api_marks_the_attributed_citation_and_names_the_engine(ready, small_llm):
    from fastapi.testclient import TestClient

    from app.api.server import create_app
    from app.api_keys import ApiKeys

    keys = ApiKeys(ready.engine, ready.users)
    _, key = keys.create("alice")
    ready.use_llm(_ScriptedEngine(small_llm, "Meals are reimbursed up to 40 euros per day."))
    client = TestClient(create_app(ready, keys=keys))
    body = {"messages": [{"role": "user", "content": "How much are meals reimbursed per day?"}]}
    r = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    data = r.json()
    extra = data["sparq"]
    assert [c["attributed"] for c in extra["citations"]] == [True]
    assert data["choices"][0]["message"]["content"].endswith(f"[{extra['citations'][0]['ref']}].")
    assert "40 euros" in extra["citations"][0]["quote"]
    assert extra["cost"]["engine"] == small_llm.engine_name


def test_transformers_engine_names_its_versions_and_device(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from model.tiny import save_tiny_checkpoint
    from model.transformers_engine import TransformersEngine

    engine = TransformersEngine(save_tiny_checkpoint("qwen2_moe", tmp_path / "ckpt", seed=1), device="cpu")
    try:
        assert engine.engine_name.startswith(f"transformers {transformers.__version__} (torch ")
        assert engine.engine_name.endswith(", cpu)")
    finally:
        engine.close()
