"""Ingest (admins): upload files, name a server folder or add a source that syncs itself; pick collection and
groups, watch it run."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import streamlit as st

from app.assistant import Assistant, SparqError
from app.ingest_roots import ROOTS_ENV, check_ingest_path
from app.sources import (
    BROWSER_ENV_PREFIX,
    SOURCE_HOSTS_ENV,
    RunInfo,
    SourceBusy,
    SourceError,
    SourceService,
    SyncFailed,
    service_for,
)
from app.ui import session
from app.ui.assistant_factory import get_assistant
from app.ui.format import literal_markdown
from ingestion.pipeline import FileEvent, IngestSummary

NEW_COLLECTION = "(new collection)"
SYNCED_SOURCE = "Synced source"
SOURCE_KINDS = {"folder": "Folder on this server", "imap": "IMAP mailbox", "web": "Web site"}
LIST_OPTIONS = ("mailboxes",)  # comma-separated in the form, a list for the connector
NUMBER_OPTIONS = ("port", "max_pages", "max_depth")


def parse_groups(text: str) -> list[str]:
    """Group names from a comma-separated field, trimmed, deduplicated and sorted."""
    return sorted({g.strip() for g in (text or "").split(",") if g.strip()})


def run_with_progress(
    work: Callable[[Callable[[FileEvent], None]], list[IngestSummary]],
    total_hint: int | None = None,
) -> tuple[list[IngestSummary], list[FileEvent]]:
    """Run an ingest in a worker thread and draw its progress here; the script thread owns the page, the
    worker only queues events. Errors from the worker are re-raised here, not lost."""
    events: queue.Queue[FileEvent] = queue.Queue()
    seen: list[FileEvent] = []
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = work(events.put)
        except BaseException as exc:
            outcome["error"] = exc

    bar = st.progress(0.0, text="Starting…")
    table = st.empty()
    worker = threading.Thread(target=target, name="sparq-ui-ingest", daemon=True)
    worker.start()
    while True:
        alive = worker.is_alive()
        changed = False
        while True:
            try:
                seen.append(events.get_nowait())
                changed = True
            except queue.Empty:
                break
        if changed:
            last = seen[-1]
            total = total_hint or last.total or len(seen)
            done = len(seen) if total_hint else last.done
            bar.progress(min(1.0, done / max(1, total)), text=progress_text(done, total, last))
            table.dataframe(events_frame(seen), hide_index=True, width="stretch")
        if not alive:
            break
        time.sleep(0.2)
    worker.join()
    if "error" in outcome:
        bar.progress(1.0, text="Failed")
        raise outcome["error"]  # type: ignore[misc]
    bar.progress(1.0, text=f"Done: {len(seen)} files")
    table.dataframe(events_frame(seen), hide_index=True, width="stretch")
    return outcome["result"], seen  # type: ignore[return-value]


def progress_text(done: int, total: int, event: FileEvent) -> str:
    """The progress bar's line; st.progress renders Markdown and a file's name is anyone's on a share, so the
    name is shown literally (never a link, an image or formatting)."""
    return f"{done}/{total} · {literal_markdown(Path(event.path).name)}: {event.status}"


def events_frame(events: list[FileEvent]) -> pd.DataFrame:
    """Per-file ingest events as a table for the page."""
    return pd.DataFrame(
        [{"file": e.path, "status": e.status, "chunks": e.chunks, "reason": e.error or ""} for e in events],
        columns=["file", "status", "chunks", "reason"],
    )


class Upload(Protocol):
    """What storing an upload reads of it: st.file_uploader's UploadedFile has both, and so can a stand-in."""

    @property
    def name(self) -> str:
        """The file's name as the user uploaded it."""

    def getvalue(self) -> bytes:
        """The file's bytes."""


def ingest_uploads(
    assistant: Assistant, files: list[Upload], collection: str, groups: list[str]
) -> tuple[list[IngestSummary], list[FileEvent]]:
    """Store each upload (st.file_uploader's UploadedFile: .name, .getvalue()) and ingest it through
    Assistant.ingest_upload: data_dir/uploads/<collection id>/<its Unicode name>, written atomically under
    the ingest lock, another upload's file never overwritten. Nothing uploaded is ever run."""
    uploads = [(f.name, f.getvalue()) for f in files]

    def work(progress: Callable[[FileEvent], None]) -> list[IngestSummary]:
        return [
            assistant.ingest_upload(name, data, collection=collection, groups=groups, progress=progress)
            for name, data in uploads
        ]

    return run_with_progress(work, total_hint=len(uploads))


def ingest_folder(
    assistant: Assistant, folder: str, collection: str, groups: list[str], sync: bool
) -> tuple[list[IngestSummary], list[FileEvent]]:
    """A server folder, only inside SPARQ_INGEST_ROOTS (refused when none are set) and never the data dir."""
    s = assistant.settings
    path = check_ingest_path(folder, data_dir=s.data_dir, roots=s.ingest_roots, require_roots=True)

    def work(progress: Callable[[FileEvent], None]) -> list[IngestSummary]:
        return [assistant.ingest(path, collection=collection, groups=groups, sync=sync, progress=progress)]

    return run_with_progress(work)


def show_summary(summaries: list[IngestSummary]) -> None:
    """What an ingest did, in one line, then the failed and skipped files with the reason."""
    new = sum(s.files_new for s in summaries)
    updated = sum(s.files_updated for s in summaries)
    unchanged = sum(s.files_unchanged for s in summaries)
    failures = [f for s in summaries for f in s.failures]
    skipped = [f for s in summaries for f in s.skipped]
    chunks = sum(s.chunks_added for s in summaries)
    st.success(
        f"{new} new, {updated} updated, {unchanged} unchanged, {len(failures)} failed, "
        f"{len(skipped)} skipped; {chunks} chunks written."
    )
    if failures:
        st.error(
            "Failed files:\n\n"
            + "\n".join(f"- {literal_markdown(f.path)}: {literal_markdown(str(f.error))}" for f in failures)
        )
    if skipped:
        st.warning(
            "Skipped files:\n\n"
            + "\n".join(f"- {literal_markdown(f.path)}: {literal_markdown(str(f.error))}" for f in skipped)
        )


def source_options(fields: dict[str, str]) -> dict[str, Any]:
    """A connector's options from the form's text fields: empty ones left out, numbers and lists converted."""
    options: dict[str, Any] = {}
    for key, text in fields.items():
        value = (text or "").strip()
        if not value:
            continue
        if key in LIST_OPTIONS:
            options[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif key in NUMBER_OPTIONS:
            if not value.isdigit():
                raise SourceError(f"{key.replace('_', ' ')} must be a whole number, not {value!r}")
            options[key] = int(value)
        else:
            options[key] = value
    return options


def run_line(run: RunInfo) -> str:
    """A sync run in one line, for the sources table."""
    return (
        f"{run.files_new} new, {run.files_updated} updated, {run.files_unchanged} unchanged, "
        f"{run.files_removed} removed, {run.files_failed} failed in {run.duration_s:.1f} s"
    )


def sync_now(service: SourceService, name: str) -> RunInfo | None:
    """Sync one source with the page's progress bar; say how it went (a failure changes no document)."""
    try:
        runs, _ = run_with_progress(lambda progress: [service.sync(name, progress=progress)])  # type: ignore[list-item]
    except SyncFailed as exc:
        st.error(
            f"Sync of {literal_markdown(name)} failed: {literal_markdown(str(exc.run.error))}. No document "
            "was changed; it is tried again later with backoff."
        )
        return exc.run
    except SourceBusy as exc:
        st.warning(literal_markdown(str(exc)))
        return None
    run: RunInfo = runs[0]  # type: ignore[assignment]
    st.success(f"Synced {literal_markdown(name)}: {run_line(run)}.")
    if run.notes:
        st.warning("Notes:\n\n" + "\n".join(f"- {literal_markdown(n)}" for n in run.notes))
    return run


def render_sources(assistant: Assistant, collection: str, groups: list[str]) -> None:
    """Add a source that syncs itself into the chosen collection, for the chosen groups, and sync one now.
    The web UI's rules apply (app.sources.SourceService.check_options): folders only inside
    SPARQ_INGEST_ROOTS, passwords only from SPARQ_SOURCE_* variables, never a password itself."""
    service = service_for(assistant)
    st.subheader("Add a source that syncs itself")
    kind = st.selectbox("Kind", list(SOURCE_KINDS), format_func=SOURCE_KINDS.__getitem__, key="source_kind")
    name = st.text_input("Source name", key="source_name", help="Letters, digits and _ . @ -")
    schedule = st.text_input(
        "Schedule",
        value="every 1h",
        key="source_schedule",
        help="every 30m, every 2h, every 1d, every 45s, or manual",
    )
    fields: dict[str, str] = {}
    if kind == "folder":
        roots = assistant.settings.ingest_roots
        if not roots:
            st.info(
                f"Folder sources are off here: the operator sets {ROOTS_ENV} to the folders that may be read."
            )
        fields["path"] = st.text_input("Folder on the server", key="source_path")
        fields["group_rule"] = st.selectbox(
            "Readers",
            ["unix-group", "none"],
            key="source_group_rule",
            format_func={
                "unix-group": "the file system's groups, plus the groups above",
                "none": "only the groups above",
            }.__getitem__,
        )
    elif kind == "imap":
        fields["host"] = st.text_input("Mail server", key="source_host")
        fields["user"] = st.text_input("Account", key="source_user")
        fields["password_env"] = st.text_input(
            "Password variable",
            key="source_password_env",
            placeholder=f"{BROWSER_ENV_PREFIX}MAIL_PASSWORD",
            help=f"The environment variable (starting with {BROWSER_ENV_PREFIX}) of the sparq processes that holds "
            "the password; the password itself is never stored.",
        )
        fields["mailboxes"] = st.text_input(
            "Mailboxes (comma-separated)", value="INBOX", key="source_mailboxes"
        )
        fields["tls"] = st.selectbox("Encryption", ["ssl", "starttls", "none"], key="source_tls")
        fields["port"] = st.text_input("Port (empty: the usual one)", key="source_port")
    else:
        fields["start_url"] = st.text_input(
            "Start page", key="source_start_url", placeholder="https://intranet/"
        )
        fields["sitemap_url"] = st.text_input("Sitemap (optional)", key="source_sitemap_url")
        fields["max_pages"] = st.text_input("Pages at most per sync", value="1000", key="source_max_pages")
        fields["max_depth"] = st.text_input("Links deep", value="3", key="source_max_depth")
    if kind != "folder":
        if service.source_hosts:
            st.caption(
                "Hosts a source may be on: " + literal_markdown(", ".join(sorted(service.source_hosts)))
            )
        else:
            st.info(
                f"{SOURCE_KINDS[kind]} sources are off here: the operator sets {SOURCE_HOSTS_ENV} to the "
                "hosts a web admin may add them for."
            )
    if not collection:
        st.caption("Pick or name the collection above first.")
    if st.button("Add source", key="source_add", disabled=not name or not collection, type="primary"):
        try:
            info = service.add(
                name,
                kind,
                collection=collection,
                groups=groups,
                schedule=schedule,
                options=source_options(fields),
                restricted=True,
            )
        except SparqError as exc:  # a refused path or option, a bad schedule: say which
            st.error(literal_markdown(str(exc)))
        else:
            when = "the scheduler syncs it shortly" if info.next_due_at else "sync it below"
            st.success(f"Added source {literal_markdown(info.name)} ({info.schedule}); {when}.")

    st.subheader("Sync now")
    names = [s.name for s in service.list()]
    if not names:
        st.caption("No sources yet.")
        return
    chosen = st.selectbox("Source to sync", names, key="source_sync_name")
    if st.button("Sync now", key="source_sync_go"):
        sync_now(service, chosen)


def render() -> None:
    """The Ingest page (admins): upload files, ingest a server folder, or add a source that syncs itself."""
    session.require_admin()
    assistant = get_assistant()
    st.title("Ingest documents")
    existing = [c.name for c in assistant.collections()]
    choice = st.selectbox("Collection", existing + [NEW_COLLECTION], key="ingest_collection_choice")
    if choice == NEW_COLLECTION:
        collection = st.text_input("New collection name", key="ingest_collection_new").strip()
    else:
        collection = choice
    groups_text = st.text_input(
        "Groups that may read these documents (comma-separated)",
        key="ingest_groups",
        help="Employees see a document when one of their groups is listed here.",
    )
    groups = parse_groups(groups_text)
    if not groups:
        st.caption("No groups: only administrators will see these documents.")

    # A radio, not st.tabs: tabs jump back to the first one whenever the page reruns.
    source = st.radio(
        "Source", ["Upload files", "Server folder", SYNCED_SOURCE], horizontal=True, key="ingest_source"
    )
    if source == SYNCED_SOURCE:
        render_sources(assistant, collection, groups)
        return
    files, folder, sync, go_upload, go_folder = [], "", False, False, False
    if source == "Upload files":
        files = st.file_uploader("Files", accept_multiple_files=True, key="ingest_files") or []
        go_upload = st.button(
            "Ingest uploads", key="ingest_upload_go", disabled=not files or not collection, type="primary"
        )
    else:
        roots = assistant.settings.ingest_roots
        if roots:
            st.caption("Folders that may be ingested: " + ", ".join(literal_markdown(str(r)) for r in roots))
        else:
            st.info(
                f"Server-folder ingest is off: the operator sets {ROOTS_ENV} to the folders that may be "
                "ingested. Upload the files instead."
            )
        folder = st.text_input("Folder or file on the server", key="ingest_folder")
        sync = st.checkbox("Remove documents whose files are gone (sync)", key="ingest_sync")
        go_folder = st.button(
            "Ingest folder", key="ingest_folder_go", disabled=not folder or not collection, type="primary"
        )

    try:
        if go_upload and files:
            summaries, _ = ingest_uploads(assistant, list(files), collection, groups)
        elif go_folder and folder:
            summaries, _ = ingest_folder(assistant, folder, collection, groups, sync)
        else:
            return
    except (FileNotFoundError, SparqError) as exc:  # a wrong path, a full or read-only data dir: say which
        st.error(str(exc))
        return
    show_summary(summaries)
