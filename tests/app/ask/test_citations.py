"""Checking citations against the passages they name, and turning the cited ones into Citations."""

from __future__ import annotations

import pytest

from app.ask import citations
from app.ask.labels import location_of
from app.ask.prompt import PromptPacker, evidence_of
from model.prompting import NOT_FOUND, CitationCheck
from tests.app.ask.parts import ALICE

EVIDENCE = [
    "policy.md, Expenses\nMeals are reimbursed up to 40 euros per day.",
    "it.md, IT\nThe VPN server is vpn.example.com. Passwords expire every 90 days.",
]


def test_a_citation_to_no_passage_is_removed_and_an_unsupported_one_dropped():
    checked = citations.check(
        "Meals are reimbursed up to 40 euros per day [1][3]. Passwords expire [1].", EVIDENCE
    )
    assert checked.cited == [1] and checked.removed == [3] and checked.unsupported == [1]
    assert "[3]" not in checked.text and checked.text.startswith(
        "Meals are reimbursed up to 40 euros per day [1]."
    )


def test_a_bare_reply_is_recognised():
    assert citations.is_bare(citations.check("[1][2]", EVIDENCE))
    assert not citations.is_bare(citations.check("[7]", EVIDENCE))  # cites nothing that exists
    assert not citations.is_bare(citations.check("Meals: 40 euros per day [1].", EVIDENCE))


def test_a_retry_carries_the_bare_replys_removals_and_keeps_its_supported_sources():
    first = citations.check("[1][5]", EVIDENCE)
    merged = citations.merge_retry(first, "Meals are reimbursed up to 40 euros per day.", EVIDENCE)
    assert merged.removed == [5]
    assert merged.cited == [1]  # the retry cited nothing; the bare reply's [1] bears its words out
    declined = citations.merge_retry(first, NOT_FOUND["en"], EVIDENCE)
    assert declined.cited == [] and declined.removed == [5]


def test_attribution_is_wanted_only_for_words_that_say_something():
    assert citations.wants_attribution(CitationCheck("Meals are 40 euros.", [], []))
    for text in ("", "   ", "[1]", NOT_FOUND["en"]):
        assert not citations.wants_attribution(CitationCheck(text, [], []))


@pytest.fixture
def packed(searcher, small_llm):
    hits = searcher.search("How much are meals reimbursed per day?", principal=ALICE, k=2)
    return PromptPacker(lambda: small_llm, max_answer_tokens=24).run("meals?", hits, "en")


def test_cited_passages_become_citations_in_order_of_first_citation(packed):
    evidence = evidence_of(packed)
    meals = next(p.ref for p in packed.passages if "40 euros" in p.text)
    checked = citations.check(f"Meals are reimbursed up to 40 euros per day [{meals}].", evidence)
    resolved = citations.resolve(checked, packed, attributed=[meals], language="en")
    assert resolved.status == "ok" and resolved.text == checked.text
    [c] = resolved.citations
    hit = packed.passages[meals - 1].key
    assert (c.ref, c.document_id, c.chunk_id, c.path, c.title) == (
        meals,
        hit.document_id,
        hit.chunk_id,
        hit.path,
        hit.title,
    )
    assert c.location == location_of(hit) and c.score == pytest.approx(hit.score_fused)
    assert c.attributed and "40 euros" in c.snippet


@pytest.mark.parametrize(("language", "text"), [("en", ""), ("zh", "  "), ("en", NOT_FOUND["en"])])
def test_an_empty_or_declined_answer_is_no_answer(packed, language, text):
    resolved = citations.resolve(CitationCheck(text, [], []), packed, [], language)
    assert resolved.status == "no_answer" and resolved.citations == []
    assert resolved.text == (text.strip() or NOT_FOUND[language])
