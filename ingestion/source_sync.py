"""One sync of a source that syncs itself: ask its connector what changed, ingest that through the pipeline
with each document's own readers, and remove what the source no longer holds.

Safety first: a connector that cannot reach its source raises SourceUnavailable before anything changes; a
source that answers with nothing at all while documents of it are stored is refused the same way (an
unmounted share is an empty folder), unless the caller says the source really is empty now. A part of the
source it cannot list (a folder, a mailbox) keeps its stored documents, readable by admins only until it is
listed again: not being able to list a folder is also how its access is revoked."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import and_, or_, select

from ingestion.connectors.base import ChangeSet, Connector, RemoteDocument, SourceUnavailable, is_under
from ingestion.loaders.base import LoadedDocument
from ingestion.pipeline import RECORD_NOT_REREADABLE, IngestPipeline, IngestSummary, ProgressCallback
from ingestion.sources import SourceItem, local_file_item
from retrieval.schema import Document, DocumentGroup


@dataclass
class SourceSyncResult:
    """What one sync did, the cursor to pass to the next one, and the connector's notes (per-item problems)."""

    summary: IngestSummary
    cursor: str | None
    notes: list[str] = field(default_factory=list)


def sync_source(
    connector: Connector,
    pipeline: IngestPipeline,
    *,
    collection: str,
    groups: list[str] | None,
    cursor: str | None,
    progress: ProgressCallback | None = None,
    allow_empty: bool = False,
    changes: ChangeSet | None = None,
) -> SourceSyncResult:
    """Sync `connector`'s source into `collection`. A document's readers are the groups the source grants
    it plus the source's configured `groups` (both None: stored documents keep theirs, new ones get none).
    Raises SourceUnavailable, changing nothing, when the source cannot be read or lists nothing while
    documents of it are stored (`allow_empty` lets it empty them). `changes`: the connector's answer to
    `changes(cursor)` when the caller asked it already (before taking the ingest lock). The caller closes
    the connector."""
    if changes is None:
        changes = connector.changes(cursor)
    root = connector.root_key
    present = set(changes.present) | {d.key for d in changes.documents}
    outside = sorted(k for k in present | set(changes.unlisted) if not is_under(k, root))
    if outside:
        raise ValueError(
            f"{connector.kind} connector listed {len(outside)} key(s) outside its root {root!r} (first: "
            f"{outside[0]!r}); a sync could never remove them, so nothing was changed"
        )
    if not present and not allow_empty:
        stored = _removable(pipeline, collection, root, changes.unlisted)
        if stored:
            raise SourceUnavailable(
                f"{connector.kind} source {root} lists no documents; refusing to remove {stored} stored "
                "documents (an unmounted share?). Sync it with allow_empty if it really is empty now."
            )
    notes = list(changes.notes)
    notes += _hide_unlisted(pipeline, collection, changes.unlisted, present)
    scratch = Path(tempfile.mkdtemp(prefix="sparq-sync-"))  # private (0700): fetched content, while loading

    def reread(key: str) -> SourceItem | None:
        doc = connector.fetch_document(key)
        return None if doc is None else next(_items([doc], pipeline.load_file, groups, scratch))

    try:
        offered = {d.key for d in changes.documents}
        stuck = [k for k in _stuck(pipeline, collection, root) if k in present and k not in offered]
        items = itertools.chain(
            _items(changes.documents, pipeline.load_file, groups, scratch),
            (item for key in stuck if (item := _retry(reread, key, notes)) is not None),
        )
        summary = pipeline.ingest_items(
            items,
            collection=collection,
            source=root,
            present=present,
            keep_under=changes.unlisted,
            total=len(changes.documents) + len(stuck),
            progress=progress,
            reread=reread,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return SourceSyncResult(summary, changes.cursor, notes)


def _stuck(pipeline: IngestPipeline, collection: str, root: str) -> list[str]:
    """Keys of the source's stored documents left waiting for a re-read that never came: "pending", or
    failed because they could not be read again (an earlier sync, or a version before fetch_document). The
    listing does not offer them (their own content did not change), so the sync asks for them by key."""
    cid = pipeline.store.collection_id(collection)
    if cid is None:
        return []
    with pipeline.store.sessions() as session:
        rows = session.execute(
            select(Document.path).where(
                Document.collection_id == cid,
                or_(
                    Document.status == "pending",
                    and_(Document.status == "failed", Document.error == RECORD_NOT_REREADABLE),
                ),
            )
        ).all()
    return sorted(path for (path,) in rows if is_under(path, root))


def _retry(reread: Callable[[str], SourceItem | None], key: str, notes: list[str]) -> SourceItem | None:
    """The item for a stuck document, or None with a note when the source cannot give it now."""
    try:
        item = reread(key)
    except OSError as exc:
        notes.append(f"{key}: could not be read again from its source: {exc}")
        return None
    if item is None:
        notes.append(f"{key}: this kind of source cannot hand over one document again")
    return item


def readers(document_groups: tuple[str, ...] | None, configured: list[str] | None) -> tuple[str, ...] | None:
    """Who may read a document: what the source grants it, plus the source's configured groups."""
    if document_groups is None and configured is None:
        return None
    return tuple(sorted({g.strip() for g in (*(document_groups or ()), *(configured or ())) if g.strip()}))


def _hide_unlisted(
    pipeline: IngestPipeline, collection: str, unlisted: list[str], present: set[str]
) -> list[str]:
    """Fail closed on the parts of the source it could not list: their stored documents stay (their absence
    says nothing) but only admins may read them until a sync lists them again, because "cannot list" is
    also how access is revoked (chmod 700 on a folder). The next listing gives them their groups back
    through the pipeline's unchanged-content path, without re-embedding. Returns one note per prefix."""
    cid = pipeline.store.collection_id(collection)
    if cid is None or not unlisted:
        return []
    notes: list[str] = []
    for prefix in unlisted:
        docs = [i for i, path in pipeline.store.documents_under(cid, prefix) if path not in present]
        if not docs:
            continue
        with pipeline.store.sessions() as session:
            grouped = set(
                session.scalars(
                    select(DocumentGroup.document_id).where(DocumentGroup.document_id.in_(docs)).distinct()
                )
            )
        for doc_id in sorted(grouped):
            pipeline.store.set_document_groups(doc_id, ())
        notes.append(f"{len(docs)} documents under {prefix} hidden until the source can list it again")
    return notes


def _removable(pipeline: IngestPipeline, collection: str, root: str, unlisted: list[str]) -> int:
    """Stored documents of the source that a sync with an empty listing would remove."""
    cid = pipeline.store.collection_id(collection)
    if cid is None:
        return 0
    return sum(
        1
        for _, path in pipeline.store.documents_under(cid, root)
        if not any(is_under(path, k) for k in unlisted)
    )


def _items(
    documents: list[RemoteDocument],
    loader: Callable[[Path], LoadedDocument],
    configured: list[str] | None,
    scratch: Path,
) -> Iterator[SourceItem]:
    for doc in documents:
        who = readers(doc.groups, configured)
        if doc.path is not None:  # read in place, parsed by the pipeline's own (isolated) loader
            item = local_file_item(doc.key, Path(doc.path), doc.size, doc.mtime, loader, groups=who)
            item = dataclasses.replace(item, extension=doc.extension or item.extension)
        else:
            fetched = _Fetched(doc, loader, scratch)
            item = SourceItem(
                doc.key,
                doc.size,
                doc.mtime,
                fetched.load,
                fetched.digest,
                doc.extension,
                groups=who,
                release=fetched.release,
            )
        if doc.title:
            item = dataclasses.replace(item, load=_titled(item.load, doc.title))
        yield item


def _titled(load: Callable[[], LoadedDocument], title: str) -> Callable[[], LoadedDocument]:
    """The loader's own title (read from the content) when it finds one, else the connector's."""

    def run() -> LoadedDocument:
        loaded = load()
        if not loaded.title:
            loaded.title = title
        return loaded

    return run


class _Fetched:
    """A remote document's content, fetched once when its digest is needed and kept in a private temp file
    (with the document's extension, which picks the loader) until it is loaded; never held in memory while
    it waits in the pipeline's queues."""

    def __init__(self, doc: RemoteDocument, loader: Callable[[Path], LoadedDocument], scratch: Path) -> None:
        self.doc = doc
        self.loader = loader
        self.scratch = scratch
        self.file: Path | None = None
        self.sha256: str | None = None

    def _fetch(self) -> Path:
        data = self.doc.fetch()
        if not isinstance(data, bytes):
            raise TypeError(f"fetch() of {self.doc.key} returned {type(data).__name__}, not bytes")
        fd, name = tempfile.mkstemp(suffix=self.doc.extension, prefix="doc-", dir=self.scratch)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        self.file = Path(name)
        self.sha256 = hashlib.sha256(data).hexdigest()
        return self.file

    def digest(self) -> str:
        if self.sha256 is None or self.file is None:
            self._fetch()
        assert self.sha256 is not None
        return self.sha256

    def release(self) -> None:
        """Remove the fetched copy (the digest stays known); a later `load` fetches again."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            self.file = None

    def load(self) -> LoadedDocument:
        path = self.file if self.file is not None else self._fetch()  # fetched again for a second read
        try:
            return self.loader(path)
        finally:
            self.file = None
            path.unlink(missing_ok=True)
