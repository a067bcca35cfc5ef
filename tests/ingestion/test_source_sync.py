"""Syncing a folder source end to end: real files with real Unix groups and ACLs, the real pipeline and
embedding model, a real database and FAISS index, and searches as users of different groups. A change of
permissions reaches search at the next sync without re-embedding; a share that lists nothing, or is gone,
changes nothing."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ingestion.connectors.base import ChangeSet, Connector, RemoteDocument, SourceUnavailable
from ingestion.connectors.folder import FolderConnector
from ingestion.isolation import LoaderPool
from ingestion.pipeline import IngestPipeline
from ingestion.source_sync import SourceSyncResult, sync_source
from ingestion.sources import TextRecord
from retrieval.access import Principal
from retrieval.schema import Chunk, Document, IngestRun
from retrieval.search import HybridSearcher
from retrieval.store import DocumentStore
from tests.ingestion.unix_accounts import Accounts, accounts, as_user, run

TEXTS = {
    "salary.txt": "Salary bands for senior engineers are reviewed every March by the compensation board.",
    "runbook.txt": "Kubernetes upgrade runbook with rollback steps for the payment cluster.",
    "handbook.txt": "Employee handbook section on remote work and equipment allowances.",
    "patent.txt": "Patent filing draft for the adaptive caching algorithm.",
}


@pytest.fixture
def searcher(store: DocumentStore, embedder) -> Iterator[HybridSearcher]:
    s = HybridSearcher(store, lambda q: embedder.encode_query(q, threads=1))
    yield s
    s.close()


@pytest.fixture
def pipeline(store: DocumentStore, embedder) -> IngestPipeline:
    return IngestPipeline(store, embedder)


class Share:
    """A folder of four files with groups and ACLs, and the sparq users who read it."""

    def __init__(self, root: Path, unix: Accounts) -> None:
        self.root = root
        self.hr, self.eng = unix.group("hr"), unix.group("eng")
        self.bob = unix.user("bob")
        self.alice = Principal("alice", frozenset({self.hr}))
        self.erin = Principal("erin", frozenset({self.eng}))
        self.bob_p = Principal(self.bob)  # in no sparq group: reads what is shared with him by name
        modes = {
            "salary.txt": (self.hr, 0o640),
            "runbook.txt": (self.eng, 0o640),
            "handbook.txt": (self.hr, 0o640),
            "patent.txt": (self.hr, 0o600),
        }
        for name, (group, mode) in modes.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(TEXTS[name])
            run("chgrp", group, str(path))
            os.chmod(path, mode)
        run("setfacl", "-m", f"g:{self.eng}:r", str(root / "handbook.txt"))
        run("setfacl", "-m", f"u:{self.bob}:r", str(root / "patent.txt"))

    def path(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Share]:
    with accounts(tmp_path) as unix:
        yield Share(tmp_path / "share", unix)


def _sync(pipeline: IngestPipeline, connector: Connector, **kw) -> SourceSyncResult:
    kw.setdefault("groups", None)
    return sync_source(connector, pipeline, collection="share", cursor=None, **kw)


def _readable(searcher: HybridSearcher, principal: Principal) -> set[str]:
    """The files whose chunks `principal` retrieves (the corpus is tiny: dense search with a large k finds
    every chunk they may read)."""
    hits = searcher.search("documents", principal=principal, k=50, mode="dense")
    return {Path(h.path).name for h in hits}


def _chunk_ids(store: DocumentStore) -> set[int]:
    with store.sessions() as s:
        return set(s.scalars(select(Chunk.id)))


def _document_count(store: DocumentStore) -> int:
    with store.sessions() as s:
        return s.scalar(select(func.count(Document.id)))


def test_each_user_retrieves_what_the_file_system_lets_them_read(pipeline, searcher, share: Share) -> None:
    result = _sync(pipeline, FolderConnector(str(share.root)))

    assert result.summary.files_new == 4 and result.summary.files_failed == 0
    assert result.cursor is None
    assert _readable(searcher, share.alice) == {"salary.txt", "handbook.txt"}
    assert _readable(searcher, share.erin) == {"runbook.txt", "handbook.txt"}
    assert _readable(searcher, share.bob_p) == {"patent.txt"}
    assert _readable(searcher, Principal("mallory", frozenset({"staff"}))) == set()
    assert _readable(searcher, Principal.system()) == set(TEXTS)
    for mode in ("hybrid", "keyword"):
        hits = searcher.search("salary bands compensation", principal=share.erin, k=10, mode=mode)
        assert "salary.txt" not in {Path(h.path).name for h in hits}


def test_permission_changes_apply_at_the_next_sync_without_reembedding(
    pipeline, searcher, store, share: Share
) -> None:
    connector = FolderConnector(str(share.root))
    _sync(pipeline, connector)
    chunks = _chunk_ids(store)
    mtimes = {n: os.stat(share.path(n)).st_mtime for n in TEXTS}

    run("chgrp", share.eng, share.path("salary.txt"))  # hr -> eng
    run("setfacl", "-m", f"g:{share.hr}:r", share.path("runbook.txt"))  # hr may now read the runbook
    run("setfacl", "-x", f"u:{share.bob}", share.path("patent.txt"))  # bob may no longer
    assert {n: os.stat(share.path(n)).st_mtime for n in TEXTS} == mtimes  # ctime moved, mtime did not
    summary = _sync(pipeline, connector).summary

    assert (summary.files_unchanged, summary.files_new, summary.files_updated) == (4, 0, 0)
    assert (summary.chunks_added, summary.chunks_removed) == (0, 0)
    assert _chunk_ids(store) == chunks
    assert _readable(searcher, share.alice) == {"runbook.txt", "handbook.txt"}
    assert _readable(searcher, share.erin) == {"salary.txt", "runbook.txt", "handbook.txt"}
    assert _readable(searcher, share.bob_p) == set()

    run("setfacl", "-x", f"g:{share.hr}", share.path("runbook.txt"))
    summary = _sync(pipeline, connector).summary
    assert summary.chunks_added == 0 and _chunk_ids(store) == chunks
    assert _readable(searcher, share.alice) == {"handbook.txt"}


def test_a_deleted_file_disappears(pipeline, searcher, store, share: Share) -> None:
    connector = FolderConnector(str(share.root))
    _sync(pipeline, connector)
    os.unlink(share.path("handbook.txt"))

    summary = _sync(pipeline, connector).summary

    assert summary.files_removed == 1 and summary.files_unchanged == 3
    assert _readable(searcher, share.alice) == {"salary.txt"}
    assert _readable(searcher, Principal.system()) == set(TEXTS) - {"handbook.txt"}
    assert _document_count(store) == 3


def test_an_empty_listing_over_a_stored_source_removes_nothing(
    pipeline, searcher, store, share: Share
) -> None:
    connector = FolderConnector(str(share.root))
    _sync(pipeline, connector)
    for name in TEXTS:  # what an unmounted share looks like: its mount point, empty
        os.unlink(share.path(name))
    with store.sessions() as s:
        runs = s.scalar(select(func.count(IngestRun.id)))

    with pytest.raises(SourceUnavailable, match="lists no documents; refusing to remove 4 stored documents"):
        _sync(pipeline, connector)

    assert _document_count(store) == 4
    assert _readable(searcher, share.alice) == {"salary.txt", "handbook.txt"}
    with store.sessions() as s:
        assert s.scalar(select(func.count(IngestRun.id))) == runs  # not even a run was started
    summary = _sync(pipeline, connector, allow_empty=True).summary  # the admin says: it really is empty
    assert summary.files_removed == 4 and _document_count(store) == 0


def test_a_missing_folder_changes_nothing(pipeline, searcher, store, share: Share) -> None:
    connector = FolderConnector(str(share.root))
    _sync(pipeline, connector)
    share.root.rename(share.root.with_name("moved"))

    with pytest.raises(SourceUnavailable, match="does not exist"):
        _sync(pipeline, connector, allow_empty=True)

    assert _document_count(store) == 4
    assert _readable(searcher, share.erin) == {"runbook.txt", "handbook.txt"}


def test_the_sources_configured_groups_are_added_to_every_document(pipeline, searcher, share: Share) -> None:
    _sync(pipeline, FolderConnector(str(share.root)), groups=["all-staff"])

    assert _readable(searcher, Principal("sam", frozenset({"all-staff"}))) == set(TEXTS)
    assert _readable(searcher, share.alice) == {"salary.txt", "handbook.txt"}

    _sync(pipeline, FolderConnector(str(share.root), group_rule="none"), groups=["all-staff"])
    assert _readable(searcher, share.alice) == set()  # no groups from the file system any more
    assert _readable(searcher, Principal("sam", frozenset({"all-staff"}))) == set(TEXTS)


def test_documents_under_a_folder_that_cannot_be_listed_are_kept(
    pipeline, searcher, store, share: Share
) -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # reachable by bob (pytest's tmp folder is root's only)
    try:
        os.chmod(base, 0o755)
        for sub in ("open", "closed"):
            (base / sub).mkdir()
            (base / sub / f"{sub}.txt").write_text(f"The {sub} folder holds the quarterly churn analysis.")
            os.chmod(base / sub / f"{sub}.txt", 0o644)
        connector = FolderConnector(str(base))
        _sync(pipeline, connector)
        os.chmod(base / "closed", 0o700)

        class ListedAsBob(FolderConnector):
            def changes(self, cursor: str | None) -> ChangeSet:
                with as_user(share.bob):
                    return super().changes(cursor)

        result = _sync(pipeline, ListedAsBob(str(base)))
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)

    assert result.summary.files_removed == 0
    assert any("could not be listed" in n for n in result.notes)
    assert _readable(searcher, Principal.system()) == {"open.txt", "closed.txt"}


def test_path_documents_are_parsed_by_the_pipelines_loader_workers(store, embedder, share: Share) -> None:
    pool = LoaderPool(1)
    try:
        summary = _sync(
            IngestPipeline(store, embedder, loaders=pool), FolderConnector(str(share.root))
        ).summary
        assert summary.files_new == 4
        assert pool.processes_started >= 1
    finally:
        pool.close()


class MemoryConnector(Connector):
    """A source whose documents exist only as bytes (as a mailbox's or a web site's do): no `path`."""

    kind = "memory"

    def __init__(
        self, docs: dict[str, tuple[bytes, float, tuple[str, ...] | None]], root: str = "mem://box"
    ) -> None:
        self.docs = docs
        self.root = root
        self.fetched: list[str] = []
        self.unavailable = False

    @property
    def root_key(self) -> str:
        return self.root

    def changes(self, cursor: str | None) -> ChangeSet:
        if self.unavailable:
            raise SourceUnavailable("the server did not answer")
        out = []
        for key, (data, mtime, groups) in self.docs.items():
            out.append(
                RemoteDocument(
                    key,
                    len(data),
                    mtime,
                    ".md",
                    lambda k=key: self._fetch(k),
                    groups,
                    title=f"Title of {key}",
                )
            )
        return ChangeSet(out, set(self.docs), cursor=f"seen {len(self.docs)}")

    def _fetch(self, key: str) -> bytes:
        self.fetched.append(key)
        return self.docs[key][0]


def test_documents_without_a_file_are_fetched_into_a_private_temp_file(
    pipeline, searcher, store, tmp_path: Path, monkeypatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    connector = MemoryConnector(
        {
            "mem://box/1": (
                b"Holiday schedule: the office closes between Christmas and New Year.",
                100.0,
                ("hr",),
            ),
            "mem://box/2": (
                b"# Vendor contracts\n\nRenewal terms for the cloud storage provider.",
                0.0,
                None,
            ),
        }
    )

    result = _sync(pipeline, connector, groups=["staff"])

    assert result.cursor == "seen 2" and result.summary.files_new == 2
    assert list(scratch.iterdir()) == []  # every fetched copy is gone
    hits = searcher.search("office closes at Christmas", principal=Principal("h", frozenset({"hr"})), k=5)
    assert hits and hits[0].path == "mem://box/1" and hits[0].title == "Title of mem://box/1"
    assert _readable(searcher, Principal("h", frozenset({"hr"}))) == {"1"}
    assert _readable(searcher, Principal("s", frozenset({"staff"}))) == {"1", "2"}
    assert (
        searcher.search("vendor contracts", principal=Principal.system(), k=1)[0].title == "Vendor contracts"
    )

    connector.fetched.clear()
    connector.docs["mem://box/1"] = (connector.docs["mem://box/1"][0], 100.0, ())  # hr no longer granted
    summary = _sync(pipeline, connector, groups=["staff"]).summary
    # Same size and mtime: not fetched; mtime 0 means "compare by digest": fetched, found unchanged.
    assert connector.fetched == ["mem://box/2"]
    assert (summary.files_unchanged, summary.chunks_added) == (2, 0)
    assert _readable(searcher, Principal("h", frozenset({"hr"}))) == set()
    assert list(scratch.iterdir()) == []


def test_an_unavailable_source_changes_nothing(pipeline, store) -> None:
    connector = MemoryConnector({"mem://box/1": (b"Board meeting minutes on succession.", 5.0, ("exec",))})
    _sync(pipeline, connector)
    connector.unavailable = True

    with pytest.raises(SourceUnavailable, match="did not answer"):
        _sync(pipeline, connector, allow_empty=True)
    assert _document_count(store) == 1


def test_keys_outside_the_root_are_refused_before_anything_changes(pipeline, store) -> None:
    connector = MemoryConnector({"mem://boxes/1": (b"Text.", 5.0, None)}, root="mem://box")

    with pytest.raises(ValueError, match="outside its root 'mem://box'"):
        _sync(pipeline, connector)
    assert _document_count(store) == 0


def test_a_user_reads_what_is_granted_to_them_by_name(pipeline, searcher) -> None:
    pipeline.ingest_records(
        [TextRecord("n/1", "Security training is mandatory before the audit.")],
        collection="c",
        groups=["user:bob"],
    )

    assert _readable(searcher, Principal("bob")) == {"1"}
    assert _readable(searcher, Principal("bob", frozenset({"eng"}))) == {"1"}
    # Same groups, another name: the access cache must not hand bob's documents to alice.
    assert _readable(searcher, Principal("alice")) == set()
    assert _readable(searcher, Principal("alice", frozenset({"eng"}))) == set()
    # A group that only looks like bob's (given by an admin, a directory or a token) grants nothing.
    assert _readable(searcher, Principal("alice", frozenset({"user:bob"}))) == set()


def test_documents_under_a_folder_that_can_no_longer_be_listed_are_hidden_until_it_can(
    pipeline, searcher, store, share: Share
) -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # reachable by bob (pytest's tmp folder is root's only)

    class ListedAsBob(FolderConnector):
        def changes(self, cursor: str | None) -> ChangeSet:
            with as_user(share.bob):
                return super().changes(cursor)

    staff = Principal("sam", frozenset({"staff"}))
    try:
        os.chmod(base, 0o755)
        for sub in ("open", "closed"):
            (base / sub).mkdir()
            path = base / sub / f"{sub}.txt"
            path.write_text(f"The {sub} folder holds the quarterly churn analysis.")
            run("chgrp", share.hr, str(path))
            os.chmod(path, 0o644)
        connector = ListedAsBob(str(base))
        _sync(pipeline, connector, groups=["staff"])
        chunks = _chunk_ids(store)
        assert _readable(searcher, share.alice) == {"open.txt", "closed.txt"}

        os.chmod(base / "closed", 0o700)  # the usual way to revoke access to a folder
        result = _sync(pipeline, connector, groups=["staff"])

        assert result.summary.files_removed == 0
        assert (
            f"1 documents under {base / 'closed'} hidden until the source can list it again" in result.notes
        )
        assert _readable(searcher, share.alice) == {"open.txt"}
        assert _readable(searcher, staff) == {"open.txt"}  # the configured groups no longer apply either
        assert _readable(searcher, Principal.system()) == {"open.txt", "closed.txt"}  # kept, for admins
        assert _chunk_ids(store) == chunks

        os.chmod(base / "closed", 0o755)
        result = _sync(pipeline, connector, groups=["staff"])
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)

    assert not any("hidden" in n for n in result.notes)
    assert (result.summary.files_unchanged, result.summary.chunks_added) == (2, 0)
    assert _chunk_ids(store) == chunks
    assert _readable(searcher, share.alice) == {"open.txt", "closed.txt"}
    assert _readable(searcher, staff) == {"open.txt", "closed.txt"}


def test_a_folder_above_a_file_narrows_who_reads_it_and_granting_entry_needs_no_reembedding(
    pipeline, searcher, store, tmp_path: Path
) -> None:
    with accounts(tmp_path) as unix:
        grp_a, grp_b = unix.group("a"), unix.group("b")
        root = tmp_path / "share"
        hr = root / "hr"
        hr.mkdir(parents=True)
        payroll = hr / "payroll.txt"
        payroll.write_text("Payroll run for March: net salaries and tax withholding per employee.")
        run("chgrp", grp_a, str(hr))
        os.chmod(hr, 0o770)
        run("chgrp", grp_b, str(payroll))
        os.chmod(payroll, 0o640)
        connector = FolderConnector(str(root))
        reader_b = Principal("bea", frozenset({grp_b}))

        _sync(pipeline, connector)
        chunks = _chunk_ids(store)
        assert _readable(searcher, reader_b) == set()  # grpB may read the file but cannot enter hr/

        run("setfacl", "-m", f"g:{grp_b}:rx", str(hr))
        summary = _sync(pipeline, connector).summary

        assert (summary.files_unchanged, summary.chunks_added, summary.chunks_removed) == (1, 0, 0)
        assert _chunk_ids(store) == chunks
        assert _readable(searcher, reader_b) == {"payroll.txt"}
        assert _readable(searcher, Principal("ann", frozenset({grp_a}))) == set()  # may enter, not read


def test_a_fetched_copy_found_unchanged_is_removed_at_once_not_at_the_end_of_the_sync(
    pipeline, tmp_path: Path, monkeypatch
) -> None:
    """A re-listed mailbox or site (cursor lost) fetches every document to compare digests: the copies of
    the unchanged ones must not pile up on disk until the sync ends."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    docs = {
        f"mem://box/{i}": (f"Memo {i}: the {i}th floor printer moved.".encode(), 0.0, None) for i in range(6)
    }
    connector = MemoryConnector(docs)
    _sync(pipeline, connector)

    waiting: list[int] = []

    def progress(event) -> None:
        assert event.status == "unchanged", event
        waiting.append(sum(1 for f in scratch.rglob("*") if f.is_file()))

    connector.fetched.clear()
    summary = sync_source(
        connector, pipeline, collection="share", groups=None, cursor=None, progress=progress
    ).summary
    assert summary.files_unchanged == 6 and len(connector.fetched) == 6  # mtime 0: fetched, compared
    assert waiting == [0] * 6, waiting
