"""Which documents a signed-in user may see in the web app, and how they are named to them.

Every check is the same SQL rule retrieval applies (`retrieval.access.readable_by`: admin, or a shared
group), so a page can never show, name or hand out a document that an answer could not have cited.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from app.paths import relative_paths
from app.users import UserInfo
from retrieval.access import readable_by
from retrieval.schema import Collection, Document

if TYPE_CHECKING:
    from retrieval.store import DocumentStore


def readable_document(store: DocumentStore, user: UserInfo, document_id: int) -> Document | None:
    """The document if `user` may read it (detached from its session), else None."""
    with store.sessions() as session:
        doc = session.scalar(
            select(Document).where(Document.id == document_id, readable_by(Document.id, user.principal()))
        )
        if doc is not None:
            session.expunge(doc)
        return doc


def source_file(store: DocumentStore, user: UserInfo, document_id: int) -> tuple[Path, str] | None:
    """(path, mime) of a readable document's file on disk, for a download; None when not readable or no
    longer a file."""
    doc = readable_document(store, user, document_id)
    if doc is None:
        return None
    path = Path(doc.path)
    if not path.is_file():
        return None
    return path, doc.mime or "application/octet-stream"


def readable_collections(store: DocumentStore, user: UserInfo) -> list[str]:
    """Collections holding at least one document the user may read (others are not even named to them)."""
    with store.sessions() as session:
        query = (
            select(Collection.name)
            .join(Document, Document.collection_id == Collection.id)
            .where(readable_by(Document.id, user.principal()))
            .distinct()
            .order_by(Collection.name)
        )
        return list(session.scalars(query))


def display_paths(
    store: DocumentStore, data_dir: Path, user: UserInfo, document_ids: Iterable[int]
) -> dict[int, str]:
    """Collection-relative paths of the documents among `document_ids` that `user` may read: relative to
    the collection's upload folder (under `data_dir`) or else to the folder all its documents share.
    Readers are never shown where the server keeps files (admins find full paths on the Documents page)."""
    ids = sorted({int(i) for i in document_ids})
    if not ids:
        return {}
    with store.sessions() as session:
        rows = session.execute(
            select(Document.id, Document.path, Document.collection_id).where(
                Document.id.in_(ids), readable_by(Document.id, user.principal())
            )
        ).all()
        triples = [(r.id, r.path, r.collection_id) for r in rows]
        return relative_paths(session, data_dir, triples)
