"""The index-kind registry drives everything: every registered kind builds, recognises itself, searches a real
FAISS index (through an access selector too), backs a store end to end; the settings accept exactly its names.

A kind defined here (IVF-Flat) is registered with one line, as a new module would be, and must work the same
way with nothing else edited: that is the promise of `retrieval.index_kinds`.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select

from app.config import Settings
from retrieval import index_kinds
from retrieval.access import Principal
from retrieval.ann import IndexPolicy, build_index, empty_index, kind_of, measure_recall, search_parameters
from retrieval.index_kinds.base import IndexKindSpec
from retrieval.schema import Chunk
from retrieval.search import HybridSearcher
from retrieval.store import ChunkRecord, DocumentMeta, DocumentStore, DocumentWrite, WriteResult

DIM = 384
SHIPPED = tuple(index_kinds.KINDS)
MIN_RECALL = {"flat": 1.0, "hnsw": 0.9, "ivfpq": 0.5, "ivfflat": 0.9}  # ivfpq: 48-byte codes


class IvfFlat(IndexKindSpec):
    """A kind the product does not ship: inverted lists over full vectors (trained; like every IVF kind
    behind an IndexIDMap2 it cannot delete in place, so it keeps removed entries as tombstones)."""

    deletes_in_place = False

    def empty(self, dim: int) -> faiss.Index:
        raise ValueError("an IVF-Flat index needs training vectors")

    def trained(self, dim: int, vectors: np.ndarray) -> faiss.Index:
        quantizer = faiss.IndexFlatIP(dim)
        inner = faiss.IndexIVFFlat(quantizer, dim, 16, faiss.METRIC_INNER_PRODUCT)
        inner.own_fields = True
        quantizer.this.disown()
        inner.train(vectors)
        inner.make_direct_map()
        return inner

    def recognises(self, inner: faiss.Index) -> bool:
        return isinstance(inner, faiss.IndexIVFFlat)

    def search_parameters(self, boost: float) -> faiss.SearchParameters:
        params = faiss.SearchParametersIVF()
        params.nprobe = int(8 * boost)
        return params


KIND = IvfFlat()  # what the registry imports from a kind's module


@pytest.fixture(params=[*SHIPPED, "ivfflat"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each shipped kind, and the one registered here by its one registry line."""
    if request.param not in index_kinds.KINDS:
        monkeypatch.setitem(index_kinds.KINDS, request.param, __name__)
    monkeypatch.setattr(index_kinds, "_loaded", {})
    return request.param


def clustered(n: int, seed: int, centres: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, DIM)).astype(np.float32)
    v = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def stored_in(
    kind: str, engine: Engine, tmp_path: Path, vecs: np.ndarray, *, per_document: int
) -> tuple[DocumentStore, list[WriteResult]]:
    """A store holding `vecs` as documents of `per_document` chunks each, rebuilt into an index of `kind`."""
    store = DocumentStore(engine, tmp_path / "index", DIM)
    store.open()
    store.index_policy = IndexPolicy(choice=kind)
    cid = store.collection_id("c", create=True)
    n = per_document
    results = store.write_documents(
        [
            DocumentWrite(
                cid,
                DocumentMeta(f"d{d}.txt", f"{d:064x}", 1, 0.0, "text/plain"),
                chunks=[ChunkRecord(f"doc {d} part {i}", f"doc {d} part {i}", i, 5) for i in range(n)],
                vectors=vecs[d : d + n],
            )
            for d in range(0, len(vecs), n)
        ]
    )
    assert store.rebuild_index() == kind
    return store, results


def test_shipped_kinds_are_flat_hnsw_ivfpq() -> None:
    assert SHIPPED == ("flat", "hnsw", "ivfpq")


def test_every_kind_builds_recognises_itself_and_searches(kind: str) -> None:
    vecs = clustered(2000, seed=1)
    ids = np.arange(100, 2100, dtype=np.int64)
    index = build_index(kind, DIM, ids, vecs)
    assert isinstance(index, faiss.IndexIDMap2) and index.ntotal == len(ids)
    assert kind_of(index) == kind
    queries = clustered(40, seed=2)
    report = measure_recall(index, ids, vecs, queries, k=10)
    assert report.kind == kind and report.recall >= MIN_RECALL[kind], report

    # Through an access selector: only allowed ids come back, and the beam widens for a narrow one.
    allowed = np.zeros(2100, dtype=bool)
    allowed[100:2100:7] = True
    bitmap = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    params = search_parameters(kind, selector, selectivity=1 / 7)
    assert params is not None
    _, got = index.search(queries, 10, params=params)
    found = got[got >= 0]
    assert len(found) and allowed[found].all()


def test_empty_index_is_the_kinds_own_or_refused(kind: str) -> None:
    try:
        index = empty_index(kind, DIM)
    except ValueError as exc:  # a kind that must be trained first
        assert "training" in str(exc)
        return
    index.add_with_ids(clustered(50, seed=3), np.arange(50, dtype=np.int64))
    assert kind_of(index) == kind


def test_unregistered_kinds_are_refused_by_name() -> None:
    for call in (lambda: empty_index("annoy", DIM), lambda: search_parameters("annoy", None, 1.0)):
        with pytest.raises(ValueError, match=r"unknown index kind 'annoy'; one of: flat, hnsw, ivfpq"):
            call()
    with pytest.raises(ValueError, match="unknown index kind 'annoy'"):
        IndexPolicy(choice="annoy")
    with pytest.raises(ValueError, match="is no registered index kind"):
        kind_of(faiss.IndexIDMap2(faiss.IndexLSH(DIM, 64)))


def test_every_kind_backs_a_store_and_its_searcher(kind: str, engine: Engine, tmp_path: Path) -> None:
    """Rebuild into the kind, reopen it from disk, and the searcher's dense ranking agrees with exact search."""
    store, _ = stored_in(kind, engine, tmp_path, clustered(1200, seed=4), per_document=4)
    store.flush()
    reopened = DocumentStore(engine, tmp_path / "index", DIM)
    reopened.open()
    assert reopened.vectors.kind == kind and kind_of(reopened.vectors.faiss_index) == kind

    with reopened.sessions() as session:
        stored = session.execute(select(Chunk.id, Chunk.embedding)).all()
    ids = np.array([r[0] for r in stored], dtype=np.int64)
    matrix = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in stored])
    queries = clustered(20, seed=5)
    searcher = HybridSearcher(reopened, lambda q: queries[int(q)])
    try:
        agreed = 0
        for n, q in enumerate(queries):
            truth = set(ids[np.argsort(-(matrix @ q))[:5]].tolist())
            hits = searcher.search(str(n), principal=Principal.system(), k=5, mode="dense")
            assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
            agreed += len(truth & {h.chunk_id for h in hits})
        assert agreed / (5 * len(queries)) >= min(MIN_RECALL[kind], 0.8)
    finally:
        searcher.close()


def test_index_type_setting_takes_auto_and_registered_names(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARQ_CONFIG_FILE", raising=False)
    monkeypatch.setenv("SPARQ_INDEX_TYPE", kind.upper())
    assert Settings().index_type == kind
    monkeypatch.setenv("SPARQ_INDEX_TYPE", "auto")
    assert Settings().index_type == "auto"


def test_a_bad_index_type_setting_names_the_choices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARQ_CONFIG_FILE", raising=False)
    monkeypatch.setenv("SPARQ_INDEX_TYPE", "annoy")
    with pytest.raises(
        ValidationError, match=r"unknown index type 'annoy'; choose auto or one of flat, hnsw, ivfpq"
    ):
        Settings()


def test_every_kind_forgets_deleted_documents_and_keeps_the_others_ids(
    kind: str, engine: Engine, tmp_path: Path
) -> None:
    """Delete a third of the documents from an index of each kind: their chunks are never found again, and
    every other chunk is still found under its own id (an in-place delete that renumbers entries behind
    the id map would hand back other chunks' ids), before and after the next rebuild."""
    store, results = stored_in(kind, engine, tmp_path, clustered(900, seed=7), per_document=3)
    doomed = [r.document_id for n, r in enumerate(results) if n % 3 == 0]
    assert store.delete_documents(doomed) == len(doomed)
    with store.sessions() as session:
        kept = session.execute(select(Chunk.id, Chunk.embedding)).all()
    kept_ids = {r[0] for r in kept}
    assert len(kept_ids) == 900 - 3 * len(doomed)

    def check() -> None:
        searcher = HybridSearcher(store, lambda q: np.frombuffer(kept[int(q)][1], dtype=np.float32))
        try:
            found_self = 0
            for n in range(0, len(kept), 7):
                hits = searcher.search(str(n), principal=Principal.system(), k=5, mode="dense")
                assert {h.chunk_id for h in hits} <= kept_ids, "a deleted chunk was found"
                found_self += hits[0].chunk_id == kept[n][0]
            assert found_self / len(range(0, len(kept), 7)) >= MIN_RECALL[kind] * 0.9
        finally:
            searcher.close()

    check()
    assert store.rebuild_index() == kind
    check()
