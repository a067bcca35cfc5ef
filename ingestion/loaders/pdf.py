"""PDF via pypdf: one section per page so every chunk can cite its 1-based page."""

from __future__ import annotations

from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

from .base import LoadedDocument, LoaderError, Section

_TAIL = 8 * 1024


class PdfLoader:
    mime = "application/pdf"
    extensions: tuple[str, ...] = (".pdf",)

    def load(self, path: Path) -> LoadedDocument:
        with path.open("rb") as fh:
            head = fh.read(1024)
            size = fh.seek(0, 2)
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
        if b"%PDF-" not in head:
            raise LoaderError("not a valid PDF file: no %PDF header")
        # pypdf silently rebuilds a cut-off file from what is left; the missing pages
        # would then be lost without anyone noticing, so a missing trailer is fatal.
        if b"%%EOF" not in tail:
            raise LoaderError("truncated or damaged PDF: no %%EOF marker at the end of the file")
        try:
            reader = PdfReader(path)
        except PdfReadError as exc:
            raise LoaderError(f"corrupt or unreadable .pdf file: {exc}") from exc
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")  # owner-only ("copy protected") PDFs open this way
            except DependencyError as exc:
                raise LoaderError(
                    "encrypted PDF uses AES; the 'cryptography' package is needed to open it"
                ) from exc
            if not opened:
                raise LoaderError("encrypted PDF: a password is required to open it")
        try:
            pages = reader.pages
            count = len(pages)
        except FileNotDecryptedError as exc:
            raise LoaderError(f"encrypted PDF: {exc}") from exc
        if count == 0:
            raise LoaderError("PDF has no pages")

        sections: list[Section] = []
        blank: list[str] = []
        for number, page in enumerate(pages, start=1):
            try:
                text = page.extract_text()
            except Exception as exc:
                raise LoaderError(f"cannot extract text from PDF page {number}: {exc}") from exc
            if text and text.strip():
                sections.append(Section(text=text, page=number))
            else:
                blank.append(str(number))
        if not sections:
            raise LoaderError("PDF has no extractable text (scanned images?); OCR is not supported")

        metadata = {"pages": str(count)}
        if blank:
            metadata["pages_without_text"] = ",".join(blank)  # likely scans: not indexed
        title = None
        try:
            info = reader.metadata
            title = (info.title or "").strip() or None if info else None
        except Exception as exc:  # a broken info dictionary must not cost the text
            metadata["title_error"] = str(exc)
        return LoadedDocument(sections=sections, mime=self.mime, title=title, metadata=metadata)
