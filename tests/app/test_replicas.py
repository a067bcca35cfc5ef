"""Several app processes on one database: a write on a stale in-memory index must not be saved as the
newest generation (one data dir), and replicas with their own data dirs on a shared PostgreSQL see each
other's ingests at their next query and never ingest at the same time. Real subprocesses throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.assistant import Assistant
from app.config import Settings
from ingestion.sources import TextRecord
from retrieval.schema import Chunk, Document, IngestRun

ROOT = Path(__file__).resolve().parents[2]

NEW_DOCS = [
    TextRecord(
        "quokka",
        "The quokka observatory tracks zirconium comets over the Nullarbor plain every winter.",
        "Quokka",
    ),
    TextRecord(
        "marimba",
        "Marimba tuning uses rosewood bars; the luthier sands each bar until the pitch is exact.",
        "Marimba",
    ),
    TextRecord(
        "glacier",
        "Glacier calving at the fjord mouth was filmed by drones fitted with thermal cameras.",
        "Glacier",
    ),
]
SEED_DOCS = [
    TextRecord(
        "lighthouse",
        "The lighthouse keeper logs fog signals and lamp hours in a leather ledger.",
        "Lighthouse",
    ),
    TextRecord(
        "victim", "Victorian greenhouse heating relied on cast iron pipes and coal boilers.", "Greenhouse"
    ),
]


def _child_env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )


def _assistant(data_dir: Path, database_url: str, embedder) -> Assistant:
    a = Assistant(Settings(data_dir=data_dir, database_url=database_url))
    a._embedder = embedder
    return a


def _assert_index_matches_database(a: Assistant) -> None:
    with a.store.sessions() as s:
        db_ids = set(s.scalars(select(Chunk.id)))
    assert set(a.store.vectors.ids().tolist()) == db_ids
    live = {int(i) for i, d in enumerate(a.store.vectors.document_map()) if d >= 0}
    assert live == db_ids  # the chunk->document map (what BM25 and access bitmaps follow) agrees too


def _assert_finds(a: Assistant, record: TextRecord) -> None:
    for mode in ("hybrid", "dense", "keyword"):
        hits = a.search(record.text, k=3, mode=mode)
        assert hits and hits[0].path.endswith(record.key), (mode, record.key, [h.path for h in hits])


# --- one data dir: a delete in a process that has not seen another process's ingest ---------------------

DELETER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from app.assistant import Assistant
    from app.config import Settings

    data_dir, url = sys.argv[1:3]
    a = Assistant(Settings(data_dir=Path(data_dir), database_url=url))
    hits = a.search("lighthouse keeper fog signals", k=3)  # the store is loaded now, at this generation
    print(json.dumps({"ready": len(hits)}), flush=True)
    victim = int(sys.stdin.readline())
    a.delete_document(victim)
    a.close()
    print(json.dumps({"deleted": victim}), flush=True)
    """
)


def test_delete_in_a_stale_process_keeps_the_other_process_ingest(tmp_path, database_url, embedder):
    data_dir = tmp_path / "data"
    seed = _assistant(data_dir, database_url, embedder)
    seed.ingest_records(SEED_DOCS, collection="seed")
    with seed.store.sessions() as s:
        victim = s.scalar(select(Document.id).where(Document.path.like("%victim")))
    seed.close()

    deleter = subprocess.Popen(
        [sys.executable, "-c", DELETER, str(data_dir), database_url],
        env=_child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = deleter.stdout.readline()
        assert line, deleter.stderr.read()[-3000:]
        assert json.loads(line)["ready"] > 0
        writer = _assistant(data_dir, database_url, embedder)  # this process ingests meanwhile
        writer.ingest_records(NEW_DOCS, collection="new")
        writer.close()
        out, err = deleter.communicate(f"{victim}\n", timeout=120)
    finally:
        if deleter.poll() is None:
            deleter.kill()
    assert deleter.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"deleted": victim}

    fresh = _assistant(data_dir, database_url, embedder)  # what the next start serves
    try:
        _assert_index_matches_database(fresh)
        for record in NEW_DOCS:
            _assert_finds(fresh, record)
        with fresh.store.sessions() as s:
            assert s.get(Document, victim) is None
        assert all(not h.path.endswith("victim") for h in fresh.search("greenhouse heating cast iron", k=5))
    finally:
        fresh.close()


# --- replicas: two data dirs on one PostgreSQL ---------------------------------------------------------


@pytest.fixture
def pg_url() -> str:
    from tests.conftest import _postgres_schema_url

    yield from _postgres_schema_url()


INGESTER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from app.assistant import Assistant
    from app.config import Settings
    from ingestion.sources import TextRecord

    data_dir, url, collection, records_file = sys.argv[1:5]
    ready, go = (Path(p) if p != "-" else None for p in sys.argv[5:7])
    delete_path = sys.argv[7] if len(sys.argv) > 7 else None
    a = Assistant(Settings(data_dir=Path(data_dir), database_url=url, ingest_batch_chunks=4))
    a.store.chunk_count()  # model and index loaded before the start signal: both ingests start together
    if ready is not None:
        ready.write_text("ready")
        while not go.exists():
            time.sleep(0.02)
    records = [TextRecord(**r) for r in json.loads(Path(records_file).read_text())]
    summary = a.ingest_records(records, collection=collection, total=len(records))
    if delete_path:
        (doc_id,) = [d.id for d in a.documents() if d.path.endswith(delete_path)]
        a.delete_document(doc_id)
    a.close()
    print(json.dumps({"files_new": summary.files_new, "run": summary.run_id}), flush=True)
    """
)


def _ingester(
    tmp_path: Path,
    data_dir: Path,
    url: str,
    collection: str,
    records: list[TextRecord],
    ready: Path | None = None,
    go: Path | None = None,
    delete: str | None = None,
) -> subprocess.Popen:
    records_file = tmp_path / f"{collection}.json"
    records_file.write_text(json.dumps([r.__dict__ for r in records]))
    args = [str(data_dir), url, collection, str(records_file), str(ready or "-"), str(go or "-")]
    return subprocess.Popen(
        [sys.executable, "-c", INGESTER, *args, *([delete] if delete else [])],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_replica_sees_another_replicas_ingest_at_its_next_query(tmp_path, pg_url, embedder):
    reader = _assistant(tmp_path / "replica-b", pg_url, embedder)
    try:
        reader.ingest_records(SEED_DOCS, collection="seed")
        assert reader.search("lighthouse keeper fog signals", k=1)[0].path.endswith("lighthouse")
        index_object = reader.store.vectors.faiss_index

        proc = _ingester(tmp_path, tmp_path / "replica-a", pg_url, "new", NEW_DOCS, delete="victim")
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]

        _assert_finds(reader, NEW_DOCS[0])  # the very first query after the other replica's ingest
        for record in NEW_DOCS[1:]:
            _assert_finds(reader, record)
        _assert_index_matches_database(reader)  # the deleted document's chunks left this replica's FAISS too
        # caught up incrementally: the same FAISS object grew, nothing was loaded or rebuilt
        assert reader.store.vectors.faiss_index is index_object
    finally:
        reader.close()


def test_ingests_on_two_replicas_serialise(tmp_path, pg_url, embedder):
    topics = (
        "harbour cranes, orchard pests, violin varnish, tram signals, bee hives, salt marshes, kiln glazes, "
        "radar domes, coral reefs, paper mills, clock towers, lava tubes, seed banks, rope bridges, ice roads"
    )
    halves = [
        [
            TextRecord(f"r{i}-{n}", f"Notes on {topic} (report {n} of replica {i}). " * 12, topic)
            for n, topic in enumerate(topics.split(", ")[i::2][:8])
        ]
        for i in range(2)
    ]
    first = _assistant(tmp_path / "replica-0", pg_url, embedder)  # migrate the schema once, up front
    assert first.store.chunk_count() == 0
    first.close()
    go = tmp_path / "go"
    procs = [
        _ingester(
            tmp_path, tmp_path / f"replica-{i}", pg_url, f"c{i}", halves[i], tmp_path / f"ready-{i}", go
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 240
        while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-3000:] for p in procs]
            assert time.monotonic() < deadline, "the ingest processes did not start"
            time.sleep(0.05)
        go.write_text("go")
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert [json.loads(out)["files_new"] for out, _ in outputs] == [len(h) for h in halves]

    check = _assistant(tmp_path / "replica-c", pg_url, embedder)
    try:
        with check.store.sessions() as s:
            runs = s.execute(select(IngestRun.started_at, IngestRun.finished_at, IngestRun.status)).all()
        assert len(runs) == 2 and all(r.status == "completed" for r in runs)
        (a_start, a_end), (b_start, b_end) = sorted((r.started_at, r.finished_at) for r in runs)
        assert a_end <= b_start, f"the two ingests overlapped: {a_start}..{a_end} and {b_start}..{b_end}"
        _assert_index_matches_database(check)
    finally:
        check.close()
