"""Fixtures for retrieval tests: the real embedder (loaded once), and stores on SQLite and PostgreSQL.

PostgreSQL tests run in a schema created for this test session (search_path set per connection), so they
never collide with other test runs using the same database; they are skipped when no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from app.database import open_database
from ingestion.embedder import Embedder
from ingestion.pipeline import IngestPipeline
from ingestion.sources import TextRecord
from retrieval.store import DocumentStore

PG_URL = os.environ.get("SPARQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DATA_TABLES = (
    "document_groups",
    "chunks",
    "documents",
    "ingest_runs",
    "collections",
    "index_state",
    "users",
    "query_log",
)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The shipped all-MiniLM-L6-v2; loading takes seconds, so once per session."""
    return Embedder()


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine | None]:
    schema = f"sparq_rt_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError:  # no server here: the PostgreSQL half of each test is skipped, not failed
        admin.dispose()
        yield None
        return
    engine = create_engine(
        PG_URL,
        connect_args={"options": f"-csearch_path={schema}"},
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
    )
    from app.database import upgrade

    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        eng = open_database(f"sqlite:///{tmp_path / 'sparq.db'}")
        yield eng
        eng.dispose()
        return
    pg = request.getfixturevalue("pg_engine")
    if pg is None:
        pytest.skip("PostgreSQL is not reachable at " + PG_URL)
    _truncate(pg)
    yield pg
    _truncate(pg)


def _truncate(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture
def store(engine: Engine, tmp_path: Path, embedder: Embedder) -> DocumentStore:
    s = DocumentStore(engine, tmp_path / "index", embedder.dim)
    s.open()
    return s


@pytest.fixture
def ingest(store: DocumentStore, embedder: Embedder):  # -> Callable[..., None]
    """Ingest (key, text[, title]) records through the real pipeline: chunker, embedder, store."""

    def run(records: list[TextRecord | tuple], collection: str, groups: list[str] | None = None) -> None:
        items = [r if isinstance(r, TextRecord) else TextRecord(*r) for r in records]
        IngestPipeline(store, embedder).ingest_records(items, collection=collection, groups=groups or [])

    return run


@pytest.fixture
def searcher(store: DocumentStore, embedder: Embedder):  # -> HybridSearcher
    from retrieval.search import HybridSearcher

    s = HybridSearcher(store, lambda q: embedder.encode_query(q, threads=1))
    yield s
    s.close()
