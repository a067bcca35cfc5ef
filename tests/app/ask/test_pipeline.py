"""The whole ask as a pipeline of real steps, built here without an Assistant: a real store and searcher, the
small real model (scripted where the reply must be known), a real database for the query log and budgets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ask.answer import Answer
from app.ask.attribute import Attributor, query_embedding
from app.ask.followup import FollowUpRewriter
from app.ask.generate import StreamingGenerator
from app.ask.log import QueryLogWriter
from app.ask.metering import CostMeter
from app.ask.pipeline import NO_DOCUMENTS, AskPipeline
from app.ask.prompt import PromptPacker
from app.ask.question import AskError
from app.ask.retrieve import Retriever
from app.costs.budgets import Budgets, OverBudget
from app.costs.meter import IN_FLIGHT, CostModel
from app.models import QueryLog
from app.users import UserDirectory
from model.base import Generation, LLMEngine, ModelError
from retrieval.access import Principal
from tests.app.ask.parts import ALICE, MALLORY, ScriptedEngine, refused

USERS = {"alice": ALICE, "mallory": MALLORY}
MEALS = "How much are meals reimbursed per day?"


def resolve(user: str | Principal | None) -> Principal:
    if user is None:
        return Principal.system()
    if isinstance(user, Principal):
        return user
    if user not in USERS:
        raise LookupError(f"unknown user {user!r}")
    return USERS[user]


def build(
    search,
    embed_timer,
    embedder,
    db,
    engine: LLMEngine | None,
    *,
    max_answer_tokens: int = 16,
    check_budget=lambda _principal: None,
) -> AskPipeline:
    llm = (lambda: engine) if engine is not None else refused("the answer model")
    loaded = lambda: engine  # noqa: E731 - what Assistant.loaded_llm would say
    return AskPipeline(
        principal=resolve,
        check_budget=check_budget,
        rewriter=FollowUpRewriter(llm),
        retriever=Retriever(search, passages=4, embed_timer=embed_timer),
        packer=PromptPacker(llm, max_answer_tokens=max_answer_tokens),
        generator=StreamingGenerator(llm, max_tokens=max_answer_tokens),
        attributor=Attributor(query_embedding(lambda: embedder, threads=1)),
        meter=CostMeter(CostModel(), cpu_watts=65.0, gpu_watts=0.0, gpu=False, loaded_llm=loaded),
        query_log=QueryLogWriter(lambda: db, loaded),
        loaded_llm=loaded,
    )


@pytest.fixture
def parts(search, embed_timer, embedder, db):
    return search, embed_timer, embedder, db


def _rows(db) -> list[QueryLog]:
    with Session(db) as s:
        return list(s.scalars(select(QueryLog).order_by(QueryLog.id)))


def _run(pipeline: AskPipeline, question: str, user="alice", collections=None, history=None):
    *pieces, answer = list(pipeline.run(question, user=user, collections=collections, history=history))
    assert isinstance(answer, Answer) and all(isinstance(p, str) for p in pieces)
    return pieces, answer


def test_an_answer_streams_then_arrives_grounded_timed_costed_and_logged(parts, small_llm):
    db = parts[-1]
    pieces, answer = _run(build(*parts, small_llm), MEALS, collections=["hr"])
    assert pieces and answer.text.strip() and answer.status in ("ok", "no_answer")
    assert answer.passages and "40 euros" in answer.passages[0]["text"]
    assert all(p["path"] != "salaries.md" for p in answer.passages)
    assert list(answer.timings_ms)[:3] == ["retrieve", "embed", "search"]
    assert {"prompt", "prefill", "decode", "total"} <= set(answer.timings_ms)
    assert answer.cost.prompt_tokens > 50 and 1 <= answer.cost.completion_tokens <= 16
    assert answer.model == small_llm.info.name and answer.rewritten_question is None
    [row] = _rows(db)
    assert (row.id, row.user_name, row.status, row.answer) == (
        answer.query_id,
        "alice",
        answer.status,
        answer.text,
    )
    assert row.collections == ["hr"] and row.timings_ms == answer.timings_ms
    assert row.prompt_tokens == answer.cost.prompt_tokens


def test_no_readable_documents_answer_plainly_without_loading_the_model(parts):
    db = parts[-1]
    events = list(build(*parts, None).run(MEALS, user="mallory", collections=None, history=None))
    assert events[0] == NO_DOCUMENTS["en"]
    answer = events[-1]
    assert (answer.status, answer.passages, answer.citations, answer.model) == ("no_documents", [], [], None)
    assert answer.cost.completion_tokens == 0 and answer.cost.engine == ""
    [row] = _rows(db)
    assert (row.status, row.user_name, row.model) == ("no_documents", "mallory", None)


def test_a_follow_up_is_rewritten_before_retrieval(parts, small_llm):
    history = [
        {"role": "user", "content": "What does the travel policy say?"},
        {"role": "assistant", "content": "Employees book economy class [1]."},
    ]
    _, answer = _run(build(*parts, small_llm), "And meals?", history=history)
    assert answer.rewritten_question and answer.question == "And meals?"
    assert list(answer.timings_ms)[:2] == ["rewrite", "retrieve"]
    assert "rewrite" in answer.cost.flops
    assert _rows(parts[-1])[-1].rewritten_question == answer.rewritten_question


def test_a_bad_question_is_rejected_and_logged_before_anyone_is_looked_up(parts):
    with pytest.raises(AskError, match="empty"):
        list(build(*parts, None).run("  ", user="nobody", collections=None, history=None))
    [row] = _rows(parts[-1])
    assert (row.status, row.error, row.user_name, row.question) == (
        "rejected",
        "the question is empty",
        "nobody",
        "  ",
    )


def test_an_unknown_user_is_an_error_logged_under_the_given_name(parts):
    with pytest.raises(LookupError, match="unknown user 'zed'"):
        list(build(*parts, None).run(MEALS, user="zed", collections=["hr"], history=None))
    [row] = _rows(parts[-1])
    assert (row.status, row.error, row.user_name) == ("error", "LookupError: unknown user 'zed'", "zed")


def test_a_spent_budget_refuses_before_the_model_at_no_cost(parts):
    db = parts[-1]
    users = UserDirectory(db)
    users.add("alice", groups=["staff"])
    budgets = Budgets(db, users)
    budgets.set("user", "alice", "tokens", "day", 0)
    before = IN_FLIGHT.count
    with pytest.raises(OverBudget, match="budget of 0 tokens per day is spent"):
        list(
            build(*parts, None, check_budget=budgets.check).run(
                MEALS, user="alice", collections=None, history=None
            )
        )
    assert IN_FLIGHT.count == before
    [row] = _rows(db)
    assert row.status == "over_budget" and "is spent" in row.error
    assert (row.prompt_tokens, row.cost_usd, row.energy_joules) == (0, 0.0, 0.0)


def test_a_prompt_that_cannot_fit_is_rejected_as_an_ask_error(parts, small_llm):
    pipeline = build(*parts, small_llm, max_answer_tokens=small_llm.info.context_window)
    with pytest.raises(AskError, match="the question and instructions alone take"):
        list(pipeline.run(MEALS, user="alice", collections=None, history=None))
    assert _rows(parts[-1])[-1].status == "rejected"


class _Crashing(ScriptedEngine):
    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None) -> Iterator[str | Generation]:
        yield "Meals are"
        yield " reimbursed"
        raise ModelError("llama.cpp worker crashed")


def test_a_model_failure_mid_stream_is_raised_and_logged_with_what_was_said(parts, small_llm):
    with pytest.raises(ModelError, match="crashed"):
        list(build(*parts, _Crashing(small_llm, "")).run(MEALS, user="alice", collections=None, history=None))
    row = _rows(parts[-1])[-1]
    assert (row.status, row.error, row.answer) == (
        "error",
        "model failed: llama.cpp worker crashed",
        "Meals are reimbursed",
    )


class _Replies(ScriptedEngine):
    """A scripted reply per call, in order."""

    def __init__(self, inner: LLMEngine, replies: list[str]) -> None:
        super().__init__(inner, replies[0])
        self.replies = list(replies)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None) -> Iterator[str | Generation]:
        self.reply = self.replies.pop(0)
        self.pieces = [self.reply]
        yield from super().stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)


def test_a_reply_of_only_citations_is_asked_again_for_the_words(parts, small_llm):
    engine = _Replies(small_llm, ["[1]", "Meals are reimbursed up to 40 euros per day."])
    pieces, answer = _run(build(*parts, engine), MEALS, collections=["hr"])
    assert len(engine.calls) == 2 and "Write the answer itself in words" in engine.calls[1][-1]["content"]
    assert pieces == ["Meals are reimbursed up to 40 euros per day."]  # the bare "[1]" was never shown
    assert answer.status == "ok" and answer.text == "Meals are reimbursed up to 40 euros per day [1]."
    assert [c.ref for c in answer.citations] == [1]
    assert "retry" in answer.timings_ms and "retry" in answer.cost.flops


def test_a_citation_to_no_passage_is_removed_from_the_answer(parts, small_llm):
    engine = ScriptedEngine(small_llm, "Meals are reimbursed up to 40 euros per day [9].")
    _, answer = _run(build(*parts, engine), MEALS, collections=["hr"])
    assert answer.removed_citations == [9] and "[9]" not in answer.text
    assert answer.citations and all(c.attributed for c in answer.citations)  # attribution cited it instead
    row = _rows(parts[-1])[-1]
    assert [c["ref"] for c in row.details["citations"]] == [c.ref for c in answer.citations]
