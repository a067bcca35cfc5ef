"""Shared state for every page: the one Assistant, who is signed in, and the access checks pages rely on.

The Assistant comes from one factory (`get_assistant`) so tests can point the UI at a test configuration
(SPARQ_* environment) or inject a ready Assistant with `use_assistant`.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import streamlit as st
from sqlalchemy import select

from app.assistant import Assistant
from app.config import Settings
from app.users import UserError, UserInfo
from retrieval.access import readable_by
from retrieval.schema import Document

log = logging.getLogger(__name__)

USER_KEY = "sparq_user"
ADMIN_NAME_ENV = "SPARQ_ADMIN_USER"
ADMIN_PASSWORD_ENV = "SPARQ_ADMIN_PASSWORD"
ADMIN_PASSWORD_FILE = "initial-admin-password.txt"

_override: Assistant | None = None
_admin_lock = threading.Lock()


def use_assistant(assistant: Assistant | None) -> None:
    """Serve the UI from this Assistant (tests; embedding sparq in another process); None restores the default."""
    global _override
    _override = assistant


@st.cache_resource(show_spinner="Starting sparq…")
def _shared_assistant() -> Assistant:
    """One Assistant per server process: it is thread-safe and owns the model, index and database pool."""
    assistant = Assistant(Settings())
    ensure_admin(assistant)
    return assistant


def get_assistant() -> Assistant:
    return _override if _override is not None else _shared_assistant()


# --- first run ---------------------------------------------------------------------------------------
def ensure_admin(assistant: Assistant, announce: Callable[[str], None] | None = None) -> str | None:
    """Create the first admin when there is none, so a fresh install can be signed into.

    The password comes from SPARQ_ADMIN_PASSWORD or is random; a random one is written to a file readable
    only by the operator (never to the web page or the log), and the console is told where it is.
    Returns the name of the admin created, or None when one already existed."""
    say = announce or (lambda text: print(text, file=sys.stderr, flush=True))
    with _admin_lock:
        users = assistant.users
        if users.count_admins() > 0:
            return None
        name = os.environ.get(ADMIN_NAME_ENV, "admin")
        given = os.environ.get(ADMIN_PASSWORD_ENV)
        password = given or secrets.token_urlsafe(15)
        try:
            users.add(name, role="admin", password=password)
        except UserError:
            if users.count_admins() > 0:  # another process created it in the meantime
                return None
            raise
        if given:
            say(f"sparq: created admin user {name!r} with the password from {ADMIN_PASSWORD_ENV}.")
            return name
        data_dir = assistant.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        secret_file = data_dir / ADMIN_PASSWORD_FILE
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(password + "\n")
        say(
            f"sparq: created admin user {name!r} with a random password, stored in {secret_file.resolve()} "
            "(readable only by this account). Sign in with it, change it on the Account page, then delete the file."
        )
        if sys.stderr.isatty():  # an operator at a terminal, not a log collector
            say(f"sparq: initial password for {name!r}: {password}")
        return name


# --- who is signed in --------------------------------------------------------------------------------
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0
_failures: dict[str, list[float]] = {}
_failures_lock = threading.Lock()


class TooManyAttempts(RuntimeError):
    """Sign-in refused for a while after repeated wrong passwords for the same name (per server process)."""


def _recent_failures(name: str, now: float) -> list[float]:
    times = [t for t in _failures.get(name, []) if now - t < FAILURE_WINDOW_S]
    _failures[name] = times
    return times


def sign_in(name: str, password: str) -> UserInfo | None:
    """The user on a right password (and remembered in this browser session); None on a wrong one.
    Raises TooManyAttempts after MAX_FAILURES wrong passwords for a name within FAILURE_WINDOW_S."""
    key = name.strip()[:200]
    now = time.monotonic()
    with _failures_lock:
        recent = _recent_failures(key, now)
        if len(recent) >= MAX_FAILURES:
            wait = int(FAILURE_WINDOW_S - (now - recent[0])) + 1
            raise TooManyAttempts(f"Too many failed sign-ins for this name; try again in {wait} s.")
    user = get_assistant().users.authenticate(key, password)
    if user is not None:
        st.session_state[USER_KEY] = user.name
        with _failures_lock:
            _failures.pop(key, None)
        log.info("sign-in: %s", user.name)
    else:
        with _failures_lock:
            _failures.setdefault(key, []).append(time.monotonic())
        log.warning("failed sign-in for %r", key)
    return user


def sign_out() -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def current_user() -> UserInfo | None:
    """The signed-in user, re-read from the database on every run so a changed role or removal counts at once."""
    name = st.session_state.get(USER_KEY)
    if not name:
        return None
    user = get_assistant().users.get(name)
    if user is None:
        sign_out()
    return user


def require_user() -> UserInfo:
    user = current_user()
    if user is None:
        st.error("Please sign in.")
        st.stop()
    return user  # type: ignore[return-value]


def require_admin() -> UserInfo:
    """Every admin page starts with this: navigation hides them from employees, this refuses a direct call."""
    user = require_user()
    if not user.is_admin:
        st.error("This page is for administrators.")
        st.stop()
    return user


# --- documents the user may read ---------------------------------------------------------------------
def readable_document(assistant: Assistant, user: UserInfo, document_id: int) -> Document | None:
    """The document if `user` may read it, by the same SQL rule retrieval uses (admin, or a shared group)."""
    with assistant.store.sessions() as session:
        doc = session.scalar(
            select(Document).where(Document.id == document_id, readable_by(Document.id, user.principal()))
        )
        if doc is not None:
            session.expunge(doc)
        return doc


def source_file(assistant: Assistant, user: UserInfo, document_id: int) -> tuple[Path, str] | None:
    """(path, mime) of a readable document's file on disk; None when not readable or no longer a file."""
    doc = readable_document(assistant, user, document_id)
    if doc is None:
        return None
    path = Path(doc.path)
    if not path.is_file():
        return None
    return path, doc.mime or "application/octet-stream"


def readable_collections(assistant: Assistant, user: UserInfo) -> list[str]:
    """Collections holding at least one document the user may read (others are not even named to them)."""
    from retrieval.schema import Collection

    with assistant.store.sessions() as session:
        query = (
            select(Collection.name)
            .join(Document, Document.collection_id == Collection.id)
            .where(readable_by(Document.id, user.principal()))
            .distinct()
            .order_by(Collection.name)
        )
        return list(session.scalars(query))


# --- uploads -----------------------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_name(name: str, fallback: str = "file") -> str:
    """A file or folder name that cannot leave its folder: no separators, no leading dots, no control chars."""
    name = unicodedata.normalize("NFKC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    return name[:150] or fallback


def upload_path(data_dir: Path, collection: str, filename: str) -> Path:
    """data_dir/uploads/<collection>/<name>, checked to stay inside the uploads folder."""
    root = (data_dir / "uploads").resolve()
    target = (root / safe_name(collection, "default") / safe_name(filename)).resolve()
    if root not in target.parents:
        raise ValueError(f"refusing to write outside {root}")
    return target
