"""A chunk readable only through a duplicate is shown entirely as the duplicate: id, path, title and
collection (the original's collection name may itself be confidential)."""

from __future__ import annotations

from sqlalchemy import select, update

from retrieval.access import Principal
from retrieval.schema import Collection, Document

TEXT = "Salary bands for senior engineers are reviewed every March."


def _setup(ingest, store) -> tuple[int, int]:
    ingest([("board/pay.txt", TEXT, "Pay review")], "board")
    ingest([("team/pay.txt", TEXT, "Pay review")], "board")  # same content: stored as a duplicate
    with store.sessions() as s:
        docs = {d.path: d for d in s.scalars(select(Document))}
    original, copy = docs["board/pay.txt"], docs["team/pay.txt"]
    assert copy.status == "duplicate" and copy.duplicate_of == original.id
    store.set_document_groups(original.id, ["exec"])
    store.set_document_groups(copy.id, ["eng"])
    return original.id, copy.id


def test_hit_through_a_duplicate_names_the_duplicates_collection(ingest, store, searcher):
    original, copy = _setup(ingest, store)
    # Duplicates are found within one collection today; should that ever widen (or a copy be moved), the
    # copy's reader must still see the copy's collection, not the original's.
    with store.sessions() as s, s.begin():
        s.add(Collection(name="team"))
        s.flush()
        team_id = s.scalar(select(Collection.id).where(Collection.name == "team"))
        s.execute(update(Document).where(Document.id == copy).values(collection_id=team_id))
    user = Principal("dev", frozenset({"eng"}))
    for mode in ("hybrid", "dense", "keyword"):
        hits = searcher.search("salary bands senior engineers", principal=user, k=5, mode=mode)
        assert [(h.document_id, h.path) for h in hits] == [(copy, "team/pay.txt")]
        assert hits[0].collection == "team", mode
    admin = searcher.search("salary bands senior engineers", principal=Principal("root", is_admin=True), k=5)
    assert [(h.document_id, h.collection) for h in admin] == [(original, "board")]


def test_hit_through_a_same_collection_duplicate_keeps_its_collection(ingest, store, searcher):
    _, copy = _setup(ingest, store)
    hits = searcher.search("salary bands", principal=Principal("dev", frozenset({"eng"})), k=5)
    assert [(h.document_id, h.collection) for h in hits] == [(copy, "board")]
