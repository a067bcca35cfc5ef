"""Shared state for every page: the one Assistant, who is signed in, and the access checks pages rely on.

The Assistant comes from one factory (`get_assistant`) so tests can point the UI at a test configuration
(SPARQ_* environment) or inject a ready Assistant with `use_assistant`.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import streamlit as st
from sqlalchemy import select

from app import oidc
from app.assistant import Assistant
from app.config import Settings
from app.paths import relative_paths
from app.users import SigninThrottle, TooManyAttempts, UserError, UserInfo
from retrieval.access import readable_by
from retrieval.schema import Document

log = logging.getLogger(__name__)

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
    """The Assistant pages use: a test's override, else the one shared by every session of this process."""
    return _override if _override is not None else _shared_assistant()


# --- first run ---------------------------------------------------------------------------------------
def ensure_admin(assistant: Assistant, announce: Callable[[str], None] | None = None) -> str | None:
    """Create the first admin when there is none, so a fresh install can be signed into.

    The password comes from SPARQ_ADMIN_PASSWORD or is random; a random one is written to a file readable
    only by the operator (never to the web page or the log), and the console is told where it is; a random
    one must be changed at the first sign-in before any page but Account opens.
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
            # A generated password has sat in a file: it must be replaced before anything else.
            users.add(name, role="admin", password=password, must_change_password=not given)
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
# The browser session holds only a random token; the database holds its hash, the user, and when it was
# last used, so sign-out, a password change, idle time and expiry end it on every replica at once.
TOKEN_KEY = "sparq_session"
UNKNOWN_ADDRESS = "unknown-address"  # one shared throttle bucket when the client address is not known

PASSWORD_CHANGE_FIRST = "Change the generated password on the Account page before doing anything else."


def client_address() -> str:
    """The client address for the throttle: the TCP peer of this session's connection; for a loopback
    peer (Streamlit reports it as None), a local reverse proxy's X-Forwarded-For (its last entry, the one
    the proxy itself added); else one shared constant bucket."""
    peer = st.context.ip_address
    if isinstance(peer, str) and peer:  # (no server, as under AppTest: not a str)
        return peer[:100]
    forwarded = st.context.headers.get("X-Forwarded-For")
    last = forwarded.rsplit(",", 1)[-1].strip() if isinstance(forwarded, str) else ""
    return f"forwarded:{last[:100]}" if last else UNKNOWN_ADDRESS


MAX_FAILURES = 5  # wrong passwords per (address, name) within the window
MAX_ADDRESS_FAILURES = 20  # ... per address, whatever the names (password spraying)
FAILURE_WINDOW_S = 300.0


def throttle(assistant: Assistant) -> SigninThrottle:
    """The shared sign-in throttle, kept in the database so every replica counts the same failures."""
    return SigninThrottle(
        assistant.engine, per_name=MAX_FAILURES, per_address=MAX_ADDRESS_FAILURES, window_s=FAILURE_WINDOW_S
    )


class LocalSignInDisabled(RuntimeError):
    """Passwords are switched off (SPARQ_LOCAL_LOGIN=false): only the identity provider signs people in."""


def sign_in(name: str, password: str) -> UserInfo | None:
    """The user on a right password (a new session token then sits in this browser session); None on a
    wrong one. Raises TooManyAttempts while this address is over its limit, in total or for this name, and
    LocalSignInDisabled when passwords are switched off.
    Failures are logged with the address and a count, never the typed name (often a mistyped password)."""
    assistant = get_assistant()
    if not assistant.settings.local_login:
        raise LocalSignInDisabled("Sign-in with a sparq password is switched off here; use single sign-on.")
    key = name.strip()[:200]
    address = client_address()
    guard = throttle(assistant)
    try:
        guard.check(address, key)
    except TooManyAttempts:
        log.warning("sign-in refused: too many failed attempts from %s", address)
        raise
    user = assistant.users.authenticate(key, password)
    if user is None:
        count = guard.failed(address, key)
        log.warning(
            "failed sign-in from %s (%d in the last %d s from this address)",
            address,
            count,
            int(guard.window_s),
        )
        return None
    guard.succeeded(address, key)
    settings = assistant.settings
    st.session_state[TOKEN_KEY] = assistant.users.start_session(
        user.name, lifetime_s=settings.session_lifetime_hours * 3600
    )
    log.info("sign-in: %s from %s", user.name, address)
    return user


# --- single sign-on (OpenID Connect, see app.oidc) ----------------------------------------------------
SIGNIN_ERROR_KEY = "sparq_signin_error"  # session state, and the query parameter the callback guard sets


def provider_signed_in() -> bool:
    """Whether Streamlit holds a sign-in from the identity provider (its cookie) in this browser session."""
    if not get_assistant().settings.oidc_enabled:
        return False
    return bool(st.user.get("is_logged_in", False))


def sign_in_with_provider() -> UserInfo | None:
    """Start a sparq session from the provider sign-in Streamlit holds, if any: its ID token is validated
    again (signature, issuer, audience, expiry) and its groups and role replace the stored ones. None when
    there is no provider sign-in, or when it is refused: the reason is then kept for the sign-in page, the
    log gets the details, and no session is started."""
    if not provider_signed_in():
        return None
    assistant = get_assistant()
    config = oidc.oidc_config(assistant.settings)
    assert config is not None
    raw = st.user.tokens.to_dict().get("id")
    try:
        if not raw:
            raise oidc.OidcError("claims", "Streamlit holds no ID token (expose_tokens must include 'id')")
        user = oidc.sign_in(assistant.users, raw, config)
    except oidc.OidcError as exc:
        log.warning("single sign-on refused from %s (%s): %s", client_address(), exc.reason, exc)
        st.session_state[SIGNIN_ERROR_KEY] = exc.reason
        return None
    st.session_state.pop(SIGNIN_ERROR_KEY, None)
    st.session_state[TOKEN_KEY] = assistant.users.start_session(
        user.name, lifetime_s=assistant.settings.session_lifetime_hours * 3600
    )
    log.info(
        "single sign-on: %s (%s) from %s", user.name, ", ".join(user.groups) or "no groups", client_address()
    )
    return user


def signin_error() -> str | None:
    """What the sign-in page must say about a refused sign-in: one from this session, or the code the
    callback guard put in the URL (only known codes; the URL's text itself is never shown)."""
    code = st.query_params.get(SIGNIN_ERROR_KEY)
    if code is not None:
        st.session_state[SIGNIN_ERROR_KEY] = code
        del st.query_params[SIGNIN_ERROR_KEY]
    code = st.session_state.get(SIGNIN_ERROR_KEY)
    if code is None:
        return None
    return oidc.REASONS.get(str(code), oidc.REASONS["failed"])


def _forget() -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def sign_out() -> bool:
    """End the session server-side (a copied token opens nothing afterwards), then forget this browser's
    state. After a provider sign-in, Streamlit's sign-in cookie is dropped too and the browser is sent to
    the provider's sign-out: returns True then (the page must not rerun over that redirect)."""
    token = st.session_state.get(TOKEN_KEY)
    if token:
        get_assistant().users.end_session(token)
    _forget()
    if provider_signed_in():
        st.logout()
        return True
    return False


def current_user() -> UserInfo | None:
    """The user of this browser's live session, re-read on every run so a changed role, a removal, a
    revoked or an idle or expired session counts at once (and the state is cleared then)."""
    token = st.session_state.get(TOKEN_KEY)
    if not token:
        return None
    assistant = get_assistant()
    user = assistant.users.session_user(token, idle_s=assistant.settings.session_idle_minutes * 60)
    if user is None:
        _forget()
    return user


def check_password(user: UserInfo, password: str) -> bool:
    """Re-check a signed-in user's password (the Account page), throttled like sign-in."""
    assistant = get_assistant()
    address = client_address()
    guard = throttle(assistant)
    guard.check(address, user.name)
    if assistant.users.authenticate(user.name, password) is None:
        count = guard.failed(address, user.name)
        log.warning(
            "wrong current password for %s from %s (%d recent failures from this address)",
            user.name,
            address,
            count,
        )
        return False
    guard.succeeded(address, user.name)
    return True


def change_password(user: UserInfo, new_password: str) -> UserInfo:
    """Set a new password; every other session of the user ends, this browser's stays signed in."""
    return get_assistant().users.update(
        user.name, password=new_password, keep_session=st.session_state.get(TOKEN_KEY)
    )


def require_user(*, while_password_change_pending: bool = False) -> UserInfo:
    """The signed-in user, or stop the page. A user who must change a generated password gets nothing
    but the Account page (`while_password_change_pending=True`) until they do."""
    user = current_user()
    if user is None:
        st.error("Please sign in.")
        st.stop()
    if user.must_change_password and not while_password_change_pending:
        st.warning(PASSWORD_CHANGE_FIRST)
        st.stop()
    return user


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


# --- how a document is named to its readers ---------------------------------------------------------
def display_paths(assistant: Assistant, user: UserInfo, document_ids: Iterable[int]) -> dict[int, str]:
    """Collection-relative paths of the documents among `document_ids` that `user` may read: relative to
    the collection's upload folder or else to the folder all its documents share. Readers are never shown
    where the server keeps files (admins find full paths on the Documents page)."""
    ids = sorted({int(i) for i in document_ids})
    if not ids:
        return {}
    with assistant.store.sessions() as session:
        rows = session.execute(
            select(Document.id, Document.path, Document.collection_id).where(
                Document.id.in_(ids), readable_by(Document.id, user.principal())
            )
        ).all()
        triples = [(r.id, r.path, r.collection_id) for r in rows]
        return relative_paths(session, assistant.settings.data_dir, triples)


# --- uploads -----------------------------------------------------------------------------------------
# Stored uploads (names, one folder per collection id, atomic writes, removal with the document): app.uploads.
