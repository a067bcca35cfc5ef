"""API keys: how other software authenticates to the HTTP API. A key acts as its user, nothing more.

A key is shown once at creation; the database keeps only its SHA-256 (a key has 256 random bits, so a
fast hash is enough and lookups stay one indexed read) and a short prefix to name it in listings.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from app.models import ApiKey
from app.users import UserDirectory, UserInfo

KEY_PREFIX = "sparq-"
_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class ApiKeyError(ValueError):
    """A key operation that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as listed: never the key itself (it is shown once), only its prefix, owner and dates."""

    id: int
    user: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def active(self, now: datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        return self.revoked_at is None and (self.expires_at is None or _aware(self.expires_at) > now)


def parse_duration(text: str) -> timedelta:
    """'90d', '12h', '30m' as a timedelta (the CLI's --expires)."""
    match = _DURATION.match(text or "")
    if not match or int(match.group(1)) <= 0:
        raise ApiKeyError(f"expected a duration such as 90d, 12h or 30m, not {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        row.id,
        row.user_name,
        row.name,
        row.prefix,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )


class ApiKeys:
    """Create, list, revoke and verify keys; `users` resolves a key's owner to their current groups."""

    def __init__(self, engine: Engine, users: UserDirectory) -> None:
        self.engine = engine
        self.users = users

    def create(
        self, user: str, *, name: str = "", expires_in: timedelta | None = None, now: datetime | None = None
    ) -> tuple[ApiKeyInfo, str]:
        """A new key for `user`; returns its record and the key itself (shown once, never stored)."""
        if self.users.get(user) is None:
            raise ApiKeyError(f"unknown user {user!r}; create it with `sparq users add {user}` first")
        now = now or datetime.now(UTC)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            user_name=user,
            name=name.strip()[:200],
            key_hash=_hash(key),
            prefix=key[:14],
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
        with Session(self.engine) as session:
            session.add(row)
            session.commit()
            return _info(row), key

    def list(self, user: str | None = None) -> list[ApiKeyInfo]:
        """Every key (or `user`'s), oldest first, so an admin can find and revoke one."""
        with Session(self.engine) as session:
            query = select(ApiKey).order_by(ApiKey.id)
            if user is not None:
                query = query.where(ApiKey.user_name == user)
            return [_info(r) for r in session.scalars(query)]

    def revoke(self, key_id: int, *, now: datetime | None = None) -> ApiKeyInfo:
        """Revoke a key at once and for good; revoking it again keeps the first time."""
        with Session(self.engine) as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise ApiKeyError(f"no API key with id {key_id}")
            if row.revoked_at is None:
                row.revoked_at = now or datetime.now(UTC)
                session.commit()
            return _info(row)

    def verify(self, key: str, *, now: datetime | None = None) -> UserInfo | None:
        """The key's user when the key exists, is not revoked or expired and its user still exists."""
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        now = now or datetime.now(UTC)
        with Session(self.engine) as session:
            row = session.scalar(select(ApiKey).where(ApiKey.key_hash == _hash(key)))
            if row is None or not _info(row).active(now):
                return None
            user = self.users.get(row.user_name)
            if user is None or user.disabled:  # removed, or disabled by the directory: its keys stop too
                return None
            session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
            session.commit()
            return user
