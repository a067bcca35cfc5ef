"""Ingest (admins): upload files or name a server folder, pick collection and groups, watch it run."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from app.assistant import Assistant, SparqError
from app.ingest_roots import ROOTS_ENV, check_ingest_path
from app.ui import session
from app.ui.format import literal_markdown
from ingestion.pipeline import FileEvent, IngestSummary

NEW_COLLECTION = "(new collection)"


def parse_groups(text: str) -> list[str]:
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
        except BaseException as exc:  # noqa: BLE001 - handed to the script thread and re-raised there
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
            bar.progress(min(1.0, done / max(1, total)), text=f"{done}/{total} · {Path(last.path).name}: {last.status}")
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


def events_frame(events: list[FileEvent]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"file": e.path, "status": e.status, "chunks": e.chunks, "reason": e.error or ""} for e in events],
        columns=["file", "status", "chunks", "reason"],
    )


def ingest_uploads(assistant: Assistant, files: list, collection: str, groups: list[str]):
    """Store each upload (st.file_uploader's UploadedFile: .name, .getvalue()) and ingest it through
    Assistant.ingest_upload: data_dir/uploads/<collection id>/<its Unicode name>, written atomically under
    the ingest lock, another upload's file never overwritten. Nothing uploaded is ever run."""
    uploads = [(f.name, f.getvalue()) for f in files]

    def work(progress: Callable[[FileEvent], None]) -> list[IngestSummary]:
        return [assistant.ingest_upload(name, data, collection=collection, groups=groups, progress=progress)
                for name, data in uploads]

    return run_with_progress(work, total_hint=len(uploads))


def ingest_folder(assistant: Assistant, folder: str, collection: str, groups: list[str], sync: bool):
    """A server folder, only inside SPARQ_INGEST_ROOTS (refused when none are set) and never the data dir."""
    s = assistant.settings
    path = check_ingest_path(folder, data_dir=s.data_dir, roots=s.ingest_roots, require_roots=True)

    def work(progress: Callable[[FileEvent], None]) -> list[IngestSummary]:
        return [assistant.ingest(path, collection=collection, groups=groups, sync=sync, progress=progress)]

    return run_with_progress(work)


def show_summary(summaries: list[IngestSummary]) -> None:
    new = sum(s.files_new for s in summaries)
    updated = sum(s.files_updated for s in summaries)
    unchanged = sum(s.files_unchanged for s in summaries)
    failures = [f for s in summaries for f in s.failures]
    skipped = [f for s in summaries for f in s.skipped]
    chunks = sum(s.chunks_added for s in summaries)
    st.success(f"{new} new, {updated} updated, {unchanged} unchanged, {len(failures)} failed, "
               f"{len(skipped)} skipped; {chunks} chunks written.")
    if failures:
        st.error("Failed files:\n\n" + "\n".join(f"- {literal_markdown(f.path)}: {literal_markdown(str(f.error))}"
                                                 for f in failures))
    if skipped:
        st.warning("Skipped files:\n\n" + "\n".join(f"- {literal_markdown(f.path)}: {literal_markdown(str(f.error))}"
                                                     for f in skipped))


def render() -> None:
    session.require_admin()
    assistant = session.get_assistant()
    st.title("Ingest documents")
    existing = [c.name for c in assistant.collections()]
    choice = st.selectbox("Collection", existing + [NEW_COLLECTION], key="ingest_collection_choice")
    if choice == NEW_COLLECTION:
        collection = st.text_input("New collection name", key="ingest_collection_new").strip()
    else:
        collection = choice
    groups_text = st.text_input("Groups that may read these documents (comma-separated)", key="ingest_groups",
                                help="Employees see a document when one of their groups is listed here.")
    groups = parse_groups(groups_text)
    if not groups:
        st.caption("No groups: only administrators will see these documents.")

    # A radio, not st.tabs: tabs jump back to the first one whenever the page reruns.
    source = st.radio("Source", ["Upload files", "Server folder"], horizontal=True, key="ingest_source")
    files, folder, sync, go_upload, go_folder = [], "", False, False, False
    if source == "Upload files":
        files = st.file_uploader("Files", accept_multiple_files=True, key="ingest_files") or []
        go_upload = st.button("Ingest uploads", key="ingest_upload_go", disabled=not files or not collection,
                              type="primary")
    else:
        roots = assistant.settings.ingest_roots
        if roots:
            st.caption("Folders that may be ingested: " + ", ".join(literal_markdown(str(r)) for r in roots))
        else:
            st.info(f"Server-folder ingest is off: the operator sets {ROOTS_ENV} to the folders that may be "
                    "ingested. Upload the files instead.")
        folder = st.text_input("Folder or file on the server", key="ingest_folder")
        sync = st.checkbox("Remove documents whose files are gone (sync)", key="ingest_sync")
        go_folder = st.button("Ingest folder", key="ingest_folder_go", disabled=not folder or not collection,
                              type="primary")

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
