"""The folder connector on real files with real Unix groups, users and POSIX ACLs (set with setfacl): each
document's groups are who the file system lets read it, as getfacl says (mask included)."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.connectors.base import SourceConfigError, SourceUnavailable
from ingestion.connectors.folder import AclFormatError, FolderConnector, parse_acl
from ingestion.connectors.registry import make_connector
from tests.ingestion.unix_accounts import Accounts, accounts, as_user, run, unused_id


@pytest.fixture
def unix(tmp_path: Path) -> Iterator[Accounts]:
    with accounts(tmp_path) as made:
        yield made


def _file(path: Path, text: str, group: str, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    run("chgrp", group, str(path))
    os.chmod(path, mode)
    return path


def _groups(connector: FolderConnector) -> dict[str, tuple[str, ...] | None]:
    changes = connector.changes(None)
    assert changes.present == {d.key for d in changes.documents}
    return {Path(d.key).name: d.groups for d in changes.documents}


def test_groups_follow_mode_bits_and_acl_entries_through_the_mask(tmp_path: Path, unix: Accounts) -> None:
    hr, eng, ops = unix.group("hr"), unix.group("eng"), unix.group("ops")
    bob = unix.user("bob")
    root = tmp_path / "share"
    _file(root / "hr.txt", "salary bands", hr, 0o640)
    _file(root / "private.txt", "only the owner", hr, 0o600)
    _file(root / "world.txt", "everyone may read this", hr, 0o604)  # group may not read; other may
    _file(root / "acl.txt", "hr, eng and bob", hr, 0o640)
    run("setfacl", "-m", f"g:{eng}:r,u:{bob}:r,g:{ops}:-", str(root / "acl.txt"))
    masked = _file(root / "masked.txt", "the mask takes read away", hr, 0o640)
    run("setfacl", "-m", f"g:{eng}:r,u:{bob}:r", str(masked))
    run("setfacl", "-m", "m::-", str(masked))
    # With an ACL the group bits of the mode are the mask, not the owning group's permission: the owning
    # group has no read here although `ls -l` shows r for the group.
    trap = _file(root / "trap.txt", "named group only", hr, 0o600)
    run("setfacl", "-m", f"g:{eng}:r", str(trap))
    assert trap.stat().st_mode & 0o040

    found = _groups(FolderConnector(str(root)))

    assert found["hr.txt"] == (hr,)
    assert found["private.txt"] == ()
    assert found["world.txt"] == ()  # "other" grants no group: the source's configured groups are for that
    assert found["acl.txt"] == tuple(sorted({hr, eng, f"user:{bob}"}))
    assert found["masked.txt"] == ()
    assert found["trap.txt"] == (eng,)


def test_group_map_renames_and_user_groups_can_be_turned_off(tmp_path: Path, unix: Accounts) -> None:
    hr, eng = unix.group("hr"), unix.group("eng")
    bob = unix.user("bob")
    root = tmp_path / "share"
    _file(root / "a.txt", "text", hr, 0o640)
    run("setfacl", "-m", f"g:{eng}:r,u:{bob}:r", str(root / "a.txt"))

    assert _groups(FolderConnector(str(root), group_map={hr: "people"}))["a.txt"] == tuple(
        sorted({"people", eng, f"user:{bob}"})
    )
    assert _groups(FolderConnector(str(root), user_groups=False))["a.txt"] == tuple(sorted({hr, eng}))
    assert _groups(FolderConnector(str(root), group_rule="none"))["a.txt"] is None


def test_owner_reads_is_opt_in(tmp_path: Path, unix: Accounts) -> None:
    hr = unix.group("hr")
    bob = unix.user("bob")
    root = tmp_path / "share"
    _file(root / "mine.txt", "bob's own", hr, 0o600)
    run("chown", bob, str(root / "mine.txt"))

    assert _groups(FolderConnector(str(root)))["mine.txt"] == ()
    assert _groups(FolderConnector(str(root), owner_reads=True))["mine.txt"] == (f"user:{bob}",)


def test_ids_without_a_name_are_skipped_with_a_note(tmp_path: Path, unix: Accounts) -> None:
    hr = unix.group("hr")
    gid, uid = unused_id(grp.getgrgid), unused_id(pwd.getpwuid)
    root = tmp_path / "share"
    _file(root / "a.txt", "text", hr, 0o640)
    _file(root / "b.txt", "text", hr, 0o640)
    run("setfacl", "-m", f"g:{gid}:r,u:{uid}:r", str(root / "a.txt"))
    run("setfacl", "-m", f"g:{gid}:r", str(root / "b.txt"))

    changes = FolderConnector(str(root)).changes(None)

    assert {Path(d.key).name: d.groups for d in changes.documents} == {"a.txt": (hr,), "b.txt": (hr,)}
    assert (
        f"group id {gid} may read 2 file(s) but has no name on this machine: not mapped to a sparq group"
        in (changes.notes)
    )
    assert any(f"user id {uid} may read 1 file(s)" in n for n in changes.notes)


def test_documents_are_read_in_place_with_their_stat(tmp_path: Path, unix: Accounts) -> None:
    hr = unix.group("hr")
    root = tmp_path / "share"
    path = _file(root / "sub" / "Report.MD", "# Title\n\ntext", hr, 0o640)
    (root / ".hidden.txt").write_text("never listed")

    connector = make_connector("folder", {"path": str(root)})
    changes = connector.changes(None)

    assert connector.root_key == str(root.resolve())
    [doc] = changes.documents
    st = path.stat()
    assert (doc.key, doc.path, doc.size, doc.mtime, doc.extension) == (
        str(path),
        str(path),
        st.st_size,
        st.st_mtime,
        ".md",
    )
    assert doc.fetch() == path.read_bytes()
    assert changes.cursor is None


def test_a_symbolic_link_leaving_the_folder_is_not_followed(tmp_path: Path, unix: Accounts) -> None:
    hr = unix.group("hr")
    root = tmp_path / "share"
    _file(root / "a.txt", "inside", hr, 0o640)
    _file(tmp_path / "secret.txt", "outside", hr, 0o640)
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")

    changes = FolderConnector(str(root)).changes(None)

    assert changes.present == {str(root / "a.txt")}
    assert any("link.txt" in n and "outside" in n for n in changes.notes)


def test_a_missing_or_unlistable_folder_is_unavailable(tmp_path: Path, unix: Accounts) -> None:
    with pytest.raises(SourceUnavailable, match="does not exist"):
        FolderConnector(str(tmp_path / "not-mounted")).changes(None)
    bob = unix.user("bob")
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # outside pytest's root-only tmp folder, so bob can reach it
    try:
        os.chmod(base, 0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o700)
        connector = FolderConnector(str(locked))
        with as_user(bob), pytest.raises(SourceUnavailable, match="cannot list folder"):
            connector.changes(None)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_a_subfolder_that_cannot_be_listed_is_reported_as_unlisted(unix: Accounts) -> None:
    hr = unix.group("hr")
    bob = unix.user("bob")
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        _file(base / "open" / "a.txt", "readable", hr, 0o644)
        _file(base / "closed" / "b.txt", "in a folder bob may not list", hr, 0o644)
        os.chmod(base / "open", 0o755)
        os.chmod(base / "closed", 0o700)
        connector = FolderConnector(str(base))
        with as_user(bob):
            changes = connector.changes(None)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)

    assert changes.present == {str(base / "open" / "a.txt")}
    assert changes.unlisted == [str(base / "closed")]
    assert any("closed" in n and "cannot list folder" in n for n in changes.notes)


def test_settings_are_checked_when_the_source_is_added() -> None:
    with pytest.raises(SourceConfigError, match="absolute"):
        FolderConnector("relative/share")
    with pytest.raises(SourceConfigError, match="group_rule"):
        FolderConnector("/srv/share", group_rule="owner")
    with pytest.raises(SourceConfigError, match="group_map"):
        FolderConnector("/srv/share", group_map={"hr": ""})
    with pytest.raises(SourceConfigError, match="folder source"):
        make_connector("folder", {"path": "/srv/share", "colour": "blue"})


def test_a_malformed_acl_attribute_is_refused() -> None:
    good = bytes.fromhex("02000000" + "01000600ffffffff" + "04000400ffffffff" + "20000400ffffffff")
    assert parse_acl(good) == [(0x01, 6, 0xFFFFFFFF), (0x04, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]
    with pytest.raises(AclFormatError, match="version"):
        parse_acl(bytes.fromhex("01000000" + "01000600ffffffff"))
    with pytest.raises(AclFormatError, match="8-byte"):
        parse_acl(good[:-3])


def test_a_folder_that_a_group_may_not_enter_hides_the_files_below_it(tmp_path: Path, unix: Accounts) -> None:
    grp_a, grp_b, eng = unix.group("a"), unix.group("b"), unix.group("eng")
    bob = unix.user("bob")
    root = tmp_path / "share"
    hr = root / "hr"
    payroll = _file(hr / "payroll.txt", "payroll", grp_b, 0o640)
    run("setfacl", "-m", f"g:{eng}:r,u:{bob}:r", str(payroll))
    notes_file = _file(hr / "deep" / "notes.txt", "notes", grp_a, 0o640)
    open_file = _file(root / "open" / "memo.txt", "memo", grp_b, 0o640)
    run("chgrp", grp_a, str(hr))
    os.chmod(hr, 0o770)  # only root and grpA may enter hr/
    os.chmod(hr / "deep", 0o755)  # "other" may enter: restricts nothing more
    os.chmod(root / "open", 0o751)
    assert (root.stat().st_mode & 0o001) and notes_file.exists() and open_file.exists()

    found = _groups(FolderConnector(str(root)))

    assert found["payroll.txt"] == ()  # grpB, eng and bob may read the file but not enter hr/
    assert found["notes.txt"] == (grp_a,)
    assert found["memo.txt"] == (grp_b,)

    run("setfacl", "-m", f"g:{grp_b}:rx,u:{bob}:x,g:{eng}:r", str(hr))  # eng may list hr/, not enter it
    found = _groups(FolderConnector(str(root)))
    assert found["payroll.txt"] == tuple(sorted({grp_b, f"user:{bob}"}))
    run("setfacl", "-m", "m::r", str(hr))  # the mask takes x away from every named entry and the group
    found = _groups(FolderConnector(str(root)))
    assert found["payroll.txt"] == () and found["notes.txt"] == ()


def test_the_source_root_itself_counts_and_each_folder_is_read_once(
    tmp_path: Path, unix: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    grp_a, grp_b = unix.group("a"), unix.group("b")
    root = tmp_path / "share"
    for n in range(3):
        _file(root / "sub" / f"{n}.txt", "text", grp_b, 0o640)
    run("chgrp", grp_a, str(root))
    os.chmod(root, 0o750)
    os.chmod(root / "sub", 0o755)
    reads: list[str] = []
    real = os.getxattr

    def counted(path, name, *a, **kw):
        reads.append(str(path))
        return real(path, name, *a, **kw)

    monkeypatch.setattr(os, "getxattr", counted)

    found = _groups(FolderConnector(str(root)))

    assert found == {"0.txt": (), "1.txt": (), "2.txt": ()}  # grpB may not enter the root
    assert reads.count(str(root)) == 1 and reads.count(str(root / "sub")) == 1
