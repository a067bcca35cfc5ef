"""Sources that sync themselves, through the service, the CLI, the scheduler and the admin pages: real folder
sources with real files, the real embedder and store, on SQLite (and on PostgreSQL with `-m db`)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import cli
from app.ingest_roots import IngestPathRefused
from app.models import Source, SourceRun
from app.source_schedule import SourceSchedule
from app.sources import (
    MAX_BACKOFF_S,
    SourceBusy,
    SourceError,
    SyncFailed,
    backoff_s,
    parse_option,
    parse_schedule,
    service_for,
)
from ingestion.connectors.base import ChangeSet, Connector, RemoteDocument, SourceUnavailable
from ingestion.connectors.registry import make_connector
from tests.conftest import ROOT
from tests.processes import stop_process

runner = CliRunner()
FILES = {
    "travel.md": "# Travel policy\n\nEmployees book economy class for flights under six hours.\n",
    "it.md": "# IT\n\nThe VPN server is vpn.example.com. Passwords expire every 90 days.\n",
}
FOLDER = {
    "group_rule": "none"
}  # the source's configured groups only (file-system groups: the connector's tests)


@pytest.fixture
def share(tmp_path: Path) -> Path:
    folder = tmp_path / "share"
    folder.mkdir()
    for name, body in FILES.items():
        (folder / name).write_text(body)
    return folder


def _names(assistant, collection: str = "hr") -> list[str]:
    return sorted(Path(d.path).name for d in assistant.documents(collection))


def _near(moment: datetime, expected: datetime, slack_s: float = 5.0) -> bool:
    return abs((moment - expected).total_seconds()) <= slack_s


# --- schedules and options -------------------------------------------------------------------------------
def test_schedules_parse_with_clear_errors():
    assert parse_schedule("every 30m").interval_s == 1800
    assert parse_schedule(" Every 2h ").text == "every 2h"
    assert parse_schedule("every 1d").interval_s == 86400
    assert parse_schedule("every 45s").interval_s == 45
    assert parse_schedule("manual").interval_s is None
    for bad, words in [
        ("every 5s", "too often"),
        ("hourly", "every 30m"),
        ("every 30", "every 30m"),
        ("every -1h", "every 30m"),
        ("", "manual"),
        ("every 400d", "longer than a year"),
    ]:
        with pytest.raises(SourceError, match=words):
            parse_schedule(bad)


def test_backoff_doubles_from_twice_the_interval_and_is_capped():
    assert backoff_s(1800, 1) == 3600 and backoff_s(1800, 2) == 7200
    assert backoff_s(1800, 10) == MAX_BACKOFF_S == 6 * 3600
    assert backoff_s(86400, 1) == MAX_BACKOFF_S  # a daily source is retried within 6 h, not days later
    assert backoff_s(None, 3) is None  # a manual source waits for the next `sparq sources sync`


def test_command_line_options_are_typed():
    assert parse_option("max_pages=200") == ("max_pages", 200)
    assert parse_option("user-groups=false") == ("user_groups", False)
    assert parse_option('group_map={"wheel": "admins"}') == ("group_map", {"wheel": "admins"})
    assert parse_option("mailbox=Sent Items") == ("mailbox", "Sent Items")
    with pytest.raises(SourceError, match="key=value"):
        parse_option("no-equals-sign")


@pytest.mark.parametrize(
    "options",
    [
        {"password": "hunter2"},
        {"api_token": "hunter2"},
        {"Client_Secret": "hunter2"},
        {"group_map": {"db_password": "hunter2"}},
        {"start_url": "https://bob:hunter2@intranet.example/"},
    ],
)
def test_secret_options_are_refused_and_never_stored(assistant, share, options):
    service = service_for(assistant)
    kind = "web" if "start_url" in options else "folder"
    given = dict(options) if kind == "web" else {"path": str(share), **options}
    with pytest.raises(SourceError, match="password_env=NAME.*password_file=PATH"):
        service.add("leaky", kind, collection="hr", options=given)
    assert service.list() == []
    with Session(assistant.engine) as session:
        assert session.scalar(select(Source.id)) is None


def test_a_password_is_named_by_its_variable_and_the_web_app_may_only_name_source_variables(assistant, share):
    service = service_for(assistant, source_hosts=["127.0.0.1"])
    imap = {"host": "127.0.0.1", "user": "bob", "password_env": "SPARQ_DATABASE_URL"}
    with pytest.raises(SourceError, match="SPARQ_SOURCE_"):  # from a browser: never sparq's own secrets
        service.add("mail", "imap", collection="mail", options=imap, schedule="manual", restricted=True)
    info = service.add(
        "mail",
        "imap",
        collection="mail",
        options={**imap, "password_env": "SPARQ_SOURCE_MAIL"},
        schedule="manual",
        restricted=True,
    )
    assert info.options["password_env"] == "SPARQ_SOURCE_MAIL" and info.next_due_at is None
    # The operator's console may name any variable; the value itself is never stored.
    service.add("mail2", "imap", collection="mail2", options=imap, schedule="manual")
    with pytest.raises(SourceError, match="imap source: set exactly one of password_env"):
        service.add("mail3", "imap", collection="mail3", options={"host": "127.0.0.1", "user": "bob"})


def test_folder_sources_follow_the_ingest_path_rules(assistant, share, tmp_path):
    service = service_for(assistant)
    with pytest.raises(SourceError, match="server-folder ingest is off") as refused:  # web app, no roots set
        service.add("hr-share", "folder", collection="hr", options={"path": str(share)}, restricted=True)
    assert isinstance(refused.value.__cause__, IngestPathRefused)
    data = assistant.settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    with pytest.raises(SourceError, match="data dir"):  # never, not even from the console
        service.add("data", "folder", collection="hr", options={"path": str(data)})
    with pytest.raises(SourceError, match="does not exist"):
        service.add("gone", "folder", collection="hr", options={"path": str(tmp_path / "nowhere")})
    service.ingest_roots = [tmp_path]
    info = service.add("hr-share", "folder", collection="hr", options={"path": str(share)}, restricted=True)
    assert info.options["path"] == str(share.resolve())
    # A second source over the same files in the same collection would remove the first one's documents.
    (share / "sub").mkdir()
    with pytest.raises(SourceError, match="already syncs"):
        service.add("sub", "folder", collection="hr", options={"path": str(share / "sub")})
    with pytest.raises(SourceError, match="exists already"):
        service.add("hr-share", "folder", collection="other", options={"path": str(share)})
    service.add("sub", "folder", collection="other", options={"path": str(share / "sub")})
    with pytest.raises(SourceError, match="unknown source kind 'ftp'"):
        service.add("ftp", "ftp", collection="x", options={})


# --- the service -----------------------------------------------------------------------------------------
def test_add_sync_incrementally_and_remove(assistant, share):
    service = service_for(assistant)
    added = service.add(
        "hr-share",
        "folder",
        collection="hr",
        groups=["staff", " all "],
        schedule="every 30m",
        options={"path": str(share), **FOLDER},
    )
    assert added.groups == ["all", "staff"] and added.last_run is None and added.failures == 0
    assert added.next_due_at is not None and added.next_due_at <= datetime.now(UTC)
    assert service.due() == ["hr-share"]

    first = service.sync("hr-share")
    assert (first.status, first.files_new, first.files_failed) == ("completed", 2, 0)
    assert first.duration_s > 0 and first.finished_at >= first.started_at
    assert _names(assistant) == ["it.md", "travel.md"]
    assert all(d.groups == ["all", "staff"] for d in assistant.documents("hr"))
    hits = assistant.search("Which class do employees fly?", user=None)
    assert Path(hits[0].path).name == "travel.md"
    info = service.get("hr-share")
    assert info.last_run == first and service.due() == []
    assert _near(info.next_due_at, first.finished_at + timedelta(minutes=30))

    # Second sync: one file changed, one new, one deleted; the unchanged rest is not read again.
    (share / "travel.md").write_text(FILES["travel.md"] + "\nTrains are booked in second class.\n")
    (share / "parking.md").write_text("# Parking\n\nThe garage opens at seven.\n")
    (share / "it.md").unlink()
    second = service.sync("hr-share")
    assert (second.files_new, second.files_updated, second.files_unchanged, second.files_removed) == (
        1,
        1,
        0,
        1,
    )
    assert _names(assistant) == ["parking.md", "travel.md"]
    third = service.sync("hr-share")
    assert (third.files_new, third.files_updated, third.files_unchanged, third.files_removed) == (0, 0, 2, 0)
    assert [r.files_new for r in service.runs("hr-share")] == [0, 1, 2]  # newest first

    assert service.remove("hr-share") == 0  # documents stay, as ordinary documents
    assert service.list() == [] and _names(assistant) == ["parking.md", "travel.md"]
    with Session(assistant.engine) as session:
        assert session.scalar(select(SourceRun.id)) is None
    service.add(
        "hr-share", "folder", collection="hr", options={"path": str(share), **FOLDER}, schedule="manual"
    )
    assert service.remove("hr-share", delete_documents=True) == 2
    assert assistant.documents("hr") == []
    with pytest.raises(SourceError, match="no source named 'hr-share'"):
        service.sync("hr-share")


def test_a_failed_sync_is_recorded_backs_off_and_keeps_the_documents(assistant, share):
    service = service_for(assistant)
    service.add(
        "hr-share", "folder", collection="hr", schedule="every 30m", options={"path": str(share), **FOLDER}
    )
    service.sync("hr-share")
    with Session(assistant.engine) as session:
        session.execute(update(Source).values(cursor="kept-cursor"))
        session.commit()
    shutil.rmtree(share)  # the share is gone (unmounted, deleted)

    with pytest.raises(SyncFailed) as caught:
        service.sync("hr-share")
    run = caught.value.run
    assert isinstance(caught.value.__cause__, SourceUnavailable)
    assert run.status == "failed" and "does not exist" in run.error and run.files_removed == 0
    info = service.get("hr-share")
    assert info.failures == 1 and info.last_run == run
    assert _near(info.next_due_at, run.finished_at + timedelta(hours=1))  # twice the interval
    assert _names(assistant) == ["it.md", "travel.md"]  # nothing removed
    assert service.due() == []

    with pytest.raises(SyncFailed):
        service.sync("hr-share")
    info = service.get("hr-share")
    assert info.failures == 2 and _near(info.next_due_at, info.last_run.finished_at + timedelta(hours=2))
    with Session(assistant.engine) as session:
        assert session.scalar(select(Source.cursor)) == "kept-cursor"  # only a successful sync moves it
        statuses = session.scalars(select(SourceRun.status).order_by(SourceRun.id)).all()
    assert statuses == ["completed", "failed", "failed"]
    assert _names(assistant) == ["it.md", "travel.md"]

    share.mkdir()  # back again: the next sync succeeds and the count starts over
    for name, body in FILES.items():
        (share / name).write_text(body)
    ok = service.sync("hr-share")
    assert ok.status == "completed" and ok.files_unchanged == 2
    info = service.get("hr-share")
    assert info.failures == 0 and _near(info.next_due_at, ok.finished_at + timedelta(minutes=30))


def test_a_held_lease_makes_a_sync_wait_and_an_expired_one_does_not(assistant, share):
    service = service_for(assistant)
    service.add(
        "hr-share", "folder", collection="hr", schedule="every 30m", options={"path": str(share), **FOLDER}
    )
    now = datetime.now(UTC)
    with Session(assistant.engine) as session:
        session.execute(
            update(Source).values(lease_owner="other-host:42", lease_until=now + timedelta(minutes=5))
        )
        session.commit()
    with pytest.raises(SourceBusy, match="other-host:42"):
        service.sync("hr-share")
    with pytest.raises(SourceBusy):
        service.remove("hr-share")
    assert service.get("hr-share").syncing_by == "other-host:42" and service.due() == []
    assert service.sync_if_due("hr-share") is None
    with Session(assistant.engine) as session:  # that process died: its lease lapses
        session.execute(update(Source).values(lease_until=now - timedelta(seconds=1)))
        session.commit()
    assert service.due() == ["hr-share"]
    assert service.sync("hr-share").files_new == 2
    info = service.get("hr-share")
    assert info.syncing_by is None
    with Session(assistant.engine) as session:
        assert session.execute(select(Source.lease_owner, Source.lease_until)).one() == (None, None)


def test_the_lease_is_renewed_while_a_long_sync_runs(assistant, share):
    slow_seconds, watched_seconds = 4.0, 1.8  # watched: three lease lengths, well inside the sync

    def slow(kind, options):
        return _Probe(make_connector(kind, options), delay_s=slow_seconds)

    service = service_for(assistant, lease_s=0.6, connectors=slow)  # a lease shorter than the sync
    other = service_for(assistant)
    service.add("hr-share", "folder", collection="hr", options={"path": str(share), **FOLDER})
    worker = threading.Thread(target=service.sync, args=("hr-share",))
    worker.start()
    try:
        time.sleep(0.3)
        deadline = time.monotonic() + watched_seconds
        while time.monotonic() < deadline:  # past its first length, the lease is still held
            with pytest.raises(SourceBusy):
                other.sync("hr-share")
            time.sleep(0.2)
    finally:
        worker.join(120)
    assert service.get("hr-share").last_run.status == "completed"


# --- the command line ------------------------------------------------------------------------------------
@pytest.fixture
def env(monkeypatch, tmp_path, database_url, embedder):
    monkeypatch.setenv("SPARQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPARQ_DATABASE_URL", database_url)
    import app.assistant as assistant_module  # the CLI builds its own Assistant: reuse the session's model

    monkeypatch.setattr(assistant_module.Assistant, "embedder", property(lambda self: embedder))
    return tmp_path


def _cli(*args: str, code: int = 0):
    result = runner.invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result


def test_cli_adds_lists_syncs_and_removes_a_source(env, share):
    out = _cli(
        "sources",
        "add",
        "hr-share",
        "--kind",
        "folder",
        "--path",
        str(share),
        "--collection",
        "hr",
        "--groups",
        "staff,all",
        "--schedule",
        "manual",
        "--option",
        "group_rule=none",
    ).stdout
    assert "added folder source 'hr-share' into collection 'hr'" in out and "sparq sources sync" in out
    listed = json.loads(_cli("sources", "list", "--json").stdout)
    assert [(s["name"], s["schedule"], s["last_run"], s["next_due_at"]) for s in listed] == [
        ("hr-share", "manual", None, None)
    ]
    assert listed[0]["options"] == {"path": str(share.resolve()), "group_rule": "none"}

    assert (
        "source hr-share: 2 new, 0 updated, 0 unchanged, 0 removed, 0 failed"
        in _cli("sources", "sync", "hr-share").stdout
    )
    assert "0 new, 0 updated, 2 unchanged" in _cli("sources", "sync", "--all").stdout
    docs = json.loads(_cli("documents", "--collection", "hr", "--json").stdout)
    assert len(docs) == 2 and all(d["groups"] == ["all", "staff"] for d in docs)
    text_list = _cli("sources", "list").stdout
    assert "hr-share" in text_list and "completed" in text_list and "2 unchanged" in text_list
    last = json.loads(_cli("sources", "list", "--json").stdout)[0]["last_run"]
    assert last["status"] == "completed" and last["files_unchanged"] == 2 and last["duration_s"] > 0

    shutil.rmtree(share)
    failed = _cli("sources", "sync", "hr-share", code=1)
    assert "sync failed" in failed.output and "does not exist" in failed.output
    text_list = _cli("sources", "list").stdout
    assert "error:" in text_list and "does not exist" in text_list and "1 failure(s) in a row" in text_list
    assert len(json.loads(_cli("documents", "--collection", "hr", "--json").stdout)) == 2  # kept

    _cli("sources", "disable", "hr-share")
    assert json.loads(_cli("sources", "list", "--json").stdout)[0]["enabled"] is False
    assert "its documents are kept" in _cli("sources", "remove", "hr-share").stdout
    assert json.loads(_cli("sources", "list", "--json").stdout) == []
    assert len(json.loads(_cli("documents", "--collection", "hr", "--json").stdout)) == 2


def test_cli_removes_a_source_with_its_documents_and_says_what_is_wrong(env, share):
    _cli(
        "sources",
        "add",
        "hr-share",
        "--kind",
        "folder",
        "--path",
        str(share),
        "-c",
        "hr",
        "--schedule",
        "manual",
    )
    _cli("sources", "sync", "hr-share")
    assert "2 documents deleted" in _cli("sources", "remove", "hr-share", "--delete-documents").stdout
    assert json.loads(_cli("documents", "--json").stdout) == []

    leaky = _cli(
        "sources",
        "add",
        "mail",
        "--kind",
        "imap",
        "--host",
        "127.0.0.1",
        "--user",
        "bob",
        "--option",
        "password=hunter2",
        "-c",
        "mail",
        code=2,
    )
    assert "password_env" in leaky.output and "hunter2" not in leaky.output
    assert "hunter2" not in _cli("sources", "list", "--json").stdout
    assert (
        "not understood"
        in _cli(
            "sources",
            "add",
            "x",
            "--kind",
            "folder",
            "--path",
            str(share),
            "-c",
            "hr",
            "--schedule",
            "hourly",
            code=2,
        ).output
    )
    assert "no source named 'nope'" in _cli("sources", "sync", "nope", code=2).output
    assert "NAME or --all" in _cli("sources", "sync", code=2).output
    assert "no sources yet" in _cli("sources", "list").stdout


# --- the scheduler ---------------------------------------------------------------------------------------
def test_the_scheduler_syncs_a_due_source_by_itself(assistant, share, tmp_path):
    service = service_for(assistant)
    service.add(
        "hr-share", "folder", collection="hr", schedule="every 30m", options={"path": str(share), **FOLDER}
    )
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "note.md").write_text("# Note\n\nOnly synced on request.\n")
    service.add(
        "by-hand", "folder", collection="notes", schedule="manual", options={"path": str(manual), **FOLDER}
    )
    seen: list = []
    schedule = SourceSchedule(
        service_for(assistant), poll_s=0.1, on_run=lambda name, run: seen.append((name, run))
    )
    schedule.start()
    try:
        deadline = time.monotonic() + 120
        while not seen and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a few more polls: nothing else is due
    finally:
        assert schedule.stop(timeout_s=60)
    assert not schedule.running
    assert [(name, run.status, run.files_new) for name, run in seen] == [("hr-share", "completed", 2)]
    assert _names(assistant) == ["it.md", "travel.md"]
    assert service.get("by-hand").last_run is None and assistant.documents("notes") == []
    info = service.get("hr-share")
    assert len(service.runs("hr-share")) == 1 and info.next_due_at > datetime.now(UTC) + timedelta(minutes=29)


def test_sparq_serve_runs_the_scheduler_and_stops_it_cleanly(assistant, share, tmp_path):
    service = service_for(assistant)
    service.add(
        "hr-share", "folder", collection="hr", schedule="every 1h", options={"path": str(share), **FOLDER}
    )
    port = _free_port()
    env = {
        **os.environ,
        "SPARQ_DATA_DIR": str(assistant.settings.data_dir),
        "SPARQ_DATABASE_URL": assistant.settings.resolved_database_url,
        "SPARQ_SOURCE_POLL_SECONDS": "0.2",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 180
            while service.get("hr-share").last_run is None:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, (
                    "sparq serve synced nothing in 180 s: " + log_path.read_text()
                )
                time.sleep(0.3)
        finally:
            stop_process(proc, 60)
    run = service.get("hr-share").last_run
    assert run.status == "completed" and run.files_new == 2 and run.runner.split(":")[1] == str(proc.pid)
    assert proc.returncode == 0 and "Traceback" not in log_path.read_text()
    assert service.get("hr-share").syncing_by is None
    assert _names(assistant) == ["it.md", "travel.md"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sources_and_their_runs_are_in_backups(assistant, share, tmp_path, embedder):
    from app.assistant import Assistant
    from app.config import Settings

    service = service_for(assistant)
    service.add(
        "hr-share",
        "folder",
        collection="hr",
        groups=["staff"],
        schedule="every 30m",
        options={"path": str(share), **FOLDER},
    )
    service.sync("hr-share")
    assistant.backup(tmp_path / "backup")
    other = Assistant(Settings(data_dir=tmp_path / "restored"))  # SQLite, whatever the first one is
    other._embedder = embedder
    try:
        other.restore(tmp_path / "backup")
        restored = service_for(other)
        info = restored.get("hr-share")
        assert (info.collection, info.groups, info.schedule, info.options["path"]) == (
            "hr",
            ["staff"],
            "every 30m",
            str(share.resolve()),
        )
        assert info.last_run is not None and info.last_run.files_new == 2
        assert restored.sync("hr-share").files_unchanged == 2
    finally:
        other.close()


class _Probe(Connector):
    """A real connector, watched: how many of its syncs are running at once (claim to release)."""

    kind = "folder"
    lock = threading.Lock()
    active = 0
    peak = 0

    def __init__(self, inner: Connector, delay_s: float = 0.0) -> None:
        self.inner, self.delay_s = inner, delay_s
        with _Probe.lock:
            _Probe.active += 1
            _Probe.peak = max(_Probe.peak, _Probe.active)

    @property
    def root_key(self) -> str:
        return self.inner.root_key

    def changes(self, cursor: str | None) -> ChangeSet:
        time.sleep(self.delay_s)  # a sync that takes a while: the window another scheduler could slip into
        return self.inner.changes(cursor)

    def close(self) -> None:
        with _Probe.lock:
            _Probe.active -= 1
        self.inner.close()


def test_two_schedulers_on_one_database_never_sync_one_source_at_once(assistant, settings, embedder, share):
    from app.assistant import Assistant

    service_for(assistant).add(
        "hr-share", "folder", collection="hr", schedule="every 30m", options={"path": str(share), **FOLDER}
    )
    _Probe.active = _Probe.peak = 0

    def probed(kind, options):
        return _Probe(make_connector(kind, options), delay_s=0.2)

    second = Assistant(settings)  # another process's view of the same database and data dir
    second._embedder = embedder
    schedulers = [SourceSchedule(service_for(a, connectors=probed), poll_s=0.02) for a in (assistant, second)]
    stop_forcing = threading.Event()

    def keep_it_due() -> None:  # as if every sync were late already: both schedulers always want it
        while not stop_forcing.is_set():
            with assistant.engine.begin() as conn:
                conn.execute(
                    text("UPDATE sources SET next_due_at = :t"),
                    {"t": datetime.now(UTC) - timedelta(seconds=1)},
                )
            time.sleep(0.02)

    forcer = threading.Thread(target=keep_it_due, daemon=True)
    try:
        for s in schedulers:
            s.start()
        forcer.start()
        deadline = time.monotonic() + 120
        while len(service_for(assistant).runs("hr-share")) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop_forcing.set()
        forcer.join(10)
        for s in schedulers:
            assert s.stop(timeout_s=60)
        second.close()
    runs = sorted(service_for(assistant).runs("hr-share", limit=100), key=lambda r: r.started_at)
    assert len(runs) >= 6 and all(r.status == "completed" for r in runs)
    assert _Probe.peak == 1 and _Probe.active == 0
    for before, after in zip(runs, runs[1:], strict=False):  # one after another, never overlapping
        assert after.started_at >= before.finished_at, (before, after)
    assert _names(assistant) == ["it.md", "travel.md"]


# --- the admin pages -------------------------------------------------------------------------------------
@pytest.fixture
def ui(assistant, monkeypatch):
    from app.ui.assistant_factory import use_assistant
    from app.ui.bootstrap import ensure_admin

    monkeypatch.setenv("SPARQ_ADMIN_PASSWORD", "admin-pass-123")
    ensure_admin(assistant.users, assistant.settings.data_dir, announce=lambda _text: None)
    use_assistant(assistant)
    yield assistant
    use_assistant(None)


def test_ingest_page_adds_a_source_and_syncs_it_now(ui, share):
    from app.ui.format import literal_markdown
    from app.ui.views.ingest import NEW_COLLECTION, SYNCED_SOURCE
    from tests.ui.conftest import page

    ui.settings.ingest_roots = [share.parent]
    at = page("ingest", "admin").run()
    at.selectbox(key="ingest_collection_choice").set_value(NEW_COLLECTION).run()
    at.text_input(key="ingest_collection_new").input("hr")
    at.text_input(key="ingest_groups").input("staff")
    at.radio(key="ingest_source").set_value(SYNCED_SOURCE).run()
    at.text_input(key="source_name").input("hr-share")
    at.text_input(key="source_schedule").input("every 2h")
    at.text_input(key="source_path").input(str(share))
    at.selectbox(key="source_group_rule").set_value("none").run()
    at.button(key="source_add").click().run()
    assert not at.exception, at.exception
    assert "Added source" in at.success[0].value and "every 2h" in at.success[0].value
    info = service_for(ui).get("hr-share")
    assert (info.collection, info.groups, info.schedule) == ("hr", ["staff"], "every 2h")

    at.selectbox(key="source_sync_name").set_value("hr-share")
    at.button(key="source_sync_go").click().run()
    assert not at.exception, at.exception
    assert any("2 new" in s.value for s in at.success)
    assert _names(ui) == ["it.md", "travel.md"] and all(d.groups == ["staff"] for d in ui.documents("hr"))

    # A mailbox whose password would come from sparq's own secrets is refused, with the rule.
    at.selectbox(key="source_kind").set_value("imap").run()
    at.text_input(key="source_name").input("mail")
    at.text_input(key="source_host").input("127.0.0.1")
    at.text_input(key="source_user").input("bob")
    at.text_input(key="source_password_env").input("SPARQ_DATABASE_URL").run()
    at.button(key="source_add").click().run()
    assert not at.exception, at.exception
    assert any(literal_markdown("SPARQ_SOURCE_") in e.value for e in at.error)
    assert [s.name for s in service_for(ui).list()] == ["hr-share"]
    assert any("SPARQ_SOURCE_HOSTS" in i.value for i in at.info)  # and mailboxes are off without it

    # With the host listed and a SPARQ_SOURCE_* variable, the mailbox is added (not synced: no server here).
    ui.settings.source_hosts = "127.0.0.1"
    at.text_input(key="source_password_env").input("SPARQ_SOURCE_MAIL").run()
    at.button(key="source_add").click().run()
    assert not at.exception, at.exception
    assert not any("SPARQ_SOURCE_HOSTS" in i.value for i in at.info)
    mail = service_for(ui).get("mail")
    assert (mail.options["host"], mail.options["added_from"]) == ("127.0.0.1", "web")


def test_documents_page_lists_sources_with_their_last_run_and_error(ui, share):
    from app.ui.format import literal_markdown
    from tests.ui.conftest import page

    service = service_for(ui)
    service.add(
        "hr-share", "folder", collection="hr", schedule="every 30m", options={"path": str(share), **FOLDER}
    )
    service.sync("hr-share")
    shutil.rmtree(share)
    with pytest.raises(SyncFailed):
        service.sync("hr-share")
    at = page("documents", "admin").run()
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    row = table[table["source"] == "hr-share"].iloc[0]
    assert row["status"] == "failed" and "does not exist" in row["last error"] and row["failures"] == 1
    assert row["schedule"] == "every 30m" and row["duration_s"] >= 0 and row["next due"] is not None
    assert any(literal_markdown("hr-share") in w.value for w in at.warning)


def _running_schedulers() -> list[SourceSchedule]:
    return [o for o in gc.get_objects() if type(o) is SourceSchedule and o.running]


def test_the_web_app_server_runs_a_scheduler_only_when_sparq_ui_started_it(ui, share, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from app.source_schedule import UI_SCHEDULE_ENV

    service = service_for(ui)
    service.add(
        "hr-share", "folder", collection="hr", schedule="every 1h", options={"path": str(share), **FOLDER}
    )
    ui.settings.source_poll_seconds = 0.2
    entry = str(ROOT / "app" / "ui" / "main.py")
    st.cache_resource.clear()
    before = set(map(id, _running_schedulers()))
    try:
        monkeypatch.delenv(UI_SCHEDULE_ENV, raising=False)
        assert not AppTest.from_file(entry, default_timeout=120).run().exception  # the pages, run elsewhere
        time.sleep(1.0)
        assert service.get("hr-share").last_run is None
        monkeypatch.setenv(UI_SCHEDULE_ENV, "1")  # what `sparq ui` hands the Streamlit server it starts
        st.cache_resource.clear()
        at = AppTest.from_file(entry, default_timeout=120).run()
        assert not at.exception, at.exception
        deadline = time.monotonic() + 120
        while service.get("hr-share").last_run is None and time.monotonic() < deadline:
            time.sleep(0.2)
        run = service.get("hr-share").last_run
        assert run is not None and run.status == "completed" and run.files_new == 2
        assert len([s for s in _running_schedulers() if id(s) not in before]) == 1
    finally:
        for schedule in _running_schedulers():
            if id(schedule) not in before:
                assert schedule.stop(timeout_s=60)
        st.cache_resource.clear()


# --- review fixes: a moved folder, failed documents, the lock, browser hosts, markup, manual ingest ---------
def test_a_folder_replaced_by_a_symbolic_link_is_refused_not_followed(assistant, share, tmp_path):
    service = service_for(assistant)
    service.add("hr-share", "folder", collection="hr", options={"path": str(share), **FOLDER})
    assert service.sync("hr-share").files_new == 2
    stored = str(share.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "salaries.md").write_text("# Salaries\n\nThe board's salaries, not for the staff.\n")
    share.rename(tmp_path / "share-old")
    share.symlink_to(elsewhere, target_is_directory=True)  # the configured path now leads somewhere else

    with pytest.raises(SyncFailed) as caught:
        service.sync("hr-share")
    run = caught.value.run
    assert run.status == "failed" and str(elsewhere.resolve()) in run.error and stored in run.error
    assert (run.files_new, run.files_removed) == (0, 0)
    assert _names(assistant) == ["it.md", "travel.md"]  # nothing of the other folder read, nothing removed
    assert service.get("hr-share").failures == 1


def test_a_folder_added_from_the_web_app_is_checked_against_the_ingest_roots_at_each_sync(assistant, share):
    service = service_for(assistant)
    service.ingest_roots = [share.parent]
    with pytest.raises(SourceError, match="sparq's own"):  # nobody can pass the mark off as their own option
        service.add("x", "folder", collection="hr", options={"path": str(share), "added_from": "console"})
    service.add(
        "hr-share", "folder", collection="hr", options={"path": str(share), **FOLDER}, restricted=True
    )
    assert service.sync("hr-share").files_new == 2
    service.ingest_roots = [share.parent / "elsewhere"]  # the operator narrowed SPARQ_INGEST_ROOTS since
    with pytest.raises(SyncFailed, match="added from the web app.*outside the folders") as caught:
        service.sync("hr-share")
    assert caught.value.run.files_new == 0 and _names(assistant) == ["it.md", "travel.md"]


class _Pages(Connector):
    """Documents held in memory, with a cursor as IMAP's and the web's: once a sync returns it, the documents
    seen by then are not offered again. `broken`: keys whose fetch fails (for now)."""

    kind = "web"
    root_key = "memory://pages"

    def __init__(self, pages: dict[str, str], broken: set[str]) -> None:
        self.pages, self.broken = pages, broken
        self.asked: list[str | None] = []

    def _fetch(self, key: str) -> bytes:
        if key in self.broken:
            raise OSError(f"{key}: connection reset while fetching")
        return self.pages[key].encode()

    def changes(self, cursor: str | None) -> ChangeSet:
        self.asked.append(cursor)
        keys = sorted(self.pages)
        offered = [] if cursor == "seen-all" else keys
        documents = [
            RemoteDocument(k, len(self.pages[k]), 0.0, ".md", lambda k=k: self._fetch(k)) for k in offered
        ]
        return ChangeSet(documents, set(keys), cursor="seen-all")


def test_a_document_that_failed_is_offered_again_by_keeping_the_cursor(assistant):
    pages = {
        "memory://pages/a.md": "# Holidays\n\nThe office closes between Christmas and New Year.\n",
        "memory://pages/b.md": "# Canteen\n\nThe canteen serves lunch from noon to two.\n",
    }
    connector = _Pages(pages, broken={"memory://pages/b.md"})
    service = service_for(assistant, connectors=lambda kind, options: connector)
    service.add("pages", "web", collection="web", options={"start_url": "http://127.0.0.1:9/"})

    first = service.sync("pages")
    assert (first.files_new, first.files_failed) == (1, 1)
    assert any("cursor kept" in n for n in first.notes), first.notes
    with Session(assistant.engine) as session:
        assert session.scalar(select(Source.cursor)) is None  # not past the page that failed

    connector.broken.clear()  # the server answers again
    second = service.sync("pages")
    # b.md read again (the store kept its failed attempt: "updated"), a.md skipped by its digest.
    assert (second.files_new + second.files_updated, second.files_unchanged, second.files_failed) == (1, 1, 0)
    assert connector.asked == [None, None]
    hits = assistant.search("When does the canteen serve lunch?", user=None)
    assert hits and hits[0].path == "memory://pages/b.md"
    with Session(assistant.engine) as session:
        assert session.scalar(select(Source.cursor)) == "seen-all"  # all loaded: now it moves
    assert not any("cursor kept" in n for n in second.notes)


class _Stalled(Connector):
    """A source whose listing hangs (a slow web site, a mailbox server that does not answer)."""

    kind = "folder"

    def __init__(self, inner: Connector, entered: threading.Event, release: threading.Event) -> None:
        self.inner, self.entered, self.release = inner, entered, release

    @property
    def root_key(self) -> str:
        return self.inner.root_key

    def changes(self, cursor: str | None) -> ChangeSet:
        self.entered.set()
        assert self.release.wait(120), "the test never released the listing"
        return self.inner.changes(cursor)

    def close(self) -> None:
        self.inner.close()


def test_a_stalled_source_listing_does_not_hold_the_ingest_lock(assistant, share, tmp_path):
    entered, release = threading.Event(), threading.Event()
    service = service_for(assistant)
    service.add("hr-share", "folder", collection="hr", options={"path": str(share), **FOLDER})
    service = service_for(
        assistant, connectors=lambda kind, options: _Stalled(make_connector(kind, options), entered, release)
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "fire.md").write_text("# Fire drill\n\nThe assembly point is the north car park.\n")
    syncing = threading.Thread(target=service.sync, args=("hr-share",))
    syncing.start()
    done: dict[str, object] = {}
    manual: threading.Thread | None = None
    try:
        assert entered.wait(30)
        manual = threading.Thread(
            target=lambda: done.setdefault("summary", assistant.ingest(other, collection="misc"))
        )
        manual.start()
        manual.join(60)
        assert not manual.is_alive(), "a manual ingest waited for a source's listing"
    finally:
        release.set()
        syncing.join(120)
        if manual is not None:
            manual.join(120)
    assert done["summary"].files_new == 1
    assert service.get("hr-share").last_run.files_new == 2


def test_the_web_app_may_add_web_sites_and_mailboxes_only_on_listed_hosts(assistant):
    imap = {"host": "mail.example.com", "user": "bob", "password_env": "SPARQ_SOURCE_MAIL"}
    service = service_for(assistant)
    with pytest.raises(
        SourceError, match="SPARQ_SOURCE_HOSTS"
    ):  # unset: no web or IMAP source from a browser
        service.add(
            "meta", "web", collection="w", options={"start_url": "http://169.254.169.254/"}, restricted=True
        )
    with pytest.raises(SourceError, match="SPARQ_SOURCE_HOSTS"):
        service.add("mail", "imap", collection="m", options=imap, restricted=True)

    assistant.settings.source_hosts = "Intranet.Example.com, mail.example.com"
    service = service_for(assistant)
    with pytest.raises(SourceError, match=r"host 169\.254\.169\.254 is not among.*intranet\.example\.com"):
        service.add(
            "meta", "web", collection="w", options={"start_url": "http://169.254.169.254/"}, restricted=True
        )
    with pytest.raises(SourceError, match="host attacker.example is not among"):
        service.add(
            "evil", "imap", collection="m", options={**imap, "host": "attacker.example"}, restricted=True
        )
    site = service.add(
        "intranet",
        "web",
        collection="w",
        options={"start_url": "https://intranet.example.com/"},
        restricted=True,
    )
    mail = service.add("mail", "imap", collection="m", options=imap, restricted=True)
    assert (site.kind, mail.options["host"]) == ("web", "mail.example.com")
    # The operator's console may name any host.
    service.add("console", "imap", collection="c", options={**imap, "host": "other.example"})
    assert [s.name for s in service.list()] == ["console", "intranet", "mail"]


def test_the_progress_line_shows_a_file_name_literally():
    from app.ui.format import literal_markdown
    from app.ui.views.ingest import progress_text
    from ingestion.pipeline import FileEvent

    name = "report ![x](https:evil.example) **urgent** :red[now].md"
    line = progress_text(1, 2, FileEvent(f"/srv/share/{name}", "new", 1, 2))
    assert line == f"1/2 · {literal_markdown(name)}: new"
    assert "](" not in line and "**" not in line and ":red[" not in line


def test_a_manual_ingest_of_a_source_folder_into_its_collection_is_refused(assistant, share, tmp_path):
    from sqlalchemy.orm import sessionmaker

    from app.sources import refuse_synced_path

    service = service_for(assistant)
    service.add("hr-share", "folder", collection="hr", options={"path": str(share), **FOLDER})
    sessions = sessionmaker(assistant.engine)
    for path in (share / "it.md", share, tmp_path):  # a file in it, the folder itself, a folder holding it
        with pytest.raises(SourceError, match=r"synced by source 'hr-share'.*sparq sources sync hr-share"):
            refuse_synced_path(sessions, path, "hr")
    refuse_synced_path(sessions, share, "other")  # another collection: its own documents
    (tmp_path / "elsewhere").mkdir()
    refuse_synced_path(sessions, tmp_path / "elsewhere", "hr")

    # Assistant.ingest (`sparq ingest`, the web app's server-folder form) refuses it before touching anything.
    service.sync("hr-share")
    with pytest.raises(SourceError, match=r"synced by source 'hr-share'.*sparq sources sync hr-share"):
        assistant.ingest(share, collection="hr", groups=["everyone"])
    assert all(d.groups == [] for d in assistant.documents("hr"))  # the source's readers, not "everyone"
    assert assistant.ingest(share, collection="other", groups=["everyone"]).files_new == 2


def test_sparq_ingest_of_a_source_folder_into_its_collection_says_which_source_to_sync(env, share):
    _cli("sources", "add", "hr-share", "--kind", "folder", "--path", str(share), "--collection", "hr")
    out = _cli("ingest", str(share / "it.md"), "--collection", "hr", code=1)  # main() prints it, exit 2
    assert isinstance(out.exception, SourceError)
    assert "synced by source 'hr-share'" in str(out.exception) and "sparq sources sync hr-share" in str(
        out.exception
    )
    assert "new" in _cli("ingest", str(share), "--collection", "other").output


def test_a_ca_file_named_from_the_web_app_must_lie_inside_the_ingest_roots(assistant, tmp_path):
    """A CA bundle is a server file like a password file: from a browser, only inside SPARQ_INGEST_ROOTS."""
    assistant.settings.source_hosts = "intranet.example.com"
    outside = tmp_path / "elsewhere" / "ca.pem"
    outside.parent.mkdir()
    outside.write_text("not a certificate")
    options = {"start_url": "https://intranet.example.com/", "ca_file": str(outside)}
    service = service_for(assistant)
    with pytest.raises(SourceError, match="ca_file"):
        service.add("intranet", "web", collection="w", options=options, restricted=True)
    roots = tmp_path / "roots"
    roots.mkdir()
    service.ingest_roots = [roots]
    with pytest.raises(SourceError, match="ca_file"):
        service.add("intranet", "web", collection="w", options=options, restricted=True)
    inside = roots / "ca.pem"
    inside.write_text("not a certificate either")
    info = service.add(
        "intranet", "web", collection="w", options={**options, "ca_file": str(inside)}, restricted=True
    )
    assert info.options["ca_file"] == str(inside.resolve())
    service.add("console", "web", collection="c", options=options)  # the operator's console may name any file
