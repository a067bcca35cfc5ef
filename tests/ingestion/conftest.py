"""Fixtures shared by the ingestion tests: a real document store on the test database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.database import open_database
from retrieval.store import DocumentStore


@pytest.fixture
def store(database_url: str, tmp_path: Path, embedder) -> Iterator[DocumentStore]:
    """A DocumentStore on the test database (SQLite, or PostgreSQL with SPARQ_TEST_DATABASE) and a FAISS
    index in the test's folder."""
    engine = open_database(database_url)
    s = DocumentStore(engine, tmp_path / "index", embedder.dim)
    s.open()
    yield s
    engine.dispose()
