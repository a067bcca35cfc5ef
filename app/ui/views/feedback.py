"""Feedback (admins): the employees' thumbs up/down on answers, with question, answer, sources and cost,
filterable by rating, collection and model, and exportable like `sparq feedback --export`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.feedback import FeedbackLog, export
from app.ui import session
from app.ui.assistant_factory import get_assistant
from app.ui.format import inert_markdown, literal_markdown, usd


def feedback_frame(records: list) -> pd.DataFrame:
    """One row per rating for the table (text columns are data, never markup)."""
    return pd.DataFrame(
        [
            {
                "when": r.updated_at,
                "user": r.user,
                "rating": "👍" if r.rating == "up" else "👎",
                "question": r.question,
                "comment": r.comment or "",
                "model": r.model or "",
                "collections": ", ".join(r.collections),
                "cost (USD)": r.cost_usd or 0.0,
                "query": r.query_id,
            }
            for r in records
        ]
    )


def render() -> None:
    """The Feedback page (admins): ratings filtered by rating, model and collection, and their export."""
    session.require_admin()
    assistant = get_assistant()
    st.title("Feedback")
    log = FeedbackLog(assistant.engine)
    everything = log.records(limit=5000)
    if not everything:
        st.info("No answer has been rated yet. Employees rate answers with the thumbs under each one.")
        return
    left, mid, right = st.columns(3)
    rating = left.selectbox("Rating", ["all", "down", "up"], key="fb_rating")
    models = sorted({r.model for r in everything if r.model})
    model = mid.selectbox("Model", ["all", *models], key="fb_model")
    collections = sorted({c for r in everything for c in r.collections})
    collection = right.selectbox("Collection", ["all", *collections], key="fb_collection")
    records = log.records(
        rating=None if rating == "all" else rating,
        model=None if model == "all" else model,
        collection=None if collection == "all" else collection,
        limit=5000,
    )
    downs = sum(r.rating == "down" for r in everything)
    st.caption(f"{len(everything)} ratings, {downs} thumbs down ({downs / len(everything):.0%}).")
    st.dataframe(feedback_frame(records), hide_index=True, width="stretch")
    st.download_button(
        "Export CSV",
        data=export(records, "csv").encode("utf-8"),
        file_name="sparq-feedback.csv",
        mime="text/csv",
        key="fb_export",
        on_click="ignore",
    )
    for r in records[:50]:
        with st.expander(
            literal_markdown(f"{'👍' if r.rating == 'up' else '👎'} {r.user}: {r.question[:100]}")
        ):
            st.markdown("**Answer**")
            st.markdown(inert_markdown(r.answer or ""))
            if r.comment:
                st.markdown("**Comment:** " + literal_markdown(r.comment))
            for c in r.citations:
                st.caption(literal_markdown(f"[{c.get('ref')}] {c.get('title') or c.get('path', '')}"))
            st.caption(
                f"model {literal_markdown(r.model or '?')} · cost {usd(r.cost_usd or 0.0)} · query {r.query_id}"
            )
