"""Entry file of the web app with single sign-on (`sparq ui` when SPARQ_OIDC_ISSUER is set): Streamlit's
ASGI app serving app/ui/main.py, with the provider's settings handed to Streamlit in memory (no secrets
file is written) and a guard on the provider's callback.

Streamlit's callback answers every refusal (a tampered or expired ID token, a wrong issuer or audience, an
unknown signing key, an error from the provider) with a plain redirect to the start page, which looks
like nothing happened. The guard sees that the callback set no sign-in cookie, takes the reason from the
exception Streamlit logged for this very request, and adds it to the redirect, so the sign-in page can say
why nobody was signed in."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a script by Streamlit: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st
from starlette.middleware import Middleware

from app.config import Settings
from app.oidc import OidcConfig, OidcError, cookie_secret, oidc_config, refusal, streamlit_auth_secrets

log = logging.getLogger("sparq.sso")

CALLBACK_PATH = "/oauth2callback"
IDENTITY_COOKIE = b"_streamlit_user="  # the cookie Streamlit sets when a sign-in succeeded
ERROR_PARAMETER = "sparq_signin_error"  # app.ui.session.SIGNIN_ERROR_KEY
STREAMLIT_AUTH_LOGGER = "streamlit.web.server.starlette.starlette_auth_routes"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

_failures: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "sparq_sso_failures", default=None
)


class _CollectFailures(logging.Handler):
    """Keeps the exceptions Streamlit's auth routes log while a callback request runs (and only then)."""

    def emit(self, record: logging.LogRecord) -> None:
        found = _failures.get()
        if found is not None and record.exc_info and record.exc_info[1] is not None:
            found.append(record.exc_info[1])


def _signed_in(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the response sets Streamlit's identity cookie to a value (not the deletion of it)."""
    for name, value in headers:
        if name.lower() == b"set-cookie" and value.startswith(IDENTITY_COOKIE):
            first = value[len(IDENTITY_COOKIE) :].split(b";", 1)[0].strip()
            if first not in (b"", b'""') and b"max-age=0" not in value.lower():
                return True
    return False


def _with_error(location: str, reason: str) -> str:
    parts = urlsplit(location or "/")
    query = parse_qs(parts.query)
    query[ERROR_PARAMETER] = [reason]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


class CallbackGuard:
    """ASGI middleware on the provider's callback: a callback that signed nobody in redirects with the
    reason (a code; see app.oidc.REASONS). The provider's return from its sign-out page (no code, no
    error) passes unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        """Pass every request through; on the provider's callback, a sign-in that failed becomes a
        redirect with its reason."""
        if scope.get("type") != "http" or not str(scope.get("path", "")).rstrip("/").endswith(CALLBACK_PATH):
            await self.app(scope, receive, send)
            return
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        if "code" not in query and "error" not in query:
            await self.app(scope, receive, send)
            return
        failures: list[BaseException] = []
        token = _failures.set(failures)

        async def guarded(message: Message) -> None:
            if message.get("type") == "http.response.start":
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
                if not _signed_in(headers):
                    if "error" in query:
                        refused = OidcError("provider", f"the provider answered {query['error'][0][:100]!r}")
                    elif failures:
                        refused = refusal(failures[-1])
                    else:
                        refused = OidcError("failed", "the callback set no sign-in cookie")
                    log.warning("single sign-on refused at the callback (%s): %s", refused.reason, refused)
                    location = next(
                        (v.decode("latin-1") for k, v in headers if k.lower() == b"location"), "/"
                    )
                    headers = [(k, v) for k, v in headers if k.lower() != b"location"]
                    headers.append((b"location", _with_error(location, refused.reason).encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        finally:
            _failures.reset(token)


def _required_config(settings: Settings) -> OidcConfig:
    config = oidc_config(settings)
    if config is None:
        raise SystemExit("sparq: single sign-on needs SPARQ_OIDC_ISSUER (and its client settings)")
    return config


_settings = Settings()
_config = _required_config(_settings)
logging.getLogger(STREAMLIT_AUTH_LOGGER).addHandler(_CollectFailures())
# `streamlit run` finds this assignment and serves it with uvicorn; a plain `streamlit run main.py` has no SSO.
app = st.App(
    str(Path(__file__).with_name("main.py")),
    secrets={"auth": streamlit_auth_secrets(_config, cookie_secret(_settings))},
    middleware=[Middleware(CallbackGuard)],
)
