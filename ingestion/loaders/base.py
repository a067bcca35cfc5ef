"""The contract every format loader fulfils: a file in, located text sections out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class LoaderError(Exception):
    """A file that cannot be read; the message says why, in words an admin can act on."""


class UnsupportedFormat(LoaderError):
    """No loader handles this file type; the file is skipped, not failed."""


@dataclass(frozen=True)
class Section:
    """A run of text that shares one source location, so chunks can cite it.

    `page` and `slide` are 1-based; `sheet` names a spreadsheet tab; `heading_path`
    is the chain of headings above the text (outermost first); `ocr_confidence` marks text read by OCR.
    """

    text: str
    page: int | None = None
    slide: int | None = None
    sheet: str | None = None
    heading_path: tuple[str, ...] = ()
    kind: str = "text"  # "text", "table", "heading", "header" (email headers), "row"
    # Read by OCR: the engine's mean word confidence for the page (0-100); None for a text layer.
    ocr_confidence: float | None = None


@dataclass
class LoadedDocument:
    """What a loader hands to chunking: the text as located sections, plus mime, title and metadata."""

    sections: list[Section]
    mime: str
    title: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The whole text, sections separated by blank lines (for previews and tests)."""
        return "\n\n".join(s.text for s in self.sections)


class Loader(Protocol):
    """What every format loader offers: its mime, its extensions, and load()."""

    mime: str
    extensions: tuple[str, ...]

    def load(self, path: Path) -> LoadedDocument:
        """Read the file at `path` into located sections; LoaderError (with the reason) when it cannot."""
