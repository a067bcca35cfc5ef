"""Plain text: the whole file is one section; the chunker does the splitting."""

from __future__ import annotations

from pathlib import Path

from ._text import read_text
from .base import LoadedDocument, Section


class TextLoader:
    """Plain text files, whatever their encoding."""

    mime = "text/plain"
    extensions: tuple[str, ...] = (".txt", ".text", ".log", ".rst", ".org")

    def load(self, path: Path) -> LoadedDocument:
        """The file's text, decoded (BOM, UTF-8, else detected), as one section."""
        text = read_text(path.read_bytes())
        return LoadedDocument(sections=[Section(text=text)], mime=self.mime)
