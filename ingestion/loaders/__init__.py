"""Format loaders: `load_file` turns an uploaded file into located text sections.

Every failure is a `LoaderError` (or `UnsupportedFormat`, which the pipeline
records as skipped) with a message that says why; nothing else escapes.
Extensions are lower-case with the leading dot, as `Path.suffix` gives them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .base import LoadedDocument, Loader, LoaderError, Section, UnsupportedFormat
from .csv import CsvLoader
from .docx import DocxLoader
from .eml import EmlLoader
from .html import HtmlLoader
from .image import ImageLoader
from .json import JsonLoader
from .markdown import MarkdownLoader
from .pdf import PdfLoader
from .pptx import PptxLoader
from .text import TextLoader
from .xlsx import XlsxLoader

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LoadedDocument",
    "Loader",
    "LoaderError",
    "Section",
    "UnsupportedFormat",
    "load_file",
    "mime_for",
    "supported_extensions",
]

DEFAULT_MAX_BYTES = 200 * 1024 * 1024

_LOADERS: tuple[Loader, ...] = (
    TextLoader(),
    MarkdownLoader(),
    HtmlLoader(),
    PdfLoader(),
    DocxLoader(),
    PptxLoader(),
    XlsxLoader(),
    CsvLoader(),
    CsvLoader(mime="text/tab-separated-values", extensions=(".tsv",), delimiter="\t"),
    EmlLoader(),
    JsonLoader(),
    JsonLoader(mime="application/x-ndjson", extensions=(".ndjson", ".jsonl"), lines=True),
    ImageLoader("image/png", (".png",)),
    ImageLoader("image/jpeg", (".jpg", ".jpeg")),
    ImageLoader("image/tiff", (".tif", ".tiff")),
)
REGISTRY: dict[str, Loader] = {ext: loader for loader in _LOADERS for ext in loader.extensions}


def supported_extensions() -> frozenset[str]:
    """The file extensions some loader reads: anything else is skipped as unsupported."""
    return frozenset(REGISTRY)


def mime_for(path: Path | str) -> str:
    """The mime type that sparq records for a file of this extension (application/octet-stream if unknown)."""
    loader = REGISTRY.get(Path(path).suffix.lower())
    return loader.mime if loader else "application/octet-stream"


def _loader_for(path: Path) -> Loader:
    ext = path.suffix.lower()
    loader = REGISTRY.get(ext)
    if loader is None:
        raise UnsupportedFormat(
            f"no loader for {ext} files" if ext else "no loader for files without an extension"
        )
    return loader


def load_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedDocument:
    """Load one file, enforcing the size limit and the contract that only LoaderError escapes."""
    path = Path(path)
    loader = _loader_for(path)
    ext = path.suffix.lower()
    try:
        if not path.is_file():
            raise LoaderError("not a regular file" if path.exists() else "file not found")
        size = path.stat().st_size
        if size > max_bytes:
            raise LoaderError(f"file too large: {size} bytes (limit {max_bytes})")
        if size == 0:
            raise LoaderError("empty file")
        document = loader.load(path)
    except LoaderError:
        raise
    except Exception as exc:  # library bugs and hostile input alike: report, never crash the pipeline
        raise LoaderError(f"corrupt or unreadable {ext} file: {type(exc).__name__}: {exc}") from exc
    return _finish(document, ext)


def _finish(document: LoadedDocument, ext: str) -> LoadedDocument:
    """Drop empty sections and NULs, and refuse documents with no text at all."""
    sections = []
    for section in document.sections:
        text = section.text.replace("\x00", "")
        if not text.strip():
            continue
        if text != section.text:
            section = replace(section, text=text)
        sections.append(section)
    if not sections:
        raise LoaderError(f"no extractable text in this {ext} file")
    document.sections = sections
    return document
