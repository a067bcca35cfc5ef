"""The chat page's memory: saved conversations in the sidebar and thumbs up/down under each answer.

Conversations live in the database (app.conversations), so a reload, another browser or another day
reopens them; the page's session state only says which one is open. Ratings go to app.feedback with the
answer's query id, one per user and answer, changeable.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.assistant import Assistant
from app.conversations import ConversationError, Conversations
from app.feedback import FeedbackError, FeedbackLog
from app.ui.format import literal_markdown
from app.users import UserInfo

OPEN_KEY = "chat_conversation_id"
DETAIL_KEYS = ("status", "citations", "passages", "cost", "timings_ms", "model", "query_id")


def open_conversation_id() -> int | None:
    """The id of the conversation this browser has open, None for a new one."""
    return st.session_state.get(OPEN_KEY)


def sidebar(assistant: Assistant, user: UserInfo, history_key: str) -> None:
    """New conversation, the user's saved ones (click to reopen), rename and delete of the open one."""
    store = Conversations(assistant.engine)
    if st.button("New conversation", key="chat_reset", width="stretch"):
        st.session_state[history_key] = []
        st.session_state.pop(OPEN_KEY, None)
        st.rerun()
    saved = store.list(user.name, limit=50)
    if not saved:
        return
    st.caption("Conversations")
    current = open_conversation_id()
    for c in saved:
        label = ("▸ " if c.id == current else "") + c.title
        # A title is the user's own question: shown as literal text, never as markup.
        if st.button(literal_markdown(label), key=f"conv-{c.id}", width="stretch"):
            reopen(assistant, user, c.id, history_key)
    if current is not None and any(c.id == current for c in saved):
        with st.expander("This conversation"):
            title = st.text_input(
                "Title", value=next(c.title for c in saved if c.id == current), key="conv-title"
            )
            left, right = st.columns(2)
            if left.button("Rename", key="conv-rename"):
                try:
                    store.rename(user.name, current, title)
                except ConversationError as exc:
                    st.error(str(exc))
                else:
                    st.rerun()
            if right.button("Delete", key="conv-delete"):
                store.delete(user.name, current)
                st.session_state[history_key] = []
                st.session_state.pop(OPEN_KEY, None)
                st.rerun()


def reopen(assistant: Assistant, user: UserInfo, conversation_id: int, history_key: str) -> None:
    """Load a saved conversation into the page (the owner's only: others raise ConversationError)."""
    saved = Conversations(assistant.engine).get(user.name, conversation_id)
    st.session_state[history_key] = saved.messages
    st.session_state[OPEN_KEY] = saved.id
    st.rerun()


def restore_after_reload(assistant: Assistant, user: UserInfo, history_key: str) -> None:
    """A fresh page (reload, new tab) shows the most recent conversation instead of an empty chat."""
    if history_key in st.session_state:
        return
    st.session_state[history_key] = []
    recent = Conversations(assistant.engine).list(user.name, limit=1)
    if recent:
        saved = Conversations(assistant.engine).get(user.name, recent[0].id)
        st.session_state[history_key] = saved.messages
        st.session_state[OPEN_KEY] = saved.id


def save_turn(assistant: Assistant, user: UserInfo, question: str, message: dict[str, Any]) -> None:
    """Store the question and its answer (with citations, cost and query id) in the open conversation."""
    store = Conversations(assistant.engine)
    conversation_id = open_conversation_id()
    if conversation_id is None:
        conversation_id = store.start(user.name, question)
        st.session_state[OPEN_KEY] = conversation_id
    try:
        store.append(user.name, conversation_id, "user", question)
    except ConversationError:  # deleted in another tab meanwhile: start a new one
        conversation_id = store.start(user.name, question)
        st.session_state[OPEN_KEY] = conversation_id
        store.append(user.name, conversation_id, "user", question)
    store.append(
        user.name, conversation_id, "assistant", message["content"], {k: message.get(k) for k in DETAIL_KEYS}
    )


def feedback(assistant: Assistant, user: UserInfo, message: dict[str, Any], key: str) -> None:
    """Thumbs up/down and an optional comment under an answer, stored with its query id."""
    query_id = message.get("query_id")
    if query_id is None:
        return
    log = FeedbackLog(assistant.engine)
    current = log.of(int(query_id), user.name)
    choice = st.feedback(
        "thumbs", key=f"fb-{key}-{query_id}", default={"down": 0, "up": 1}.get(current or "")
    )
    rating = {0: "down", 1: "up"}.get(choice) if choice is not None else None
    if rating is not None and rating != current:
        try:
            log.rate(int(query_id), user.name, rating)
        except FeedbackError as exc:
            st.error(str(exc))
            return
        current = rating
    if current is not None:
        with st.popover("Comment"):
            comment = st.text_area("What was wrong or right?", key=f"fbc-{key}-{query_id}", max_chars=2000)
            if st.button("Send", key=f"fbs-{key}-{query_id}"):
                log.rate(int(query_id), user.name, current, comment)
                st.caption("Thanks, stored.")
