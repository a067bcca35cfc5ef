"""The chat page while the answer model loads (on a fresh install: the minutes-long default build): it shows
the build's progress and returns at once, other pages keep working, and the question is answered once the
model is ready. The slow load is the real small model (SmolLM2 through llama.cpp) behind a gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import model.factory
from tests.ui.conftest import page

QUESTION = "How much are meals reimbursed per day?"


class GatedFactory:
    """`model.factory.create_engine` that reports build progress, waits at a gate, then returns the real model."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, backend: str, model_name: str | None, **kwargs: object):
        self.calls += 1
        progress = kwargs.get("progress")
        if callable(progress):
            progress("layer 3/28: router recall 0.91", 0.4)
        assert self.release.wait(60), "the test never released the slow load"
        return self.engine


@pytest.fixture
def gated(ui_assistant, small_llm, docs_dir, monkeypatch) -> Iterator[GatedFactory]:
    ui_assistant.ingest(docs_dir, collection="hr", groups=["staff"])
    factory = GatedFactory(small_llm)
    monkeypatch.setattr(model.factory, "create_engine", factory)
    yield factory
    factory.release.set()


def _progress_texts(at) -> list[str]:
    return [str(getattr(el, "proto", el)) for el in at.get("progress")]


def test_chat_shows_build_progress_instead_of_hanging_and_answers_when_ready(ui_assistant, gated):
    at = page("chat", "alice").run(timeout=30)
    at.chat_input[0].set_value(QUESTION).run(timeout=15)  # the old page blocked here for the whole load
    assert not at.exception
    assert any("layer 3/28" in t for t in _progress_texts(at)), _progress_texts(at)
    assert at.chat_input[0].disabled  # the next question waits for the model
    assert [m["content"] for m in at.session_state["chat_messages"]] == [QUESTION]  # shown, kept for later
    assert ui_assistant.loaded_llm is None and gated.calls == 1

    other = page("account", "alice").run(timeout=15)  # other pages are not blocked by the load
    assert not other.exception and other.title

    gated.release.set()
    deadline = time.monotonic() + 30
    while ui_assistant.llm_status.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    at.run(timeout=120)  # what the progress fragment's rerun does once the model is ready
    assert not at.exception
    assert not at.get("progress") and not at.chat_input[0].disabled
    messages = at.session_state["chat_messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[0]["content"] == QUESTION
    assert messages[1]["status"] in ("ok", "no_answer") and gated.calls == 1
