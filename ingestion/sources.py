"""Where documents come from: files in a folder tree, or in-memory records (BEIR corpora, uploads)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ingestion.loaders.base import LoadedDocument, Section


@dataclass
class SourceItem:
    """One document to ingest. `key` is what the store records as the document's path."""

    key: str
    size: int
    mtime: float
    load: Callable[[], LoadedDocument]
    digest: Callable[[], str]
    extension: str = ""


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def walk_files(root: Path) -> list[Path]:
    """Regular files under root in a stable order; hidden entries and symlinked folders are skipped."""
    root = Path(root)
    if root.is_file():
        return [root.resolve()]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is neither a file nor a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                found.append(path.resolve())
    return found


def file_items(paths: list[Path], loader: Callable[[Path], LoadedDocument]) -> Iterator[SourceItem]:
    for path in paths:
        try:
            st = path.stat()
        except OSError as exc:  # vanished between listing and reading: report through load()
            message = f"cannot stat file: {exc}"

            def fail(message: str = message) -> LoadedDocument:
                raise OSError(message)

            yield SourceItem(str(path), 0, 0.0, fail, lambda: "", path.suffix.lower())
            continue
        yield SourceItem(
            key=str(path),
            size=st.st_size,
            mtime=st.st_mtime,
            load=lambda p=path: loader(p),
            digest=lambda p=path: sha256_file(p),
            extension=path.suffix.lower(),
        )


@dataclass(frozen=True)
class TextRecord:
    """A document that is already text, e.g. one line of a BEIR corpus.jsonl."""

    key: str
    text: str
    title: str | None = None


def record_items(records: Iterator[TextRecord] | list[TextRecord]) -> Iterator[SourceItem]:
    for record in records:
        body = record.text
        digest = hashlib.sha256(((record.title or "") + "\n" + body).encode()).hexdigest()

        def load(r: TextRecord = record) -> LoadedDocument:
            return LoadedDocument([Section(r.text)], mime="text/plain", title=r.title)

        yield SourceItem(record.key, len(body.encode()), 0.0, load, lambda d=digest: d, ".txt")
