"""OpenID Connect sign-in: the company identity provider says who signs in and which groups they have.

The flow itself is Streamlit's (`st.login`: Authlib, authorization code with PKCE S256, discovery, ID-token
check at the callback). Streamlit then keeps the token's claims in a cookie for 30 days and checks neither
their age nor their audience again, so before a sparq session is started this module validates the raw ID
token once more, with Authlib and joserfc against the provider's published keys: signature, issuer (the
configured one), audience (our client id), expiry. Then the claims decide: the groups (and, with an admin
rule, the role) replace the stored ones at every sign-in, and the user is found by (issuer, subject), never
by name (see `UserDirectory.sign_in_oidc`).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from app.config import Settings
from app.users import AccountDisabled, IdentityConflict, UserDirectory, UserError, UserInfo

if TYPE_CHECKING:
    from joserfc.jwk import KeySetSerialization

COOKIE_SECRET_FILE = "oidc-cookie-secret"
DISCOVERY_PATH = "/.well-known/openid-configuration"
LEEWAY_S = 60  # clock skew between sparq and the provider
KEYS_TTL_S = 3600.0
MIN_REFRESH_S = 30.0  # an unknown key id refetches the key set, at most this often

# What the sign-in error page says for each refusal; the code travels in the URL, the text never does.
REASONS: dict[str, str] = {
    "signature": "The identity token's signature is not valid: it was altered or not signed by the provider.",
    "unknown_key": "The identity token is signed with a key the provider does not publish.",
    "issuer": "The identity token comes from another issuer than the configured provider.",
    "audience": "The identity token was issued for another application (wrong audience).",
    "expired": "The identity token has expired. Sign in again.",
    "claims": "The identity token lacks a claim sparq needs, or a claim has an invalid value.",
    "provider": "The identity provider refused the sign-in.",
    "disabled": "Your account is disabled in sparq. Ask an administrator.",
    "conflict": "Your user name at the identity provider belongs to another sparq account. Ask an administrator.",
    "unavailable": "The identity provider could not be reached. Try again later.",
    "failed": "The sign-in with the identity provider failed.",
}


class OidcError(RuntimeError):
    """A sign-in refused; `reason` is a key of REASONS (what the user is shown), the message is for the log."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason if reason in REASONS else "failed"
        super().__init__(message)

    @property
    def user_message(self) -> str:
        """What the sign-in page tells the user; the log gets the detailed message instead."""
        return REASONS[self.reason]


@dataclass(frozen=True)
class OidcConfig:
    """How to reach the identity provider and read its tokens (SPARQ_OIDC_*); the secret stays out of repr."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_url: str
    groups_claim: str = "groups"
    username_claim: str = "preferred_username"
    admin_groups: tuple[str, ...] = ()
    scopes: str = "openid profile email"
    prompt: str = ""
    link_ldap_users: bool = False

    @property
    def metadata_url(self) -> str:
        """The discovery document's URL, derived from the issuer as OpenID Connect Discovery defines it."""
        return self.issuer.rstrip("/") + DISCOVERY_PATH


def oidc_config(settings: Settings) -> OidcConfig | None:
    """The provider configuration from SPARQ_OIDC_* (Settings already checked it is complete), or None."""
    if not settings.oidc_issuer:
        return None
    assert settings.oidc_client_id and settings.oidc_client_secret and settings.oidc_redirect_url
    return OidcConfig(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        redirect_url=settings.oidc_redirect_url,
        groups_claim=settings.oidc_groups_claim,
        username_claim=settings.oidc_username_claim,
        admin_groups=tuple(settings.oidc_admin_groups),
        scopes=settings.oidc_scopes,
        prompt=settings.oidc_prompt,
        link_ldap_users=settings.oidc_link_ldap_users,
    )


def cookie_secret(settings: Settings) -> str:
    """The secret Streamlit signs its sign-in cookies with: SPARQ_OIDC_COOKIE_SECRET, or one made at the
    first start and kept in the data dir, readable only by this account (replicas sharing the data dir
    share it)."""
    if settings.oidc_cookie_secret is not None:
        return settings.oidc_cookie_secret.get_secret_value()
    path = settings.data_dir / COOKIE_SECRET_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Path(path).read_text(encoding="utf-8").strip()
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    return value


def streamlit_auth_secrets(config: OidcConfig, signing_secret: str) -> dict[str, Any]:
    """Streamlit's `[auth]` secrets section for this provider, given to `st.App` in memory (never a file).
    `expose_tokens` lets the app read the raw ID token to validate it again before a session starts."""
    return {
        "redirect_uri": config.redirect_url,
        "cookie_secret": signing_secret,
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "server_metadata_url": config.metadata_url,
        "expose_tokens": ["id"],
        "client_kwargs": {"scope": config.scopes, "prompt": config.prompt},
    }


# --- the provider's keys -----------------------------------------------------------------------------
class ProviderKeys:
    """The provider's discovery document and signing keys (JWKS), fetched over HTTP and cached; an unknown
    key id refetches them once (the provider rotated its keys), and is then refused."""

    def __init__(self, config: OidcConfig, *, timeout_s: float = 10.0) -> None:
        self.config, self.timeout_s = config, timeout_s
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._jwks: KeySetSerialization | None = None
        self._fetched_at = 0.0

    def _get(self, url: str) -> dict[str, Any]:
        import httpx

        try:
            response = httpx.get(url, timeout=self.timeout_s, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError("unavailable", f"cannot read {url}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(data, dict):
            raise OidcError("unavailable", f"{url} did not answer with a JSON object")
        return data

    def _load(self) -> tuple[dict[str, Any], KeySetSerialization]:
        metadata = self._get(self.config.metadata_url)
        issuer = metadata.get("issuer")
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.config.issuer.rstrip("/"):
            # OpenID Connect Discovery 4.3: the document must name the issuer it was fetched for.
            raise OidcError(
                "issuer", f"the discovery document names issuer {issuer!r}, not {self.config.issuer!r}"
            )
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise OidcError("unavailable", "the discovery document has no jwks_uri")
        # The JWKS is the provider's JSON, read as RFC 7517's shape: joserfc checks each key as it imports it.
        return metadata, cast("KeySetSerialization", self._get(jwks_uri))

    def current(self, *, refresh: bool = False) -> tuple[dict[str, Any], KeySetSerialization]:
        """(discovery document, JWKS); `refresh` refetches unless that was done moments ago."""
        with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = self._metadata is None or age > KEYS_TTL_S or (refresh and age > MIN_REFRESH_S)
            if stale:
                self._metadata, self._jwks = self._load()
                self._fetched_at = time.monotonic()
            assert self._metadata is not None and self._jwks is not None
            return self._metadata, self._jwks


_keys_lock = threading.Lock()
_keys: dict[OidcConfig, ProviderKeys] = {}


def provider_keys(config: OidcConfig) -> ProviderKeys:
    """One key cache per provider configuration in this process."""
    with _keys_lock:
        if config not in _keys:
            _keys[config] = ProviderKeys(config)
        return _keys[config]


# --- validation --------------------------------------------------------------------------------------
def refusal(exc: BaseException) -> OidcError:
    """The OidcError for an exception from Authlib/joserfc (here or in Streamlit's callback)."""
    from authlib.integrations.base_client.errors import OAuthError
    from joserfc import errors

    if isinstance(exc, OidcError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, errors.ExpiredTokenError):
        return OidcError("expired", text)
    if isinstance(exc, errors.ClaimError):
        claim = getattr(exc, "claim", "")
        if claim in ("aud", "azp"):
            return OidcError("audience", text)
        if claim == "iss":
            return OidcError("issuer", text)
        if claim in ("exp", "iat", "nbf"):
            return OidcError("expired", text)
        return OidcError("claims", text)
    if isinstance(exc, errors.BadSignatureError):
        return OidcError("signature", text)
    if isinstance(exc, (errors.InvalidKeyIdError, errors.MissingKeyError)):
        return OidcError("unknown_key", text)
    if isinstance(
        exc,
        (
            errors.DecodeError,
            errors.InvalidPayloadError,
            errors.UnsupportedAlgorithmError,
            errors.MissingAlgorithmError,
            errors.InvalidHeaderValueError,
        ),
    ):
        return OidcError("signature", text)
    if isinstance(exc, OAuthError):
        return OidcError("provider", text)
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with streamlit[auth]
        return OidcError("failed", text)
    if isinstance(exc, httpx.HTTPError):
        return OidcError("unavailable", text)
    return OidcError("failed", text)


def validate_id_token(
    raw: str, config: OidcConfig, keys: ProviderKeys, *, now: float | None = None, leeway: int = LEEWAY_S
) -> dict[str, Any]:
    """The claims of an ID token that is signed by one of the provider's keys (with an algorithm it
    announces), issued by the configured issuer for our client id, and not expired; OidcError otherwise."""
    from authlib.oidc.core import IDToken
    from joserfc import errors, jwt
    from joserfc.jwk import KeySet
    from joserfc.jws import JWSRegistry

    metadata, jwks = keys.current()
    algorithms = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [a for a in algorithms if a != "none"]
    registry = JWSRegistry(algorithms=algorithms, strict_check_header=False)
    try:
        try:
            token = jwt.decode(raw, KeySet.import_key_set(jwks), registry=registry)
        except errors.InvalidKeyIdError:
            _, jwks = keys.current(refresh=True)
            token = jwt.decode(raw, KeySet.import_key_set(jwks), registry=registry)
        issuer = metadata["issuer"]
        claims = IDToken(
            token.claims,
            token.header,
            {
                "iss": {"essential": True, "value": issuer},
                "aud": {"essential": True, "value": config.client_id},
                "sub": {"essential": True},
                "exp": {"essential": True},
            },
            {"client_id": config.client_id},
        )
        claims.validate(now=int(now if now is not None else time.time()), leeway=leeway)
    except (errors.JoseError, ValueError, TypeError) as exc:
        raise refusal(exc) from exc
    return dict(claims)


# --- claims -> sparq user ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """Who a validated ID token says the user is: the (issuer, subject) identity and what sparq uses."""

    issuer: str
    subject: str
    name: str
    groups: list[str]
    role: str | None  # None: no admin rule configured, keep the stored role
    email: str | None


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by its name, or else by a dotted path into nested objects (Keycloak's realm_access.roles)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def identity_from_claims(claims: Mapping[str, Any], config: OidcConfig) -> Identity:
    """Who the validated claims say this is: name, groups and (with an admin rule) role."""
    subject, issuer = claims.get("sub"), claims.get("iss")
    if not isinstance(subject, str) or not subject or not isinstance(issuer, str):
        raise OidcError("claims", "the ID token has no subject or issuer")
    raw_groups = _claim(claims, config.groups_claim)
    if raw_groups is None:
        groups: list[str] = []
    elif isinstance(raw_groups, str):
        groups = [raw_groups]
    elif isinstance(raw_groups, list) and all(isinstance(g, str) for g in raw_groups):
        groups = list(raw_groups)
    else:
        raise OidcError("claims", f"claim {config.groups_claim!r} is neither a string nor a list of strings")
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    name = next(
        (c for c in (_claim(claims, config.username_claim), email, subject) if isinstance(c, str) and c),
        subject,
    )
    role = None
    if config.admin_groups:
        role = "admin" if set(groups) & set(config.admin_groups) else "employee"
    return Identity(issuer, subject, name, sorted(set(groups)), role, email)


def sign_in(
    users: UserDirectory,
    raw_id_token: str,
    config: OidcConfig,
    keys: ProviderKeys | None = None,
    *,
    now: float | None = None,
) -> UserInfo:
    """Validate the ID token, then create or update its user with the token's groups and role."""
    claims = validate_id_token(raw_id_token, config, keys or provider_keys(config), now=now)
    identity = identity_from_claims(claims, config)
    try:
        return users.sign_in_oidc(
            issuer=identity.issuer,
            subject=identity.subject,
            name=identity.name,
            groups=identity.groups,
            role=identity.role,
            email=identity.email,
            link_directory_user=config.link_ldap_users,
        )
    except AccountDisabled as exc:
        raise OidcError("disabled", str(exc)) from exc
    except IdentityConflict as exc:
        raise OidcError("conflict", str(exc)) from exc
    except UserError as exc:
        raise OidcError("claims", str(exc)) from exc
