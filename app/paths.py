"""Where a document lives, as people should see it: its path inside its collection, never the server's.

Documents are stored under their absolute path (that is how re-ingest finds them); readers are shown that
path relative to the collection's uploads folder, or else to the folder all the collection's documents
share (the ingested folder), falling back to the bare file name. The web app and the HTTP API both name
documents through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from retrieval.schema import Document


def collection_root(session: Session, collection_id: int) -> str:
    """The folder every document of the collection lies in (ending in a separator), e.g. the ingested folder."""
    lo, hi = session.execute(
        select(func.min(Document.path), func.max(Document.path)).where(
            Document.collection_id == collection_id
        )
    ).one()
    if lo is None:
        return ""
    prefix = os.path.commonprefix([lo, hi])
    root = prefix[: max(prefix.rfind("/"), prefix.rfind("\\")) + 1]
    # min and max bound the common prefix in byte order; a database collation may order otherwise: check.
    outside = session.scalar(
        select(func.count())
        .select_from(Document)
        .where(Document.collection_id == collection_id, ~Document.path.startswith(root, autoescape=True))
    )
    if outside:
        paths = list(session.scalars(select(Document.path).where(Document.collection_id == collection_id)))
        prefix = os.path.commonprefix(paths)
        root = prefix[: max(prefix.rfind("/"), prefix.rfind("\\")) + 1]
    return root


def relative_paths(session: Session, data_dir: Path, rows: Iterable[tuple[int, str, int]]) -> dict[int, str]:
    """document id -> collection-relative path, for (document id, stored path, collection id) rows."""
    uploads = (Path(data_dir) / "uploads").resolve()
    shown: dict[int, str] = {}
    roots: dict[int, str] = {}
    for doc_id, path, collection_id in rows:
        if uploads in Path(path).parents:  # uploads/<collection id>/<name>
            shown[int(doc_id)] = Path(*Path(path).relative_to(uploads).parts[1:]).as_posix()
            continue
        if collection_id not in roots:
            roots[collection_id] = collection_root(session, collection_id)
        root = roots[collection_id]
        relative = path[len(root) :] if root and path.startswith(root) else ""
        shown[int(doc_id)] = relative.replace("\\", "/") or path.replace("\\", "/").rsplit("/", 1)[-1]
    return shown
