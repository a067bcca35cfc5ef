"""The connector interface: what a source of documents must answer so that sparq can sync it incrementally
with the source's own permissions. A new kind of source (SharePoint, Confluence, a drive) is one module that
subclasses `Connector` plus one line in ingestion/connectors/registry.py.

A sync asks `changes(cursor)` with the cursor the previous successful sync returned (None the first time).
The answer names every document the source holds now (`present`, cheap: keys only) and, among them, the ones
to (re)read (`documents`: new, changed, or whose permissions may have changed). Stored documents of the
source whose key is not in `present` are removed. `fetch_document(key)` hands over one present document
the answer did not offer, when the sync needs its content after all. A connector that cannot reach its source raises
`SourceUnavailable`; the sync then changes nothing, so an unreachable source never loses documents."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar


class SourceUnavailable(Exception):
    """The source could not be read (server down, wrong password, share not mounted): nothing is changed."""


class SourceConfigError(ValueError):
    """A source's settings are wrong (missing URL, unknown option): said when the source is added."""


@dataclass(frozen=True)
class RemoteDocument:
    """One document of a source, described before its content is fetched.

    `key` is stable and unique across sources (a real path, `imap://host/box/UIDVALIDITY/UID`, a URL) and
    is what the store records as the document's path. `size` and `mtime` let the pipeline skip unchanged
    content without fetching it (mtime 0: always compare by digest). `fetch()` returns the raw bytes, read
    only when needed; `extension` (".pdf", ".eml", ".html") picks the loader. `groups` are the sparq groups
    the source's permissions grant (None: the source's configured groups apply; the sync adds those to
    every document's own). `fetch()` raises OSError for one document it cannot read (reported as failed, its
    last good version kept) and SourceUnavailable when the source went away (the sync stops, removes
    nothing)."""

    key: str
    size: int
    mtime: float
    extension: str
    fetch: Callable[[], bytes]
    groups: tuple[str, ...] | None = None
    title: str | None = None
    path: str | None = None  # a local file that holds the content (folders): read in place, not copied


@dataclass
class ChangeSet:
    """A connector's answer: what to read, everything present, and the cursor for the next sync."""

    documents: list[RemoteDocument]
    present: set[str]
    cursor: str | None = None
    notes: list[str] = field(default_factory=list)  # per-item problems the connector met (shown in the run)
    # Key prefixes the connector could not list this time (a subfolder it may not read, a mailbox that
    # failed): stored documents under them are not removed (their absence from `present` says nothing) but
    # hidden (groups set to none: admins only) until the source can list them again, since losing access
    # is the usual way to revoke it.
    unlisted: list[str] = field(default_factory=list)


def is_under(key: str, prefix: str) -> bool:
    """Whether `key` lies under `prefix` the way the store matches a source's documents: the prefix itself,
    or the prefix followed by "/" (so /srv/share never claims /srv/share2)."""
    return key == prefix or key.startswith(prefix.rstrip("/") + "/")


class Connector(ABC):
    """A kind of source. Constructed from its validated settings (raise `SourceConfigError` in __init__);
    `root_key` is the key prefix all of its documents share (`is_under(key, root_key)` holds for every key),
    so a sync only ever removes its own."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def root_key(self) -> str:
        """The prefix of every key this source produces."""

    @abstractmethod
    def changes(self, cursor: str | None) -> ChangeSet:
        """What changed since `cursor`; raise SourceUnavailable when the source cannot be read."""

    def fetch_document(self, key: str) -> RemoteDocument | None:
        """One document again by its key, though `changes` did not offer it: a sync needs the content of a
        stored duplicate whose original changed (the two were stored once). None: this kind cannot, and the
        document is marked failed with that reason. Raise OSError when that one document cannot be read now
        and SourceUnavailable when the source went away. Folders need not answer: their keys are paths."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook: most sources hold no connection
        """Release connections (default: nothing to release)."""
