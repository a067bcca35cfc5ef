"""Retrieval for an ask: the real store and hybrid searcher, access enforced, stages timed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.ask.retrieve import EmbedTimer, Retriever
from tests.app.ask.parts import ALICE, MALLORY


def test_passages_are_what_the_asker_may_read_best_first(search, embed_timer):
    retrieval = Retriever(search, passages=3, embed_timer=embed_timer).run(
        "What is the CEO salary?", ALICE, None
    )
    assert retrieval.hits and len(retrieval.hits) <= 3
    assert all("917,000" not in h.text for h in retrieval.hits)  # salaries.md is finance's, not staff's
    assert [h.rank for h in retrieval.hits] == sorted(h.rank for h in retrieval.hits)
    assert Retriever(search, passages=3).run("What is the CEO salary?", MALLORY, None).hits == []


def test_collections_restrict_the_search(search):
    retriever = Retriever(search, passages=5)
    hits = retriever.run("When do passwords expire?", ALICE, ["hr"]).hits
    assert hits and {h.collection for h in hits} == {"hr"}
    assert {h.collection for h in retriever.run("When do passwords expire?", ALICE, None).hits} == {
        "hr",
        "it",
    }


def test_embed_and_search_are_timed_apart(search, embed_timer):
    timings = Retriever(search, passages=2, embed_timer=embed_timer).run("VPN server", ALICE, None).timings_ms
    assert list(timings) == ["retrieve", "embed", "search"]
    assert timings["embed"] > 0 and timings["search"] == pytest.approx(
        max(0.0, timings["retrieve"] - timings["embed"])
    )
    # Without the searcher's timer there is only the whole stage.
    assert list(Retriever(search, passages=2).run("VPN server", ALICE, None).timings_ms) == ["retrieve"]


def test_a_search_that_embeds_nothing_reports_no_embed_time(search, embed_timer):
    retriever = Retriever(search, passages=2, embed_timer=embed_timer)
    retriever.run("VPN server", ALICE, None)
    # A blank query is answered without embedding: the previous ask's embed time must not be reported.
    assert list(retriever.run("   ", ALICE, None).timings_ms) == ["retrieve"]


def test_the_timer_is_per_thread_and_records_failures():
    timer = EmbedTimer()

    def broken(_query: str) -> np.ndarray:
        raise RuntimeError("encoder down")

    with pytest.raises(RuntimeError, match="encoder down"):
        timer.timed(broken)("q")
    assert timer.last_ms() is not None
    seen: list[float | None] = []
    thread = threading.Thread(target=lambda: seen.append(timer.last_ms()))
    thread.start()
    thread.join()
    assert seen == [None]
    timer.reset()
    assert timer.last_ms() is None


def test_an_ask_needs_a_passage():
    with pytest.raises(ValueError, match="passages=0"):
        Retriever(lambda *a, **k: [], passages=0)
