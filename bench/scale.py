"""Memory and latency as the store grows: 10k, 100k and 1M chunks, each size in its own process so that
peak memory is that size's alone.

    python bench/scale.py [--sizes 10000 100000 1000000:ivfpq] [--queries 100] [--index auto|flat|hnsw|ivfpq]
                          [--real-store DIR] [--keep DIR]

Each size runs `bench/search.py` (same store builder, same interleaved timing of the whole search call
against bare FAISS + query embedding); this script collects the figures into one table and writes
bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["10000", "100000", "1000000:ivfpq"],
        help="chunk counts, each optionally with its own index kind: 1000000:ivfpq",
    )
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--index", choices=["auto", "flat", "hnsw", "ivfpq"], default="auto")
    parser.add_argument("--real-store", type=Path, default=None, help="passed on to bench/search.py")
    parser.add_argument(
        "--keep", type=Path, default=None, help="passed on to bench/search.py (reuse built stores)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scale.json")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        n, _, kind = size.partition(":")
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [
                sys.executable,
                str(ROOT / "bench/search.py"),
                "--sizes",
                n,
                "--queries",
                str(args.queries),
                "--index",
                kind or args.index,
                "--out",
                out.name,
            ]
            if args.real_store:
                cmd += ["--real-store", str(args.real_store)]
            if args.keep:
                cmd += ["--keep", str(args.keep)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"bench/search.py failed at {n} chunks:\n{done.stderr[-3000:]}")
            rows.append(json.loads(Path(out.name).read_text())["results"][0])
    header = (
        f"{'chunks':>9} {'index':>6} {'build s':>8} {'peak RSS MB':>12} {'FAISS MB':>9} {'BM25 MB':>8} "
        f"{'search p50':>11} {'p95':>7} {'acl p50':>8} {'bare p50':>9} {'recall@10':>10}"
    )
    print(header)
    for r in rows:
        recall = (r.get("recall_vs_exact") or {}).get("recall")
        print(
            f"{r['chunks']:>9} {r['index_kind']:>6} {r['build_seconds']:>8} {r['max_rss_mb']:>12} "
            f"{r['faiss_index_mb']:>9} {r['keyword_index_mb']:>8} "
            f"{r['search_ms_p50']:>11} {r['search_ms_p95']:>7} {r['acl_search_ms_p50']:>8} {r['bare_ms_p50']:>9} "
            f"{recall if recall is not None else '-':>10}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": rows}, indent=2))


if __name__ == "__main__":
    main()
