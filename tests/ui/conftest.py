"""UI fixtures: a real Assistant (SQLite, FAISS, embedder) with the small SmolLM2 model through llama.cpp
(`small_llm` from tests/conftest.py), served to the Streamlit pages through the UI's one factory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

DOCS = {
    "policy.md": "# Travel policy\n\nEmployees book economy class for flights under six hours.\n\n"
    "# Expenses\n\nMeals are reimbursed up to 40 euros per day.\n",
    "it.md": "# IT\n\nThe VPN server is vpn.example.com. Passwords expire every 90 days.\n",
}
ADMIN_PASSWORD = "admin-pass-123"
ALICE_PASSWORD = "alice-pass-123"


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def ui_assistant(assistant, monkeypatch) -> Iterator:
    """The conftest Assistant, served by the UI; an admin and two employees exist (no model yet)."""
    from app.ui.assistant_factory import use_assistant
    from app.ui.bootstrap import ensure_admin

    monkeypatch.setenv("SPARQ_ADMIN_PASSWORD", ADMIN_PASSWORD)
    assistant.settings.max_answer_tokens = 24
    ensure_admin(assistant.users, assistant.settings.data_dir, announce=lambda _text: None)
    assistant.users.add("alice", groups=["staff"], password=ALICE_PASSWORD)
    assistant.users.add("mallory", groups=["contractors"], password="mallory-pass-1")
    use_assistant(assistant)
    yield assistant
    use_assistant(None)


@pytest.fixture
def ready(ui_assistant, small_llm, docs_dir):
    """Documents ingested for group `staff`, and the real small model loaded."""
    ui_assistant.use_llm(small_llm)
    ui_assistant.ingest(docs_dir, collection="hr", groups=["staff"])
    return ui_assistant


def page(view: str, user: str | None):
    """An AppTest running one page's render() as `user`, with a real server-side session token in its
    state, as the sign-in leaves it."""
    from streamlit.testing.v1 import AppTest

    from app.ui import session
    from app.ui.assistant_factory import get_assistant

    at = AppTest.from_string(f"from app.ui.views import {view}\n{view}.render()\n", default_timeout=300)
    if user is not None:
        assistant = get_assistant()
        lifetime_s = assistant.settings.session_lifetime_hours * 3600
        at.session_state[session.TOKEN_KEY] = assistant.users.start_session(user, lifetime_s=lifetime_s)
    return at


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Remember each phase's report on the test item, so the browser fixture can save what it saw on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def tiny_moe_llm(tmp_path_factory, small_llm):
    """A real (random-weight) qwen2moe GGUF made by the MoEfication pipeline, served by llama.cpp, so the
    query log gets measured expert selections for the heatmap (the same recipe as the model tests)."""
    from model.llamacpp_engine import LlamaCppEngine
    from model.moe.source_weights import smollm2_path
    from model.tiny import build_tiny_moe_gguf

    samples = [
        [{"role": "user", "content": f"Sample {i}: meals are reimbursed up to 40 euros per day."}]
        for i in range(20)
    ]
    _, moe, _ = build_tiny_moe_gguf(
        tmp_path_factory.mktemp("tinymoe"),
        smollm2_path(),
        samples,
        calib_tokens=300,
        router_steps=20,
        n_threads=2,
    )
    engine = LlamaCppEngine(moe, n_ctx=512, n_threads=2)
    yield engine
    engine.close()
