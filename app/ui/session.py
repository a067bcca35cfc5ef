"""Who is signed in to this browser session: the glue between Streamlit's session state and sparq's users.

The browser session holds only a random token; the database holds its hash, the user, and when it was last
used, so sign-out, a password change, idle time and expiry end it on every replica at once. The parts with
no Streamlit in them live beside this module: the Assistant factory (`assistant_factory`), the first admin
(`bootstrap`), throttled password checks (`signin_throttle`) and document access (`document_access`).
"""

from __future__ import annotations

import logging

import streamlit as st

from app import oidc
from app.assistant import Assistant
from app.ui.assistant_factory import get_assistant
from app.ui.signin_throttle import PasswordGate, signin_throttle, throttle_address
from app.users import UserInfo

log = logging.getLogger(__name__)

TOKEN_KEY = "sparq_session"
SIGNIN_ERROR_KEY = "sparq_signin_error"  # session state, and the query parameter the callback guard sets

PASSWORD_CHANGE_FIRST = "Change the generated password on the Account page before doing anything else."


def client_address() -> str:
    """The address this session's connection counts against in the sign-in throttle (see
    `signin_throttle.throttle_address`)."""
    return throttle_address(st.context.ip_address, st.context.headers.get("X-Forwarded-For"))


def _passwords(assistant: Assistant) -> PasswordGate:
    return PasswordGate(assistant.users, signin_throttle(assistant.engine))


class LocalSignInDisabled(RuntimeError):
    """Passwords are switched off (SPARQ_LOCAL_LOGIN=false): only the identity provider signs people in."""


def sign_in(name: str, password: str) -> UserInfo | None:
    """The user on a right password (a new session token then sits in this browser session); None on a
    wrong one. Raises TooManyAttempts while this address is over its limit, in total or for this name, and
    LocalSignInDisabled when passwords are switched off."""
    assistant = get_assistant()
    if not assistant.settings.local_login:
        raise LocalSignInDisabled("Sign-in with a sparq password is switched off here; use single sign-on.")
    address = client_address()
    user = _passwords(assistant).sign_in(name, password, address)
    if user is None:
        return None
    settings = assistant.settings
    st.session_state[TOKEN_KEY] = assistant.users.start_session(
        user.name, lifetime_s=settings.session_lifetime_hours * 3600
    )
    log.info("sign-in: %s from %s", user.name, address)
    return user


# --- single sign-on (OpenID Connect, see app.oidc) ----------------------------------------------------
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


# --- the live session ----------------------------------------------------------------------------------
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
    return _passwords(assistant).recheck(user, password, client_address())


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
