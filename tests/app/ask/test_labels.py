"""How passages name their origin: labels from real search hits."""

from __future__ import annotations

import dataclasses

from app.ask.labels import location_of, snippet, source_label
from tests.app.ask.parts import ALICE


def _hit(searcher, query: str):
    return searcher.search(query, principal=ALICE, k=1)[0]


def test_a_hit_is_labelled_by_title_and_heading(searcher):
    hit = _hit(searcher, "When do passwords expire?")
    assert hit.title == "IT"
    assert source_label(hit) == (f"IT, {hit.heading_path}" if hit.heading_path else "IT")


def test_location_names_page_ocr_slide_sheet_and_heading(searcher):
    hit = dataclasses.replace(
        _hit(searcher, "meals reimbursed"),
        page=3,
        ocr_confidence=87.4,
        slide=2,
        sheet="Q1",
        heading_path="Costs",
    )
    assert location_of(hit) == "page 3, OCR, confidence 87%, slide 2, sheet Q1, Costs"
    untitled = dataclasses.replace(
        hit,
        title=None,
        path="/srv/share/notes/travel.md",
        page=None,
        ocr_confidence=None,
        slide=None,
        sheet=None,
        heading_path=None,
    )
    assert source_label(untitled) == "travel.md"


def test_snippet_collapses_whitespace_and_cuts_at_a_word():
    assert snippet("a  b\n\nc") == "a b c"
    cut = snippet("word " * 100, limit=22)
    assert cut == "word word word word…" and len(cut) <= 22
