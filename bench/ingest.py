"""Ingest throughput: the whole pipeline against bare `SentenceTransformer.encode` on the same chunks.

    python bench/ingest.py [--corpus ../shared/data/beir_scifact/corpus.jsonl] [--limit N] [--files]

`--files` writes each document as a .txt file and ingests the folder, so every file goes through the
loader worker processes (time and memory limits) as a user's folder does; without it the records are
ingested from memory.

Prints chunks/s of both and their ratio, and writes bench/results/ingest.json. Bare encode runs before
and after the pipeline and is averaged, so a noisy neighbour hurts both sides alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.assistant import Assistant  # noqa: E402
from app.config import Settings  # noqa: E402
from ingestion.loaders import load_file  # noqa: E402
from ingestion.loaders.base import LoadedDocument, Section  # noqa: E402
from ingestion.sources import TextRecord  # noqa: E402


def read_corpus(path: Path, limit: int | None) -> list[TextRecord]:
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            records.append(TextRecord(str(row["_id"]), row.get("text", ""), row.get("title") or None))
            if limit and len(records) >= limit:
                break
    return records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared/data/beir_scifact/corpus.jsonl")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/ingest[_files].json")
    parser.add_argument("--files", action="store_true", help="ingest the documents as a folder of .txt files")
    args = parser.parse_args()
    if not args.corpus.exists():
        raise SystemExit(f"corpus not found: {args.corpus}")
    records = read_corpus(args.corpus, args.limit)
    out = args.out or ROOT / f"bench/results/ingest{'_files' if args.files else ''}.json"

    with tempfile.TemporaryDirectory() as tmp:
        assistant = Assistant(Settings(data_dir=Path(tmp) / "data"))
        pipeline = assistant.pipeline()
        folder = Path(tmp) / "docs"
        files: list[Path] = []
        if args.files:
            folder.mkdir()
            for i, r in enumerate(records):
                path = folder / f"doc{i:06d}.txt"
                path.write_text(r.text, encoding="utf-8")
                files.append(path)
        # The exact texts the pipeline embeds, so bare encode does identical work.
        texts: list[str] = []
        for r, path in zip(records, files or [None] * len(records), strict=True):
            loaded = (
                load_file(path)
                if path is not None
                else LoadedDocument([Section(r.text)], mime="text/plain", title=r.title)
            )
            _, embed_texts = pipeline._chunk(loaded)
            texts.extend(embed_texts)
        model = assistant.embedder.model
        batch = assistant.embedder.batch_size
        model.encode(texts[:64], batch_size=batch)  # warm-up

        def bare() -> float:
            t0 = time.perf_counter()
            model.encode(texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False)
            return time.perf_counter() - t0

        bare_before = bare()
        t0 = time.perf_counter()
        if args.files:
            summary = assistant.ingest(folder, collection="bench")
        else:
            summary = assistant.ingest_records(records, collection="bench", total=len(records))
        pipeline_s = time.perf_counter() - t0
        bare_after = bare()
        assistant.close()

    bare_s = (bare_before + bare_after) / 2
    n = summary.chunks_added
    result = {
        "corpus": str(args.corpus),
        "mode": "files through loader processes" if args.files else "records in memory",
        "documents": len(records),
        "chunks": n,
        "bare_chunks": len(texts),
        "pipeline_seconds": round(pipeline_s, 2),
        "bare_encode_seconds": round(bare_s, 2),
        "bare_encode_seconds_runs": [round(bare_before, 2), round(bare_after, 2)],
        "pipeline_chunks_per_s": round(n / pipeline_s, 2),
        "bare_encode_chunks_per_s": round(len(texts) / bare_s, 2),
        "ratio": round((n / pipeline_s) / (len(texts) / bare_s), 3),
        "target_ratio": 0.95 if args.files else 0.97,
        "machine": platform.platform(),
    }
    print(f"documents {len(records)}  chunks {n}")
    print(f"pipeline     {result['pipeline_chunks_per_s']:8.1f} chunks/s  ({pipeline_s:.1f} s)")
    print(
        f"bare encode  {result['bare_encode_chunks_per_s']:8.1f} chunks/s  "
        f"({bare_s:.1f} s, runs {result['bare_encode_seconds_runs']})"
    )
    print(f"ratio        {result['ratio']:.3f}  (target >= {result['target_ratio']})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
