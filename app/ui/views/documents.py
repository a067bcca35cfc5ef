"""Documents and collections (admins): search the table, delete or re-ingest documents, drop collections, and
see how the sources that sync themselves are doing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from app.assistant import Assistant, DocumentInfo, SparqError
from app.sources import SourceInfo, service_for
from app.ui import session
from app.ui.assistant_factory import get_assistant
from app.ui.format import literal_markdown
from app.ui.views.ingest import run_with_progress, show_summary
from ingestion.pipeline import FileEvent, IngestSummary

FLASH_KEY = "docs_flash"  # a message that survives the rerun after a change


def documents_frame(docs: list[DocumentInfo], search: str = "") -> pd.DataFrame:
    """The documents table, filtered by a case-insensitive match on path, title, collection or group."""
    rows = [
        {
            "id": d.id,
            "collection": d.collection,
            "title": d.title or "",
            "path": d.path,
            "status": d.status,
            "chunks": d.chunks,
            "groups": ", ".join(d.groups),
            "size_kb": round(d.size / 1024, 1),
            "error": d.error or "",
            "updated": d.updated_at,
        }
        for d in docs
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "id",
            "collection",
            "title",
            "path",
            "status",
            "chunks",
            "groups",
            "size_kb",
            "error",
            "updated",
        ],
    )
    needle = search.strip().lower()
    if needle and not frame.empty:
        hay = frame[["collection", "title", "path", "groups"]].astype(str).agg(" ".join, axis=1).str.lower()
        frame = frame[hay.str.contains(needle, regex=False)]
    return frame.reset_index(drop=True)


def stale_notice(docs: list[DocumentInfo]) -> str | None:
    """Say which documents are stale or pending: what search returns for them is not their file's content now."""
    stale = sum(1 for d in docs if d.status == "stale")
    pending = sum(1 for d in docs if d.status == "pending")
    parts = []
    if stale:
        parts.append(
            f"{stale} stale: the last re-read failed, so search serves the last good version "
            "(the error column says why); fix the file and re-ingest it."
        )
    if pending:
        parts.append(
            f"{pending} pending: the identical file they were stored with changed or went away; "
            "the next ingest of their collection reads them from their own files."
        )
    return " ".join(parts) or None


def sources_frame(sources: list[SourceInfo]) -> pd.DataFrame:
    """The sources table: schedule, the last run's outcome, duration and error, and when each is due next."""
    rows = []
    for s in sources:
        last = s.last_run
        status = "syncing" if s.syncing_by else (last.status if last else "never synced")
        rows.append(
            {
                "source": s.name,
                "kind": s.kind,
                "collection": s.collection,
                "schedule": s.schedule,
                "enabled": s.enabled,
                "status": status,
                "last run": last.started_at if last else None,
                "duration_s": round(last.duration_s, 1) if last else None,
                "changes": (
                    f"{last.files_new} new, {last.files_updated} updated, {last.files_removed} removed, "
                    f"{last.files_failed} failed"
                )
                if last and last.status == "completed"
                else "",
                "next due": s.next_due_at if s.enabled else None,
                "failures": s.failures,
                "last error": (last.error or "") if last and last.status == "failed" else "",
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "source",
            "kind",
            "collection",
            "schedule",
            "enabled",
            "status",
            "last run",
            "duration_s",
            "changes",
            "next due",
            "failures",
            "last error",
        ],
    )


def reingest(
    assistant: Assistant, docs: list[DocumentInfo]
) -> tuple[list[IngestSummary], list[DocumentInfo]]:
    """Ingest each document's file again into its collection with its groups (changed files get re-embedded)."""
    present = [d for d in docs if Path(d.path).is_file()]
    missing = [d for d in docs if not Path(d.path).is_file()]

    def work(progress: Callable[[FileEvent], None]) -> list[IngestSummary]:
        return [
            assistant.ingest(d.path, collection=d.collection, groups=d.groups, progress=progress)
            for d in present
        ]

    summaries = run_with_progress(work, total_hint=len(present))[0] if present else []
    return summaries, missing


def render() -> None:
    """The Documents page (admins): collections, sources and documents, with re-ingest and delete."""
    session.require_admin()
    assistant = get_assistant()
    st.title("Documents and collections")
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash:
        st.success(flash)

    collections = assistant.collections()
    st.subheader("Collections")
    if not collections:
        st.info("No collections yet: ingest documents first.")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "collection": c.name,
                        "documents": c.documents,
                        "chunks": c.chunks,
                        "created": c.created_at,
                    }
                    for c in collections
                ]
            ),
            hide_index=True,
            width="stretch",
        )
        with st.expander("Delete a collection"):
            name = st.selectbox("Collection", [c.name for c in collections], key="docs_drop_name")
            confirm = st.checkbox(
                f"Yes, delete {literal_markdown(repr(name))} and all its documents", key="docs_drop_confirm"
            )
            if st.button("Delete collection", key="docs_drop_go", disabled=not confirm, type="primary"):
                n = assistant.delete_collection(name)
                st.session_state[FLASH_KEY] = (
                    f"Deleted collection {literal_markdown(repr(name))} ({n} documents)."
                )
                st.rerun()

    st.subheader("Documents")
    col_filter = st.selectbox(
        "Show", ["All collections"] + [c.name for c in collections], key="docs_collection"
    )
    search = st.text_input("Search path, title, collection or group", key="docs_search")
    docs = assistant.documents(None if col_filter == "All collections" else col_filter)
    frame = documents_frame(docs, search)
    st.caption(f"{len(frame)} of {len(docs)} documents")
    notice = stale_notice(docs)
    if notice:
        st.warning(notice)
    event = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        key="docs_table",
        on_select="rerun",
        selection_mode="multi-row",
    )
    selected_rows = list(event.selection.rows) if event is not None else []
    selected_ids = [int(frame.iloc[i]["id"]) for i in selected_rows if i < len(frame)]
    by_id = {d.id: d for d in docs}
    chosen = [by_id[i] for i in selected_ids if i in by_id]
    st.caption(f"{len(chosen)} selected" if chosen else "Select rows to delete or re-ingest them.")
    left, right = st.columns(2)
    if left.button("Delete selected", key="docs_delete", disabled=not chosen):
        gone: list[str] = []
        for d in chosen:
            try:
                assistant.delete_document(d.id)
            except SparqError as exc:  # already deleted by another admin: say so, carry on with the rest
                gone.append(literal_markdown(str(exc)))
        st.session_state[FLASH_KEY] = f"Deleted {len(chosen) - len(gone)} documents." + (
            f" Already gone: {'; '.join(gone)}" if gone else ""
        )
        st.rerun()
    if right.button("Re-ingest selected", key="docs_reingest", disabled=not chosen):
        summaries, missing = reingest(assistant, chosen)
        if summaries:
            show_summary(summaries)
        if missing:
            st.warning(
                "No longer on disk, not re-ingested:\n\n"
                + "\n".join(f"- {literal_markdown(d.path)}" for d in missing)
            )

    st.subheader("Sources")
    sources = service_for(assistant).list()
    if not sources:
        st.caption("No sources that sync themselves: add one on the Ingest page (Synced source).")
    else:
        st.dataframe(sources_frame(sources), hide_index=True, width="stretch", key="docs_sources")
        failing = [s for s in sources if s.failures]
        if failing:
            st.warning(
                "Failing sources keep their documents as last synced and are retried with backoff: "
                + ", ".join(literal_markdown(s.name) for s in failing)
            )
