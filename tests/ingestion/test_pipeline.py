"""The ingest pipeline end to end on real files, a real database and a real FAISS index."""

from __future__ import annotations

import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from retrieval.schema import Chunk, Document

REAL_FILES = [
    "fake-text.txt",
    "README.md",
    "fake-html.html",
    "fake-email.eml",
    "stanley-cups.csv",
    "stanley-cups.xlsx",
    "fake-power-point.pptx",
    "docx-tables.docx",
    "simple.json",
    "pdf/layout-parser-paper-fast.pdf",
]


def _copy_real(example_docs_dir: Path, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in REAL_FILES:
        src = example_docs_dir / name
        if not src.exists():
            pytest.skip(f"example file {name} missing")
        target = dest / Path(name).name
        shutil.copy(src, target)
        copied.append(target)
    return copied


def _make_broken(dest: Path, example_docs_dir: Path) -> dict[str, str]:
    """Hostile files with the substring their error must contain."""
    pdf = (example_docs_dir / "pdf" / "layout-parser-paper-fast.pdf").read_bytes()
    (dest / "truncated.pdf").write_bytes(pdf[: len(pdf) // 2])
    (dest / "garbage.docx").write_bytes(random.Random(1).randbytes(5000))
    (dest / "empty.txt").write_bytes(b"")
    with zipfile.ZipFile(dest / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(600):
                member.write(block)
        zf.writestr("[Content_Types].xml", "<Types/>")
    from pypdf import PdfWriter

    with open(dest / "zero-pages.pdf", "wb") as fh:
        PdfWriter().write(fh)
    return {
        "truncated.pdf": "pdf",
        "garbage.docx": "zip",
        "empty.txt": "empty",
        "bomb.docx": "zip bomb",
        "zero-pages.pdf": "page",
    }


def _consistent(assistant) -> tuple[int, int]:
    """Database chunks, BM25 rows and FAISS ids are the same set; returns (chunks, documents)."""
    store = assistant.store
    with store.sessions() as s:
        db_ids = set(s.scalars(select(Chunk.id)))
        docs = s.scalar(select(func.count(Document.id)))
    store.sync_keyword()
    state = store.keyword._state
    assert set(state.chunk_ids[state.live].tolist()) == db_ids
    assert set(store.vectors.ids().tolist()) == db_ids
    assert store.vectors.ntotal == len(db_ids)
    return len(db_ids), docs


def test_ingest_folder_with_broken_files(assistant, example_docs_dir, tmp_path):
    folder = tmp_path / "docs"
    real = _copy_real(example_docs_dir, folder)
    broken = _make_broken(folder, example_docs_dir)
    (folder / "sound.wav").write_bytes(b"RIFF0000WAVEfmt ")
    events = []
    summary = assistant.ingest(folder, collection="handbook", groups=["hr", "all"], progress=events.append)

    assert summary.files_new == len(real)
    assert summary.files_failed == len(broken)
    failures = {Path(f.path).name: f.error for f in summary.failures}
    for name, needle in broken.items():
        assert needle in failures[name].lower(), (name, failures[name])
    assert [Path(s.path).name for s in summary.skipped] == ["sound.wav"]
    assert "no loader" in summary.skipped[0].error
    assert summary.chunks_added > len(real)
    assert len(events) == len(real) + len(broken) + 1 and events[-1].done == events[-1].total

    chunks, docs = _consistent(assistant)
    assert chunks == summary.chunks_added
    assert docs == len(real) + len(broken)  # failed files are recorded with their reason
    listed = {Path(d.path).name: d for d in assistant.documents("handbook")}
    assert listed["truncated.pdf"].status == "failed" and listed["truncated.pdf"].error
    assert listed["fake-email.eml"].groups == ["all", "hr"]

    with assistant.store.sessions() as s:
        pdf_pages = set(
            s.scalars(select(Chunk.page).join(Document).where(Document.path.like("%layout-parser%")))
        )
        slides = set(s.scalars(select(Chunk.slide).join(Document).where(Document.path.like("%.pptx"))))
        sheets = set(s.scalars(select(Chunk.sheet).join(Document).where(Document.path.like("%.xlsx"))))
    assert {1, 2} <= pdf_pages
    assert slides and None not in slides
    assert sheets and None not in sheets


def test_reingest_is_incremental_and_idempotent(assistant, example_docs_dir, tmp_path):
    folder = tmp_path / "docs"
    _copy_real(example_docs_dir, folder)
    first = assistant.ingest(folder, collection="c")
    generation = assistant.store.generation()
    ids_before = set(assistant.store.vectors.ids().tolist())

    again = assistant.ingest(folder, collection="c")
    assert again.files_unchanged == first.files_new
    assert (again.files_new, again.files_updated, again.chunks_added, again.chunks_removed) == (0, 0, 0, 0)
    assert assistant.store.generation() == generation  # nothing written
    assert set(assistant.store.vectors.ids().tolist()) == ids_before

    # A touched but identical file stays unchanged; an edited one replaces its chunks.
    (folder / "fake-text.txt").touch()
    md = folder / "README.md"
    md.write_text(md.read_text() + "\n\n## Appendix\n\nThe quarterly budget owner is Margaret Oyelaran.\n")
    third = assistant.ingest(folder, collection="c")
    assert third.files_updated == 1 and third.files_unchanged == first.files_new - 1
    assert third.chunks_removed > 0 and third.chunks_added >= third.chunks_removed
    chunks, _ = _consistent(assistant)
    assert chunks == first.chunks_added - third.chunks_removed + third.chunks_added
    with assistant.store.sessions() as s:
        texts = list(s.scalars(select(Chunk.text).join(Document).where(Document.path == str(md.resolve()))))
        positions = list(
            s.scalars(select(Chunk.position).join(Document).where(Document.path == str(md.resolve())))
        )
    assert any("Margaret Oyelaran" in t for t in texts)
    assert sorted(positions) == list(range(len(positions)))  # no stale or duplicated chunks


def test_identical_content_is_stored_once_and_sync_removes_vanished(assistant, example_docs_dir, tmp_path):
    folder = tmp_path / "docs"
    _copy_real(example_docs_dir, folder)
    (folder / "copy").mkdir()
    shutil.copy(folder / "fake-email.eml", folder / "copy" / "same-email.eml")
    summary = assistant.ingest(folder, collection="c", groups=["a"])
    docs = {Path(d.path).name: d for d in assistant.documents("c")}
    original, duplicate = docs["fake-email.eml"], docs["same-email.eml"]
    assert duplicate.status == "duplicate" and duplicate.duplicate_of == original.id
    assert duplicate.chunks == 0 and original.chunks > 0
    assert summary.files_new == len(REAL_FILES) + 1

    # Deleting the original hands its chunks to the duplicate: nothing is lost.
    chunks_before, _ = _consistent(assistant)
    assistant.delete_document(original.id)
    heir = {Path(d.path).name: d for d in assistant.documents("c")}["same-email.eml"]
    assert heir.status == "ready" and heir.chunks == original.chunks
    assert _consistent(assistant)[0] == chunks_before

    (folder / "stanley-cups.csv").unlink()
    shutil.rmtree(folder / "copy")
    synced = assistant.ingest(folder, collection="c", sync=True)
    assert synced.files_removed == 2
    names = {Path(d.path).name for d in assistant.documents("c")}
    assert "stanley-cups.csv" not in names and "same-email.eml" not in names
    _consistent(assistant)


def test_delete_collection_removes_chunks_and_vectors(assistant, example_docs_dir, tmp_path):
    folder = tmp_path / "docs"
    _copy_real(example_docs_dir, folder)
    assistant.ingest(folder, collection="keep")
    assistant.ingest(folder / "fake-text.txt", collection="drop")
    kept_chunks = {c.name: c.chunks for c in assistant.collections()}["keep"]
    assistant.delete_collection("drop")
    assert [c.name for c in assistant.collections()] == ["keep"]
    assert _consistent(assistant)[0] == kept_chunks


def test_vector_index_is_repaired_from_the_database(
    assistant, example_docs_dir, tmp_path, settings, embedder
):
    """A crash after the SQL commit but before the FAISS save is healed on the next open."""
    from app.assistant import Assistant

    folder = tmp_path / "docs"
    _copy_real(example_docs_dir, folder)
    assistant.ingest(folder, collection="c")
    expected = set(assistant.store.vectors.ids().tolist())
    assistant.close()
    for f in settings.index_dir.iterdir():
        f.unlink()  # lose the index entirely
    reopened = Assistant(settings)
    reopened._embedder = embedder
    assert set(reopened.store.vectors.ids().tolist()) == expected
    query = embedder.encode_query("Stanley Cup winners")
    scores, ids = reopened.store.vectors.search(query, 3)
    assert ids.shape == (1, 3) and np.all(scores[0] > 0)
    reopened.close()


def test_python_api_ingest(settings, embedder, example_docs_dir, tmp_path):
    from app import Assistant

    a = Assistant(settings)
    a._embedder = embedder
    summary = a.ingest(example_docs_dir / "fake-text.txt", collection="one", groups=["x"])
    assert summary.files_new == 1 and summary.chunks_added >= 1
    assert a.collections()[0].name == "one"
    a.close()


def test_regrouping_unchanged_files_changes_access_without_reembedding(assistant, example_docs_dir, tmp_path):
    folder = tmp_path / "docs"
    _copy_real(example_docs_dir, folder)
    assistant.ingest(folder, collection="c", groups=["hr"])
    ids = set(assistant.store.vectors.ids().tolist())
    summary = assistant.ingest(folder, collection="c", groups=["finance", "hr"])
    assert summary.files_unchanged == len(REAL_FILES) and summary.chunks_added == 0
    assert {tuple(d.groups) for d in assistant.documents("c")} == {("finance", "hr")}
    assert set(assistant.store.vectors.ids().tolist()) == ids  # nothing re-embedded
    generation = assistant.store.generation()
    assistant.ingest(folder, collection="c")  # no --groups: existing access is kept, nothing written
    assert {tuple(d.groups) for d in assistant.documents("c")} == {("finance", "hr")}
    assert assistant.store.generation() == generation


def test_a_failing_write_is_reported_not_hung(assistant, tmp_path, monkeypatch):
    """The store failing mid-run (e.g. disk full) must surface as an error, with the reader released."""
    import threading

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(150):
        (folder / f"note-{i:03d}.txt").write_text(f"Note {i}. The weekly meeting moved to room {i}.\n")
    assistant.settings.ingest_batch_chunks = 4

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(assistant.store, "write_documents", disk_full)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            assistant.ingest(folder, collection="c")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "ingest hung after a write failure"
    assert isinstance(outcome[0], OSError) and "No space left" in str(outcome[0])
    with assistant.store.sessions() as s:
        from retrieval.schema import IngestRun

        assert s.scalars(select(IngestRun.status)).all()[-1] == "failed"
