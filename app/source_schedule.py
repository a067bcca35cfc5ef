"""The source scheduler: a background thread that syncs the due sources (app.sources), one at a time.

`sparq serve` runs one from its start and the web app's server started by `sparq ui` one from its first page
view (set SPARQ_SOURCE_SCHEDULE=false to keep a process out). Any number may run against one database, on one machine
or many: each sync first claims its source's lease in the database, so a source is never synced twice at
once, and a scheduler that finds it taken moves on. A failed sync is logged, recorded with its error and
retried later with backoff (app.sources); it never stops the thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.sources import RunInfo, SourceError, SourceService, SyncFailed
from ingestion.connectors.base import SourceConfigError, SourceUnavailable

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 15.0
# Set by `sparq ui` for the Streamlit server it starts: that process runs a scheduler (app.ui.main). Other
# processes running the pages (tests, an embedding application) do not.
UI_SCHEDULE_ENV = "SPARQ_UI_RUNS_SOURCE_SCHEDULE"


class SourceSchedule:
    """Every `poll_s`, syncs each due source until `stop()`; `on_run(name, run)` is told of every run."""

    def __init__(
        self,
        service: SourceService,
        *,
        poll_s: float = DEFAULT_POLL_S,
        on_run: Callable[[str, RunInfo], None] | None = None,
    ) -> None:
        if poll_s <= 0:
            raise ValueError("the poll interval must be positive")
        self.service = service
        self.poll_s = poll_s
        self.on_run = on_run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sparq-source-schedule", daemon=True)

    def start(self) -> SourceSchedule:
        """Start the scheduler thread; returns self so it can be started where it is made."""
        self._thread.start()
        log.info("source scheduler started (%s), checking every %.0f s", self.service.owner, self.poll_s)
        return self

    @property
    def running(self) -> bool:
        """The thread is alive, so a caller can tell a stopped or crashed scheduler."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop after the sync in progress (none is started once this is called); False if that sync is
        still running after `timeout_s` (its lease then lapses by itself if the process exits)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning(
                "source scheduler: a sync is still running after %.0f s; leaving it to finish", timeout_s
            )
            return False
        return True

    def run_once(self) -> list[RunInfo]:
        """Sync every source due now that no other process holds; the runs done here, failed ones included."""
        runs: list[RunInfo] = []
        for name in self.service.due():
            if self._stop.is_set():
                break
            try:
                run = self.service.sync_if_due(name)
            except SyncFailed as exc:
                cause = exc.__cause__
                expected = isinstance(cause, (SourceUnavailable, SourceConfigError))
                # An unreachable source is an everyday event; anything else is a fault worth a traceback.
                log.warning("%s", exc, exc_info=None if expected else cause)
                run = exc.run
            except SourceError as exc:  # removed between the listing and the claim
                log.info("source scheduler: %s", exc)
                continue
            if run is None:  # another process took it, or has just synced it
                continue
            runs.append(run)
            if self.on_run is not None:
                self.on_run(name, run)
        return runs

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database outage: said in the log, tried again at the next poll
                log.exception(
                    "source scheduler: checking the due sources failed; trying again in %.0f s", self.poll_s
                )
            if self._stop.wait(self.poll_s):
                break
