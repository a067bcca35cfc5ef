"""The IMAP connector against a real Dovecot on 127.0.0.1: messages (and their attachments) listed and read
without being marked seen, incremental syncs by UIDVALIDITY/UID, deletions, a renumbered mailbox, failures
that name the server and the step but never the password, and TLS checked against the test's own CA. Last,
a mailbox synced end to end into a real store and found by search."""

from __future__ import annotations

import imaplib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingestion.connectors import imap as imap_module
from ingestion.connectors.base import (
    ChangeSet,
    RemoteDocument,
    SourceConfigError,
    SourceUnavailable,
    is_under,
)
from ingestion.connectors.imap import ImapConnector, internaldate_epoch, mailbox_name
from ingestion.connectors.registry import make_connector
from ingestion.loaders import LoadedDocument, load_file
from tests.ingestion.imap_server import PASSWORD, USER, UTF8_PASSWORD, UTF8_USER, ImapServer, run_dovecot
from tests.ingestion.mail_messages import DOCX_TYPE, PDF_TYPE, docx_bytes, message, text_pdf

ENV = "SPARQ_TEST_IMAP_PASSWORD"
ARCHIVE = "Projects Archive"
RECEIVED = datetime(2024, 3, 1, 9, 30, tzinfo=UTC).timestamp()

HARBOUR = "The harbour dredging starts on the ninth of April."
PELICANS = "Pelican counts rose by a third this spring"
OTTERS = "The otter bridge was approved by the committee."
LENTILS = "The canteen serves lentil soup on Thursdays."
REUNION = "La réunion est déplacée au vendredi."
LIGHTHOUSE = "The archived plan mentions a lighthouse keeper named Ottoline."


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ImapServer]:
    yield from run_dovecot(tmp_path / "dovecot")


@pytest.fixture
def mailbox(server: ImapServer, monkeypatch: pytest.MonkeyPatch) -> ImapServer:
    """Three messages in INBOX (one with a PDF and a DOCX attached), one in a second mailbox."""
    monkeypatch.setenv(ENV, PASSWORD)
    report = message(
        "Harbour report",
        HARBOUR,
        attachments=[
            ("survey.pdf", PDF_TYPE, text_pdf(["Survey cover page", PELICANS])),
            ("minutes.docx", DOCX_TYPE, docx_bytes("Minutes", [OTTERS])),
        ],
    )
    server.deliver(report, received=RECEIVED)
    server.deliver(message("Lunch", LENTILS), received=RECEIVED + 60)
    server.deliver(message("Réunion d'équipe", REUNION), received=RECEIVED + 120)
    server.deliver(message("Archived plan", LIGHTHOUSE), folder=ARCHIVE, received=RECEIVED + 180)
    return server


def connector(server: ImapServer, **options: object) -> ImapConnector:
    settings: dict[str, object] = {
        "host": server.host,
        "port": server.imaps_port,
        "user": USER,
        "password_env": ENV,
        "ca_file": str(server.ca_file),
        "mailboxes": ["INBOX", ARCHIVE],
    }
    settings.update(options)
    made = make_connector("imap", settings)  # as a stored source is built
    assert isinstance(made, ImapConnector)
    return made


def load(doc: RemoteDocument, tmp_path: Path) -> LoadedDocument:
    path = tmp_path / f"fetched-{doc.key.rsplit('/', 1)[-1]}{doc.extension}"
    path.write_bytes(doc.fetch())
    return load_file(path)


def by_title(changes: ChangeSet) -> dict[str | None, RemoteDocument]:
    return {d.title: d for d in changes.documents}


def flags(server: ImapServer, box: str = "INBOX") -> list[bytes]:
    client = server.client()
    try:
        client.select(mailbox_name(box), readonly=True)
        _, data = client.uid("FETCH", "1:*", "(FLAGS)")
        return [d for d in data if isinstance(d, bytes)]
    finally:
        client.logout()


def uidvalidity(server: ImapServer, box: str) -> int:
    client = server.client()
    try:
        client.select(mailbox_name(box), readonly=True)
        return int(client.response("UIDVALIDITY")[1][-1])
    finally:
        client.logout()


# --- listing and reading ---------------------------------------------------------------------------------
def test_a_first_sync_lists_every_message_and_reads_it_with_its_attachments(
    mailbox: ImapServer, tmp_path: Path
) -> None:
    imap = connector(mailbox)
    try:
        changes = imap.changes(None)
        inbox, archive = uidvalidity(mailbox, "INBOX"), uidvalidity(mailbox, ARCHIVE)
        root = f"imap://{USER}@127.0.0.1:{mailbox.imaps_port}/"
        assert imap.root_key == root
        assert changes.present == {
            f"{root}INBOX/{inbox}/1",
            f"{root}INBOX/{inbox}/2",
            f"{root}INBOX/{inbox}/3",
            f"{root}Projects%20Archive/{archive}/1",
        }
        assert {d.key for d in changes.documents} == changes.present
        assert all(is_under(k, imap.root_key) for k in changes.present)
        assert changes.notes == [] and changes.unlisted == []

        docs = by_title(changes)
        assert set(docs) == {"Harbour report", "Lunch", "Réunion d'équipe", "Archived plan"}
        for doc, received in zip(
            [docs["Harbour report"], docs["Lunch"], docs["Réunion d'équipe"], docs["Archived plan"]],
            [RECEIVED, RECEIVED + 60, RECEIVED + 120, RECEIVED + 180],
            strict=True,
        ):
            raw = doc.fetch()
            assert doc.extension == ".eml" and doc.groups is None and doc.path is None
            assert doc.size == len(raw)  # RFC822.SIZE: the message as the server sends it
            assert doc.mtime == received  # INTERNALDATE
            assert raw.startswith(b"From: ") or b"\r\nSubject: " in raw

        report = load(docs["Harbour report"], tmp_path)
        assert HARBOUR in report.text
        assert [(s.page, s.text) for s in report.sections if s.heading_path[:1] == ("survey.pdf",)][1] == (
            2,
            PELICANS,
        )
        assert OTTERS in [s.text for s in report.sections if s.heading_path[:1] == ("minutes.docx",)]
        assert REUNION in load(docs["Réunion d'équipe"], tmp_path).text
        assert LIGHTHOUSE in load(docs["Archived plan"], tmp_path).text

        cursor = json.loads(changes.cursor or "")
        assert cursor["mailboxes"] == {
            "INBOX": {"uidvalidity": inbox, "last_uid": 3},
            ARCHIVE: {"uidvalidity": archive, "last_uid": 1},
        }
    finally:
        imap.close()
    # Read-only: listing and fetching every message left all of them unseen.
    assert len(flags(mailbox)) == 3 and not any(b"\\Seen" in f for f in flags(mailbox))
    assert not any(b"\\Seen" in f for f in flags(mailbox, ARCHIVE))


def test_later_syncs_read_only_what_arrived_and_drop_what_was_deleted(mailbox: ImapServer) -> None:
    imap = connector(mailbox)
    first = imap.changes(None)

    again = imap.changes(first.cursor)
    assert again.documents == [] and again.present == first.present

    client = mailbox.client()
    appended = message("Late news", "The ferry timetable changes in May.").as_bytes()
    assert client.append("INBOX", None, imaplib.Time2Internaldate(RECEIVED + 600), appended)[0] == "OK"
    after_append = imap.changes(again.cursor)
    [new] = after_append.documents
    inbox = uidvalidity(mailbox, "INBOX")
    assert new.key == f"{imap.root_key}INBOX/{inbox}/4" and new.title == "Late news"
    assert new.mtime == RECEIVED + 600 and b"ferry timetable" in new.fetch()
    assert after_append.present == first.present | {new.key}

    lunch = by_title(first)["Lunch"].key
    client.select("INBOX")
    client.uid("STORE", lunch.rsplit("/", 1)[-1], "+FLAGS", "(\\Deleted)")
    client.expunge()
    client.logout()
    after_delete = imap.changes(after_append.cursor)
    assert after_delete.documents == []
    assert after_delete.present == after_append.present - {lunch}
    imap.close()


def test_a_large_mailbox_is_listed_in_uid_windows(
    mailbox: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = connector(mailbox)
    whole = plain.changes(None).present
    plain.close()
    # One SEARCH ALL of ~100,000 UIDs would pass imaplib's 1 MB line limit: windows of UIDs instead.
    monkeypatch.setattr(imap_module, "SEARCH_WINDOW", 1)
    imap = connector(mailbox)
    assert imap.changes(None).present == whole and len(whole) == 4
    imap.close()


def test_a_renumbered_mailbox_is_read_again_under_new_keys(mailbox: ImapServer) -> None:
    imap = connector(mailbox)
    first = imap.changes(None)
    old_archive = by_title(first)["Archived plan"].key

    client = mailbox.client()  # recreated: the server gives the mailbox a new UIDVALIDITY
    assert client.delete(mailbox_name(ARCHIVE))[0] == "OK"
    assert client.create(mailbox_name(ARCHIVE))[0] == "OK"
    client.append(mailbox_name(ARCHIVE), None, None, message("Archived plan", LIGHTHOUSE).as_bytes())
    client.logout()
    changes = imap.changes(first.cursor)
    imap.close()

    renumbered = uidvalidity(mailbox, ARCHIVE)
    [doc] = changes.documents
    assert doc.key == f"{imap.root_key}Projects%20Archive/{renumbered}/1" != old_archive
    assert old_archive not in changes.present and doc.key in changes.present
    assert [n for n in changes.notes if "UIDVALIDITY changed" in n and ARCHIVE in n]


def test_a_mailbox_that_cannot_be_opened_is_kept_and_noted(mailbox: ImapServer) -> None:
    imap = connector(mailbox, mailboxes=["INBOX", "No Such Box"])
    changes = imap.changes(None)
    assert len(changes.documents) == 3
    assert changes.unlisted == [f"{imap.root_key}No%20Such%20Box"]
    assert re.search(r"open mailbox 'No Such Box' failed: .*exist", changes.notes[0])

    imap.close()
    wrong = connector(mailbox, mailboxes=["No Such Box"])
    with pytest.raises(SourceUnavailable, match=r"open mailbox 'No Such Box' failed"):
        wrong.changes(None)  # nothing readable at all: a wrong setting, not a sync
    wrong.close()


# --- passwords and failures ------------------------------------------------------------------------------
def test_a_wrong_password_names_server_and_step_but_not_the_password(
    mailbox: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "wrong-pw-5521-secret"
    monkeypatch.setenv(ENV, wrong)
    imap = connector(mailbox)
    with pytest.raises(SourceUnavailable) as caught:
        imap.changes(None)
    message_text = str(caught.value)
    assert f"127.0.0.1:{mailbox.imaps_port}" in message_text and "login failed" in message_text
    assert "AUTHENTICATIONFAILED" in message_text
    assert wrong not in message_text and wrong not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert wrong not in repr(imap) and all(wrong not in repr(v) for v in vars(imap).values())


def test_a_password_from_a_file_and_a_utf8_password(
    server: ImapServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "imap-password"
    secret.write_text(PASSWORD + "\n")
    imap = connector(server, password_env=None, password_file=str(secret), mailboxes=["INBOX"])
    assert imap.changes(None).present == set()
    assert PASSWORD not in repr(imap) and str(secret) in repr(imap)
    imap.close()

    missing = connector(server, password_env=None, password_file=str(tmp_path / "absent"))
    with pytest.raises(SourceUnavailable, match=r"cannot read the password file .*absent"):
        missing.changes(None)

    monkeypatch.setenv(ENV, UTF8_PASSWORD)  # LOGIN carries ASCII only: sent by AUTHENTICATE PLAIN
    utf8 = connector(server, user=UTF8_USER, mailboxes=["INBOX"])
    assert utf8.changes(None).present == set()
    utf8.close()

    monkeypatch.delenv(ENV)
    with pytest.raises(SourceUnavailable, match=f"environment variable {ENV} is not set"):
        connector(server).changes(None)


def test_a_stopped_server_is_unavailable_for_listing_and_reading(mailbox: ImapServer) -> None:
    imap = connector(mailbox)
    changes = imap.changes(None)
    mailbox.stop()

    with pytest.raises(SourceUnavailable, match=r"connect failed: .*refused") as caught:
        imap.changes(changes.cursor)
    assert PASSWORD not in str(caught.value)
    with pytest.raises(SourceUnavailable, match=rf"127\.0\.0\.1:{mailbox.imaps_port} .*connect failed"):
        changes.documents[0].fetch()  # the pipeline reads after the listing: the server is gone by then
    imap.close()


# --- TLS -------------------------------------------------------------------------------------------------
def test_tls_is_checked_against_the_ca_file(mailbox: ImapServer) -> None:
    for tls, port in (("ssl", mailbox.imaps_port), ("starttls", mailbox.imap_port)):
        imap = connector(mailbox, tls=tls, port=port)
        assert len(imap.changes(None).documents) == 4, tls
        imap.close()

        unchecked = connector(mailbox, tls=tls, port=port, ca_file=None)  # the system's CAs only
        with pytest.raises(SourceUnavailable) as caught:
            unchecked.changes(None)
        text = str(caught.value)
        assert f"127.0.0.1:{port}" in text and "certificate verify failed" in text, text
        assert ("STARTTLS handshake failed" if tls == "starttls" else "TLS handshake failed") in text
        assert "set ca_file" in text

    plain = connector(mailbox, tls="none", port=mailbox.imap_port, ca_file=None)  # loopback only
    assert len(plain.changes(None).documents) == 4
    plain.close()


# --- settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"host": ""}, "a host is required"),
        ({"host": "imaps://mail.example.org"}, "no scheme"),
        ({"user": " "}, "a user is required"),
        ({"port": 0}, "port must be a number from 1 to 65535"),
        ({"port": "993"}, "port must be a number"),
        ({"tls": "yes"}, "tls must be one of ssl, starttls, none"),
        ({"password_env": None}, "set exactly one of password_env"),
        ({"password_file": "/run/secrets/imap"}, "set exactly one of password_env"),
        ({"password_env": "hunter2 is my password"}, "must be an environment variable name"),
        ({"password_env": None, "password_file": "secrets/imap"}, "must be an absolute path"),
        ({"mailboxes": "INBOX"}, "mailboxes must be a non-empty list"),
        ({"mailboxes": []}, "mailboxes must be a non-empty list"),
        ({"mailboxes": ["INBOX", "INBOX"]}, "listed twice"),
        ({"mailboxes": ["bad\r\nname"]}, "control character"),
        ({"tls": "none", "ca_file": "/etc/ssl/ca.pem"}, 'tls is "none"'),
        ({"timeout_s": 0}, "timeout_s must be a positive number"),
        ({"password": "hunter2"}, "unexpected keyword argument 'password'"),
    ],
)
def test_settings_are_checked_when_the_source_is_added(options: dict[str, object], error: str) -> None:
    settings: dict[str, object] = {"host": "mail.example.org", "user": "alice", "password_env": ENV}
    settings.update(options)
    with pytest.raises(SourceConfigError, match=re.escape(error)):
        make_connector("imap", settings)


def test_defaults_keys_and_names() -> None:
    imap = ImapConnector(host="Mail.Example.org", user="alice@example.org", password_env=ENV)
    assert (imap.port, imap.tls, imap.mailboxes) == (993, "ssl", ["INBOX"])
    assert imap.root_key == "imap://alice%40example.org@mail.example.org:993/"
    assert imap.key("Sent/2024", 7, 42) == "imap://alice%40example.org@mail.example.org:993/Sent%2F2024/7/42"
    assert (
        ImapConnector(host="::1", user="a", password_env=ENV, tls="starttls").root_key
        == "imap://a@[::1]:143/"
    )
    assert mailbox_name("Büro & Co") == '"B&APw-ro &- Co"'  # modified UTF-7 (RFC 3501)
    assert internaldate_epoch(" 1-Mar-2024 10:30:00 +0100") == RECEIVED
    assert internaldate_epoch("not a date") == 0.0


# --- end to end ------------------------------------------------------------------------------------------
def test_a_mailbox_synced_into_the_store_is_found_by_search_and_forgets_deleted_mail(
    mailbox: ImapServer,
    store,
    embedder,
) -> None:
    from ingestion.pipeline import IngestPipeline
    from ingestion.source_sync import sync_source
    from retrieval.access import Principal
    from retrieval.search import HybridSearcher

    pipeline = IngestPipeline(store, embedder)
    searcher = HybridSearcher(store, lambda q: embedder.encode_query(q, threads=1))
    imap = connector(mailbox)
    try:
        first = sync_source(imap, pipeline, collection="mail", groups=["staff"], cursor=None)
        assert first.summary.files_new == 4 and first.summary.files_failed == 0
        staff = Principal("erin", frozenset({"staff"}))

        hits = searcher.search("which day is lentil soup served in the canteen", principal=staff, k=3)
        assert hits[0].title == "Lunch" and LENTILS in hits[0].text
        hits = searcher.search("pelican counts this spring", principal=staff, k=3, mode="keyword")
        assert hits[0].title == "Harbour report" and hits[0].page == 2
        assert hits[0].heading_path is not None and "survey.pdf" in hits[0].heading_path
        assert searcher.search("lentil soup", principal=Principal("mallory", frozenset({"x"})), k=3) == []

        client = mailbox.client()
        client.select("INBOX")
        _, found = client.uid("SEARCH", "SUBJECT", "Lunch")
        client.uid("STORE", found[0].decode(), "+FLAGS", "(\\Deleted)")
        client.expunge()
        client.logout()
        second = sync_source(imap, pipeline, collection="mail", groups=["staff"], cursor=first.cursor)

        assert second.summary.files_removed == 1 and second.summary.files_new == 0
        hits = searcher.search("lentil soup canteen Thursdays", principal=staff, k=5)
        assert all(h.title != "Lunch" for h in hits)
    finally:
        imap.close()
        searcher.close()


def test_a_message_the_server_refuses_to_fetch_fails_alone(mailbox: ImapServer) -> None:
    """The server answering NO/BAD to the FETCH of one message is that document's failure (OSError, with
    the server's answer), not a SourceUnavailable that would fail every sync from now on."""
    imap = connector(mailbox, mailboxes=["INBOX"])
    docs = by_title(imap.changes(None))
    lunch = docs["Lunch"].key
    uidvalidity_now = int(lunch.split("/")[-2])

    with pytest.raises(OSError) as caught:  # UID 0 is no valid UID: Dovecot answers BAD "Invalid uidset"
        imap.fetch_message("INBOX", uidvalidity_now, 0)

    assert not isinstance(caught.value, SourceUnavailable)
    text = str(caught.value)
    assert (
        imap.key("INBOX", uidvalidity_now, 0) in text and "fetch message 0 of mailbox 'INBOX' failed" in text
    )
    assert "Invalid uidset" in text, text  # the server's own answer
    assert PASSWORD not in text
    assert LENTILS.encode() in docs["Lunch"].fetch()  # the same connection goes on with the next message
    imap.close()


@pytest.mark.parametrize("host", ["mail.example.org", "10.0.0.5", "::2", "localhost.example.org"])
def test_tls_none_is_refused_for_a_host_that_is_not_loopback(host: str) -> None:
    with pytest.raises(SourceConfigError, match=r'tls "none" sends the password in clear.*on this machine'):
        make_connector("imap", {"host": host, "user": "alice", "password_env": ENV, "tls": "none"})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost"])
def test_tls_none_is_allowed_for_a_loopback_host(host: str) -> None:
    imap = make_connector("imap", {"host": host, "user": "alice", "password_env": ENV, "tls": "none"})
    assert isinstance(imap, ImapConnector) and imap.tls == "none"


def test_a_message_the_server_hangs_up_on_fails_alone_and_the_sync_goes_on(
    server: ImapServer, monkeypatch: pytest.MonkeyPatch, store, embedder
) -> None:
    """Dovecot answers the FETCH of a message file it cannot read with BYE and closes the connection (not a
    NO). That message fails alone; the other messages of the same sync are stored and the cursor moves on
    only when nothing failed (so the broken one is retried next time)."""
    from ingestion.pipeline import IngestPipeline
    from ingestion.source_sync import sync_source

    monkeypatch.setenv(ENV, PASSWORD)
    broken = server.deliver(message("Broken", HARBOUR), received=RECEIVED)
    server.deliver(message("Lunch", LENTILS), received=RECEIVED + 60)
    imap = connector(server, mailboxes=["INBOX"])
    try:
        changes = imap.changes(None)
        broken.chmod(0)  # listed (size, date, subject), then unreadable on the server's disk
        docs = by_title(changes)
        with pytest.raises(OSError) as caught:
            docs["Broken"].fetch()
        assert not isinstance(caught.value, SourceUnavailable), caught.value
        assert docs["Broken"].key in str(caught.value) and "closed the connection" in str(caught.value)
        assert LENTILS.encode() in docs["Lunch"].fetch()  # a new connection goes on with the next one

        result = sync_source(
            imap, IngestPipeline(store, embedder), collection="mail", groups=None, cursor=None
        )
        assert result.summary.files_new == 1 and result.summary.files_failed == 1
        assert [f.path for f in result.summary.failures] == [docs["Broken"].key]
    finally:
        imap.close()


def test_fetch_document_reads_a_message_by_key(mailbox: ImapServer) -> None:
    """What a sync uses to read a stored message again (a duplicate whose original failed)."""
    imap = connector(mailbox, mailboxes=["INBOX"])
    lunch = by_title(imap.changes(None))["Lunch"]
    again = imap.fetch_document(lunch.key)
    assert again is not None and again.extension == ".eml" and LENTILS.encode() in again.fetch()
    assert imap.fetch_document(lunch.key.replace("INBOX", "Elsewhere")) is None  # not a configured mailbox
    assert imap.fetch_document("imap://someone@else:993/INBOX/1/1") is None
    imap.close()


def test_the_connection_keeps_no_trace_of_the_password(mailbox: ImapServer) -> None:
    """imaplib logs every line it sends (LOGIN with the password too) in a ring kept on the connection."""
    imap = connector(mailbox, mailboxes=["INBOX"])
    connection = imap._connection()  # connected and logged in, nothing else sent yet
    assert PASSWORD not in repr(vars(connection))
    imap.close()
