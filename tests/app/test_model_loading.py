"""Loading the answer model never blocks the rest of sparq, and one configuration path sets it up.

A first load can take minutes (on a fresh install it builds the default MoE), so `Assistant.llm` must not
hold the lock the database, store and users are created under. The slow load here is the real factory's
engine (an OpenAI-compatible engine, constructed for real, needing no server) behind a gate the test opens:
what is under test is the Assistant's locking, not the engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import model.factory
from model.base import ModelError

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens there: the engine must not need the server to be built


class SlowFactory:
    """`model.factory.create_engine`, held at a gate: counts calls, reports progress, then builds a real engine."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.real = model.factory.create_engine

    def __call__(self, backend: str, model_name: str | None, **kwargs: object):
        self.calls += 1
        progress = kwargs.get("progress")
        if callable(progress):
            progress("layer 3/28: router recall 0.91", 0.4)
        self.entered.set()
        assert self.release.wait(60), "the test never released the slow load"
        if self.fail is not None:
            raise self.fail
        return self.real("openai", "served-model", base_url=NOWHERE, context_window=2048)


@pytest.fixture
def slow_factory(monkeypatch) -> Iterator[SlowFactory]:
    pytest.importorskip("openai")
    factory = SlowFactory()
    monkeypatch.setattr(model.factory, "create_engine", factory)
    yield factory
    factory.release.set()  # never leave a load blocked behind a failed test


def _returns_within(seconds: float, call: Callable[[], object]) -> tuple[bool, object]:
    """Run `call` on another thread; (finished in time, its result)."""
    out: dict[str, object] = {}
    worker = threading.Thread(target=lambda: out.setdefault("value", call()), daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive(), out.get("value")


def test_a_slow_first_model_load_blocks_neither_users_nor_store_nor_database(assistant, slow_factory):
    store = assistant.store  # opened before (as a running server has it); the load below must not block it
    loader = threading.Thread(target=lambda: assistant.llm, daemon=True)
    loader.start()
    assert slow_factory.entered.wait(30), "the load did not start"
    try:
        started = time.monotonic()
        for name, call in [
            ("users.count_admins()", lambda: assistant.users.count_admins()),
            ("store", lambda: assistant.store),
            ("engine", lambda: assistant.engine),
            ("embedder", lambda: assistant.embedder),
        ]:
            done, value = _returns_within(2.0, call)
            assert done, f"assistant.{name} waited for the model load"
            assert value is not None
        assert assistant.store is store and time.monotonic() - started < 8
        assert loader.is_alive() and assistant.loaded_llm is None  # the load was still running all along
    finally:
        slow_factory.release.set()
        loader.join(30)
    assert assistant.loaded_llm is not None and slow_factory.calls == 1


def test_concurrent_first_callers_share_one_load(assistant, slow_factory):
    got: list[object] = []
    callers = [threading.Thread(target=lambda: got.append(assistant.llm), daemon=True) for _ in range(4)]
    for t in callers:
        t.start()
    assert slow_factory.entered.wait(30)
    time.sleep(0.3)  # let the other callers reach the load
    slow_factory.release.set()
    for t in callers:
        t.join(30)
    assert len(got) == 4 and all(e is got[0] for e in got)
    assert slow_factory.calls == 1


def test_background_load_reports_progress_then_ready(assistant, slow_factory):
    assert assistant.llm_status.state == "not loaded"
    status = assistant.load_llm_in_background()
    assert status.state == "loading"
    assert slow_factory.entered.wait(30)
    status = assistant.llm_status
    assert (status.state, status.message, status.fraction) == (
        "loading",
        "layer 3/28: router recall 0.91",
        0.4,
    )
    assert (
        assistant.load_llm_in_background().state == "loading" and slow_factory.calls == 1
    )  # not started twice
    slow_factory.release.set()
    deadline = time.monotonic() + 30
    while assistant.llm_status.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assistant.llm_status.state == "ready" and assistant.loaded_llm is not None


def test_a_failed_load_is_reported_and_retried(assistant, slow_factory):
    slow_factory.fail = ModelError("the default model's source weights are not installed")
    slow_factory.release.set()
    assistant.load_llm_in_background()
    deadline = time.monotonic() + 30
    while assistant.llm_status.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    status = assistant.llm_status
    assert (status.state, status.message) == (
        "failed",
        "the default model's source weights are not installed",
    )
    assert assistant.load_llm_in_background().state == "failed" and slow_factory.calls == 1  # no retry loop
    with pytest.raises(ModelError, match="source weights"):
        _ = assistant.llm  # a question retries, and sees the error itself
    assert slow_factory.calls == 2
    slow_factory.fail = None
    assert assistant.llm is assistant.loaded_llm is not None


def test_llm_timeout_s_reaches_the_engine_on_both_configuration_paths(monkeypatch, tmp_path):
    """SPARQ_LLM_TIMEOUT_S configures the engine the same way through Settings (Assistant.llm) and
    `model.engine_from_env`, with the same default when unset."""
    pytest.importorskip("openai")
    from app.assistant import Assistant
    from app.config import Settings

    for key, value in {
        "SPARQ_LLM_BACKEND": "openai",
        "SPARQ_LLM_MODEL": "served-model",
        "SPARQ_LLM_BASE_URL": NOWHERE,
        "SPARQ_LLM_CONTEXT_WINDOW": "2048",
        "SPARQ_DATA_DIR": str(tmp_path / "data"),
        "SPARQ_LLM_TIMEOUT_S": "7.5",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SPARQ_LLM_TIMEOUT", raising=False)
    from_env = model.factory.engine_from_env(context_window=2048)
    from_settings = Assistant(Settings()).llm
    assert from_env.timeout_s == 7.5 and from_env.client.timeout == 7.5
    assert from_settings.timeout_s == 7.5 and from_settings.client.timeout == 7.5

    monkeypatch.delenv("SPARQ_LLM_TIMEOUT_S")
    assert model.factory.engine_from_env(context_window=2048).timeout_s == Settings().llm_timeout_s
    assert Assistant(Settings()).llm.timeout_s == Settings().llm_timeout_s


def test_engine_from_env_reads_the_other_settings_like_settings_do(monkeypatch, tmp_path):
    pytest.importorskip("openai")
    from app.config import Settings

    for key, value in {
        "SPARQ_LLM_BACKEND": "openai",
        "SPARQ_LLM_MODEL": "served-model",
        "SPARQ_LLM_BASE_URL": NOWHERE,
        "SPARQ_LLM_CONTEXT_WINDOW": "3072",
        "SPARQ_LLM_TOP_K": "3",
    }.items():
        monkeypatch.setenv(key, value)
    engine = model.factory.engine_from_env()
    settings = Settings()
    assert engine.info.context_window == settings.llm_context_window == 3072
    assert engine.info.n_experts_used == settings.llm_top_k == 3
    monkeypatch.setenv("SPARQ_LLM_TOP_K", "three")
    with pytest.raises(ModelError, match="SPARQ_LLM_TOP_K='three' is not a whole number"):
        model.factory.engine_from_env()


def test_build_default_if_used_does_nothing_when_another_model_is_configured(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from app.cli import cli

    monkeypatch.setenv("SPARQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPARQ_LLM_BACKEND", "openai")
    result = CliRunner().invoke(cli, ["model", "build-default", "--if-used"])
    assert result.exit_code == 0, result.output
    assert "not the embedded default: nothing to build" in result.output
    assert not (tmp_path / "data" / "models").exists()


def test_run_sh_builds_the_default_before_the_ui_and_test_sh_never_does():
    run = (ROOT / "scripts" / "run.sh").read_text()
    build = run.index("sparq model build-default --if-used")
    assert build < run.index('exec .venv/bin/sparq "$@"')
    test = (ROOT / "scripts" / "test.sh").read_text()
    assert "run.sh" not in test and "build-default" not in test


def test_the_model_loader_works_without_an_assistant(small_llm):
    """app/model_loader.py is its own component: built with the factory only, it loads once and says so."""
    from app.model_loader import ModelLoad, ModelLoader

    calls: list[float] = []

    def create(progress):
        progress("building the answer model", 0.5)
        calls.append(1.0)
        return small_llm

    loader = ModelLoader(create)
    assert loader.loaded is None and loader.status.state == "not loaded"
    assert loader.get() is small_llm and loader.get() is small_llm and calls == [1.0]
    assert loader.status == ModelLoad("ready", small_llm.info.name, 1.0)
    given = ModelLoader(create, small_llm)  # an engine handed in is never built
    assert given.loaded is small_llm and given.load_in_background().state == "ready" and calls == [1.0]
