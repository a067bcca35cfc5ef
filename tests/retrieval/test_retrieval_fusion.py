"""Pure parts of ranking: RRF, duplicate suppression / MMR, and FTS5 query quoting against real SQLite FTS5."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.diversity import diversify
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.keyword import fts5_match_expression, keyword_terms


def test_rrf_matches_the_formula_and_honours_weights():
    fused = dict(reciprocal_rank_fusion([([1, 2, 3], 1.0), ([3, 1], 1.0)], rrf_k=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    heavy_keyword = [i for i, _ in reciprocal_rank_fusion([([1, 2], 1.0), ([2, 1], 3.0)], rrf_k=60)]
    assert heavy_keyword[0] == 2
    only_dense = [i for i, _ in reciprocal_rank_fusion([([5, 6], 1.0), ([6, 5], 0.0)])]
    assert only_dense == [5, 6]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([([1], 1.0)], rrf_k=-1)


def test_duplicates_are_dropped_and_order_kept():
    v = np.eye(4, dtype=np.float32)
    vecs = np.stack([v[0], v[0], v[1], v[0] * 0.99 + v[2] * 0.01, v[2]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    keep = diversify(np.array([5, 4, 3, 2, 1], dtype=np.float32), vecs, 3)
    assert keep == [0, 2, 4]


def test_mmr_prefers_novelty_when_asked():
    a, b = np.array([1, 0], np.float32), np.array([0, 1], np.float32)
    near_a = np.array([0.9, 0.436], np.float32)
    vecs = np.stack([a, near_a, b])
    assert diversify(np.array([1.0, 0.95, 0.5], np.float32), vecs, 2) == [0, 1]
    assert diversify(np.array([1.0, 0.95, 0.5], np.float32), vecs, 2, mmr_lambda=0.3) == [0, 2]


def _fts() -> sqlite3.Connection:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61 remove_diacritics 2')")
    con.executemany("INSERT INTO t(x) VALUES (?)", [("cats and dogs",), ("NEAR the OR gate",), ("col umn x",)])
    return con


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_any_user_text_is_a_valid_fts5_query(text):
    terms = keyword_terms(text)
    if not terms:
        return
    con = _fts()
    con.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t)", (fts5_match_expression(terms),)).fetchall()


def test_operators_in_user_text_are_plain_words():
    con = _fts()
    rows = con.execute("SELECT x FROM t WHERE t MATCH ?", (fts5_match_expression(keyword_terms("cats NOT dogs")),))
    assert [r[0] for r in rows] == ["cats and dogs"]
    near = con.execute("SELECT x FROM t WHERE t MATCH ?", (fts5_match_expression(keyword_terms("NEAR(gate)")),))
    assert [r[0] for r in near] == ["NEAR the OR gate"]
    assert keyword_terms("the of and") == ["the", "of", "and"]  # only stopwords: keep them
    assert keyword_terms("what is the capital of France") == ["capital", "france"]
    assert "北京" in keyword_terms("北京是首都")
