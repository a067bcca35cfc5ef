"""The in-memory BM25 index: exact scores, in step with the chunk->document map, cache, masks, query text."""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.keyword import K1, B, KeywordIndex, analyze, keyword_terms

TEXTS = [
    "The cat sat on the mat with another cat.",
    "Dogs chase cats across the garden.",
    "Quarterly budget owner is Margaret.",
    "The budget for the garden party was approved.",
    "Cats and dogs: a field guide to pets.",
    "Nothing relevant here at all.",
]


class Corpus:
    """Chunk texts in a dict (standing in for SQL) and a chunk->document map (the vector index's)."""

    def __init__(self, texts: dict[int, str], docs: dict[int, int]) -> None:
        self.texts = dict(texts)
        self.docs = dict(docs)
        self.fetched: list[int] = []

    def doc_map(self) -> np.ndarray:
        m = np.full(max(self.docs, default=-1) + 1, -1, dtype=np.int64)
        for chunk, doc in self.docs.items():
            m[chunk] = doc
        return m

    def fetch(self, ids: np.ndarray) -> list[tuple[int, str]]:
        self.fetched.extend(int(i) for i in ids)
        return [(int(i), self.texts[int(i)]) for i in ids if int(i) in self.texts]


def reference_bm25(query: str, texts: dict[int, str]) -> dict[int, float]:
    """Okapi BM25 written out term by term (Lucene's non-negative idf), over analysed texts."""
    docs = {c: Counter(analyze(t)) for c, t in texts.items()}
    n = len(docs)
    avgdl = sum(sum(d.values()) for d in docs.values()) / n
    scores: dict[int, float] = {}
    for term in keyword_terms(query):
        df = sum(1 for d in docs.values() if term in d)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for c, d in docs.items():
            tf = d.get(term, 0)
            if tf:
                dl = sum(d.values())
                scores[c] = scores.get(c, 0.0) + idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))
    return scores


def _index(corpus: Corpus, snapshot=None) -> KeywordIndex:
    index = KeywordIndex(snapshot)
    index.sync(corpus.doc_map(), corpus.fetch, version=object())
    return index


def test_scores_are_exact_bm25_and_ranked():
    corpus = Corpus({i + 1: t for i, t in enumerate(TEXTS)}, {i + 1: 10 + i for i in range(len(TEXTS))})
    index = _index(corpus)
    for query in ["cat", "garden budget", "cats dogs pets", "Margaret's budget?"]:
        hits = index.search(query, 10)
        expected = reference_bm25(query, corpus.texts)
        assert {h.chunk_id: pytest.approx(h.score, rel=1e-5) for h in hits} == expected
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.search("cat", 1)[0].chunk_id == 1  # two occurrences beat one
    assert index.search("unicorn", 5) == []
    assert index.search("the of and", 5) == []  # stopwords are not indexed


def test_stemming_and_cjk_words_match():
    corpus = Corpus({1: "Running runners ran", 2: "北京 是 中国 的 首都"}, {1: 1, 2: 2})
    index = _index(corpus)
    assert [h.chunk_id for h in index.search("run", 5)] == [1]
    assert [h.chunk_id for h in index.search("北京是首都", 5)] == [2]  # query segmented like ingest


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "remove", "move"]), st.integers(0, 5), st.integers(0, 3)),
        min_size=1,
        max_size=25,
    )
)
def test_any_history_of_writes_scores_like_a_fresh_build(ops):
    """Adds, deletes and chunks moving to another document, synced after each step, leave exactly the
    index a fresh build over the live chunks gives."""
    corpus = Corpus({}, {})
    index = KeywordIndex()
    next_id = 1
    for op, text_no, doc in ops:
        if op == "add":
            corpus.texts[next_id] = TEXTS[text_no]
            corpus.docs[next_id] = doc
            next_id += 1
        elif corpus.docs:
            victim = sorted(corpus.docs)[text_no % len(corpus.docs)]
            if op == "remove":
                del corpus.docs[victim], corpus.texts[victim]
            else:
                corpus.docs[victim] = 100 + doc
        index.sync(corpus.doc_map(), corpus.fetch, version=object())
    fresh = _index(Corpus(corpus.texts, corpus.docs))
    assert index.live_rows == len(corpus.docs)
    for query in ["cat garden", "budget", "dogs pets field"]:
        got = {h.chunk_id: h.score for h in index.search(query, 50)}
        want = {h.chunk_id: h.score for h in fresh.search(query, 50)}
        assert got.keys() == want.keys()
        for c in got:
            assert got[c] == pytest.approx(want[c], rel=1e-5)


def test_unchanged_version_reads_nothing_and_new_chunks_only_are_read():
    corpus = Corpus({1: TEXTS[0], 2: TEXTS[1]}, {1: 1, 2: 1})
    index = KeywordIndex()
    version = object()
    assert index.sync(corpus.doc_map(), corpus.fetch, version) == 2
    assert index.sync(corpus.doc_map(), corpus.fetch, version) == 0
    corpus.texts[3], corpus.docs[3] = TEXTS[2], 2
    corpus.fetched.clear()
    assert index.sync(corpus.doc_map(), corpus.fetch, object()) == 1
    assert corpus.fetched == [3]


def test_mask_applies_before_the_top_k():
    texts = {i: f"budget report number {i}" + (" budget" if i % 2 else "") for i in range(1, 41)}
    corpus = Corpus(texts, {i: i for i in texts})
    index = _index(corpus)
    allowed = np.zeros(50, dtype=bool)
    allowed[[2, 4, 6]] = True  # only even (weaker) chunks are readable
    hits = index.search("budget", 3, allowed)
    assert sorted(h.chunk_id for h in hits) == [2, 4, 6]
    assert index.search("budget", 5, np.zeros(50, dtype=bool)) == []


def test_compaction_after_mass_delete_keeps_results(monkeypatch):
    import retrieval.keyword as kw

    texts = {i: TEXTS[i % len(TEXTS)] + f" item{i}" for i in range(1, 301)}
    corpus = Corpus(texts, {i: i for i in texts})
    index = _index(corpus)
    for i in range(1, 251):
        del corpus.docs[i], corpus.texts[i]
    original = kw.KeywordIndex._refresh_live

    compacted = []

    def spy(self, doc_map):
        before = self._state.rows
        original(self, doc_map)
        compacted.append(self._state.rows < before)

    monkeypatch.setattr(kw.KeywordIndex, "_refresh_live", spy)
    monkeypatch.setattr(kw, "_COMPACT_MIN_DEAD", 100)
    index.sync(corpus.doc_map(), corpus.fetch, object())
    assert compacted == [True] and index.rows == 50
    fresh = _index(Corpus(corpus.texts, corpus.docs))
    assert [(h.chunk_id, round(h.score, 5)) for h in index.search("cat budget item280", 10)] == [
        (h.chunk_id, round(h.score, 5)) for h in fresh.search("cat budget item280", 10)
    ]


def test_snapshot_is_a_cache_stale_or_broken(tmp_path, monkeypatch, caplog):
    import retrieval.keyword as kw

    monkeypatch.setattr(kw, "SNAPSHOT_MIN_NEW_ROWS", 1)
    path = tmp_path / "keyword.npz"
    corpus = Corpus({i + 1: t for i, t in enumerate(TEXTS)}, {i + 1: 1 for i in range(len(TEXTS))})
    first = _index(corpus, path)
    assert path.exists()
    # The store moves on after the snapshot: one chunk deleted, one added.
    del corpus.docs[2], corpus.texts[2]
    corpus.texts[7], corpus.docs[7] = "A new garden budget memo", 3
    corpus.fetched.clear()
    second = _index(corpus, path)
    assert corpus.fetched == [7]  # everything else came from the cache
    fresh = _index(Corpus(corpus.texts, corpus.docs))
    for q in ["garden budget", "cats dogs"]:
        assert [(h.chunk_id, round(h.score, 5)) for h in second.search(q, 10)] == [
            (h.chunk_id, round(h.score, 5)) for h in fresh.search(q, 10)
        ]
    assert first.rows == len(TEXTS)

    path.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="retrieval.keyword"):
        third = _index(corpus, path)
    assert "unreadable keyword index cache" in caplog.text
    assert third.live_rows == len(corpus.docs)


def test_query_text_is_only_words():
    assert keyword_terms("what is the capital of France") == ["capit", "franc"]
    assert keyword_terms('cats NOT "dogs" NEAR(x) col:umn*') == ["cat", "dog", "near", "x", "col", "umn"]
    assert "北京" in keyword_terms("北京是首都")
    assert len(keyword_terms(" ".join(f"w{i}" for i in range(100)))) == 32
    assert keyword_terms("a" * 65 + " budget") == ["budget"]  # hashes and base64 are not words


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_any_user_text_is_a_valid_query(text):
    corpus = Corpus({1: TEXTS[0], 2: TEXTS[4]}, {1: 1, 2: 2})
    index = _index(corpus)
    for hit in index.search(text, 5):
        assert hit.chunk_id in (1, 2) and hit.score > 0
