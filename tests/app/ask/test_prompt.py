"""Packing the grounded prompt with the small real model's tokenizer and window."""

from __future__ import annotations

import pytest

from app.ask.labels import source_label
from app.ask.prompt import PromptPacker, evidence_of, passage_records
from model.prompting import PromptTooLong
from tests.app.ask.parts import ALICE, provider


def _hits(searcher, query: str, k: int = 3):
    return searcher.search(query, principal=ALICE, k=k)


def test_passages_are_numbered_in_rank_order_under_the_window(searcher, small_llm):
    hits = _hits(searcher, "How much are meals reimbursed per day?")
    llm = provider(small_llm)
    packer = PromptPacker(llm, max_answer_tokens=24)
    assert llm.calls == 0
    packed = packer.run("How much are meals reimbursed per day?", hits, "en")
    assert [p.ref for p in packed.passages] == list(range(1, len(hits) + 1))
    assert [p.key for p in packed.passages] == hits
    user = packed.messages[-1]["content"]
    assert user.startswith("Passages:") and user.endswith("Question: How much are meals reimbursed per day?")
    assert f"[1] ({source_label(hits[0])})" in user
    assert packed.prompt_tokens + 24 <= small_llm.info.context_window


def test_a_question_that_leaves_no_room_for_the_answer_is_refused(searcher, small_llm):
    hits = _hits(searcher, "VPN server")
    packer = PromptPacker(lambda: small_llm, max_answer_tokens=small_llm.info.context_window)
    with pytest.raises(PromptTooLong):
        packer.run("VPN server", hits, "en")


def test_evidence_and_records_describe_the_packed_passages(searcher, small_llm):
    hits = _hits(searcher, "When do passwords expire?", k=2)
    packed = PromptPacker(lambda: small_llm, max_answer_tokens=24).run(
        "When do passwords expire?", hits, "en"
    )
    evidence = evidence_of(packed)
    assert evidence[0] == f"{source_label(hits[0])}\n{packed.passages[0].text}"
    records = passage_records(packed)
    assert [r["ref"] for r in records] == [1, 2]
    first = records[0]
    assert (first["chunk_id"], first["document_id"], first["path"]) == (
        hits[0].chunk_id,
        hits[0].document_id,
        hits[0].path,
    )
    assert first["score"] == pytest.approx(hits[0].score_fused) and "90 days" in first["text"]
