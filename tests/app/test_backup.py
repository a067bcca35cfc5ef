"""Backup and restore round trip: database rows, vectors and the keyword index come back identical."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sqlalchemy import func, select

from app.assistant import Assistant
from app.backup import BackupError
from app.config import Settings
from retrieval.schema import Chunk, Document


def _snapshot(a: Assistant) -> tuple:
    with a.store.sessions() as s:
        chunks = s.execute(
            select(Chunk.id, Chunk.document_id, Chunk.text, Chunk.embedding).order_by(Chunk.id)
        ).all()
        docs = s.execute(
            select(Document.id, Document.path, Document.sha256, Document.status).order_by(Document.id)
        ).all()
    return [tuple(c) for c in chunks], [tuple(d) for d in docs]


def test_backup_restore_round_trip(assistant, embedder, example_docs_dir, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("fake-text.txt", "stanley-cups.csv", "fake-email.eml"):
        shutil.copy(example_docs_dir / name, folder / name)
    assistant.ingest(folder, collection="c", groups=["staff"])
    assistant.users.add("alice", groups=["staff"], password="correct horse")
    before = _snapshot(assistant)

    manifest = assistant.backup(tmp_path / "backup")
    assert manifest["rows"]["chunks"] == len(before[0]) and manifest["rows"]["users"] == 1
    with pytest.raises(BackupError, match="not empty"):
        assistant.backup(tmp_path / "backup")

    target = Assistant(
        Settings(data_dir=tmp_path / "restored", database_url=f"sqlite:///{tmp_path / 'r.db'}")
    )
    target._embedder = embedder
    target.restore(tmp_path / "backup")
    assert _snapshot(target) == before
    assert set(target.store.vectors.ids().tolist()) == {c[0] for c in before[0]}
    assert target.users.authenticate("alice", "correct horse") is not None
    # Keyword search finds restored chunks (the BM25 index follows the restored vector index).
    assert target.search("Stanley", user=None, k=3, mode="keyword")
    q = embedder.encode_query("Stanley Cup")
    np.testing.assert_array_equal(
        target.store.vectors.search(q, 3)[1], assistant.store.vectors.search(q, 3)[1]
    )

    # New rows after a restore get fresh ids (sequences moved past the restored ones).
    target.ingest(example_docs_dir / "README.md", collection="c")
    with target.store.sessions() as s:
        assert s.scalar(select(func.count(Chunk.id))) > len(before[0])

    with pytest.raises(BackupError, match="not empty"):
        target.restore(tmp_path / "backup")
    target.close()
