"""A chunk readable only through a duplicate is shown under the duplicate's id, path, title and collection:
the stored original's may themselves be confidential. (Duplicates are found within one collection today,
so the collection is the same; it is set anyway, so a change there cannot leak.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from retrieval.access import Principal
from retrieval.schema import Collection, Document, DocumentGroup

if TYPE_CHECKING:  # rows.py imports this module; the row type is only named here
    from retrieval.search_steps.rows import ChunkRow


def show_readable_copy(session: Session, rows: dict[int, ChunkRow], principal: Principal) -> None:
    """Rewrite, in place, the document fields of rows the principal reads only through a duplicate."""
    doc_ids = sorted({r.document_id for r in rows.values()})
    own = set(
        session.scalars(
            select(Document.id).where(
                Document.id.in_(doc_ids),
                select(DocumentGroup.document_id)
                .where(
                    DocumentGroup.document_id == Document.id,
                    DocumentGroup.group.in_(sorted(principal.groups)),
                )
                .exists(),
            )
        )
    )
    via_copy = [d for d in doc_ids if d not in own]
    if not via_copy:
        return
    copies = session.execute(
        select(Document.duplicate_of, Document.id, Document.path, Document.title, Collection.name)
        .join(DocumentGroup, DocumentGroup.document_id == Document.id)
        .join(Collection, Collection.id == Document.collection_id)
        .where(Document.duplicate_of.in_(via_copy), DocumentGroup.group.in_(sorted(principal.groups)))
        .order_by(Document.id)
    ).all()
    shown: dict[int, tuple[int, str, str | None, str]] = {}
    for original, copy_id, path, title, collection in copies:
        assert original is not None  # the WHERE keeps only duplicates
        shown.setdefault(int(original), (int(copy_id), path, title, collection))
    for row in rows.values():
        copy = shown.get(row.document_id)
        if copy is not None:
            row.document_id, row.path, row.title, row.collection = (
                copy[0],
                copy[1],
                copy[2] or row.title,
                copy[3],
            )
