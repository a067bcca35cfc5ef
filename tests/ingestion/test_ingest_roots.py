"""Server-folder ingest reads only what it should: inside SPARQ_INGEST_ROOTS, never the data dir, and not
through symbolic links planted in a share (real symlinks, real store, real embedder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from app.assistant import Assistant, SparqError
from app.config import Settings
from retrieval.schema import Chunk

SECRET = "The vault combination is seven orange giraffes."
PASSWORD = "initial admin password: Zq8-lantern-quartz-41"


@pytest.fixture
def share(tmp_path: Path, settings) -> dict[str, Path]:
    """A watched share with one real document and two planted links: to a private file elsewhere on the
    server, and to the data dir's initial-admin-password.txt."""
    root = tmp_path / "shares"
    team = root / "team"
    team.mkdir(parents=True)
    (team / "handbook.md").write_text("# Handbook\n\nThe cafeteria opens at eight in the morning.\n")
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.txt").write_text(SECRET + "\n")
    (team / "notes.txt").symlink_to(private / "secret.txt")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "initial-admin-password.txt").write_text(PASSWORD + "\n")
    (team / "password.txt").symlink_to(settings.data_dir / "initial-admin-password.txt")
    (team / "archive").symlink_to(private, target_is_directory=True)
    return {"root": root, "team": team, "private": private}


def _all_chunk_text(assistant: Assistant) -> str:
    with assistant.store.sessions() as session:
        return "\n".join(session.scalars(select(Chunk.text)))


def test_planted_symlinks_are_skipped_with_a_reason_and_never_indexed(assistant, share):
    summary = assistant.ingest(share["team"], collection="team")

    assert summary.files_new == 1
    skipped = {Path(f.path).name: f.error for f in summary.skipped}
    assert set(skipped) == {"notes.txt", "password.txt", "archive"}, skipped
    assert "outside" in skipped["notes.txt"] and "outside" in skipped["archive"]
    assert "data dir" in skipped["password.txt"]
    text = _all_chunk_text(assistant)
    assert "cafeteria" in text and "giraffes" not in text and "lantern" not in text
    for query in ("vault combination", "initial admin password"):
        for mode in ("hybrid", "keyword"):
            assert all(
                "giraffes" not in h.text and "lantern" not in h.text
                for h in assistant.search(query, user=None, k=8, mode=mode)
            )
    assert {Path(d.path).name for d in assistant.documents("team")} == {"handbook.md"}


def test_a_link_inside_the_folder_is_ingested_once_under_its_real_path(assistant, share):
    (share["team"] / "handbook-link.md").symlink_to(share["team"] / "handbook.md")
    summary = assistant.ingest(share["team"], collection="team")
    assert summary.files_new == 1
    assert [Path(d.path).name for d in assistant.documents("team")] == ["handbook.md"]


def test_the_data_dir_is_never_ingested(assistant, share, tmp_path):
    with pytest.raises(SparqError, match="data dir"):
        assistant.ingest(assistant.settings.data_dir, collection="loot")
    with pytest.raises(SparqError, match="data dir"):
        assistant.ingest(assistant.settings.data_dir / "initial-admin-password.txt", collection="loot")
    with pytest.raises(SparqError, match="data dir"):  # a link to it, named as the path, is the same thing
        assistant.ingest(share["team"] / "password.txt", collection="loot")
    # A folder holding the data dir: ingested, the data dir inside it skipped and reported.
    summary = assistant.ingest(tmp_path, collection="all")
    assert any(
        Path(f.path) == assistant.settings.data_dir.resolve() and "data dir" in f.error
        for f in summary.skipped
    ), summary.skipped
    assert "lantern" not in _all_chunk_text(assistant)
    assert all("initial-admin-password" not in d.path for d in assistant.documents())


def test_paths_outside_the_configured_roots_are_refused(tmp_path, database_url, embedder, share):
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, ingest_roots=[share["root"]])
    with Assistant(settings) as assistant:
        assistant._embedder = embedder
        with pytest.raises(SparqError, match="SPARQ_INGEST_ROOTS"):
            assistant.ingest(share["private"], collection="x")
        with pytest.raises(SparqError, match="SPARQ_INGEST_ROOTS"):  # a link in the share to outside it
            assistant.ingest(share["team"] / "archive", collection="x")
        assert assistant.ingest(share["team"], collection="team").files_new == 1
        assert assistant.documents("x") == []


def test_the_ingest_page_refuses_server_folders_until_roots_are_set(assistant, share):
    from app.ui.views.ingest import ingest_folder

    with pytest.raises(SparqError, match="SPARQ_INGEST_ROOTS"):
        ingest_folder(assistant, str(share["team"]), "team", [], False)
    assert assistant.documents() == []
    assistant.settings.ingest_roots = [share["root"]]
    summaries, _events = ingest_folder(assistant, str(share["team"]), "team", [], False)
    assert summaries[0].files_new == 1 and summaries[0].files_skipped == 3


def test_ingest_roots_come_from_the_environment_as_a_path_list(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARQ_INGEST_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert Settings(data_dir=tmp_path).ingest_roots == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("SPARQ_INGEST_ROOTS", f'["{tmp_path / "c"}"]')
    assert Settings(data_dir=tmp_path).ingest_roots == [tmp_path / "c"]
    monkeypatch.delenv("SPARQ_INGEST_ROOTS")
    assert Settings(data_dir=tmp_path).ingest_roots == []
