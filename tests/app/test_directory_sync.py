"""LDAP group sync against a real OpenLDAP (slapd) started by the fixture: users, groups and a nested
group; sync creates, updates and disables; access follows the directory at the next search."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from app.assistant import SparqError
from app.directory_sync import DirectoryError, LdapConfig, sync_ldap
from tests.app.ldap_server import ROOT_DN, ROOT_PASSWORD, SUFFIX, LdapServer, run_slapd

PEOPLE, GROUPS = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"


@pytest.fixture
def ldap(tmp_path) -> Iterator[LdapServer]:
    yield from run_slapd(tmp_path / "slapd")


@pytest.fixture
def directory(ldap: LdapServer) -> LdapServer:
    conn = ldap.connect()
    conn.add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
    for ou in ("people", "groups"):
        conn.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
    for uid in ("alice", "bob", "carol"):
        conn.add(
            f"uid={uid},{PEOPLE}",
            ["inetOrgPerson"],
            {"uid": uid, "cn": uid.title(), "sn": uid.title(), "mail": f"{uid}@example.org"},
        )
    # groupOfNames needs a member: a placeholder keeps hr valid once alice leaves it.
    conn.add(
        f"cn=hr,{GROUPS}",
        ["groupOfNames"],
        {"cn": "hr", "member": [f"uid=alice,{PEOPLE}", f"cn=nobody,{SUFFIX}"]},
    )
    conn.add(f"cn=eng,{GROUPS}", ["groupOfNames"], {"cn": "eng", "member": [f"uid=bob,{PEOPLE}"]})
    # Nested: everyone in hr is staff, and carol is staff directly.
    conn.add(
        f"cn=staff,{GROUPS}",
        ["groupOfNames"],
        {"cn": "staff", "member": [f"cn=hr,{GROUPS}", f"uid=carol,{PEOPLE}"]},
    )
    conn.unbind()
    return ldap


def _config(server: LdapServer, **changes) -> LdapConfig:
    base = dict(
        url=server.url, bind_dn=ROOT_DN, bind_password=ROOT_PASSWORD, user_base=PEOPLE, group_base=GROUPS
    )
    return LdapConfig(**{**base, **changes})


def test_sync_creates_updates_disables_and_access_follows_the_directory(assistant, directory, tmp_path):
    users = assistant.users
    users.add("root", role="admin", password="local-admin-pw")  # a local account: the sync leaves it alone
    dry = sync_ldap(_config(directory), users, dry_run=True)
    assert sorted(u.name for u in dry.create) == ["alice", "bob", "carol"]
    assert [u.name for u in users.list()] == ["root"]  # a dry run changes nothing

    sync_ldap(_config(directory), users)
    groups = {u.name: sorted(u.groups) for u in users.list()}
    assert groups == {"alice": ["hr", "staff"], "bob": ["eng"], "carol": ["staff"], "root": []}
    assert users.get("alice").source == "ldap" and users.get("root").source == "local"

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pay.md").write_text("# Pay\n\nThe orchid bonus pool is three percent of salaries.\n")
    assistant.ingest(docs, collection="people", groups=["hr"])
    assert assistant.search("orchid bonus pool", user="alice")
    assert not assistant.search("orchid bonus pool", user="bob")

    conn = directory.connect()
    from ldap3 import MODIFY_DELETE

    conn.modify(f"cn=hr,{GROUPS}", {"member": [(MODIFY_DELETE, [f"uid=alice,{PEOPLE}"])]})
    conn.delete(f"uid=carol,{PEOPLE}")
    conn.unbind()

    plan = sync_ldap(_config(directory), users)
    assert plan.disable == ["carol"] and [u.name for u, _ in plan.update] == ["alice"]
    assert users.get("alice").groups == []
    assert not assistant.search("orchid bonus pool", user="alice")  # lost hr at the next search
    assert users.get("carol").disabled and users.get("root").disabled is False
    with pytest.raises(SparqError):
        assistant.search("orchid bonus pool", user="carol")  # a disabled user retrieves nothing
    assert users.authenticate("root", "local-admin-pw") is not None


def test_starttls_with_the_servers_certificate_and_clear_errors(assistant, directory):
    plan = sync_ldap(
        _config(directory, start_tls=True, ca_file=str(directory.ca_file)), assistant.users, dry_run=True
    )
    assert len(plan.create) == 3
    with pytest.raises(DirectoryError) as wrong:
        sync_ldap(_config(directory, bind_password="not-the-password"), assistant.users)
    assert "not-the-password" not in str(wrong.value) and directory.url in str(wrong.value)
    assert "not-the-password" not in repr(_config(directory, bind_password="not-the-password"))


def test_cli_sync_ldap_dry_run_prints_the_plan(assistant, directory, monkeypatch):
    from app.cli import cli

    monkeypatch.setenv("SPARQ_DATA_DIR", str(assistant.settings.data_dir))
    monkeypatch.setenv("SPARQ_DATABASE_URL", assistant.settings.resolved_database_url)
    for key, value in {
        "URL": directory.url,
        "BIND_DN": ROOT_DN,
        "BIND_PASSWORD": ROOT_PASSWORD,
        "USER_BASE": PEOPLE,
        "GROUP_BASE": GROUPS,
    }.items():
        monkeypatch.setenv(f"SPARQ_LDAP_{key}", value)
    result = CliRunner().invoke(cli, ["users", "sync-ldap", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "create  alice groups=hr,staff" in result.output and "dry run" in result.output
    assert assistant.users.list() == []
    assert ROOT_PASSWORD not in result.output


def test_the_schedule_syncs_repeatedly_and_an_unreachable_directory_disables_nobody(assistant, directory):
    import threading

    from app.directory_schedule import DirectorySchedule

    runs: list[tuple[object, str | None]] = []
    done = threading.Event()

    def record(plan, error):
        runs.append((plan, error))
        if len(runs) >= 2:
            done.set()

    schedule = DirectorySchedule(_config(directory), assistant.users, 0.2, on_run=record).start()
    try:
        assert done.wait(60)
    finally:
        schedule.stop()
    assert runs[0][1] is None and len(runs[0][0].create) == 3 and runs[1][0].unchanged == 3
    # The directory goes away: the sync fails, is retried with backoff, and disables nobody.
    failed = threading.Event()
    down = DirectorySchedule(
        _config(directory, url="ldap://127.0.0.1:9"),
        assistant.users,
        0.2,
        on_run=lambda plan, error: failed.set() if error else None,
    ).start()
    try:
        assert failed.wait(60)
    finally:
        down.stop()
    assert not any(u.disabled for u in assistant.users.list())
