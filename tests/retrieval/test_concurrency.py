"""Searches racing writes in one process (an admin's upload ingests on a worker thread while employees
search): FAISS must never be searched while it is mutated, and the chunk->document map a search builds its
access bitmap from must not change under it.

Each stress runs in a child process with faulthandler on: on a racy index the failure is often a segfault,
which would kill pytest itself. Vectors are random (the property is memory safety and id validity, not
relevance); the searches go through the real VectorIndex, and through the real HybridSearcher over a real
store with background rebuilds into HNSW.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READERS = 6
SECONDS = 2.5

RAW_STRESS = textwrap.dedent(
    """
    import faulthandler, json, sys, threading, time
    from pathlib import Path

    import numpy as np

    faulthandler.enable()
    from retrieval.ann import build_index
    from retrieval.vector_index import VectorIndex

    kind, check, index_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    seconds, readers = float(sys.argv[4]), int(sys.argv[5])
    DIM = 64
    rng = np.random.default_rng(0)

    def unit(n):
        v = rng.standard_normal((n, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    index = VectorIndex(index_dir, DIM)
    seed = np.arange(2000, dtype=np.int64)
    seed_vecs = unit(len(seed))
    # every vector ever added, by id; registered before add(), so readers may meet it at any moment
    vector_of = dict(zip(seed.tolist(), seed_vecs))
    ever = vector_of
    if kind == "hnsw":
        index.replace(build_index("hnsw", DIM, seed, seed_vecs), "hnsw", seed // 10)
    else:
        index.add(seed, seed_vecs, seed // 10)
    stop = threading.Event()
    errors, searches = [], [0] * readers

    def reader(i):
        qrng = np.random.default_rng(100 + i)
        try:
            while not stop.is_set():
                q = qrng.standard_normal((2, DIM)).astype(np.float32)
                if check == "search":  # FAISS itself: no crash, and only ids that were added
                    scores, ids = index.search(q, 25)
                    for row, (s_row, i_row) in enumerate(zip(scores.tolist(), ids.tolist())):
                        for score, x in zip(s_row, i_row):
                            if x == -1:
                                continue
                            if x not in ever:
                                raise AssertionError(f"search returned id {x}, which was never added")
                            if abs(score - float(q[row] @ vector_of[x])) > 1e-3:  # torn: another entry's score
                                raise AssertionError(f"id {x} came back with the score of another vector")
                    live = index.ids()
                    if index.ntotal < 0 or not all(x in ever for x in live[:50].tolist()):
                        raise AssertionError("ids() returned ids never added")
                else:  # the map a search builds its access bitmap from: a snapshot no write changes
                    snapshot = index.document_map()
                    before = snapshot.copy()
                    index.search(q[:1], 5)
                    if not np.array_equal(before, snapshot):
                        raise AssertionError("the chunk->document map handed to a reader changed under it")
                searches[i] += 1
        except BaseException as exc:
            errors.append(repr(exc))
            stop.set()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for t in threads:
        t.start()
    next_id, added, removed = len(seed), 0, 0
    deadline = time.monotonic() + seconds
    try:
        while (time.monotonic() < deadline or added < 3000) and not stop.is_set() and added < 40_000:
            ids = np.arange(next_id, next_id + 300, dtype=np.int64)
            next_id += 300
            vecs = unit(len(ids))
            vector_of.update(zip(ids.tolist(), vecs))
            index.add(ids, vecs, ids // 10)
            added += len(ids)
            gone = rng.choice(next_id, 100, replace=False).astype(np.int64)
            removed += index.remove(gone)
    finally:
        stop.set()
        for t in threads:
            t.join()
    live = index.ids()
    assert len(set(live.tolist())) == len(live), "duplicate ids in the index"
    print(json.dumps({"added": added, "removed": removed, "searches": searches, "errors": errors}))
    sys.exit(1 if errors else 0)
    """
)

HYBRID_STRESS = textwrap.dedent(
    """
    import faulthandler, json, sys, threading, time
    from pathlib import Path

    import numpy as np

    faulthandler.enable()
    from app.database import open_database
    from retrieval.access import Principal
    from retrieval.ann import IndexPolicy
    from retrieval.search import HybridSearcher
    from retrieval.store import ChunkRecord, DocumentMeta, DocumentStore, DocumentWrite

    kind, index_dir, url = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    seconds, readers = float(sys.argv[4]), int(sys.argv[5])
    DIM = 384
    rng = np.random.default_rng(0)
    WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()

    def unit(n):
        v = rng.standard_normal((n, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    engine = open_database(url)
    store = DocumentStore(engine, index_dir, DIM)
    # auto with a low threshold: the store rebuilds into HNSW in the background, and again as it grows,
    # while the searches run (the swap from flat to HNSW is the moment search parameters must match).
    store.index_policy = IndexPolicy(choice="auto", threshold=250 if kind == "hnsw" else 10**9)
    store.open()
    cid = store.collection_id("c", create=True)
    n_doc = [0]

    def write_docs(n_docs, per_doc=20):
        writes = []
        for _ in range(n_docs):
            d = n_doc[0]
            n_doc[0] += 1
            texts = [f"{WORDS[(d + i) % len(WORDS)]} doc{d} part{i}" for i in range(per_doc)]
            chunks = [ChunkRecord(text, text, i, 4) for i, text in enumerate(texts)]
            groups = ["staff"] if d % 2 else ["board"]
            writes.append(DocumentWrite(cid, DocumentMeta(f"d{d}.txt", f"{d:064x}", 1, 0.0, "text/plain"),
                                        chunks=chunks, vectors=unit(per_doc), groups=groups))
        return [r.document_id for r in store.write_documents(writes)]

    write_docs(10)
    qrng = np.random.default_rng(7)
    searcher = HybridSearcher(store, lambda q: qrng.standard_normal(DIM).astype(np.float32) / np.sqrt(DIM))
    principals = [Principal.system(), Principal("emp", frozenset({"staff"}))]
    stop = threading.Event()
    errors, searches = [], [0] * readers

    def reader(i):
        try:
            while not stop.is_set():
                mode = ("hybrid", "dense", "keyword")[searches[i] % 3]
                principal = principals[i % 2]
                hits = searcher.search(WORDS[i % len(WORDS)] + " doc part", principal=principal, k=10, mode=mode)
                # each hit is its own chunk (text and path of one row) and readable by who searched
                bad = [h for h in hits if h.text.split()[1] != "doc" + h.path[1:-4]
                       or (not principal.is_admin and int(h.path[1:-4]) % 2 == 0)]
                if bad or len(hits) > 10 or len({h.chunk_id for h in hits}) != len(hits):
                    raise AssertionError(f"unexpected hits {bad[:3]} ({len(hits)} hits)")
                searches[i] += 1
        except BaseException as exc:
            import traceback
            errors.append(traceback.format_exc())
            stop.set()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    docs = []
    try:
        while time.monotonic() < deadline and not stop.is_set():
            docs += write_docs(8)
            if len(docs) > 12:
                store.delete_documents(docs[:3])  # removes (tombstones in HNSW) and a flush, mid-search
                docs = docs[3:]
    finally:
        stop.set()
        for t in threads:
            t.join()
    store.wait_for_rebuild()
    with store.sessions() as s:
        from sqlalchemy import select
        from retrieval.schema import Chunk
        db_ids = set(s.scalars(select(Chunk.id)))
    if set(store.vectors.ids().tolist()) != db_ids:
        errors.append("the index does not hold exactly the database's chunks")
    print(json.dumps({"documents": n_doc[0], "kind": store.vectors.kind, "searches": searches, "errors": errors}))
    sys.exit(1 if errors else 0)
    """
)


def _run(code: str, *args: str, timeout: float = 120) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, (
        f"stress child exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_vector_index_searches_while_a_writer_adds_and_removes(tmp_path, kind):
    out = _run(RAW_STRESS, kind, "search", str(tmp_path / "index"), str(SECONDS), str(READERS))
    assert out["added"] >= 3000, out
    assert all(n > 0 for n in out["searches"]), out  # every reader really searched during the writes


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_document_map_snapshot_never_changes_under_a_reader(tmp_path, kind):
    out = _run(RAW_STRESS, kind, "docmap", str(tmp_path / "index"), str(SECONDS), str(READERS))
    assert out["added"] >= 1000, out
    assert all(n > 0 for n in out["searches"]), out


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_hybrid_searches_while_a_thread_ingests_and_deletes(tmp_path, database_url, kind):
    out = _run(HYBRID_STRESS, kind, str(tmp_path / "index"), database_url, str(SECONDS), str(READERS))
    assert out["documents"] >= 18, out  # at least one batch was written while the searches ran
    assert all(n > 0 for n in out["searches"]), out
    if kind == "hnsw":
        assert out["kind"] == "hnsw", out  # the background rebuild happened during the searches
