"""The ask path end to end: real store, real embedder, a real (small) model through llama.cpp."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ask import AskError
from app.models import QueryLog
from model.base import Generation, LLMEngine, ModelError

DOCS = {
    "policy.md": "# Travel policy\n\nEmployees book economy class for flights under six hours.\n\n"
    "# Expenses\n\nMeals are reimbursed up to 40 euros per day.\n",
    "it.md": "# IT\n\nThe VPN server is vpn.example.com. Passwords expire every 90 days.\n",
}


@pytest.fixture
def ready(assistant, small_llm, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    assistant.use_llm(small_llm)
    assistant.settings.max_answer_tokens = 24
    assistant.ingest(folder, collection="hr", groups=["staff"])
    assistant.users.add("alice", groups=["staff"])
    assistant.users.add("mallory", groups=["contractors"])
    return assistant


def _log_rows(assistant) -> list[QueryLog]:
    with Session(assistant.engine) as s:
        return list(s.scalars(select(QueryLog).order_by(QueryLog.id)))


def test_ask_returns_grounded_answer_with_cost_and_log(ready):
    answer = ready.ask("How much are meals reimbursed per day?", user="alice", collections=["hr"])
    assert answer.status in ("ok", "no_answer")
    assert answer.text.strip()
    assert answer.passages and "40 euros" in answer.passages[0]["text"]
    for c in answer.citations:  # every citation points at a passage that was given to the model
        assert c.ref in {p["ref"] for p in answer.passages}
    assert {"embed", "search", "retrieve", "prompt", "prefill", "decode", "total"} <= set(answer.timings_ms)
    assert answer.timings_ms["embed"] > 0
    cost = answer.cost
    assert cost.prompt_tokens > 50 and cost.completion_tokens >= 1
    assert cost.flops_total > 0 and cost.dense_flops_total >= cost.flops_total
    assert cost.energy_joules > 0 and cost.energy_source in ("measured", "modelled")
    assert cost.total_usd > 0 and set(cost.cloud_usd) >= {"gpt-4o-mini"}
    data = answer.to_dict()
    assert {"answer", "citations", "cost", "timings_ms"} <= set(data)

    row = _log_rows(ready)[-1]
    assert (row.id, row.user_name, row.status) == (answer.query_id, "alice", answer.status)
    assert row.prompt_tokens == cost.prompt_tokens and row.cost_usd == pytest.approx(cost.total_usd)
    assert row.energy_source == cost.energy_source and row.details["cost"]["flops_total"] == cost.flops_total


def test_streaming_yields_pieces_then_the_answer(ready):
    events = list(ready.ask("When do passwords expire?", user="alice", stream=True))
    *pieces, final = events
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert final.passages and any("90 days" in p["text"] for p in final.passages)


def test_user_without_readable_documents_gets_a_plain_answer(ready):
    answer = ready.ask("How much are meals reimbursed per day?", user="mallory")
    assert answer.status == "no_documents" and answer.passages == [] and answer.citations == []
    assert answer.cost.completion_tokens == 0  # the model was never called
    assert _log_rows(ready)[-1].status == "no_documents"


def test_bad_questions_are_rejected_and_logged(ready):
    with pytest.raises(AskError, match="empty"):
        ready.ask("   ", user="alice")
    with pytest.raises(AskError, match="100,000 characters"):
        ready.ask("x" * 100_000, user="alice")
    rows = _log_rows(ready)[-2:]
    assert [r.status for r in rows] == ["rejected", "rejected"]
    assert "empty" in rows[0].error and "limit" in rows[1].error


def test_empty_store_answers_plainly(assistant, small_llm):
    assistant.use_llm(small_llm)
    answer = assistant.ask("Anything there?")
    assert answer.status == "no_documents"
    assert _log_rows(assistant)[-1].status == "no_documents"


class _FailingEngine(LLMEngine):
    """Fault injection at the model boundary: the real engine, interrupted after two pieces."""

    def __init__(self, inner: LLMEngine) -> None:
        self.inner = inner
        self.info = inner.info

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_chat_tokens(self, messages) -> int:
        return self.inner.count_chat_tokens(messages)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None) -> Iterator[str | Generation]:
        for n, item in enumerate(self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature)):
            if n == 2:
                raise ModelError("llama.cpp worker crashed")
            yield item


def test_model_failure_mid_stream_is_reported_and_logged(ready, small_llm):
    ready.use_llm(_FailingEngine(small_llm))
    with pytest.raises(ModelError, match="crashed"):
        list(ready.ask("How much are meals reimbursed per day?", user="alice", stream=True))
    row = _log_rows(ready)[-1]
    assert row.status == "error" and "crashed" in row.error
    assert row.answer  # the partial text is kept for the audit
    ready.use_llm(small_llm)


def test_follow_up_is_rewritten_before_retrieval(ready):
    history = [
        {"role": "user", "content": "What is the travel policy for flights?"},
        {"role": "assistant", "content": "Economy class for flights under six hours [1]."},
    ]
    answer = ready.ask("And what about meals?", user="alice", history=history)
    assert answer.rewritten_question and answer.rewritten_question.strip()
    assert "rewrite" in answer.timings_ms
    row = _log_rows(ready)[-1]
    assert row.rewritten_question == answer.rewritten_question
    assert "rewrite" in answer.cost.flops  # the rewrite's compute is part of the query's cost


class _CitationOnlyEngine(LLMEngine):
    """Fault injection at the model boundary: the real engine, but its first reply is replaced by bare
    citations, as small models sometimes answer ("[1] [2]"); later replies are the real model's."""

    def __init__(self, inner: LLMEngine) -> None:
        self.inner = inner
        self.info = inner.info
        self.calls: list[list[dict[str, str]]] = []
        self.streamed: list[str] = []  # the text each call streamed

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_chat_tokens(self, messages) -> int:
        return self.inner.count_chat_tokens(messages)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None) -> Iterator[str | Generation]:
        self.calls.append(list(messages))
        items = list(self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature))
        if len(self.calls) > 1:
            self.streamed.append("".join(i for i in items if isinstance(i, str)))
            yield from items
            return
        self.streamed.append("[1] [2]")
        yield "[1]"
        yield " [2"
        yield "]"
        yield dataclasses.replace(items[-1], text="[1] [2]")


def test_citation_only_reply_is_asked_again_for_the_words(ready, small_llm):
    """The mechanism, on the tiny test model (whose second reply may well be bare again); on the 1.5B
    source the retry turned "[3]" into "Von Miller had 5 solo tackles in Super Bowl 50. [3]"."""
    from model.prompting import ANSWER_IN_WORDS

    engine = _CitationOnlyEngine(small_llm)
    ready.use_llm(engine)
    try:
        events = list(ready.ask("How much are meals reimbursed per day?", user="alice", stream=True))
    finally:
        ready.use_llm(small_llm)
    *pieces, answer = events
    assert len(engine.calls) == 2
    retry = engine.calls[1]
    assert retry[:-2] == engine.calls[0]
    assert retry[-2] == {"role": "assistant", "content": "[1] [2]"}
    assert retry[-1] == {"role": "user", "content": ANSWER_IN_WORDS["en"]}
    assert "".join(pieces) == engine.streamed[1]  # the bare first reply was held back, never shown
    assert answer.text.strip()
    assert answer.citations  # the sources named by either reply are kept
    assert all(c.ref in {p["ref"] for p in answer.passages} for c in answer.citations)
    assert "retry" in answer.timings_ms and "retry" in answer.cost.flops
    row = _log_rows(ready)[-1]
    assert row.completion_tokens == answer.cost.completion_tokens > 2  # both replies are paid for
    assert row.answer == answer.text
