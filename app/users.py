"""People who use sparq: roles, groups and argon2-hashed passwords (never stored or logged in clear)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import User
from retrieval.access import Principal

ROLES = ("admin", "employee")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,200}$")
_hasher = PasswordHasher()


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: str
    groups: list[str]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def principal(self) -> Principal:
        return Principal(self.name, frozenset(self.groups), self.is_admin)


def _info(user: User) -> UserInfo:
    return UserInfo(user.id, user.name, user.role, sorted(user.groups or []))


class UserDirectory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, name: str, *, role: str = "employee", groups: list[str] | None = None,
            password: str | None = None) -> UserInfo:
        if not _NAME.match(name):
            raise UserError("user names use letters, digits and _ . @ - (at most 200 characters)")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if password is not None and len(password) < 8:
            raise UserError("passwords need at least 8 characters")
        clean_groups = sorted({g.strip() for g in (groups or []) if g.strip()})
        with Session(self.engine) as session:
            user = User(name=name, role=role, groups=clean_groups,
                        password_hash=_hasher.hash(password) if password else None)
            session.add(user)
            try:
                session.commit()
            except IntegrityError:
                raise UserError(f"a user named {name!r} already exists") from None
            return _info(user)

    def get(self, name: str) -> UserInfo | None:
        with Session(self.engine) as session:
            user = session.scalar(select(User).where(User.name == name))
            return _info(user) if user else None

    def list(self) -> list[UserInfo]:
        with Session(self.engine) as session:
            return [_info(u) for u in session.scalars(select(User).order_by(User.name))]

    def update(self, name: str, *, role: str | None = None, groups: list[str] | None = None,
               password: str | None = None) -> UserInfo:
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
            session.commit()
            return _info(user)

    def remove(self, name: str) -> None:
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
            if user is None or not user.password_hash:
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
        with Session(self.engine) as session:
            return len(list(session.scalars(select(User.id).where(User.role == "admin"))))
