"""Who is searching, and which documents they may see: the rule lives here, as SQL, used by every mode.

A user sees a document when one of their groups is among its groups, or among the groups of a duplicate
of it (identical content under another path is stored once, so the copy's readers must reach the stored
chunks too). A duplicate grants that only while its content is the original's (same sha256): a copy whose
original changed must not read the new content. Admins see everything. Retrieval applies this before
anything leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from sqlalchemy import (
    ColumnElement,
    ColumnExpressionArgument,
    Select,
    and_,
    exists,
    false,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import AliasedClass

from retrieval.filters import SearchFilters
from retrieval.schema import Collection, Document, DocumentGroup

# Documents whose chunks search serves: ready ones, and stale ones (the last re-read failed; the last good
# version stays searchable and the document's `error` says why it is stale).
SERVED_STATUSES: tuple[str, ...] = ("ready", "stale")
# Duplicates that read through their original's chunks (a stale one: its own file is unreadable just now).
DUPLICATE_STATUSES: tuple[str, ...] = ("duplicate", "stale")

# The Document entity or an alias of it: the conditions below are built on either.
DocumentEntity: TypeAlias = "type[Document] | AliasedClass[Document]"


def served(document: DocumentEntity) -> ColumnElement[bool]:
    """SQL condition on a Document (or alias): search serves its chunks."""
    return document.status.in_(SERVED_STATUSES)


USER_GROUP_PREFIX = "user:"


def user_group(name: str) -> str:
    """The group only `name` is in: a source that grants one named user (a file ACL entry) grants this."""
    return USER_GROUP_PREFIX + name


@dataclass(frozen=True)
class Principal:
    """A searcher. `groups` are their effective groups: the ones given, plus `user:<name>`, which every user
    is implicitly in (documents shared with them by name); every access check and cache key reads them. A
    given group that merely looks like another user's (`user:bob`, from an admin, LDAP or a token) is
    dropped: only bob is ever in bob's group."""

    name: str
    groups: frozenset[str] = frozenset()
    is_admin: bool = False

    def __post_init__(self) -> None:
        given = frozenset(g for g in self.groups if not g.startswith(USER_GROUP_PREFIX))
        object.__setattr__(self, "groups", given | {user_group(self.name)} if self.name else given)

    @classmethod
    def system(cls) -> Principal:
        """The operator at the server's own console (CLI without --user, Python without user=)."""
        return cls("system", frozenset(), True)


def _escape_like(text: str) -> str:
    """User text inside LIKE matches literally: % and _ are not wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(prefix: str) -> str:
    return _escape_like(prefix) + "%"


def readable_by(document_id: ColumnExpressionArgument[int], principal: Principal) -> ColumnElement[bool]:
    """SQL condition: the document with id `document_id` is readable by `principal`."""
    if principal.is_admin:
        return true()
    if not principal.groups:
        return false()
    groups = sorted(principal.groups)
    own = exists().where(DocumentGroup.document_id == document_id, DocumentGroup.group.in_(groups))
    dup = aliased(Document)
    dup_group = aliased(DocumentGroup)
    original = aliased(Document)
    via_duplicate = exists().where(
        dup.duplicate_of == document_id,
        dup.status.in_(DUPLICATE_STATUSES),
        original.id == document_id,
        dup.sha256 == original.sha256,  # the copy's content is still what the original's chunks hold
        dup_group.document_id == dup.id,
        dup_group.group.in_(groups),
    )
    return or_(own, via_duplicate)


def filtered(document: DocumentEntity, filters: SearchFilters | None) -> ColumnElement[bool]:
    """SQL condition on a Document (or alias) for the search filters; a duplicate's path also matches."""
    if filters is None or filters.empty:
        return true()
    d = document
    conditions: list[ColumnElement[bool]] = []
    if filters.collections:
        conditions.append(
            d.collection_id.in_(select(Collection.id).where(Collection.name.in_(list(filters.collections))))
        )
    if filters.mimes:
        conditions.append(d.mime.in_(list(filters.mimes)))
    if filters.extensions:
        conditions.append(
            or_(
                *[func.lower(d.path).like("%" + _escape_like(ext), escape="\\") for ext in filters.extensions]
            )
        )
    if filters.path_prefix:
        pattern = _like_prefix(filters.path_prefix)
        dup = aliased(Document)
        conditions.append(
            or_(
                d.path.like(pattern, escape="\\"),
                exists().where(dup.duplicate_of == d.id, dup.path.like(pattern, escape="\\")),
            )
        )
    if filters.modified_after is not None:
        conditions.append(d.mtime >= filters.modified_after.timestamp())
    if filters.modified_before is not None:
        conditions.append(d.mtime <= filters.modified_before.timestamp())
    return and_(*conditions)


def visible_documents(principal: Principal, filters: SearchFilters | None) -> Select[int]:
    """SELECT of the ids of served (ready or stale) documents the principal may read and the filters keep."""
    return select(Document.id).where(
        served(Document), readable_by(Document.id, principal), filtered(Document, filters)
    )


def unrestricted(principal: Principal, filters: SearchFilters | None) -> bool:
    """True when nothing is hidden from this search (an admin, no filters): search skips the access bitmap."""
    return principal.is_admin and (filters is None or filters.empty)
