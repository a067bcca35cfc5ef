"""Sources that sync themselves (folders, mailboxes, web sites): add, list, sync and remove the rows of the
`sources` table, and record every run in `source_runs`.

A sync first claims the source with one atomic UPDATE (its lease is free or has expired), so that however
many processes run schedulers (`sparq serve`, `sparq ui`, replicas) and admins press "Sync now", one source
is never synced twice at the same time; the lease is renewed while the sync runs and lapses by itself when
its process dies. A failed sync changes no document: it is recorded, counted, and retried with exponential
backoff. The thread that runs the due ones is app.source_schedule."""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import CursorResult, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.assistant import SparqError
from app.models import Source, SourceRun
from ingestion.connectors.base import Connector, SourceConfigError, SourceUnavailable, is_under
from ingestion.pipeline import IngestPipeline, ProgressCallback

if TYPE_CHECKING:
    from app.assistant import Assistant

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 30  # listing a source takes time; more often than this is a mistake, not a schedule
MAX_INTERVAL_S = 366 * 86400
DEFAULT_LEASE_S = 300.0  # renewed every third of it while a sync runs; lapses this long after a crash
MAX_BACKOFF_S = 6 * 3600.0
NOTES_KEPT = 50  # per run: enough to see what is wrong, never the whole source
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")
SCHEDULE_PATTERN = re.compile(r"^every\s+(\d+)\s*([smhd])$")
UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SCHEDULE_EXAMPLES = "'every 30m', 'every 2h', 'every 1d', 'every 45s' or 'manual'"
# Words that make an option a secret, unless the option only says where the secret is (..._env, ..._file).
SECRET_WORDS = ("password", "passwd", "secret", "token", "apikey", "api_key", "credential", "private_key")
SECRET_REFERENCES = ("_env", "_file")
# From the web UI a password may only come from variables the operator named for it: never sparq's own
# (SPARQ_DATABASE_URL, SPARQ_LLM_API_KEY...), which a source pointed at another server would send there.
BROWSER_ENV_PREFIX = "SPARQ_SOURCE_"
# From the web UI a web site or mailbox may only be on a host the operator listed: otherwise an admin's browser
# could make the server fetch its cloud metadata (169.254.169.254) or send a SPARQ_SOURCE_* password anywhere.
SOURCE_HOSTS_ENV = "SPARQ_SOURCE_HOSTS"
# Stored in the options of a source added from the web UI, so each sync applies the web UI's rules again.
BROWSER_MARK = "added_from"
BROWSER_MARK_VALUE = "web"


class SourceError(SparqError):
    """A source request that cannot be done; the message says why and what to do instead."""


class SourceBusy(SourceError):
    """Another process (or thread) is syncing or removing this source right now."""


class SyncFailed(SourceError):
    """A sync failed; the run is recorded (`run`) and the cause is chained. No document was changed."""

    def __init__(self, name: str, run: RunInfo) -> None:
        super().__init__(f"source {name!r}: sync failed: {run.error}")
        self.name = name
        self.run = run


# --- schedules -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """How often a source syncs, as its canonical text and in seconds (None: only on request)."""

    text: str  # canonical: "every 30m" or "manual"
    interval_s: int | None  # None: only synced on request


def parse_schedule(text: str) -> Schedule:
    """'every 30m', 'every 2h', 'every 1d', 'every 45s' or 'manual', with a message that says what is wrong."""
    given = (text or "").strip().lower()
    if given == "manual":
        return Schedule("manual", None)
    match = SCHEDULE_PATTERN.match(given)
    if match is None:
        raise SourceError(f"schedule {text!r} is not understood: write {SCHEDULE_EXAMPLES}")
    count, unit = int(match.group(1)), match.group(2)
    seconds = count * UNITS_S[unit]
    if seconds < MIN_INTERVAL_S:
        raise SourceError(
            f"schedule {text!r} is too often: at least every {MIN_INTERVAL_S}s (a sync must list its whole "
            "source each time); use 'manual' and `sparq sources sync` to sync on demand"
        )
    if seconds > MAX_INTERVAL_S:
        raise SourceError(f"schedule {text!r} is longer than a year: use 'manual' instead")
    return Schedule(f"every {count}{unit}", seconds)


def backoff_s(interval_s: int | None, failures: int, cap_s: float = MAX_BACKOFF_S) -> float | None:
    """How long after the `failures`-th failure in a row the next try comes: twice the interval, doubling
    with each further failure, never more than `cap_s`; None for a manual source (tried on request only)."""
    if interval_s is None:
        return None
    return min(cap_s, float(interval_s) * 2.0 ** min(max(failures, 1), 30))


# --- options ---------------------------------------------------------------------------------------------
def is_secret_option(key: str) -> bool:
    """An option whose name says it holds a secret; a `*_env` or `*_file` reference to one is not secret."""
    low = key.lower()
    return any(word in low for word in SECRET_WORDS) and not low.endswith(SECRET_REFERENCES)


def check_no_secrets(options: dict[str, Any]) -> None:
    """Refuse options that would put a secret in the database (rows, backups, the source listing)."""
    for key, value in options.items():
        if isinstance(value, dict):
            check_no_secrets(value)
        if is_secret_option(str(key)):
            raise SourceError(
                f"option {key!r} would store a secret in sparq's database: put it in an environment variable "
                "of the sparq processes and give its name with password_env=NAME, or in a file only sparq's "
                "account can read and give its path with password_file=PATH"
            )
        if isinstance(value, str) and "://" in value:
            try:
                has_password = urlsplit(value).password is not None
            except ValueError:  # not an address after all
                has_password = False
            if has_password:
                raise SourceError(
                    f"option {key!r} holds a password in its address (user:password@host): give the address "
                    "without it, and the password with password_env=NAME or password_file=PATH"
                )


def parse_hosts(hosts: str | Sequence[str] | None) -> frozenset[str]:
    """Host names from SPARQ_SOURCE_HOSTS (comma-separated) or a list, compared without case or a final dot."""
    parts = hosts.split(",") if isinstance(hosts, str) else list(hosts or ())
    return frozenset(h.strip().lower().rstrip(".") for h in parts if h and h.strip())


def parse_option(text: str) -> tuple[str, Any]:
    """One `key=value` from the command line: digits are a number, true/false a flag, a value starting with
    { or [ is JSON (group_map={"staff": "employees"}), anything else is text."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise SourceError(f"option {text!r} is not key=value (e.g. --option mailbox=INBOX)")
    value = value.strip()
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    if re.fullmatch(r"-?\d{1,18}", value):
        return key, int(value)
    if value[:1] in ("{", "["):
        try:
            return key, json.loads(value)
        except json.JSONDecodeError as exc:
            raise SourceError(f"option {key!r}: {value!r} is not valid JSON ({exc.msg})") from None
    return key, value


# --- what the listing shows ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """One sync of a source: when, how it ended and what changed, as the source_runs row keeps it."""

    source: str
    status: str  # completed | failed
    started_at: datetime
    finished_at: datetime
    duration_s: float
    error: str | None
    files_new: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_failed: int = 0
    notes: list[str] = field(default_factory=list)
    runner: str | None = None


@dataclass(frozen=True)
class SourceInfo:
    """A source as listed: options (never a secret, only *_env/*_file references), schedule, last run."""

    name: str
    kind: str
    options: dict[str, Any]
    collection: str
    groups: list[str]
    schedule: str
    enabled: bool
    next_due_at: datetime | None
    failures: int
    syncing_by: str | None  # the process holding its lease now, if any
    created_at: datetime
    last_run: RunInfo | None


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one stored here is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else _utc(moment)


def _run_info(name: str, run: SourceRun) -> RunInfo:
    return RunInfo(
        name,
        run.status,
        _utc(run.started_at),
        _utc(run.finished_at),
        run.duration_s,
        run.error,
        run.files_new,
        run.files_updated,
        run.files_unchanged,
        run.files_removed,
        run.files_failed,
        list(run.notes or []),
        run.runner,
    )


def _error_text(exc: BaseException) -> str:
    """The message an admin reads: a connector's own errors as they are, anything else with its type."""
    if isinstance(exc, (SourceConfigError, SourceUnavailable)):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _rows(result: Any) -> int:
    """Rows an UPDATE matched (Session.execute is typed as returning any Result; an UPDATE's is a cursor's)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def _overlaps(a: str, b: str) -> bool:
    return is_under(a, b) or is_under(b, a)


SyncFunction = Callable[..., Any]  # ingestion.source_sync.sync_source
ConnectorFactory = Callable[[str, dict[str, Any]], Connector]


class SourceService:
    """The sources of one database. `sessions` opens database sessions; `writer()` is a context manager that
    yields an IngestPipeline while holding the ingest lock (as every write to the store must); `data_dir` and
    `ingest_roots` decide which server paths a source may read (app.ingest_roots)."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        writer: Callable[[], AbstractContextManager[IngestPipeline]],
        *,
        data_dir: Path,
        ingest_roots: Sequence[Path] = (),
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sync: SyncFunction | None = None,
        connectors: ConnectorFactory | None = None,
        source_hosts: Sequence[str] = (),
    ) -> None:
        if lease_s <= 0:
            raise ValueError("the lease must be positive")
        self._sessions = sessions
        self._writer = writer
        self.data_dir = Path(data_dir)
        self.ingest_roots = [Path(r) for r in ingest_roots]
        self.source_hosts = parse_hosts(source_hosts)
        # Unique per service: two schedulers of one process are two owners, never sharing a lease.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_s = lease_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self._sync = sync
        self._connectors = connectors

    # --- collaborators, imported when first used (a listing never loads a connector) -----------------
    def _make_connector(self, kind: str, options: dict[str, Any]) -> Connector:
        if self._connectors is None:
            from ingestion.connectors.registry import make_connector

            self._connectors = make_connector
        options = dict(options)
        options.pop(BROWSER_MARK, None)  # sparq's own note, not the connector's
        if kind == "folder":  # never sparq's own data dir (database, index, secrets), even inside the folder
            given = options.get("exclude") or []
            options["exclude"] = [
                *([given] if isinstance(given, str) else given),
                str(self.data_dir.resolve()),
            ]
        return self._connectors(kind, options)

    def _sync_function(self) -> SyncFunction:
        if self._sync is None:
            from ingestion.source_sync import sync_source

            self._sync = sync_source
        return self._sync

    # --- adding -------------------------------------------------------------------------------------
    def check_options(
        self, kind: str, options: dict[str, Any], *, restricted: bool = False
    ) -> dict[str, Any]:
        """The options as they will be stored: no secret, a folder's path real and allowed, and, from the web UI
        (`restricted`), server files only inside SPARQ_INGEST_ROOTS and passwords only from SPARQ_SOURCE_*."""
        from app.ingest_roots import check_ingest_path

        checked = {str(k).strip(): v for k, v in options.items()}
        if any(not k.isidentifier() for k in checked):
            raise SourceError("option names are words such as path, url, host, user, mailbox, password_env")
        check_no_secrets(checked)
        if BROWSER_MARK in checked:
            raise SourceError(
                f"option {BROWSER_MARK!r} is sparq's own (it marks sources added from the web app)"
            )

        def allowed(option: str, *, require_roots: bool) -> str:
            try:
                real = check_ingest_path(
                    str(checked[option]),
                    data_dir=self.data_dir,
                    roots=self.ingest_roots,
                    require_roots=require_roots,
                )
            except SparqError as exc:  # outside the roots, the data dir, or not there at all
                raise SourceError(f"{kind} source: {option}: {exc}") from exc
            return str(real)

        if kind == "folder" and isinstance(checked.get("path"), str):
            checked["path"] = allowed("path", require_roots=restricted)
        if restricted:
            env = checked.get("password_env")
            if env is not None and not str(env).startswith(BROWSER_ENV_PREFIX):
                raise SourceError(
                    f"from the web app, password_env must name a variable starting with {BROWSER_ENV_PREFIX} that "
                    f"the operator set for sources (e.g. {BROWSER_ENV_PREFIX}MAIL_PASSWORD); add other sources "
                    "with `sparq sources add` on the server"
                )
            # Server files named from a browser (a password file, a CA bundle) lie inside the ingest roots:
            # otherwise an admin's browser could make the server open any file it can read.
            for option in ("password_file", "ca_file"):
                if checked.get(option) is not None:
                    checked[option] = allowed(option, require_roots=True)
            self._check_hosts(kind, checked)
            checked[BROWSER_MARK] = BROWSER_MARK_VALUE
        return checked

    def _check_hosts(self, kind: str, options: dict[str, Any]) -> None:
        """From the web app, a web site or mailbox only on a host listed in SPARQ_SOURCE_HOSTS."""
        if kind == "web":
            given = [str(options[k]) for k in ("start_url", "sitemap_url") if options.get(k)]
            hosts = [(urlsplit(u).hostname or "") for u in given]
        elif kind == "imap":
            hosts = [str(options.get("host") or "")]
        else:
            return
        if not self.source_hosts:
            raise SourceError(
                f"from the web app, {kind} sources are off: set {SOURCE_HOSTS_ENV} (source_hosts) to the host "
                "names a web admin may add web sites and mailboxes for (e.g. "
                f"{SOURCE_HOSTS_ENV}=intranet.example.com,mail.example.com), or add it with `sparq sources add` "
                "on the server"
            )
        refused = sorted({h for h in hosts if h.strip().lower().rstrip(".") not in self.source_hosts})
        if refused:
            raise SourceError(
                f"{kind} source: host {', '.join(refused)} is not among the hosts a web admin may add sources "
                f"for ({SOURCE_HOSTS_ENV}: {', '.join(sorted(self.source_hosts))}); add it there, or add the "
                "source with `sparq sources add` on the server"
            )

    def add(
        self,
        name: str,
        kind: str,
        *,
        collection: str,
        groups: Sequence[str] = (),
        schedule: str = "manual",
        options: dict[str, Any] | None = None,
        restricted: bool = False,
    ) -> SourceInfo:
        """Add a source after building its connector from the options (which validates them). A scheduled
        source is due at once; `restricted` applies the web UI's rules (see check_options)."""
        name = (name or "").strip()
        if not NAME_PATTERN.match(name):
            raise SourceError(f"source name {name!r}: letters, digits and _ . @ -, at most 200 characters")
        collection = (collection or "").strip()
        if not collection:
            raise SourceError("a source needs a collection to sync into (--collection NAME)")
        plan = parse_schedule(schedule)
        stored = self.check_options(kind, dict(options or {}), restricted=restricted)
        try:
            connector = self._make_connector(kind, dict(stored))
        except SourceConfigError as exc:
            raise SourceError(str(exc)) from exc
        try:
            root_key = connector.root_key
        finally:
            connector.close()
        clean_groups = sorted({g.strip() for g in groups if g and g.strip()})
        now = self.clock()
        with self._sessions() as session, session.begin():
            clash = session.scalar(select(Source.name).where(Source.name == name))
            if clash is not None:
                raise SourceError(
                    f"a source named {name!r} exists already (remove it first, or pick another name)"
                )
            for other, other_key in session.execute(
                select(Source.name, Source.root_key).where(Source.collection == collection)
            ).all():
                if _overlaps(root_key, other_key):
                    raise SourceError(
                        f"source {other!r} already syncs {other_key} into collection {collection!r}; two sources "
                        "over the same documents would remove each other's: use another collection"
                    )
            session.add(
                Source(
                    name=name,
                    kind=kind,
                    options=stored,
                    root_key=root_key,
                    collection=collection,
                    groups=clean_groups,
                    schedule=plan.text,
                    interval_s=plan.interval_s,
                    enabled=True,
                    next_due_at=now if plan.interval_s else None,
                    failures=0,
                )
            )
            try:
                session.flush()
            except IntegrityError as exc:  # added by another admin at the same moment
                raise SourceError(f"a source named {name!r} exists already") from exc
        return self.get(name)

    # --- reading ------------------------------------------------------------------------------------
    def list(self) -> list[SourceInfo]:
        """Every source with its latest run."""
        now = self.clock()
        with self._sessions() as session:
            sources = list(session.scalars(select(Source).order_by(Source.name)))
            latest = (
                select(SourceRun.source_id, func.max(SourceRun.id).label("run_id")).group_by(
                    SourceRun.source_id
                )
            ).subquery()
            runs = {
                r.source_id: r
                for r in session.scalars(select(SourceRun).join(latest, SourceRun.id == latest.c.run_id))
            }
            return [self._info(s, runs.get(s.id), now) for s in sources]

    def get(self, name: str) -> SourceInfo:
        """One source by name, with its last run (SourceError when there is none)."""
        now = self.clock()
        with self._sessions() as session:
            source = self._find(session, name)
            run = session.scalar(
                select(SourceRun)
                .where(SourceRun.source_id == source.id)
                .order_by(SourceRun.id.desc())
                .limit(1)
            )
            return self._info(source, run, now)

    def runs(self, name: str, limit: int = 20) -> builtins.list[RunInfo]:
        """The latest runs of a source, newest first."""
        with self._sessions() as session:
            source = self._find(session, name)
            rows = session.scalars(
                select(SourceRun)
                .where(SourceRun.source_id == source.id)
                .order_by(SourceRun.id.desc())
                .limit(limit)
            )
            return [_run_info(name, r) for r in rows]

    def due(self) -> builtins.list[str]:
        """Names of the enabled scheduled sources whose time has come and that nobody is syncing now."""
        now = self.clock()
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(Source.name)
                    .where(
                        Source.enabled.is_(True),
                        Source.next_due_at.is_not(None),
                        Source.next_due_at <= now,
                        or_(Source.lease_until.is_(None), Source.lease_until < now),
                    )
                    .order_by(Source.next_due_at)
                )
            )

    @staticmethod
    def _find(session: Session, name: str) -> Source:
        source = session.scalar(select(Source).where(Source.name == name))
        if source is None:
            raise SourceError(f"no source named {name!r}; `sparq sources list` shows the sources there are")
        return source

    def _info(self, s: Source, run: SourceRun | None, now: datetime) -> SourceInfo:
        lease_until = _aware(s.lease_until)
        syncing = s.lease_owner if lease_until is not None and lease_until > now else None
        return SourceInfo(
            s.name,
            s.kind,
            dict(s.options or {}),
            s.collection,
            list(s.groups or []),
            s.schedule,
            s.enabled,
            _aware(s.next_due_at),
            s.failures,
            syncing,
            _utc(s.created_at),
            _run_info(s.name, run) if run is not None else None,
        )

    # --- changing -----------------------------------------------------------------------------------
    def set_enabled(self, name: str, enabled: bool) -> SourceInfo:
        """Pause or resume a source's schedule; a resumed scheduled source is due at once."""
        with self._sessions() as session, session.begin():
            source = self._find(session, name)
            source.enabled = enabled
            if enabled and source.interval_s:
                source.next_due_at = self.clock()
        return self.get(name)

    def remove(self, name: str, *, delete_documents: bool = False) -> int:
        """Remove a source and its run history; with `delete_documents`, also the documents it synced
        (otherwise they stay, as ordinary documents of their collection). Returns the documents deleted.
        SourceBusy while it is being synced."""
        source_id = self._claim_or_busy(name)
        with self._held(source_id, name):
            with self._sessions() as session:
                source = session.get(Source, source_id)
                assert source is not None
                collection, root_key = source.collection, source.root_key
            deleted = 0
            if delete_documents:
                with self._writer() as pipeline:
                    cid = pipeline.store.collection_id(collection)
                    ids = (
                        [i for i, _ in pipeline.store.documents_under(cid, root_key)]
                        if cid is not None
                        else []
                    )
                    deleted = pipeline.store.delete_documents(ids) if ids else 0
            with self._sessions() as session, session.begin():
                session.execute(delete(SourceRun).where(SourceRun.source_id == source_id))
                session.execute(delete(Source).where(Source.id == source_id))
        log.info("source %s removed (%d documents deleted)", name, deleted)
        return deleted

    # --- syncing ------------------------------------------------------------------------------------
    def sync(
        self, name: str, *, progress: ProgressCallback | None = None, allow_empty: bool = False
    ) -> RunInfo:
        """Sync a source now, whatever its schedule; SourceBusy while another sync of it runs, SyncFailed
        (with the recorded run) when it fails. `allow_empty`: a source that lists nothing may remove all
        its stored documents (otherwise refused as a source that is not there, an unmounted share)."""
        source_id = self._claim_or_busy(name)
        with self._held(source_id, name):
            return self._run(source_id, progress, allow_empty=allow_empty)

    def sync_if_due(self, name: str, *, progress: ProgressCallback | None = None) -> RunInfo | None:
        """Sync a source only if it is still due and free (what a scheduler does); None when another process
        has it or has just synced it. SyncFailed as `sync`."""
        source_id, _ = self._claim(name, only_if_due=True)
        if source_id is None:
            return None
        with self._held(source_id, name):
            return self._run(source_id, progress)

    def _claim(self, name: str, *, only_if_due: bool = False) -> tuple[int | None, str | None]:
        """Claim the source with one atomic UPDATE: matched only while its lease is free or expired (and,
        for a scheduler, while it is due), so of concurrent claims exactly one wins. Returns its id when
        claimed (else None) and the lease's holder."""
        now = self.clock()
        conditions = [Source.name == name, or_(Source.lease_until.is_(None), Source.lease_until < now)]
        if only_if_due:
            conditions += [
                Source.enabled.is_(True),
                Source.next_due_at.is_not(None),
                Source.next_due_at <= now,
            ]
        with self._sessions() as session, session.begin():
            claimed = _rows(
                session.execute(
                    update(Source)
                    .where(*conditions)
                    .values(lease_owner=self.owner, lease_until=now + timedelta(seconds=self.lease_s))
                    .execution_options(synchronize_session=False)
                )
            )
            row = session.execute(select(Source.id, Source.lease_owner).where(Source.name == name)).first()
        if row is None:
            raise SourceError(f"no source named {name!r}; `sparq sources list` shows the sources there are")
        return (int(row.id) if claimed == 1 else None), row.lease_owner

    def _claim_or_busy(self, name: str) -> int:
        source_id, holder = self._claim(name)
        if source_id is None:
            raise SourceBusy(f"source {name!r} is being synced now (by {holder}); try again when it is done")
        return source_id

    @contextmanager
    def _held(self, source_id: int, name: str) -> Iterator[None]:
        """Renew a claimed lease while the block runs, and release it after, whatever happens."""
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(source_id, name, stop), name=f"sparq-lease-{name}", daemon=True
        )
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            with self._sessions() as session, session.begin():
                session.execute(
                    update(Source)
                    .where(Source.id == source_id, Source.lease_owner == self.owner)
                    .values(lease_owner=None, lease_until=None)
                    .execution_options(synchronize_session=False)
                )

    def _renew(self, source_id: int, name: str, stop: threading.Event) -> None:
        """Keep the lease while the sync runs: every third of its length, push its end out again."""
        while not stop.wait(self.lease_s / 3):
            try:
                with self._sessions() as session, session.begin():
                    kept = _rows(
                        session.execute(
                            update(Source)
                            .where(Source.id == source_id, Source.lease_owner == self.owner)
                            .values(lease_until=self.clock() + timedelta(seconds=self.lease_s))
                            .execution_options(synchronize_session=False)
                        )
                    )
            except Exception:  # a database hiccup: said, and tried again before the lease runs out
                log.warning("source %s: renewing the lease failed; trying again", name, exc_info=True)
                continue
            if kept != 1:
                log.error(
                    "source %s: the lease was lost (this sync stalled past %.0f s); another process may "
                    "sync it now",
                    name,
                    self.lease_s,
                )
                return

    def _run(
        self, source_id: int, progress: ProgressCallback | None, *, allow_empty: bool = False
    ) -> RunInfo:
        with self._sessions() as session:
            source = session.get(Source, source_id)
            assert source is not None
            name, kind, options = source.name, source.kind, dict(source.options or {})
            collection, groups, cursor = source.collection, list(source.groups or []), source.cursor
            interval_s, failures, root_key = source.interval_s, source.failures, source.root_key
        started = self.clock()
        t0 = time.monotonic()
        result = None
        error: BaseException | None = None
        try:
            connector = self._make_connector(kind, options)
            try:
                self._check_unmoved(name, kind, options, root_key, connector)
                # Asked before taking the ingest lock: listing a web site or a mailbox may take minutes, and
                # every other ingest waits for that lock.
                changes = connector.changes(cursor)
                with self._writer() as pipeline:
                    result = self._sync_function()(
                        connector,
                        pipeline,
                        collection=collection,
                        groups=groups,
                        cursor=cursor,
                        progress=progress,
                        allow_empty=allow_empty,
                        changes=changes,
                    )
            finally:
                connector.close()
        except BaseException as exc:  # recorded as the run's outcome below, then raised again
            error = exc
        duration = time.monotonic() - t0
        finished = self.clock()
        run = SourceRun(
            source_id=source_id,
            started_at=started,
            finished_at=finished,
            duration_s=duration,
            runner=self.owner,
            notes=[],
        )
        values: dict[str, Any]
        if error is None:
            assert result is not None
            summary = result.summary
            run.status = "completed"
            for key in ("files_new", "files_updated", "files_unchanged", "files_removed", "files_failed"):
                setattr(run, key, getattr(summary, key))
            kept_cursor: list[str] = []
            values = {
                "failures": 0,
                "next_due_at": finished + timedelta(seconds=interval_s) if interval_s else None,
            }
            if summary.files_failed:  # a cursor past them would never offer them again (IMAP UIDs, digests)
                kept_cursor = [
                    f"cursor kept: {summary.files_failed} document(s) failed, so the next sync offers them "
                    "again (the unchanged rest is skipped)"
                ]
            else:
                values["cursor"] = result.cursor
            run.notes = self._notes([*kept_cursor, *(result.notes or [])], summary)
        else:
            run.status = "failed"
            run.error = _error_text(error) if isinstance(error, Exception) else "interrupted"
            for key in ("files_new", "files_updated", "files_unchanged", "files_removed", "files_failed"):
                setattr(run, key, 0)
            if isinstance(error, Exception):  # the source's fault: count it and back off
                delay = backoff_s(interval_s, failures + 1, self.max_backoff_s)
                values = {
                    "failures": failures + 1,
                    "next_due_at": finished + timedelta(seconds=delay) if delay is not None else None,
                }
            else:  # interrupted (Ctrl-C, shutdown): not the source's fault, tried again on schedule
                values = {}
        with self._sessions() as session, session.begin():
            session.add(run)
            if values:
                kept = _rows(
                    session.execute(
                        update(Source)
                        .where(Source.id == source_id, Source.lease_owner == self.owner)
                        .values(**values)
                        .execution_options(synchronize_session=False)
                    )
                )
                if kept != 1:
                    log.error(
                        "source %s: the lease was lost during the sync; its cursor and schedule were not "
                        "updated (the next sync reads it again)",
                        name,
                    )
            session.flush()
            info = _run_info(name, run)
        if error is not None:
            if isinstance(error, Exception):
                log.info(  # the caller says it (the scheduler's log, the command's error, the page)
                    "source %s: sync failed after %.1f s (%d in a row): %s",
                    name,
                    duration,
                    values["failures"],
                    info.error,
                )
                raise SyncFailed(name, info) from error
            raise error
        log.info(
            "source %s synced in %.1f s: %d new, %d updated, %d unchanged, %d removed, %d failed",
            name,
            duration,
            info.files_new,
            info.files_updated,
            info.files_unchanged,
            info.files_removed,
            info.files_failed,
        )
        return info

    def _check_unmoved(
        self, name: str, kind: str, options: dict[str, Any], root_key: str, connector: Connector
    ) -> None:
        """Refuse a sync whose source now resolves elsewhere than where it was added (its folder replaced by a
        symbolic link), and one added from the web app whose folder left SPARQ_INGEST_ROOTS since."""
        if connector.root_key != root_key:
            raise SourceError(
                f"source {name!r} now resolves to {connector.root_key}, not {root_key} where it was added (its "
                "path replaced by a symbolic link?); nothing was synced. Restore the path, or remove the source "
                "and add it again for the new place"
            )
        path = Path(str(options.get("path")))
        # A folder that is not there is the connector's to say (SourceUnavailable: an unmounted share).
        if kind == "folder" and options.get(BROWSER_MARK) == BROWSER_MARK_VALUE and path.exists():
            from app.ingest_roots import IngestPathRefused, check_ingest_path

            try:
                check_ingest_path(path, data_dir=self.data_dir, roots=self.ingest_roots, require_roots=True)
            except IngestPathRefused as exc:
                raise SourceError(
                    f"source {name!r} was added from the web app and its folder is no longer allowed: {exc}; "
                    "nothing was synced"
                ) from exc

    @staticmethod
    def _notes(notes: builtins.list[str], summary: Any) -> builtins.list[str]:
        lines = [str(n) for n in notes]
        lines += [f"failed {f.path}: {f.error}" for f in getattr(summary, "failures", [])]
        lines += [f"skipped {f.path}: {f.error}" for f in getattr(summary, "skipped", [])]
        if len(lines) > NOTES_KEPT:
            lines = lines[:NOTES_KEPT] + [f"... and {len(lines) - NOTES_KEPT} more"]
        return lines


def service_for(assistant: Assistant, *, owner: str | None = None, **kwargs: Any) -> SourceService:
    """The sources of an Assistant's database, written through its pipeline under its ingest lock."""

    @contextmanager
    def writer() -> Iterator[IngestPipeline]:
        with assistant._writing():  # the ingest lock over an up-to-date store, as every write takes it
            yield assistant.pipeline()

    s = assistant.settings
    kwargs.setdefault("source_hosts", parse_hosts(s.source_hosts))
    return SourceService(
        sessionmaker(assistant.engine),
        writer,
        data_dir=s.data_dir,
        ingest_roots=s.ingest_roots,
        owner=owner,
        **kwargs,
    )


def refuse_synced_path(sessions: Callable[[], Session], path: str | Path, collection: str) -> None:
    """Refuse a manual ingest (`sparq ingest`, the web app's server folder) of files a source of `collection`
    syncs: it would overwrite the readers that source derives from the file system, and the next sync would
    undo it. A path inside the source's folder, or a folder holding it, is refused; another collection is not."""
    key = str(Path(path).expanduser().resolve())
    with sessions() as session:
        rows = session.execute(
            select(Source.name, Source.root_key).where(
                Source.collection == collection, Source.kind == "folder"
            )
        ).all()
    for name, root_key in rows:
        if _overlaps(key, root_key):
            raise SourceError(
                f"{key} is synced by source {name!r} into collection {collection!r} (its folder {root_key}); "
                f"use `sparq sources sync {name}`, or ingest into another collection"
            )
