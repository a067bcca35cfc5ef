"""SIGKILL in the middle of a real ingest (a real subprocess), then resume: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, func, select

from retrieval.schema import Chunk, Document, IngestRun

ROOT = Path(__file__).resolve().parents[2]


def _write_corpus(folder: Path, shared_data: Path, n: int) -> None:
    folder.mkdir()
    with open(shared_data / "beir_scifact" / "corpus.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= n:
                break
            row = json.loads(line)
            (folder / f"doc-{i:04d}.txt").write_text(f"{row['title']}\n\n{row['text']}\n")


def test_sigkill_mid_ingest_then_resume(tmp_path, shared_data, database_url, embedder):
    folder = tmp_path / "corpus"
    n_files = 160
    _write_corpus(folder, shared_data, n_files)
    env = dict(os.environ)
    env.update(
        SPARQ_DATA_DIR=str(tmp_path / "data"),
        SPARQ_DATABASE_URL=database_url,
        SPARQ_INGEST_BATCH_CHUNKS="16",
        PYTHONPATH=str(ROOT),
    )
    cmd = [sys.executable, "-m", "app.cli", "ingest", str(folder), "--collection", "k", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    engine = create_engine(database_url)
    try:
        deadline = time.monotonic() + 240
        committed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:
                with engine.connect() as conn:
                    committed = conn.execute(select(func.count(Document.id))).scalar_one()
            except Exception:
                continue
            if committed >= 20:
                break
        assert proc.poll() is None, f"ingest ended before it could be killed: {proc.communicate()[1][-2000:]}"
        assert committed >= 20, "no batch committed within the time limit"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    with engine.connect() as conn:
        docs_after_kill = conn.execute(select(func.count(Document.id))).scalar_one()
    assert 0 < docs_after_kill < n_files

    # Resume in-process with the same settings: the store repairs itself and finishes the work.
    from app.assistant import Assistant
    from app.config import Settings

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, ingest_batch_chunks=64)
    assistant = Assistant(settings)
    assistant._embedder = embedder
    summary = assistant.ingest(folder, collection="k")
    assert summary.files_failed == 0
    assert summary.files_unchanged == docs_after_kill
    assert summary.files_new == n_files - docs_after_kill

    with assistant.store.sessions() as s:
        assert s.scalar(select(func.count(Document.id))) == n_files
        db_ids = set(s.scalars(select(Chunk.id)))
        for doc_id, n_chunks in s.execute(select(Document.id, Document.n_chunks)).all():
            positions = sorted(s.scalars(select(Chunk.position).where(Chunk.document_id == doc_id)))
            assert positions == list(range(n_chunks)), "duplicated or missing chunks"
        statuses = [r.status for r in s.scalars(select(IngestRun).order_by(IngestRun.id))]
    assert set(assistant.store.vectors.ids().tolist()) == db_ids
    assert statuses == ["interrupted", "completed"]
    assistant.close()
    engine.dispose()
