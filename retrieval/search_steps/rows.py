"""Chunk rows for candidate ids, read from SQL with the access rule applied again: the authoritative check
against the database as it is at that moment (the mask may be a cached view of a moment ago)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from retrieval.access import Principal, served
from retrieval.schema import Chunk, Collection, Document
from retrieval.search_steps.access_mask import AccessMask
from retrieval.search_steps.readable_copy import show_readable_copy
from retrieval.store import DocumentStore


@dataclass(slots=True)
class ChunkRow:
    """What a hit shows of one chunk; document fields may name a readable duplicate (`readable_copy`)."""

    document_id: int
    text: str
    page: int | None
    slide: int | None
    sheet: str | None
    heading_path: str | None
    vector: np.ndarray  # the stored embedding, read-only (a view of the row's bytes)
    path: str
    title: str | None
    mime: str
    collection: str
    ocr_confidence: float | None


class ChunkRows:
    """Reads rows for one store. Thread-safe (a session per call)."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    def read(self, chunk_ids: list[int], principal: Principal, access: AccessMask) -> dict[int, ChunkRow]:
        """Rows for the ids that still exist and are readable now."""
        if not chunk_ids:
            return {}
        stmt = (
            select(
                Chunk.id,
                Chunk.document_id,
                Chunk.text,
                Chunk.page,
                Chunk.slide,
                Chunk.sheet,
                Chunk.heading_path,
                Chunk.embedding,
                Document.path,
                Document.title,
                Document.mime,
                Collection.name,
                Chunk.ocr_confidence,
            )
            .join(Document, Document.id == Chunk.document_id)
            .join(Collection, Collection.id == Document.collection_id)
            .where(Chunk.id.in_(chunk_ids), served(Document))
        )
        if access.visible is not None:
            stmt = stmt.where(access.visible)
        with self.store.sessions() as session:
            result = session.execute(stmt).all()
            rows = {
                int(r[0]): ChunkRow(
                    document_id=int(r[1]),
                    text=r[2],
                    page=r[3],
                    slide=r[4],
                    sheet=r[5],
                    heading_path=r[6],
                    vector=np.frombuffer(r[7], dtype=np.float32),
                    path=r[8],
                    title=r[9],
                    mime=r[10],
                    collection=r[11],
                    ocr_confidence=r[12],
                )
                for r in result
            }
            if not principal.is_admin and rows:
                show_readable_copy(session, rows, principal)
        return rows
