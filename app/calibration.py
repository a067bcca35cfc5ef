"""Calibration passages for the MoE build, drawn from the documents a company has ingested.

The default MoE's routers are fitted on English encyclopedia text. A company whose documents are in
another language or domain answers over different text, so `sparq model build-default
--from-documents` fits the routers on a seeded random sample of its own chunks instead, spread across
documents. The build is an admin action and sees every collection it is given, whatever the groups.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.ask import source_label
from retrieval.schema import Chunk, Collection, Document

_FETCH = 256


@dataclass(frozen=True)
class CalibrationText:
    """Calibration passages sampled from the ingested chunks, with a fingerprint that names the sample."""

    passages: list[tuple[str, str]]  # (text, source label), in prompt order
    tokens: int  # the chunker's token counts summed
    fingerprint: str  # changes when the sampled chunks or their text change


def document_passages(
    engine: Engine, collections: Sequence[str] | None, tokens: int, *, seed: int = 0
) -> CalibrationText:
    """Shuffled chunks of ready documents (of ``collections``, or all) until about ``tokens`` tokens."""
    if tokens < 1:
        raise ValueError("tokens must be >= 1")
    with Session(engine) as session:
        if collections:
            known = set(
                session.scalars(select(Collection.name).where(Collection.name.in_(list(collections))))
            )
            missing = sorted(set(collections) - known)
            if missing:
                raise ValueError(f"no such collection: {', '.join(missing)}")
        query = (
            select(Chunk.id)
            .join(Document, Chunk.document_id == Document.id)
            .where(Document.status == "ready")
        )
        if collections:
            query = query.join(Collection, Document.collection_id == Collection.id).where(
                Collection.name.in_(list(collections))
            )
        ids = sorted(session.scalars(query))
        if not ids:
            where = f"collections {', '.join(collections)}" if collections else "the store"
            raise ValueError(f"{where} holds no ingested text to calibrate on; ingest documents first")
        random.Random(seed).shuffle(ids)
        passages: list[tuple[str, str]] = []
        digest = hashlib.sha256(f"seed={seed}".encode())
        total = 0
        for start in range(0, len(ids), _FETCH):
            batch = ids[start : start + _FETCH]
            rows = session.execute(
                select(
                    Chunk.id,
                    Chunk.text,
                    Chunk.token_count,
                    Chunk.page,
                    Chunk.slide,
                    Chunk.sheet,
                    Chunk.heading_path,
                    Document.title,
                    Document.path,
                )
                .join(Document, Chunk.document_id == Document.id)
                .where(Chunk.id.in_(batch))
            ).all()
            by_id = {row.id: row for row in rows}
            for chunk_id in batch:
                row = by_id.get(chunk_id)
                if row is None:  # deleted by a concurrent ingest since the ids were read
                    continue
                passages.append((row.text, source_label(row)))
                digest.update(f"{chunk_id}\0{row.text}\0".encode())
                total += row.token_count
                if total >= tokens:
                    return CalibrationText(passages, total, digest.hexdigest())
    return CalibrationText(passages, total, digest.hexdigest())
