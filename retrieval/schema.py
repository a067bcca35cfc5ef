"""SQL tables for what retrieval serves: collections, documents, their chunks and ingest runs.

The database is the source of truth: each chunk row carries its embedding, so the FAISS index is a
derived cache that can always be repaired or rebuilt from SQL after a crash.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Timezone-aware UTC now: the default of every timestamp column, so no stored time is naive."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The declarative base of the retrieval tables: one metadata for the ORM and the migrations."""


# BigInteger ids on PostgreSQL, INTEGER PRIMARY KEY (the rowid) on SQLite.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class Collection(Base):
    """A named set of documents that searches can be limited to; deleting it deletes its documents."""

    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    documents: Mapped[list[Document]] = relationship(back_populates="collection", passive_deletes=True)


class Document(Base):
    """One stored file or record: its identity (path, sha256), status and readers; its chunks hang off it."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "path", name="uq_document_path"),
        Index("ix_documents_sha", "collection_id", "sha256"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(2048))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    mime: Mapped[str] = mapped_column(String(200), default="application/octet-stream")
    title: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    # ready | stale (last re-read failed; last good chunks still served) | pending (a duplicate to re-read)
    # | failed | skipped | duplicate
    status: Mapped[str] = mapped_column(String(20), default="ready")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duplicate_of: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL"), nullable=True, index=True
    )
    n_chunks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    collection: Mapped[Collection] = relationship(back_populates="documents")
    groups: Mapped[list[DocumentGroup]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )

    @property
    def group_names(self) -> list[str]:
        """The groups that may read this document, sorted so listings and comparisons are stable."""
        return sorted(g.group for g in self.groups)


class DocumentGroup(Base):
    """Who may read a document: a user reads it when one of their groups is listed here."""

    __tablename__ = "document_groups"

    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)
    group: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)


class Chunk(Base):
    """A searchable piece of a document with its location and embedding; its id is its FAISS id."""

    __tablename__ = "chunks"
    __table_args__ = {"sqlite_autoincrement": True}

    # The FAISS id; never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL).
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    # What the keyword index sees: the text with CJK runs segmented into words.
    search_text: Mapped[str] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    slide: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sheet: Mapped[str | None] = mapped_column(String(300), nullable=True)
    heading_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Text read by OCR: the engine's mean word confidence for the page (0-100); NULL for a text layer.
    ocr_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    token_count: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)


class IngestRun(Base):
    """One ingest run and its counts, kept so a run that was interrupted or failed stays visible."""

    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="SET NULL"), nullable=True
    )
    source: Mapped[str] = mapped_column(String(2048))
    # running | completed | interrupted | failed
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    files_new: Mapped[int] = mapped_column(Integer, default=0)
    files_updated: Mapped[int] = mapped_column(Integer, default=0)
    files_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    files_failed: Mapped[int] = mapped_column(Integer, default=0)
    files_skipped: Mapped[int] = mapped_column(Integer, default=0)
    files_removed: Mapped[int] = mapped_column(Integer, default=0)
    chunks_added: Mapped[int] = mapped_column(Integer, default=0)
    chunks_removed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class IndexState(Base):
    """One row: bumped in the same transaction as every chunk change, so the FAISS file can say which
    database state it reflects."""

    __tablename__ = "index_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    # Which embedding model made the stored vectors: another model's query vectors would match them
    # by accident (same dimension, unrelated space), so opening with a different one is refused.
    embedding_model: Mapped[str | None] = mapped_column(String(300), nullable=True)
