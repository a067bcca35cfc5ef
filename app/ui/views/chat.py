"""Chat: streamed answers from the documents the signed-in user may read, with sources and cost."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st

from app.ask import Answer, AskError
from app.assistant import SparqError
from app.costs.budgets import OverBudget
from app.ui import session
from app.ui.assistant_factory import get_assistant
from app.ui.document_access import display_paths, readable_collections, source_file
from app.ui.format import cost_line, inert_markdown, literal_markdown
from app.ui.views import chat_history
from app.ui.views.model import model_progress
from app.users import UserInfo
from model.base import ModelError

log = logging.getLogger(__name__)

HISTORY_KEY = "chat_messages"
HISTORY_TURNS = 6  # previous messages sent for follow-up rewriting
PENDING_KEY = "chat_pending"  # a question asked before the answer model was loaded


def _history() -> list[dict[str, Any]]:
    return st.session_state.setdefault(HISTORY_KEY, [])


def _download(user: UserInfo, document_id: int) -> Callable[[], bytes]:
    """Read the file only when the button is pressed, and only after the access check passes again."""

    def read() -> bytes:
        found = source_file(get_assistant().store, user, document_id)
        if found is None:
            raise PermissionError("this document is not available to you")
        return found[0].read_bytes()

    return read


def show_sources(message: dict[str, Any], user: UserInfo, key: str) -> None:
    """Citations as expanders with the quoted snippet and a download of the source (access-checked)."""
    assistant = get_assistant()
    citations = message.get("citations") or []
    if not citations and message.get("status") == "ok" and message.get("passages"):
        st.caption("The answer cites no passage; these were retrieved:")
        citations = [
            {
                "ref": p["ref"],
                "document_id": p["document_id"],
                "title": p.get("title"),
                "path": p["path"],
                "location": p.get("location", ""),
                "snippet": " ".join(p["text"].split())[:300],
                "score": p["score"],
            }
            for p in message["passages"][:3]
        ]
    # Titles, paths and headings come from documents: shown literally (a title `![x](http://..)` must not
    # make every reader's browser fetch it), and paths relative to the collection, never the server's.
    shown_paths = display_paths(
        assistant.store, assistant.settings.data_dir, user, (int(c["document_id"]) for c in citations)
    )
    for i, c in enumerate(citations):
        path = shown_paths.get(int(c["document_id"])) or str(c["path"]).replace("\\", "/").rsplit("/", 1)[-1]
        name = c.get("title") or path.rsplit("/", 1)[-1]
        label = f"[{int(c['ref'])}] " + literal_markdown(
            name + (f" — {c['location']}" if c.get("location") else "")
        )
        with st.expander(label):
            st.markdown("> " + literal_markdown(" ".join(c["snippet"].split())))
            st.caption(f"score {c['score']:.3f} · {literal_markdown(path)}")
            if c.get("attributed"):
                st.caption(
                    "Cited by sparq, not by the model: this passage contains the words of the answer's "
                    "sentence that cites it."
                )
            found = source_file(assistant.store, user, int(c["document_id"]))
            if found is not None:
                file_path, mime = found
                st.download_button(
                    "Download source",
                    data=_download(user, int(c["document_id"])),
                    file_name=file_path.name,
                    mime=mime,
                    key=f"dl-{key}-{i}",
                    on_click="ignore",
                )
            else:
                st.caption("The source file is not available for download.")


def show_answer(message: dict[str, Any], user: UserInfo, key: str) -> None:
    """One answer as the chat shows it: text, sources, cost, and the thumbs to rate it."""
    status = message.get("status")
    if status in ("no_answer", "no_documents"):
        st.info("**Not in the documents.** " + inert_markdown(message["content"]))
    else:
        st.markdown(inert_markdown(message["content"]))
    show_sources(message, user, key)
    cost = message.get("cost")
    if cost:
        with st.expander(cost_line(cost)):
            st.json(
                {
                    "cost": cost,
                    "timings_ms": message.get("timings_ms", {}),
                    "model": message.get("model"),
                    "query_id": message.get("query_id"),
                },
                expanded=True,
            )
    chat_history.feedback(get_assistant(), user, message, key)


def answer_message(answer: Answer) -> dict[str, Any]:
    """An Answer as a chat message dict: what the page keeps in its state and the conversation saves."""
    data = answer.to_dict()
    return {
        "role": "assistant",
        "content": answer.text,
        "status": answer.status,
        "citations": data["citations"],
        "passages": data["passages"],
        "cost": data["cost"],
        "timings_ms": answer.timings_ms,
        "model": answer.model,
        "query_id": answer.query_id,
    }


def ask_streaming(question: str, user: UserInfo, collections: list[str]) -> Answer | None:
    """Stream the answer into the page; returns the final Answer (None after an error shown to the user)."""
    assistant = get_assistant()
    history = [{"role": m["role"], "content": m["content"]} for m in _history()[-HISTORY_TURNS - 1 : -1]]
    result: dict[str, Answer] = {}

    def pieces() -> Iterator[str]:
        for item in assistant.ask(
            question, user=user.name, collections=collections or None, history=history or None, stream=True
        ):
            if isinstance(item, Answer):
                result["answer"] = item
            else:
                yield inert_markdown(item)

    placeholder = st.empty()
    try:
        with placeholder.container():
            st.write_stream(pieces())
    except AskError as exc:
        placeholder.warning(str(exc))
        return None
    except OverBudget as exc:  # refused before the model ran; nothing was charged
        placeholder.warning(f"{exc}. Ask an administrator if you need more.")
        return None
    except (ModelError, SparqError) as exc:
        log.exception("ask failed for %s", user.name)
        placeholder.error(f"The answer could not be produced: {exc}")
        return None
    placeholder.empty()  # the final text (with unsupported citations removed) replaces the stream
    return result.get("answer")


def waiting_for_model(messages: list[dict[str, Any]]) -> bool:
    """While the answer model loads (on a fresh install: the default MoE's build, minutes), show its progress
    instead of blocking this page; True until it is ready (the question waits in PENDING_KEY meanwhile)."""
    load = get_assistant().llm_status
    if load.state == "loading":
        model_progress()
        return True
    if load.state == "failed" and st.session_state.pop(PENDING_KEY, None) is not None:
        if messages and messages[-1]["role"] == "user":
            messages.pop()
        st.error(f"The answer model could not be loaded: {load.message}")
    return False


def render() -> None:
    """The chat page: saved conversations, the collections to ask over, and the answers streamed in."""
    user = session.require_user()
    assistant = get_assistant()
    st.title("Ask sparq")
    available = readable_collections(assistant.store, user)
    if not available:
        st.info(
            "There are no documents you can read yet. Ask an administrator to share a collection with your groups."
        )
    with st.sidebar:
        chosen = st.multiselect(
            "Collections", available, default=[], placeholder="All you can read", key="chat_collections"
        )
        chat_history.sidebar(assistant, user, HISTORY_KEY)

    chat_history.restore_after_reload(assistant, user, HISTORY_KEY)
    messages = _history()
    for n, message in enumerate(messages):
        with st.chat_message(message["role"]):
            if message["role"] == "user":
                st.markdown(literal_markdown(message["content"]))
            else:
                show_answer(message, user, key=str(n))

    waiting = waiting_for_model(messages)
    question = st.chat_input("Ask a question about your documents", disabled=waiting)
    pending: str | None = None if waiting else st.session_state.pop(PENDING_KEY, None)
    asked = question or pending  # a new question, or the one that waited for the model to load
    if not asked:
        return
    if question:
        messages.append({"role": "user", "content": question})
        if (
            assistant.loaded_llm is None
        ):  # load it in the background; the question is answered when it is ready
            assistant.load_llm_in_background(retry=True)
            st.session_state[PENDING_KEY] = question
            st.rerun()
        with st.chat_message("user"):
            st.markdown(literal_markdown(question))
    with st.chat_message("assistant"):
        answer = ask_streaming(asked, user, chosen)
        if answer is None:
            messages.pop()
            return
        message = answer_message(answer)
        messages.append(message)
        chat_history.save_turn(assistant, user, asked, message)
        show_answer(message, user, key=str(len(messages) - 1))
