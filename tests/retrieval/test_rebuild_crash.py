"""SIGKILL while the background index rebuild runs (a real subprocess): nothing lost, the next start is
consistent and can rebuild."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import func, select

from retrieval.schema import Chunk, Document

ROOT = Path(__file__).resolve().parents[2]
N_DOCS = 120

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import retrieval.store as store_module

    marker, data_dir, database_url, corpus = sys.argv[1:5]
    real_build = store_module.build_index

    def slow_build(*args, **kwargs):
        # The rebuild has snapshotted SQL and is building: say so, then take long enough to be killed here.
        Path(marker).write_text("building")
        time.sleep(600)
        return real_build(*args, **kwargs)

    store_module.build_index = slow_build

    from app.assistant import Assistant
    from app.config import Settings
    from ingestion.sources import TextRecord

    rows = [json.loads(line) for line in Path(corpus).read_text().splitlines()]
    records = [TextRecord(r["_id"], r["text"], r["title"]) for r in rows]
    settings = Settings(data_dir=Path(data_dir), database_url=database_url, ann_threshold=60, index_type="auto")
    assistant = Assistant(settings)
    summary = assistant.ingest_records(records, collection="k", total=len(records))
    print(json.dumps({"files_new": summary.files_new, "kind": assistant.store.vectors.kind}), flush=True)
    """
)


def test_sigkill_during_background_rebuild(tmp_path, shared_data, database_url, embedder):
    corpus = tmp_path / "corpus.jsonl"
    with open(shared_data / "beir_scifact" / "corpus.jsonl", encoding="utf-8") as fh:
        corpus.write_text("".join(line for _, line in zip(range(N_DOCS), fh, strict=False)))
    marker = tmp_path / "rebuild-started"
    data_dir = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(marker), str(data_dir), database_url, str(corpus)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not marker.exists():
            time.sleep(0.2)
        assert marker.exists(), f"the rebuild never started: {proc.communicate(timeout=30)[1][-3000:]}"
        # Let the ingest itself finish (its thread is independent of the rebuild), then kill mid-rebuild.
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, f"ingest did not finish: {proc.stderr.read()[-3000:] if proc.stderr else ''}"
        summary = json.loads(line)
        assert summary["files_new"] == N_DOCS
        assert summary["kind"] == "flat"  # the rebuilt index was never installed
        assert proc.poll() is None, "the process must still be rebuilding when it is killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    from app.assistant import Assistant
    from app.config import Settings

    settings = Settings(data_dir=data_dir, database_url=database_url, ann_threshold=60, index_type="auto")
    assistant = Assistant(settings)
    assistant._embedder = embedder
    store = assistant.store
    with store.sessions() as s:
        assert s.scalar(select(func.count(Document.id))) == N_DOCS
        db_ids = set(s.scalars(select(Chunk.id)))
    assert set(store.vectors.ids().tolist()) == db_ids
    assert not list(data_dir.glob("index/*.tmp")), "a half-written index file was left behind"
    first = json.loads(corpus.read_text().splitlines()[7])
    hits = assistant.search(first["title"], k=3)
    assert hits and hits[0].path == first["_id"]
    assert assistant.search(first["title"], k=3, mode="keyword")[0].path == first["_id"]

    # The rebuild the crash interrupted now completes, and searching still finds the same passage.
    assert store.rebuild_index() == "hnsw"
    assert set(store.vectors.ids().tolist()) == db_ids
    assert assistant.search(first["title"], k=3)[0].path == first["_id"]
    assistant.close()

    reopened = Assistant(settings)
    reopened._embedder = embedder
    assert reopened.store.vectors.kind == "hnsw"
    assert set(reopened.store.vectors.ids().tolist()) == db_ids
    reopened.close()
