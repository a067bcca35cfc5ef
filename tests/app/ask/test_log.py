"""The ask's query_log row, written to a real database (SQLite; PostgreSQL with SPARQ_TEST_DATABASE)."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ask.answer import Citation
from app.ask.log import AskRecord, QueryLogWriter, summed_histogram
from app.costs.meter import CostRecord
from app.models import QueryLog
from tests.app.ask.parts import provider

MESSAGES = [{"role": "user", "content": "Say hello."}]


def _row(db, query_id: int) -> QueryLog:
    with Session(db) as s:
        return s.scalars(select(QueryLog).where(QueryLog.id == query_id)).one()


def test_an_answered_ask_is_logged_with_its_cost_citations_and_model(db, small_llm):
    generation = small_llm.generate(MESSAGES, max_tokens=3)
    record = AskRecord(
        question="q?",
        collections=["hr"],
        status="ok",
        user_name="alice",
        rewritten_question="the q?",
        answer="A [1].",
    )
    cost = CostRecord(
        prompt_tokens=12,
        completion_tokens=3,
        total_usd=0.002,
        energy_joules=1.5,
        cloud_usd={"cloud-x": 0.01, "cloud-y": 0.003},
        wall_seconds=0.25,
    )
    cited = [Citation(1, 7, "IT", "it.md", "IT", "Passwords expire", 0.5, 11)]
    database = provider(db)
    writer = QueryLogWriter(database, lambda: small_llm)
    assert database.calls == 0  # nothing opened until an ask ends
    query_id = writer.write(
        record,
        cost=cost,
        timings_ms={"retrieve": 1.5, "total": 250.0},
        citations=cited,
        gens={"answer": generation},
    )
    row = _row(db, query_id)
    assert (row.user_name, row.status, row.question, row.rewritten_question, row.answer, row.error) == (
        "alice",
        "ok",
        "q?",
        "the q?",
        "A [1].",
        None,
    )
    assert row.collections == ["hr"] and row.timings_ms == {"retrieve": 1.5, "total": 250.0}
    assert (row.model, row.backend) == (small_llm.info.name, small_llm.info.backend)
    assert row.prompt_tokens == 12 and row.cost_usd == 0.002 and row.cloud_cost_usd == 0.003
    assert row.details["citations"][0]["path"] == "it.md" and row.details["cost"]["energy_joules"] == 1.5
    assert row.details["expert_histogram"] == generation.stats.expert_histogram


def test_a_failed_ask_is_logged_without_a_model(db):
    record = AskRecord(question="", collections=[], user_name="system")
    record.end("rejected", "the question is empty")
    query_id = QueryLogWriter(lambda: db, lambda: None).write(
        record, cost=CostRecord(), timings_ms={}, citations=[], gens={}
    )
    row = _row(db, query_id)
    assert (row.status, row.error, row.answer, row.model, row.backend) == (
        "rejected",
        "the question is empty",
        None,
        None,
        None,
    )
    assert row.details["citations"] == [] and row.details["expert_histogram"] is None


def test_a_record_starts_as_an_error_until_told_otherwise():
    record = AskRecord(question="q", collections=[])
    assert (record.status, record.error, record.answer) == ("error", None, None)
    record.end("error", "model failed: crashed", "partial words")
    assert (record.status, record.error, record.answer) == ("error", "model failed: crashed", "partial words")


def test_expert_histograms_are_added_layer_by_layer(small_llm):
    g = small_llm.generate(MESSAGES, max_tokens=2)

    def used(histogram):
        return dataclasses.replace(g, stats=dataclasses.replace(g.stats, expert_histogram=histogram))

    first, second, none = used([[1, 2], [0, 3]]), used([[4, 0], [1, 1]]), used(None)
    assert summed_histogram([first, none, second]) == [[5, 2], [1, 4]]
    assert summed_histogram([none]) is None
