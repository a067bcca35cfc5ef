"""The vector index: chunk->document map on disk, readers reloading, ANN kinds and background rebuilds.

These tests exercise index mechanics, so they write synthetic clustered vectors straight into the store
(hundreds of them) instead of embedding text; relevance is tested elsewhere with the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from retrieval.access import Principal
from retrieval.ann import IndexPolicy, build_index, measure_recall
from retrieval.search import HybridSearcher
from retrieval.store import ChunkRecord, DocumentMeta, DocumentStore, DocumentWrite, StoreError

DIM = 384
ADMIN = Principal.system()


def clustered(n: int, seed: int = 0, centres: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, DIM)).astype(np.float32)
    v = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write(
    store: DocumentStore,
    start: int,
    vectors: np.ndarray,
    per_doc: int = 4,
    collection: str = "c",
    groups: list[str] | None = None,
) -> list[int]:
    cid = store.collection_id(collection, create=True)
    writes = []
    for d in range(0, len(vectors), per_doc):
        vecs = vectors[d : d + per_doc]
        n = start + d // per_doc
        chunks = [ChunkRecord(f"doc {n} part {i}", f"doc {n} part {i}", i, 5) for i in range(len(vecs))]
        writes.append(
            DocumentWrite(
                cid,
                DocumentMeta(f"d{n}.txt", f"{n:064x}", 1, 0.0, "text/plain"),
                chunks=chunks,
                vectors=vecs,
                groups=groups,
            )
        )
    return [r.document_id for r in store.write_documents(writes)]


def exact_top(store: DocumentStore, query: np.ndarray, k: int) -> list[int]:
    ids = store.vectors.ids()
    with store.sessions() as s:
        from sqlalchemy import select

        from retrieval.schema import Chunk

        rows = dict(s.execute(select(Chunk.id, Chunk.embedding)).all())
    mat = np.stack([np.frombuffer(rows[int(i)], dtype=np.float32) for i in ids])
    return [int(ids[j]) for j in np.argsort(-(mat @ query))[:k]]


def searcher_for(store: DocumentStore) -> HybridSearcher:
    return HybridSearcher(store, lambda q: q)  # tests pass vectors as "queries" in dense mode via encode


@pytest.fixture
def vstore(engine: Engine, tmp_path: Path) -> DocumentStore:
    s = DocumentStore(engine, tmp_path / "index", DIM)
    s.open()
    return s


def test_document_map_is_saved_and_reloaded(vstore, engine, tmp_path):
    docs = write(vstore, 0, clustered(40))
    vstore.flush()
    reader = DocumentStore(engine, tmp_path / "index", DIM)
    reader.open()
    assert np.array_equal(reader.vectors.ids(), vstore.vectors.ids())
    dm_w, dm_r = vstore.vectors.document_map(), reader.vectors.document_map()
    ids = vstore.vectors.ids()
    assert np.array_equal(dm_w[ids], dm_r[ids])
    assert set(dm_r[ids].tolist()) == set(docs)


def test_old_index_without_document_map_is_repaired_from_sql(vstore, engine, tmp_path):
    write(vstore, 0, clustered(20))
    vstore.flush()
    pointer_file = tmp_path / "index" / "CURRENT"
    pointer = json.loads(pointer_file.read_text())
    (tmp_path / "index" / pointer.pop("docs")).unlink()
    pointer_file.write_text(json.dumps(pointer))
    reader = DocumentStore(engine, tmp_path / "index", DIM)
    reader.open()
    assert reader.vectors.documents_known
    ids = reader.vectors.ids()
    assert (reader.vectors.document_map()[ids] >= 0).all()


def test_reader_process_sees_a_new_index_saved_by_the_writer(vstore, engine, tmp_path):
    vecs = clustered(24, seed=1)
    write(vstore, 0, vecs[:12])
    vstore.flush()
    reader = DocumentStore(engine, tmp_path / "index", DIM)
    reader.open()
    searcher = HybridSearcher(reader, lambda q: vecs[20])
    before = {h.chunk_id for h in searcher.search("x", principal=ADMIN, k=30, mode="dense")}
    write(vstore, 100, vecs[12:])
    vstore.flush()
    after = searcher.search("x", principal=ADMIN, k=30, mode="dense")
    assert len(after) == 24 and len(before) == 12
    assert after[0].path == "d102.txt"  # vecs[20] is chunk 0 of the third new document
    searcher.close()


def test_auto_policy_switches_to_hnsw_in_the_background_and_keeps_recall(vstore):
    vstore.index_policy = IndexPolicy(choice="auto", threshold=300)
    vecs = clustered(600, seed=2)
    write(vstore, 0, vecs[:200])
    assert vstore.vectors.kind == "flat"
    write(vstore, 1000, vecs[200:400])  # crosses the threshold: a rebuild starts in the background
    write(vstore, 2000, vecs[400:])  # written while the rebuild runs, replayed onto the new index
    vstore.wait_for_rebuild()
    assert vstore.vectors.kind == "hnsw"
    assert vstore.vectors.ntotal == 600
    assert set(vstore.vectors.ids().tolist()) == set(exact_ids(vstore))
    queries = clustered(30, seed=3)
    report = measure_recall(
        vstore.vectors.faiss_index, vstore.vectors.ids(), vectors_of(vstore), queries, k=10
    )
    assert report.recall >= 0.9


def exact_ids(store: DocumentStore) -> list[int]:
    from sqlalchemy import select

    from retrieval.schema import Chunk

    with store.sessions() as s:
        return list(s.scalars(select(Chunk.id)))


def vectors_of(store: DocumentStore) -> np.ndarray:
    from sqlalchemy import select

    from retrieval.schema import Chunk

    ids = store.vectors.ids()
    with store.sessions() as s:
        rows = dict(s.execute(select(Chunk.id, Chunk.embedding)).all())
    return np.stack([np.frombuffer(rows[int(i)], dtype=np.float32) for i in ids])


def test_hnsw_deletes_are_tombstones_never_returned_and_compacted(vstore, engine, tmp_path):
    vstore.index_policy = IndexPolicy(choice="hnsw")
    vecs = clustered(400, seed=4)
    docs = write(vstore, 0, vecs)
    assert vstore.rebuild_index() == "hnsw"
    gone = docs[:30]  # 120 of 400 chunks: 30 % tombstones
    vstore.delete_documents(gone[:5])
    assert vstore.vectors.tombstones == 20
    searcher = HybridSearcher(vstore, lambda q: vecs[0])
    hits = searcher.search("x", principal=ADMIN, k=50, mode="dense")
    assert hits and all(h.document_id not in gone[:5] for h in hits)
    # survives a save and a reload in another process
    reader = DocumentStore(engine, tmp_path / "index", DIM)
    reader.open()
    assert reader.vectors.kind == "hnsw" and reader.vectors.tombstones == 20
    rs = HybridSearcher(reader, lambda q: vecs[0])
    assert all(h.document_id not in gone[:5] for h in rs.search("x", principal=ADMIN, k=50, mode="dense"))
    vstore.delete_documents(gone[5:])  # past 20 % tombstones: the next write triggers a compacting rebuild
    assert vstore.rebuild_needed() == "hnsw"
    write(vstore, 5000, clustered(4, seed=5))
    vstore.wait_for_rebuild()
    assert vstore.vectors.tombstones == 0 and vstore.vectors.ntotal == 400 - 120 + 4
    searcher.close()
    rs.close()


def test_acl_bitmap_works_with_ann_kinds(vstore):
    vstore.index_policy = IndexPolicy(choice="hnsw")
    vecs = clustered(400, seed=6)
    write(vstore, 0, vecs[:200], groups=["a"])
    write(vstore, 500, vecs[200:], groups=["b"])
    vstore.rebuild_index()
    searcher = HybridSearcher(vstore, lambda q: vecs[10])
    hits = searcher.search("x", principal=Principal("u", frozenset({"b"})), k=20, mode="dense")
    assert len(hits) == 20 and all(h.path >= "d500" for h in hits)
    searcher.close()


def test_ivfpq_index_builds_and_approximates_exact_search():
    vecs = clustered(1000, seed=7)
    ids = np.arange(10, 1010, dtype=np.int64)
    index = build_index("ivfpq", DIM, ids, vecs)
    report = measure_recall(index, ids, vecs, clustered(50, seed=8), k=10)
    assert report.kind == "ivfpq"
    assert report.recall >= 0.5  # 48-byte codes; the figures at scale are in bench/results/search.json


def test_ivfpq_dense_ranking_is_rescored_exactly_from_sql(vstore):
    """IVF-PQ orders by 48-byte codes; the searcher re-scores its candidates with the embeddings in SQL, so
    the dense scores are exact cosines and the top hits agree with exact search far better than the codes."""
    vstore.index_policy = IndexPolicy(choice="ivfpq")
    vecs = clustered(3000, seed=9, centres=10)  # tight clusters: codes alone confuse near neighbours
    write(vstore, 0, vecs)
    assert vstore.rebuild_index() == "ivfpq"
    queries = clustered(30, seed=10, centres=10)
    searcher = HybridSearcher(vstore, lambda q: q)
    access = searcher._access(ADMIN, None)
    codes_only = reranked = 0
    for q in queries:
        truth = set(exact_top(vstore, q, 10))
        ids, scores = searcher._dense(q, 100, access)  # the searcher's candidate depth
        raw = vstore.vectors.search(q[None, :], 10)[1][0].tolist()
        reranked += len(truth & set(ids[:10]))
        codes_only += len(truth & set(raw))
        with vstore.sessions() as s:
            from sqlalchemy import select

            from retrieval.schema import Chunk

            emb = dict(s.execute(select(Chunk.id, Chunk.embedding).where(Chunk.id.in_(ids))).all())
        for i in ids:
            assert scores[i] == pytest.approx(float(np.frombuffer(emb[i], dtype=np.float32) @ q), abs=1e-5)
        assert [scores[i] for i in ids] == sorted((scores[i] for i in ids), reverse=True)
    assert reranked > codes_only
    assert reranked / (10 * len(queries)) >= 0.9, (reranked, codes_only)
    searcher.close()


def test_store_refuses_vectors_of_another_embedding_model(engine, tmp_path):
    first = DocumentStore(engine, tmp_path / "index", DIM, embedding_model="model-a")
    first.open()
    write(first, 0, clustered(8))
    first.flush()
    same = DocumentStore(engine, tmp_path / "index", DIM, embedding_model="model-a")
    assert same.open() is not None and len(same.vectors.ids()) == 8
    other = DocumentStore(engine, tmp_path / "index", DIM, embedding_model="model-b")
    with pytest.raises(
        StoreError, match="made by the embedding model 'model-a', but 'model-b' is configured"
    ):
        other.open()


def test_store_from_before_model_tracking_adopts_the_configured_model(engine, tmp_path, caplog):
    legacy = DocumentStore(engine, tmp_path / "index", DIM)  # no model recorded, as before the migration
    legacy.open()
    write(legacy, 0, clustered(4))
    legacy.flush()
    with caplog.at_level("WARNING"):
        DocumentStore(engine, tmp_path / "index", DIM, embedding_model="model-a").open()
    assert "predates embedding-model tracking" in caplog.text
    with pytest.raises(StoreError, match="model-a"):
        DocumentStore(engine, tmp_path / "index", DIM, embedding_model="model-b").open()
