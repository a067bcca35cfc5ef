"""Uploads through the function the Ingest page calls (`ingest_uploads`), on real files, a real store and the
real embedder: Unicode names are kept, collections never share a folder, concurrent uploads of one name
both survive, and a deleted document's upload is gone from disk and from later backups."""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from pathlib import Path

import pytest
from sqlalchemy import select

from app.ui.views.ingest import ingest_uploads
from retrieval.schema import Collection
from tests.files import one_page_pdf


class Upload:
    """Shaped like Streamlit's UploadedFile: a name chosen by the browser, and the bytes."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self._data = data

    def getvalue(self) -> bytes:
        return self._data

    def read(self) -> bytes:
        return self._data


def _docs(assistant, collection: str):
    return [d for d in assistant.documents(collection) if d.status == "ready"]


def test_unicode_names_are_kept_and_ingested_as_two_documents(assistant):
    report = one_page_pdf("The quarterly report says revenue grew by nine percent.")
    plan = one_page_pdf("The plan for next year is to open an office in Lyon.")
    summaries, events = ingest_uploads(
        assistant, [Upload("报告.pdf", report), Upload("计划.pdf", plan)], "财务", ["staff"]
    )

    assert [e.status for e in events] == ["new", "new"], events
    docs = _docs(assistant, "财务")
    assert sorted(Path(d.path).name for d in docs) == ["报告.pdf", "计划.pdf"]
    by_name = {Path(d.path).name: Path(d.path) for d in docs}
    assert by_name["报告.pdf"].read_bytes() == report and by_name["计划.pdf"].read_bytes() == plan
    assert all(d.groups == ["staff"] for d in docs)
    hits = assistant.search("open an office in Lyon", user=None, k=3)
    assert hits and Path(hits[0].path).name == "计划.pdf"


def test_collections_with_the_same_last_part_never_share_a_folder(assistant):
    ingest_uploads(
        assistant, [Upload("plan.md", b"# Plan\n\nHR hires two recruiters in 2024.\n")], "HR/2024", []
    )
    ingest_uploads(
        assistant, [Upload("plan.md", b"# Plan\n\nThe company moves offices in 2024.\n")], "2024", []
    )

    hr, general = _docs(assistant, "HR/2024"), _docs(assistant, "2024")
    assert len(hr) == 1 and len(general) == 1
    assert hr[0].path != general[0].path
    assert (
        "recruiters" in Path(hr[0].path).read_text() and "moves offices" in Path(general[0].path).read_text()
    )
    with assistant.store.sessions() as session:
        ids = dict(session.execute(select(Collection.name, Collection.id)).all())
    uploads = (assistant.settings.data_dir / "uploads").resolve()
    assert Path(hr[0].path).parent == uploads / str(ids["HR/2024"])
    assert Path(general[0].path).parent == uploads / str(ids["2024"])


def test_concurrent_uploads_of_one_name_both_survive(assistant):
    contents = [
        b"# Notes\n\nThe first team meets on Mondays.\n",
        b"# Notes\n\nThe second team meets on Fridays.\n",
    ]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def upload(data: bytes) -> None:
        try:
            start.wait()
            ingest_uploads(assistant, [Upload("notes.md", data)], "team", [])
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    docs = _docs(assistant, "team")
    assert len(docs) == 2, [d.path for d in docs]
    stored = {Path(d.path).read_bytes(): Path(d.path).name for d in docs}
    assert set(stored) == set(contents)
    names = sorted(stored.values())
    assert "notes.md" in names
    later = next(c for c, n in stored.items() if n != "notes.md")
    assert stored[later] == f"notes-{hashlib.sha256(later).hexdigest()[:8]}.md"
    assert not [
        p for p in Path(docs[0].path).parent.iterdir() if p.name.startswith(".")
    ]  # no temp files left


def test_the_same_upload_twice_is_the_same_file(assistant):
    data = b"# Holidays\n\nThe office closes on the first of May.\n"
    ingest_uploads(assistant, [Upload("holidays.md", data)], "hr", [])
    summaries, events = ingest_uploads(assistant, [Upload("holidays.md", data)], "hr", [])
    assert events[0].status == "unchanged"
    docs = _docs(assistant, "hr")
    assert len(docs) == 1 and [p.name for p in Path(docs[0].path).parent.iterdir()] == ["holidays.md"]


def test_deleting_a_document_deletes_its_upload_and_later_backups_lack_it(assistant, tmp_path):
    secret = b"# Layoffs\n\nThe plan to close the Lyon office is confidential.\n"
    ingest_uploads(
        assistant,
        [Upload("layoffs.md", secret), Upload("menu.md", b"# Menu\n\nSoup on Tuesdays.\n")],
        "board",
        [],
    )
    docs = {Path(d.path).name: d for d in _docs(assistant, "board")}
    stored = Path(docs["layoffs.md"].path)
    assert stored.is_file()

    assistant.delete_document(docs["layoffs.md"].id)
    assert not stored.exists()
    assert Path(docs["menu.md"].path).is_file()  # the other upload stays
    assistant.backup(tmp_path / "backup")
    backed_up = [p for p in (tmp_path / "backup" / "uploads").rglob("*") if p.is_file()]
    assert [p.name for p in backed_up] == ["menu.md"]
    assert all(b"Lyon" not in p.read_bytes() for p in backed_up)

    assistant.delete_collection("board")
    assert not Path(docs["menu.md"].path).parent.exists()


def test_deleting_a_server_folder_document_never_deletes_the_users_file(assistant, tmp_path):
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / "keep.md").write_text("# Keep\n\nThis file belongs to the user.\n")
    assistant.ingest(folder, collection="share")
    doc = _docs(assistant, "share")[0]
    assistant.delete_document(doc.id)
    assert (folder / "keep.md").is_file()
    assistant.ingest(folder, collection="share")
    assistant.delete_collection("share")
    assert (folder / "keep.md").is_file()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("..", "file"),
        (".bashrc", "bashrc"),
        ("report (final).pdf", "report (final).pdf"),
        ("a/b/\x00c.txt", "c.txt"),
        ("报告.pdf", "报告.pdf"),
        ("Cafe\u0301.md", "Caf\u00e9.md"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("line\nbreak.txt", "linebreak.txt"),
        ("  ...hidden. ", "hidden"),
        ("", "file"),
    ],
)
def test_upload_names_keep_unicode_but_cannot_leave_the_folder(tmp_path, name, expected):
    from app.uploads import safe_name, save_upload, uploads_root

    assert safe_name(name) == expected
    target = save_upload(tmp_path, 7, name, b"x")
    assert target.parent == uploads_root(tmp_path) / "7" and target.name == expected


def test_long_names_are_bounded_in_bytes_and_keep_their_extension():
    from app.uploads import MAX_NAME_BYTES, safe_name

    name = safe_name("季度报告" * 100 + ".docx")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES and name.endswith(".docx")
    assert unicodedata.normalize("NFC", name) == name and name.startswith("季度报告")
