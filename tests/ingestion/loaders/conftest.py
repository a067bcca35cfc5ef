"""Fixtures for loader tests: the shared corpus of real example documents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ingestion.loaders import LoadedDocument, load_file


def _repo_root() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError("repository root (pyproject.toml) not found")


@pytest.fixture(scope="session")
def example_docs() -> Path:
    """Real files from the unstructured example corpus, kept beside the repo (read-only)."""
    path = (_repo_root() / ".." / "shared" / "data" / "unstructured_example_docs" / "example-docs").resolve()
    if not path.is_dir():
        pytest.skip(f"example documents not available at {path}")
    return path


@pytest.fixture(scope="session")
def load_example(example_docs: Path) -> Callable[[str], LoadedDocument]:
    def load(name: str) -> LoadedDocument:
        return load_file(example_docs / name)

    return load
