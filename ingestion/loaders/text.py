"""Plain text: the whole file is one section; the chunker does the splitting."""

from __future__ import annotations

from pathlib import Path

from ._text import read_text
from .base import LoadedDocument, Section


class TextLoader:
    mime = "text/plain"
    extensions: tuple[str, ...] = (".txt", ".text", ".log", ".rst", ".org")

    def load(self, path: Path) -> LoadedDocument:
        text = read_text(path.read_bytes())
        return LoadedDocument(sections=[Section(text=text)], mime=self.mime)
