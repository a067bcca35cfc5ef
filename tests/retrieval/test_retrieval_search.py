"""Hybrid search on real text, the real embedder and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from retrieval.access import Principal
from retrieval.filters import SearchFilters
from retrieval.schema import Document
from retrieval.search import SearchError

ADMIN = Principal.system()

CORPUS = [
    ("doc/cats.txt", "Cats are small carnivorous mammals. A cat sleeps up to sixteen hours a day.", "Cats"),
    ("doc/dogs.txt", "Dogs were domesticated from wolves. A dog needs a daily walk and training.", "Dogs"),
    (
        "doc/qubits.txt",
        "Quantum computers store information in qubits, which can be in superposition.",
        "Qubits",
    ),
    ("doc/beijing.txt", "北京是中华人民共和国的首都，是全国的政治、文化和国际交往中心。", "北京"),
    ("doc/zyx.txt", "The part number ZX-4471 refers to the replacement valve for the cooling pump.", "Parts"),
]

NASTY_QUERIES = [
    "cats NOT dogs",
    '"unbalanced quote',
    "col:umn",
    "cat*",
    "NEAR(cats dogs)",
    "cats AND OR NOT",
    "'; DROP TABLE chunks; --",
    "^cats",
    "a OR b",
    "-dogs",
    "(((",
    "\x00\x01",
    "🐈 emoji",
    "%_%",
    "''''",
    "chunks_fts MATCH 'x'",
    "search_text:cats",
    "{cats dogs}",
    "+cats",
    "NEAR/2",
]


@pytest.fixture
def loaded(ingest):
    ingest(CORPUS, "main", ["all"])
    return ingest


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_finds_the_right_passage_in_every_mode(loaded, searcher, mode):
    hits = searcher.search("how long does a cat sleep", principal=ADMIN, k=3, mode=mode)
    assert hits and hits[0].path == "doc/cats.txt"
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    top = hits[0]
    assert top.collection == "main" and top.title == "Cats" and "sixteen hours" in top.text
    if mode == "keyword":
        assert top.score_keyword is not None and top.score_dense is None
    else:
        assert top.score_dense is not None and 0 < top.score_dense <= 1.0001


def test_hybrid_reports_both_scores_and_ranks(loaded, searcher):
    hits = searcher.search("cat sleeping hours", principal=ADMIN, k=5)
    top = hits[0]
    assert top.rank_dense == 1 and top.rank_keyword == 1
    assert top.score_fused == pytest.approx(2 / 61)
    assert all(h.score_fused >= n.score_fused for h, n in zip(hits, hits[1:], strict=False))


def test_keyword_finds_exact_identifiers_and_chinese(loaded, searcher):
    assert searcher.search("ZX-4471", principal=ADMIN, k=1, mode="keyword")[0].path == "doc/zyx.txt"
    hits = searcher.search("中国的首都", principal=ADMIN, k=1, mode="keyword")
    assert hits and hits[0].path == "doc/beijing.txt"


def test_user_text_is_never_query_syntax(loaded, searcher):
    for query in NASTY_QUERIES:
        for mode in ("keyword", "hybrid"):
            searcher.search(query, principal=ADMIN, k=3, mode=mode)  # must not raise
    # "cats NOT dogs" is three words to look for, not an exclusion
    paths = {h.path for h in searcher.search("cats NOT dogs", principal=ADMIN, k=5, mode="keyword")}
    assert "doc/dogs.txt" in paths
    # an SQL-injection attempt is just words: the table is still there and still searchable
    assert searcher.search("cats", principal=ADMIN, k=1, mode="keyword")


def test_keyword_index_follows_updates_and_deletes(store, ingest, searcher):
    ingest([("d.txt", "The aardvark eats termites at night.", "A")], "c")
    assert searcher.search("aardvark", principal=ADMIN, k=3, mode="keyword")
    ingest([("d.txt", "The pangolin eats ants at night.", "A")], "c")
    assert not searcher.search("aardvark", principal=ADMIN, k=3, mode="keyword")
    assert searcher.search("pangolin", principal=ADMIN, k=3, mode="keyword")[0].path == "d.txt"
    with store.sessions() as s:
        doc_id = s.scalar(select(Document.id).where(Document.path == "d.txt"))
    store.delete_documents([doc_id])
    for mode in ("keyword", "dense", "hybrid"):
        assert searcher.search("pangolin", principal=ADMIN, k=3, mode=mode) == []


def test_near_duplicates_are_suppressed(ingest, searcher):
    text = "The quarterly revenue grew by twelve percent, driven by cloud subscriptions in Europe."
    ingest([("a/report.txt", text, "Report")], "finance")
    ingest([("b/report-copy.txt", text, "Report")], "archive")  # other collection: stored again
    ingest(
        [("c/other.txt", "Revenue in Asia fell slightly because of currency effects.", "Other")], "finance"
    )
    hits = searcher.search("quarterly revenue growth", principal=ADMIN, k=3)
    texts = [h.text for h in hits]
    assert texts.count(text) == 1
    assert len(hits) == 2


def test_filters(loaded, ingest, searcher, store):
    ingest([("x/report.md", "Cats in the office: policy on pets at work.", "Pets policy")], "policies")
    only = searcher.search("cats", principal=ADMIN, k=10, filters=SearchFilters(collections=("policies",)))
    assert {h.collection for h in only} == {"policies"}
    by_ext = searcher.search("cats", principal=ADMIN, k=10, filters=SearchFilters(extensions=("md",)))
    assert {h.path for h in by_ext} == {"x/report.md"}
    by_prefix = searcher.search("cats", principal=ADMIN, k=10, filters=SearchFilters(path_prefix="doc/"))
    assert by_prefix and all(h.path.startswith("doc/") for h in by_prefix)
    # LIKE wildcards in a prefix are literal
    assert searcher.search("cats", principal=ADMIN, k=10, filters=SearchFilters(path_prefix="do%")) == []
    by_mime = searcher.search(
        "cats", principal=ADMIN, k=10, filters=SearchFilters(mimes=("application/pdf",))
    )
    assert by_mime == []
    with store.sessions() as s, s.begin():
        s.execute(
            update(Document)
            .where(Document.path == "doc/cats.txt")
            .values(mtime=datetime(2020, 1, 1, tzinfo=UTC).timestamp())
        )
        s.execute(
            update(Document)
            .where(Document.path != "doc/cats.txt")
            .values(mtime=datetime(2024, 6, 1, tzinfo=UTC).timestamp())
        )
    old = SearchFilters(modified_before=datetime(2021, 1, 1, tzinfo=UTC))
    for mode in ("hybrid", "dense", "keyword"):
        assert {h.path for h in searcher.search("cats", principal=ADMIN, k=10, filters=old, mode=mode)} == {
            "doc/cats.txt"
        }
    new = SearchFilters(modified_after=datetime(2024, 1, 1, tzinfo=UTC))
    assert "doc/cats.txt" not in {h.path for h in searcher.search("cats", principal=ADMIN, k=10, filters=new)}


def test_bad_requests_are_refused_clearly(loaded, searcher):
    with pytest.raises(SearchError):
        searcher.search("cats", principal=ADMIN, mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(SearchError):
        searcher.search("cats", principal=ADMIN, k=0)
    with pytest.raises(SearchError):
        searcher.search("cats", principal=None, k=1)  # type: ignore[arg-type]
    assert searcher.search("   ", principal=ADMIN) == []
