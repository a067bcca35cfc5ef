"""People who use sparq: roles, groups and argon2-hashed passwords (never stored or logged in clear), their
server-side sign-in sessions, and the sign-in throttle shared by every replica through the database."""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import SigninFailure, User, UserSession
from retrieval.access import Principal
from retrieval.schema import utcnow

ROLES = ("admin", "employee")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,200}$")
_hasher = PasswordHasher()


class UserError(ValueError):
    """A user operation that cannot be done as asked; the message says why."""


class IdentityConflict(UserError):
    """A sign-in provider's user would take over a sparq account that is not theirs (same name)."""


class AccountDisabled(UserError):
    """The account exists but is disabled (gone from the directory): no sign-in."""


@dataclass(frozen=True)
class UserInfo:
    """A user as the rest of sparq sees them: never the password hash."""

    id: int
    name: str
    role: str
    groups: list[str]
    must_change_password: bool = False
    source: str = "local"  # local | ldap | oidc: who manages this account
    disabled: bool = False  # set by a directory sync: no sign-in, no retrieval, no API key
    email: str | None = None
    oidc_issuer: str | None = None  # source "oidc": the provider and the subject id it knows the user by
    oidc_subject: str | None = None

    @property
    def is_admin(self) -> bool:
        """The role that sees every document and the admin pages."""
        return self.role == "admin"

    def principal(self) -> Principal:
        """The user as retrieval's access rule needs them: name, groups and whether they see everything."""
        return Principal(self.name, frozenset(self.groups), self.is_admin)


def _info(user: User) -> UserInfo:
    return UserInfo(
        user.id,
        user.name,
        user.role,
        sorted(user.groups or []),
        bool(user.must_change_password),
        user.source or "local",
        bool(user.disabled),
        user.email,
        user.oidc_issuer,
        user.oidc_subject,
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; every one sparq writes is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def token_hash(token: str) -> str:
    """What the database keeps of a session token: sha256 suffices for 256 random bits (no guessing)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class UserDirectory:
    """Add, find, change and remove users; passwords are hashed with argon2 before they reach the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self,
        name: str,
        *,
        role: str = "employee",
        groups: list[str] | None = None,
        password: str | None = None,
        must_change_password: bool = False,
        source: str = "local",
        email: str | None = None,
    ) -> UserInfo:
        """Create a user (UserError for a taken or invalid name, an unknown role or a short password)."""
        if not _NAME.match(name):
            raise UserError("user names use letters, digits and _ . @ - (at most 200 characters)")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if password is not None and len(password) < 8:
            raise UserError("passwords need at least 8 characters")
        clean_groups = sorted({g.strip() for g in (groups or []) if g.strip()})
        with Session(self.engine) as session:
            user = User(
                name=name,
                role=role,
                groups=clean_groups,
                password_hash=_hasher.hash(password) if password else None,
                must_change_password=must_change_password,
                source=source,
                email=email,
            )
            session.add(user)
            try:
                session.commit()
            except IntegrityError:
                raise UserError(f"a user named {name!r} already exists") from None
            return _info(user)

    def get(self, name: str) -> UserInfo | None:
        """The user named `name`, or None."""
        with Session(self.engine) as session:
            user = session.scalar(select(User).where(User.name == name))
            return _info(user) if user else None

    def list(self) -> list[UserInfo]:
        """Every user, by name."""
        with Session(self.engine) as session:
            return [_info(u) for u in session.scalars(select(User).order_by(User.name))]

    def update(
        self,
        name: str,
        *,
        role: str | None = None,
        groups: builtins.list[str] | None = None,
        password: str | None = None,
        keep_session: str | None = None,
    ) -> UserInfo:
        """Change what is given. A new password ends every session of the user but `keep_session` (the
        token of the browser that changed it), so a thief signed in elsewhere is signed out."""
        with Session(self.engine) as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise UserError(f"no user named {name!r}")
            if role is not None:
                if role not in ROLES:
                    raise UserError(f"role must be one of {', '.join(ROLES)}")
                user.role = role
            if groups is not None:
                user.groups = sorted({g.strip() for g in groups if g.strip()})
            if password is not None:
                if len(password) < 8:
                    raise UserError("passwords need at least 8 characters")
                user.password_hash = _hasher.hash(password)
                user.must_change_password = False
                revoke = update(UserSession).where(
                    UserSession.user_id == user.id, UserSession.revoked.is_(False)
                )
                if keep_session is not None:
                    revoke = revoke.where(UserSession.token_hash != token_hash(keep_session))
                session.execute(revoke.values(revoked=True))
            session.commit()
            return _info(user)

    def set_disabled(self, name: str, disabled: bool) -> UserInfo:
        """Disable (or re-enable) an account without deleting it: its query log stays, but it can no
        longer sign in, retrieve or use its API keys; disabling also ends its sessions."""
        with Session(self.engine) as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise UserError(f"no user named {name!r}")
            user.disabled = disabled
            if disabled:
                session.execute(
                    update(UserSession).where(UserSession.user_id == user.id).values(revoked=True)
                )
            session.commit()
            return _info(user)

    def sign_in_oidc(
        self,
        *,
        issuer: str,
        subject: str,
        name: str,
        groups: builtins.list[str],
        role: str | None,
        email: str | None,
        link_directory_user: bool = False,
    ) -> UserInfo:
        """The sparq user of a provider identity, its groups (and `role`, unless None) replaced by the token's.

        The identity is (issuer, subject), never the name: the first sign-in creates the user under `name`,
        later ones find it by identity, whatever the name claim says then. A `name` already taken by any
        other account (local, LDAP, or another provider's identity) is refused with IdentityConflict, so
        two providers' `alice` never merge; a disabled account is refused with AccountDisabled. Only with
        `link_directory_user` may the first sign-in take over a directory-synced (source ldap) account of
        that name that no identity holds yet: the provider and the LDAP sync then read one directory, the
        sync keeps managing the account (and disables it when the person leaves)."""
        if not _NAME.match(name):
            raise UserError(
                f"the provider's user name {name!r} is not a valid sparq user name "
                "(letters, digits and _ . @ -, at most 200 characters)"
            )
        if role is not None and role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        clean_groups = sorted({g.strip() for g in groups if g.strip()})
        for _attempt in range(2):  # a concurrent first sign-in of the same identity wins the insert: re-read
            with Session(self.engine) as session:
                user = session.scalar(
                    select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)
                )
                if user is None and link_directory_user:
                    user = session.scalar(
                        select(User).where(
                            User.name == name, User.source == "ldap", User.oidc_issuer.is_(None)
                        )
                    )
                    if user is not None:
                        user.oidc_issuer, user.oidc_subject = issuer, subject
                if user is None:
                    if session.scalar(select(User.id).where(User.name == name)) is not None:
                        raise IdentityConflict(
                            f"the sparq user name {name!r} belongs to another account (local, directory or another "
                            "sign-in provider); an administrator must remove or rename that account first"
                        )
                    user = User(
                        name=name,
                        role=role or "employee",
                        groups=clean_groups,
                        password_hash=None,
                        source="oidc",
                        email=email,
                        oidc_issuer=issuer,
                        oidc_subject=subject,
                    )
                    session.add(user)
                else:
                    if user.disabled:
                        raise AccountDisabled(f"the account {user.name!r} is disabled; ask an administrator")
                    user.groups = clean_groups
                    if role is not None:
                        user.role = role
                    if email:
                        user.email = email
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    continue
                return _info(user)
        raise IdentityConflict(f"the sparq user name {name!r} is taken; an administrator must resolve it")

    def remove(self, name: str) -> None:
        """Delete the user named `name` (UserError when there is none)."""
        with Session(self.engine) as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise UserError(f"no user named {name!r}")
            session.delete(user)
            session.commit()

    def authenticate(self, name: str, password: str) -> UserInfo | None:
        """The user when the password matches; None otherwise (same answer for unknown names)."""
        with Session(self.engine) as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None or not user.password_hash or user.disabled:
                _hasher.hash("timing-equaliser")  # comparable time whether or not the user exists
                return None
            try:
                _hasher.verify(user.password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return None
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
                session.commit()
            return _info(user)

    def count_admins(self) -> int:
        """How many admins there are, so the first admin is created only when there is none."""
        with Session(self.engine) as session:
            return len(list(session.scalars(select(User.id).where(User.role == "admin"))))

    # --- sessions ----------------------------------------------------------------------------------------
    def start_session(self, name: str, *, lifetime_s: float, now: datetime | None = None) -> str:
        """A new random session token for `name` (the browser keeps it; the database keeps its hash).
        Sessions past their absolute expiry are deleted here, so the table stays bounded."""
        now = now or utcnow()
        token = secrets.token_urlsafe(32)
        with Session(self.engine) as session:
            user_id = session.scalar(select(User.id).where(User.name == name))
            if user_id is None:
                raise UserError(f"no user named {name!r}")
            session.execute(delete(UserSession).where(UserSession.expires_at < now))
            session.add(
                UserSession(
                    token_hash=token_hash(token),
                    user_id=user_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + timedelta(seconds=lifetime_s),
                )
            )
            session.commit()
        return token

    def session_user(self, token: str, *, idle_s: float, now: datetime | None = None) -> UserInfo | None:
        """The user of a live session, re-read now (a changed role or removal counts at once), and the
        session marked as seen; None when the token is unknown, revoked, idle too long or past its expiry
        (an idle or expired session is revoked for good)."""
        now = now or utcnow()
        with Session(self.engine) as session:
            found = session.execute(
                select(UserSession, User)
                .join(User, User.id == UserSession.user_id)
                .where(UserSession.token_hash == token_hash(token))
            ).first()
            if found is None:
                return None
            record, user = found
            if record.revoked or user.disabled:
                return None
            last_seen = _aware(record.last_seen_at)
            if now >= _aware(record.expires_at) or now - last_seen > timedelta(seconds=idle_s):
                record.revoked = True
                session.commit()
                return None
            # Every page run counts as activity; writing at most every few seconds keeps reruns cheap.
            if now - last_seen >= timedelta(seconds=min(30.0, idle_s / 10)):
                record.last_seen_at = now
                session.commit()
            return _info(user)

    def end_session(self, token: str) -> None:
        """Sign-out: the token no longer opens anything, whoever holds a copy of it."""
        with Session(self.engine) as session:
            session.execute(
                update(UserSession).where(UserSession.token_hash == token_hash(token)).values(revoked=True)
            )
            session.commit()

    def live_sessions(self, name: str, *, now: datetime | None = None) -> int:
        """How many unrevoked, unexpired sessions the user has (the Account page and tests show it)."""
        now = now or utcnow()
        with Session(self.engine) as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(UserSession)
                    .join(User, User.id == UserSession.user_id)
                    .where(User.name == name, UserSession.revoked.is_(False), UserSession.expires_at > now)
                )
                or 0
            )


class TooManyAttempts(RuntimeError):
    """Password checks refused for a while after repeated wrong passwords from one client address."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = max(1, int(wait_s) + 1)
        super().__init__(f"Too many failed sign-ins from this address; try again in {self.wait_s} s.")


class SigninThrottle:
    """Counts wrong passwords per client address and per (address, user name) in the database, so every
    replica sees the same counts and a stranger's guesses lock out only the stranger's own address, never
    the user signing in from elsewhere. Keys are stored hashed: a typed name is often a mistyped password.
    Rows older than the window are pruned on every write, and the table is capped at `max_rows`."""

    def __init__(
        self,
        engine: Engine,
        *,
        per_name: int = 5,
        per_address: int = 20,
        window_s: float = 300.0,
        max_rows: int = 100_000,
    ) -> None:
        self.engine = engine
        self.per_name, self.per_address, self.window_s, self.max_rows = (
            per_name,
            per_address,
            window_s,
            max_rows,
        )

    @staticmethod
    def _keys(address: str, name: str) -> tuple[str, str]:
        name = name.strip()[:200]
        return (
            hashlib.sha256(f"address\0{address}".encode()).hexdigest(),
            hashlib.sha256(f"pair\0{address}\0{name}".encode()).hexdigest(),
        )

    def check(self, address: str, name: str, *, now: datetime | None = None) -> None:
        """Raise TooManyAttempts while this address (or this address for this name) is over its limit."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.window_s)
        address_key, pair_key = self._keys(address, name)
        with Session(self.engine) as session:
            for key, limit in ((pair_key, self.per_name), (address_key, self.per_address)):
                times = list(
                    session.scalars(
                        select(SigninFailure.created_at)
                        .where(SigninFailure.key == key, SigninFailure.created_at > cutoff)
                        .order_by(SigninFailure.created_at.desc())
                        .limit(limit)
                    )
                )
                if len(times) >= limit:
                    oldest = _aware(times[-1])
                    raise TooManyAttempts(self.window_s - (now - oldest).total_seconds())

    def failed(self, address: str, name: str, *, now: datetime | None = None) -> int:
        """Record one wrong password; returns how many this address has had within the window."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.window_s)
        address_key, pair_key = self._keys(address, name)
        with Session(self.engine) as session:
            session.execute(delete(SigninFailure).where(SigninFailure.created_at <= cutoff))
            session.add_all(
                [SigninFailure(key=address_key, created_at=now), SigninFailure(key=pair_key, created_at=now)]
            )
            session.flush()
            total = int(session.scalar(select(func.count()).select_from(SigninFailure)) or 0)
            if total > self.max_rows:  # a flood from many addresses: forget the oldest first
                oldest = select(SigninFailure.id).order_by(SigninFailure.id).limit(total - self.max_rows)
                session.execute(delete(SigninFailure).where(SigninFailure.id.in_(oldest.scalar_subquery())))
            count = int(
                session.scalar(
                    select(func.count())
                    .select_from(SigninFailure)
                    .where(SigninFailure.key == address_key, SigninFailure.created_at > cutoff)
                )
                or 0
            )
            session.commit()
        return count

    def succeeded(self, address: str, name: str) -> None:
        """A right password clears the (address, name) count; the address's own count stays."""
        _, pair_key = self._keys(address, name)
        with Session(self.engine) as session:
            session.execute(delete(SigninFailure).where(SigninFailure.key == pair_key))
            session.commit()

    def rows(self) -> int:
        """How many failure rows the table holds, to check pruning and the cap."""
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(SigninFailure)) or 0)
