"""The optional LDAP sync schedule inside `sparq serve`: every SPARQ_LDAP_SYNC_MINUTES, a background thread
syncs users and groups from the directory. A failed run (server down, wrong password) is logged and retried
with backoff; it changes nothing, so an unreachable directory never disables anyone."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.directory_sync import DirectoryError, LdapConfig, SyncPlan, sync_ldap
from app.users import UserDirectory

log = logging.getLogger(__name__)


class DirectorySchedule:
    """Runs `sync_ldap` every `interval_s` on a daemon thread until `stop()`; `last` is the latest outcome."""

    def __init__(
        self,
        config: LdapConfig,
        users: UserDirectory,
        interval_s: float,
        *,
        max_backoff_s: float = 3600.0,
        on_run: Callable[[SyncPlan | None, str | None], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the sync interval must be positive")
        self.config, self.users, self.interval_s = config, users, interval_s
        self.max_backoff_s = max_backoff_s
        self.on_run = on_run
        self.last: tuple[SyncPlan | None, str | None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sparq-ldap-sync", daemon=True)

    def start(self) -> DirectorySchedule:
        """Start syncing in the background; returns self so it can be started where it is made."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to stop and wait up to `timeout_s` for a run in progress to finish."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        wait = 0.0
        failures = 0
        while not self._stop.wait(wait):
            try:
                plan = sync_ldap(self.config, self.users)
            except DirectoryError as exc:
                failures += 1
                wait = min(self.max_backoff_s, self.interval_s * 2 ** min(failures, 10))
                log.warning("LDAP sync failed (%d in a row), next try in %.0f s: %s", failures, wait, exc)
                self.last = (None, str(exc))
            else:
                failures = 0
                wait = self.interval_s
                changes = plan.lines()
                log.info("LDAP sync: %d changes, %d unchanged", len(changes), plan.unchanged)
                self.last = (plan, None)
            if self.on_run is not None:
                self.on_run(*self.last)
