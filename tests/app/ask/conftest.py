"""Real parts for the ask's steps, without an Assistant: a migrated database, a store with a few documents
ingested through the real pipeline and embedder, the real hybrid searcher, and the small real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from app.ask.retrieve import EmbedTimer
from retrieval.access import Principal
from retrieval.filters import SearchFilters

DOCS = {
    "hr": [
        (
            "policy.md",
            "# Travel policy\n\nEmployees book economy class for flights under six hours.\n\n"
            "# Expenses\n\nMeals are reimbursed up to 40 euros per day.\n",
            "Travel policy",
        ),
    ],
    "it": [
        ("it.md", "# IT\n\nThe VPN server is vpn.example.com. Passwords expire every 90 days.\n", "IT"),
    ],
}
SECRET = (
    "salaries.md",
    "# Salaries\n\nThe CEO salary is 917,000 EUR (approval code ZEBRA-42).\n",
    "Salaries",
)


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    from app.database import open_database

    engine = open_database(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(db: Engine, tmp_path: Path, embedder):  # -> retrieval.store.DocumentStore
    from ingestion.pipeline import IngestPipeline
    from ingestion.sources import TextRecord
    from retrieval.store import DocumentStore

    s = DocumentStore(db, tmp_path / "index", embedder.dim, embedding_model=embedder.model_id)
    s.open()
    pipeline = IngestPipeline(s, embedder)
    for collection, docs in DOCS.items():
        pipeline.ingest_records([TextRecord(*d) for d in docs], collection=collection, groups=["staff"])
    pipeline.ingest_records([TextRecord(*SECRET)], collection="hr", groups=["finance"])
    yield s
    s.flush()


@pytest.fixture
def embed_timer() -> EmbedTimer:
    return EmbedTimer()


@pytest.fixture
def searcher(store, embedder, embed_timer):  # -> retrieval.search.HybridSearcher
    from retrieval.search import HybridSearcher

    s = HybridSearcher(store, embed_timer.timed(lambda q: embedder.encode_query(q, threads=1)))
    yield s
    s.close()


@pytest.fixture
def search(searcher):  # -> app.ask.retrieve.Searcher
    """The real searcher with Assistant.search's keywords (user is the Principal)."""

    def run(query: str, *, user: Principal, k: int, filters: SearchFilters | None) -> list[Any]:
        return searcher.search(query, principal=user, k=k, filters=filters)

    return run
