"""Search latency at scale: the whole `HybridSearcher.search` call against bare FAISS + query embedding.

    python bench/search.py [--sizes 100000 1000000] [--queries 200] [--real-store DIR] [--out FILE]

Corpus: real SciFact text. With --real-store (a sparq data dir holding an ingested SciFact collection)
its chunks keep their real text and real MiniLM vectors; the remaining chunks are synthetic: text
recombined from real SciFact sentences, vectors a real chunk's vector plus noise (renormalised), so the
keyword index sees a realistic vocabulary and FAISS a realistic distribution. Without --real-store all
vectors are such perturbations of embedded SciFact titles.

Queries: SciFact claims, embedded at query time with the real model (1 torch thread, as in production).
Per query the bench times, interleaved so that a noisy neighbour hurts both alike:
  bare   = embedder.encode_query(q) + index.search(qvec, k)            (FAISS directly, no filter)
  search = searcher.search(q, principal=admin, k=8, mode=hybrid)          (the product call)
  acl    = searcher.search(q, principal=<user in 1 of 4 groups>, k=8)     (bitmap + SQL ACL path)
Writes bench/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import open_database  # noqa: E402
from app.evaluation.beir import read_corpus, read_queries  # noqa: E402
from ingestion.embedder import Embedder  # noqa: E402
from retrieval.access import Principal  # noqa: E402
from retrieval.ann import IndexPolicy, measure_recall  # noqa: E402
from retrieval.search import HybridSearcher  # noqa: E402
from retrieval.store import ChunkRecord, DocumentMeta, DocumentStore, DocumentWrite  # noqa: E402
from retrieval.text_analysis import search_text  # noqa: E402

SCIFACT = ROOT.parent / "shared/data/beir_scifact"
GROUPS = ["g0", "g1", "g2", "g3"]
CHUNKS_PER_DOC = 4


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def real_chunks(
    store_dir: Path | None, embedder: Embedder, sentences: list[str]
) -> tuple[list[str], np.ndarray]:
    """(texts, vectors) of real chunks: from an ingested store, or a few thousand embedded sentences."""
    if store_dir is not None:
        import sqlite3

        con = sqlite3.connect(store_dir / "sparq.db")
        rows = con.execute("SELECT text, embedding FROM chunks ORDER BY id").fetchall()
        con.close()
        texts = [r[0] for r in rows]
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), embedder.dim)
        return texts, vecs
    texts = sentences[:3000]
    return texts, embedder.encode(texts)


def build_store(
    path: Path,
    n_chunks: int,
    embedder: Embedder,
    texts: list[str],
    vecs: np.ndarray,
    sentences: list[str],
    policy: IndexPolicy,
) -> tuple[DocumentStore, float]:
    engine = open_database(f"sqlite:///{path / 'sparq.db'}")
    store = DocumentStore(engine, path / "index", embedder.dim)
    store.index_policy = policy
    store.open()
    cid = store.collection_id("bench", create=True)
    rng = np.random.default_rng(0)
    pyrng = random.Random(0)
    started = time.perf_counter()
    made = 0
    doc = 0
    batch: list[DocumentWrite] = []
    while made < n_chunks:
        n = min(CHUNKS_PER_DOC, n_chunks - made)
        chunk_texts, chunk_vecs = [], []
        for _ in range(n):
            if made < len(texts):
                t, v = texts[made], vecs[made]
            else:
                base = rng.integers(0, len(vecs))
                v = vecs[base] + 0.25 * rng.normal(size=vecs.shape[1]).astype(np.float32) / np.sqrt(
                    vecs.shape[1]
                )
                v = v / np.linalg.norm(v)
                t = " ".join(pyrng.choice(sentences) for _ in range(4))
            chunk_texts.append(t)
            chunk_vecs.append(v)
            made += 1
        chunks = [ChunkRecord(t, search_text(t), i, len(t) // 5) for i, t in enumerate(chunk_texts)]
        batch.append(
            DocumentWrite(
                cid,
                DocumentMeta(f"/bench/{doc // 1000}/{doc}.txt", f"{doc:064x}", 1, 0.0, "text/plain"),
                chunks=chunks,
                vectors=np.stack(chunk_vecs).astype(np.float32),
                groups=[GROUPS[doc % len(GROUPS)]],
            )
        )
        doc += 1
        if len(batch) >= 500:
            store.write_documents(batch)
            batch = []
    if batch:
        store.write_documents(batch)
    store.wait_for_rebuild()
    store.flush()
    return store, time.perf_counter() - started


def run_size(n: int, args: argparse.Namespace, embedder: Embedder, texts, vecs, sentences, queries) -> dict:
    with tempfile.TemporaryDirectory(prefix="sparq-bench-") as tmp:
        policy = IndexPolicy(choice=args.index, threshold=args.ann_threshold)
        where = args.keep / f"{n}-{args.index}" if args.keep else Path(tmp)
        built = json.loads((where / "built.json").read_text()) if (where / "built.json").exists() else None
        if built is None:
            where.mkdir(parents=True, exist_ok=True)
            store, build_s = build_store(where, n, embedder, texts, vecs, sentences, policy)
        else:  # a kept store from an earlier --keep run: measure it again without rebuilding
            store = DocumentStore(
                open_database(f"sqlite:///{where / 'sparq.db'}"), where / "index", embedder.dim
            )
            store.index_policy = policy
            store.open()
            build_s = built["build_seconds"]
        kind = store.vectors.kind
        print(f"[{n}] store built in {build_s:.0f} s, index {kind}", file=sys.stderr, flush=True)
        t_kw = time.perf_counter()
        store.sync_keyword()
        keyword_build_s = time.perf_counter() - t_kw if built is None else built["keyword_build_seconds"]
        if args.keep and built is None:
            store.keyword.save_snapshot()
            (where / "built.json").write_text(
                json.dumps({"build_seconds": build_s, "keyword_build_seconds": keyword_build_s})
            )
        if args.build_only:
            store.engine.dispose()
            return {"chunks": n, "index_kind": kind, "build_seconds": round(build_s, 1), "kept": str(where)}
        print(
            f"[{n}] BM25 index over {store.keyword.live_rows} chunks in {keyword_build_s:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        searcher = HybridSearcher(store, lambda q: embedder.encode_query(q, threads=1))
        index = store.vectors.faiss_index
        admin = Principal.system()
        user = Principal("bench-user", frozenset({"g1"}))
        k = 8
        for q in queries[:5]:  # warm-up: page cache, FTS structures, torch
            searcher.search(q, principal=admin, k=k)
            searcher.search(q, principal=user, k=k)
        bare, embed_only, faiss_only, whole, acl = [], [], [], [], []
        from retrieval.ann import search_parameters

        params = search_parameters(kind, None, 1.0)  # type: ignore[arg-type]
        for q in queries:
            t0 = time.perf_counter()
            qv = embedder.encode_query(q, threads=1)
            t1 = time.perf_counter()
            index.search(qv[None, :], k, params=params) if params is not None else index.search(
                qv[None, :], k
            )
            t2 = time.perf_counter()
            searcher.search(q, principal=admin, k=k)
            t3 = time.perf_counter()
            searcher.search(q, principal=user, k=k)
            t4 = time.perf_counter()
            embed_only.append(1000 * (t1 - t0))
            faiss_only.append(1000 * (t2 - t1))
            bare.append(1000 * (t2 - t0))
            whole.append(1000 * (t3 - t2))
            acl.append(1000 * (t4 - t3))
        recall = None
        if kind != "flat":
            qvecs = np.stack([embedder.encode_query(q, threads=1) for q in queries[:100]])
            # Recall of the ANN index against exact search over the full index is measured directly:
            exact_vectors = _all_vectors(store)
            rep = measure_recall(index, store.vectors.ids(), exact_vectors, qvecs, k=10)
            recall = rep.__dict__
            # What the product ranks with: the searcher's dense list (IVF-PQ candidates re-scored exactly).
            exact = faiss.IndexFlatIP(exact_vectors.shape[1])
            exact.add(exact_vectors)
            truth = store.vectors.ids()[exact.search(qvecs, 10)[1]]
            del exact, exact_vectors
            access = searcher._access(admin, None)
            found = sum(
                len(set(t.tolist()) & set(searcher._dense(q, searcher.candidates, access)[0][:10]))
                for q, t in zip(qvecs, truth, strict=True)
            )
            recall["searcher_dense_recall"] = round(found / truth.size, 3)
        searcher.close()
        result = {
            "chunks": n,
            "index_kind": kind,
            "build_seconds": round(build_s, 1),
            "keyword_build_seconds": round(keyword_build_s, 1),
            "queries": len(queries),
            "k": k,
            "bare_ms_p50": round(pct(bare, 50), 2),
            "bare_ms_p95": round(pct(bare, 95), 2),
            "embed_ms_p50": round(pct(embed_only, 50), 2),
            "faiss_ms_p50": round(pct(faiss_only, 50), 2),
            "faiss_qps": round(1000 / max(np.mean(faiss_only), 1e-9), 1),
            "search_ms_p50": round(pct(whole, 50), 2),
            "search_ms_p95": round(pct(whole, 95), 2),
            "acl_search_ms_p50": round(pct(acl, 50), 2),
            "acl_search_ms_p95": round(pct(acl, 95), 2),
            "ratio_p50": round(pct(whole, 50) / pct(bare, 50), 2),
            "ratio_p95": round(pct(whole, 95) / pct(bare, 95), 2),
            "acl_ratio_p50": round(pct(acl, 50) / pct(bare, 50), 2),
            "recall_vs_exact": recall,
            "faiss_index_mb": round(len(faiss.serialize_index(index)) / 2**20, 1),
            "keyword_index_mb": round(store.keyword.nbytes / 2**20, 1),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        }
        store.engine.dispose()
        return result


def _all_vectors(store: DocumentStore) -> np.ndarray:
    """The original vectors in the index's id order, from SQL (an IVF-PQ index only holds their codes)."""
    ids, _, vecs = store._snapshot_vectors()
    order = np.argsort(ids)
    wanted = store.vectors.ids()
    return vecs[order[np.searchsorted(ids[order], wanted)]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--real-store", type=Path, default=None)
    parser.add_argument("--index", choices=["auto", "flat", "hnsw", "ivfpq"], default="auto")
    parser.add_argument("--ann-threshold", type=int, default=50_000)
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="build each store under DIR/<size>-<index> and reuse it on later runs",
    )
    parser.add_argument(
        "--build-only", action="store_true", help="with --keep: build the stores, measure nothing"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/search.json")
    args = parser.parse_args()
    embedder = Embedder()
    corpus = list(read_corpus(SCIFACT / "corpus.jsonl"))
    sentences = [s for d in corpus for s in re.split(r"(?<=[.!?])\s+", d.text) if len(s) > 30]
    texts, vecs = real_chunks(args.real_store, embedder, sentences)
    queries = list(read_queries(SCIFACT / "queries.jsonl").values())[: args.queries]
    results = []
    for n in args.sizes:
        results.append(run_size(n, args, embedder, texts, vecs, sentences, queries))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report = {
        "what": "whole HybridSearcher.search (hybrid, k=8) vs bare encode_query + FAISS search, interleaved per query",
        "real_chunks": len(texts),
        "real_vectors_from": str(args.real_store) if args.real_store else "embedded sentences",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
