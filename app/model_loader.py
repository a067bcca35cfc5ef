"""The answer model's load lifecycle: loaded once, on demand or in the background, with its progress.

A first load may build the default MoE for minutes. It runs under its own lock, so everything else a page
needs (database, store, users) stays available meanwhile, and concurrent first callers wait for one load.
A page asks `status` to show the build's progress instead of blocking on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from model.base import LLMEngine

log = logging.getLogger(__name__)

# Builds the configured engine, reporting (message, fraction done) as it goes.
EngineFactory = Callable[[Callable[[str, float], None]], LLMEngine]


@dataclass(frozen=True)
class ModelLoad:
    """Where loading the answer model stands: state is "not loaded", "loading", "ready" or "failed"."""

    state: str
    message: str
    fraction: float | None


class ModelLoader:
    """Holds the answer model once loaded; `create` builds it (with a progress callback) when first needed."""

    def __init__(self, create: EngineFactory, engine: LLMEngine | None = None) -> None:
        """`engine`: one given already (tests, the Python API with its own model); never built then."""
        self._create = create
        self._engine = engine
        self._load_lock = threading.Lock()  # only for loading: a first load may build for minutes
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._progress: tuple[str, float | None] = ("", None)

    def use(self, engine: LLMEngine | None) -> None:
        """Serve `engine` from now on (None: load the configured one again when next needed)."""
        with self._load_lock:
            self._engine, self._error = engine, None

    @property
    def loaded(self) -> LLMEngine | None:
        """The engine if one is loaded already; never loads or builds a model."""
        return self._engine

    def get(self) -> LLMEngine:
        """The engine, loading it now if needed (concurrent first callers wait for the one load)."""
        engine = self._engine
        if engine is not None:
            return engine
        with self._load_lock:
            if self._engine is None:
                self._error = None
                self._progress = ("loading the answer model", None)
                try:
                    self._engine = self._create(self._on_progress)
                except BaseException as exc:
                    self._error = exc
                    raise
            return self._engine

    def _on_progress(self, message: str, fraction: float) -> None:
        self._progress = (message, fraction)

    @property
    def status(self) -> ModelLoad:
        """Where the load stands (what the UI shows while a first build runs)."""
        engine = self._engine
        if engine is not None:
            return ModelLoad("ready", engine.info.name, 1.0)
        thread = self._thread
        if self._load_lock.locked() or (thread is not None and thread.is_alive()):
            message, fraction = self._progress
            return ModelLoad("loading", message, fraction)
        error = self._error
        if error is not None:
            return ModelLoad("failed", str(error) or type(error).__name__, None)
        return ModelLoad("not loaded", "the answer model loads on the first question", None)

    def load_in_background(self, *, retry: bool = False) -> ModelLoad:
        """Start loading on a background thread (once) and return where it stands. A failed load is retried
        only when `retry` is set (a question retries it too, through `get`)."""
        with self._start_lock:
            status = self.status
            if status.state == "not loaded" or (status.state == "failed" and retry):
                self._progress = ("loading the answer model", None)
                self._thread = threading.Thread(target=self._load, name="sparq-llm-load", daemon=True)
                self._thread.start()
                status = self.status
        return status

    def _load(self) -> None:
        try:
            engine = self.get()
        except Exception:  # recorded in status for the page to show; logged here with its traceback
            log.exception("loading the answer model failed")
            return
        log.info("answer model ready: %s", engine.info.name)
