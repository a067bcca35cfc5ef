"""Access control: random users, groups and documents (duplicates included); no mode ever leaks a chunk."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from retrieval.access import Principal
from retrieval.filters import SearchFilters
from retrieval.schema import Chunk, Document

GROUPS = ["hr", "eng", "sales", "legal", "exec"]
TOPICS = [
    "Salary bands for senior engineers are reviewed every March.",
    "The incident postmortem covers the database failover in region two.",
    "Quarterly sales targets rose for the northern territory accounts.",
    "The merger agreement includes a confidentiality clause for three years.",
    "Board meeting minutes discuss the chief executive succession plan.",
    "Holiday schedule: the office closes between Christmas and New Year.",
    "Kubernetes upgrade runbook with rollback steps for the payment cluster.",
    "Customer churn analysis shows a spike after the price increase.",
    "Employee handbook section on remote work and equipment allowances.",
    "Patent filing draft for the adaptive caching algorithm.",
    "Vendor contract renewal terms for the cloud storage provider.",
    "Security training is mandatory for all staff before the audit.",
]
WORDS = [
    "salary",
    "incident",
    "sales",
    "merger",
    "board",
    "holiday",
    "kubernetes",
    "churn",
    "handbook",
    "patent",
    "contract",
    "security",
    "the",
    "plan",
    "xyzzy",
]


@pytest.fixture
def corpus(ingest, store):
    """12 documents in two collections, plus 3 duplicates (same content under another path)."""
    ingest([(f"team/{i}.txt", t, f"Doc {i}") for i, t in enumerate(TOPICS[:8])], "alpha")
    ingest([(f"other/{i}.txt", t, f"Doc {i}") for i, t in enumerate(TOPICS[8:], start=8)], "beta")
    ingest([(f"copies/{i}.txt", TOPICS[i], f"Doc {i}") for i in (0, 3, 4)], "alpha")
    with store.sessions() as s:
        docs = {
            d.id: (d.path, d.status, d.duplicate_of, d.collection_id) for d in s.scalars(select(Document))
        }
    assert sum(1 for v in docs.values() if v[1] == "duplicate") == 3
    return docs


def _visible(docs, groups_of, principal: Principal) -> set[int]:
    """The rule, restated independently: own groups, or a duplicate's groups, intersect the user's."""
    out = set()
    for doc_id, (_, status, _, _) in docs.items():
        if status != "ready":
            continue
        if principal.is_admin:
            out.add(doc_id)
            continue
        readers = set(groups_of[doc_id])
        for dup_id, (_, _, dup_of, _) in docs.items():
            if dup_of == doc_id:
                readers |= set(groups_of[dup_id])
        if readers & principal.groups:
            out.add(doc_id)
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_chunk_leaks_through_any_mode(corpus, store, searcher, data):
    docs = corpus
    groups_of = {d: data.draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)) for d in docs}
    for doc_id, groups in groups_of.items():
        store.set_document_groups(doc_id, groups)
    user_groups = frozenset(data.draw(st.lists(st.sampled_from(GROUPS), max_size=3, unique=True)))
    principal = Principal("u", user_groups, is_admin=data.draw(st.integers(0, 9)) == 0)
    query = data.draw(
        st.one_of(
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),
            st.text(min_size=1, max_size=30),
        )
    )
    mode = data.draw(st.sampled_from(["hybrid", "dense", "keyword"]))
    k = data.draw(st.integers(1, 40))
    filters = data.draw(
        st.sampled_from([None, SearchFilters(collections=("beta",)), SearchFilters(path_prefix="team/")])
    )

    hits = searcher.search(query, principal=principal, k=k, filters=filters, mode=mode)

    allowed = _visible(docs, groups_of, principal)
    with store.sessions() as s:
        stored_doc = {c: d for c, d in s.execute(select(Chunk.id, Chunk.document_id))}
    assert len(hits) <= k
    for h in hits:
        original = stored_doc[h.chunk_id]
        assert original in allowed, f"leak: chunk {h.chunk_id} of document {original} to {principal}"
        # What is shown is a document the user may see under its own groups (or the admin view).
        if not principal.is_admin:
            assert set(groups_of[h.document_id]) & principal.groups
            assert h.path == docs[h.document_id][0]
    if mode == "dense" and k >= 40 and filters is None:
        # Completeness: with room for everything, every readable document is found.
        assert {stored_doc[h.chunk_id] for h in hits} == allowed


def test_duplicate_path_is_shown_instead_of_a_confidential_original(corpus, store, searcher):
    docs = corpus
    by_path = {v[0]: k for k, v in docs.items()}
    original, copy = by_path["team/0.txt"], by_path["copies/0.txt"]
    for doc_id in docs:
        store.set_document_groups(doc_id, ["exec"])
    store.set_document_groups(copy, ["eng"])
    user = Principal("dev", frozenset({"eng"}))
    for mode in ("hybrid", "dense", "keyword"):
        hits = searcher.search("salary bands senior engineers", principal=user, k=5, mode=mode)
        assert [h.path for h in hits] == ["copies/0.txt"]
        assert hits[0].document_id == copy != original
    assert searcher.search("salary bands", principal=Principal("nobody"), k=5) == []
