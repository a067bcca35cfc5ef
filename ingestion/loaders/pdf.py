"""PDF via pypdf: one section per page so every chunk can cite its 1-based page.

Tables are found from where the page's words and rules sit (pypdfium2, see _pdf_tables) and become
sections of their own, one row per line in the format every loader uses (`join_table`), placed where
they stood in the page's text; their lines are taken out of the running text so a figure is indexed once.
Pages without a text layer (scans) are rendered with pypdfium2 and read by OCR (ingestion.ocr); a page
OCR cannot read is named in the document's warnings, never dropped without a word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

from ingestion import ocr

from ._pdf_layout import page_layout
from ._pdf_tables import PdfTable, find_tables
from ._text import join_table
from .base import LoadedDocument, LoaderError, Section

_TAIL = 8 * 1024


class PdfLoader:
    """PDF: the text layer page by page, OCR for pages that have none."""

    mime = "application/pdf"
    extensions: tuple[str, ...] = (".pdf",)

    def __init__(self, *, tables: bool = True) -> None:
        self.tables = tables  # False: the page text as pypdf reads it, tables flattened into its lines

    def load(self, path: Path) -> LoadedDocument:
        """Sections per page (1-based); a file without a PDF header or trailer is refused, not half-read."""
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
        blank: list[int] = []
        texts: dict[int, str] = {}
        for number, page in enumerate(pages, start=1):
            try:
                text = page.extract_text()
            except Exception as exc:
                raise LoaderError(f"cannot extract text from PDF page {number}: {exc}") from exc
            if text and text.strip():
                texts[number] = text
            else:
                blank.append(number)
        warnings: list[str] = []
        found = _tables(path, list(texts), warnings) if self.tables and texts else {}
        for number, text in texts.items():
            sections.extend(_page_sections(text, found.get(number, []), number))
        if blank:
            try:
                read, problems = _ocr(path, blank)
            except ocr.OcrUnavailable as exc:
                if not sections:
                    raise LoaderError(f"PDF has no text layer (scanned images?) and {exc}") from exc
                read, problems = [], [f"pages {_ranges(blank)} have no text layer and were not read: {exc}"]
            sections = sorted(sections + read, key=lambda s: s.page or 0)
            warnings.extend(problems)
        if not sections:
            raise LoaderError("PDF has no extractable text: " + "; ".join(warnings))

        metadata = {"pages": str(count)}
        if blank:
            metadata["pages_ocr"] = ",".join(map(str, blank))
        if warnings:
            metadata["warnings"] = ocr.describe(warnings)
        title = None
        try:
            info = reader.metadata
            title = (info.title or "").strip() or None if info else None
        except Exception as exc:  # a broken info dictionary must not cost the text
            metadata["title_error"] = str(exc)
        return LoadedDocument(sections=sections, mime=self.mime, title=title, metadata=metadata)


def _tables(path: Path, numbers: list[int], warnings: list[str]) -> dict[int, list[PdfTable]]:
    """The tables of the given 1-based pages. A file PDFium cannot open keeps its text, without tables,
    and says so in the document's warnings."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        warnings.append(f"tables were not extracted (PDFium cannot open the file: {exc})")
        return {}
    found: dict[int, list[PdfTable]] = {}
    try:
        for number in numbers:
            try:
                page = document[number - 1]
                try:
                    tables = find_tables(page_layout(page))
                finally:
                    page.close()
            except pdfium.PdfiumError as exc:  # the page's text is kept all the same, tables flattened
                warnings.append(f"page {number}: tables were not extracted (PDFium cannot read it: {exc})")
                continue
            if tables:
                found[number] = tables
    finally:
        document.close()
    return found


def _key(line: str) -> str:
    """A line as compared with a table's lines: NFKC, no whitespace (the two readers space words differently)."""
    return "".join(unicodedata.normalize("NFKC", line).split())


def _page_sections(text: str, tables: list[PdfTable], number: int) -> list[Section]:
    """The page's running text, cut where its tables stood, with each table as a section of its own.

    A line of pypdf's text is a table's when its letters are a run of the table's words, in order
    (pypdf gives a row as one line, or each cell as a line of its own, as the PDF drew it); such lines are
    dropped from the running text, each table word taken once. A table none of whose lines is found there
    is placed after the page's text, and its words stay in both."""
    if not tables:
        return [Section(text=text, page=number)]
    lines = text.split("\n")
    keys = [_key(line) for line in lines]
    taken = [False] * len(lines)
    anchors: list[tuple[int, PdfTable]] = []
    for table in tables:
        words = [_key(word) for line in table.lines for word in line.split()]
        used = [False] * len(words)
        first: int | None = None
        for i, key in enumerate(keys):
            if taken[i] or not key:
                continue
            run = _run(words, used, key)
            if run is not None:
                used[run[0] : run[1]] = [True] * (run[1] - run[0])
                taken[i] = True
                first = i if first is None else first
        anchors.append((len(lines) if first is None else first, table))
    anchors.sort(key=lambda a: a[0])
    sections: list[Section] = []
    start = 0
    for at, table in anchors:
        before = "\n".join(line for i, line in enumerate(lines[start:at], start) if not taken[i])
        if before.strip():
            sections.append(Section(text=before, page=number))
        sections.append(Section(text=join_table(table.rows), page=number, kind="table"))
        start = max(start, at)
    rest = "\n".join(line for i, line in enumerate(lines[start:], start) if not taken[i])
    if rest.strip():
        sections.append(Section(text=rest, page=number))
    return sections


def _run(words: list[str], used: list[bool], key: str) -> tuple[int, int] | None:
    """Where `key` is the concatenation of consecutive unused table words, as (start, end)."""
    for start, word in enumerate(words):
        if used[start] or not word or not key.startswith(word):
            continue
        joined, end = "", start
        while end < len(words) and not used[end] and len(joined) < len(key):
            joined += words[end]
            end += 1
            if not key.startswith(joined):
                break
        if joined == key:
            return start, end
    return None


def _ranges(numbers: list[int]) -> str:
    """1,2,3,7 -> "1-3, 7": a 300-page scan's message stays one line."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [0]:
        if n != prev + 1:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = n
        prev = n
    return ", ".join(out)


def _ocr(path: Path, numbers: list[int]) -> tuple[list[Section], list[str]]:
    """Render the given 1-based pages with pypdfium2 and OCR them, one page in memory at a time."""
    import pypdfium2 as pdfium

    job = (
        ocr.current_job()
    )  # the product's OCR settings and this file's time limit (set by the loader worker)
    settings = job.settings
    engine = ocr.TesseractEngine(settings.languages)
    engine.check()  # OcrUnavailable before anything is rendered
    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise LoaderError(f"cannot render the PDF's scanned pages: {exc}") from exc
    problems: list[str] = []

    def rendered() -> Iterator[tuple[int, Image.Image, int | None]]:
        for number in numbers:
            try:
                page = document[number - 1]
                width, height = page.get_size()  # points
                dpi = _scan_dpi(page, width * height, settings.dpi)
                pixels = width * height * (dpi / 72) ** 2
                if pixels > ocr.MAX_PIXELS:  # a poster-sized page: render fewer dots, not gigabytes
                    dpi = max(72, int(dpi * (ocr.MAX_PIXELS / pixels) ** 0.5))
                image = page.render(scale=dpi / 72, grayscale=True).to_pil()
            except pdfium.PdfiumError as exc:
                problems.append(f"page {number}: cannot render it for OCR ({exc})")
                continue
            yield number, image, dpi

    try:
        sections, ocr_problems = ocr.ocr_pages(rendered(), engine, numbers=numbers, limit=job.limit)
    finally:
        document.close()
    return sections, sorted(problems + ocr_problems, key=_page_of)


def _scan_dpi(page, page_area: float, default: int) -> int:
    """The resolution to render a scanned page at: its scan's own, up to `default`.

    A 200-dpi scan rendered at 300 dpi only enlarges its noise, and Tesseract then reads specks as
    strokes (measured: most of a noisy Chinese page lost); so a page that is mostly one image is
    rendered at that image's resolution (150 dpi at least), other pages at `default`."""
    import pypdfium2.raw as pdfium_c

    best_area, native = 0.0, None
    for image in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=3):
        left, bottom, right, top = image.get_bounds()
        area = (right - left) * (top - bottom)
        px_w, px_h = image.get_px_size()
        if area > best_area and right > left and top > bottom:
            best_area, native = area, max(px_w, px_h) * 72 / max(right - left, top - bottom)
    if native is None or best_area < 0.5 * page_area:
        return default
    return int(min(default, max(150, round(native))))


def _page_of(problem: str) -> int:
    match = re.match(r"pages? (\d+)", problem)  # "page 3: ..." and "pages 41-200 not OCR'd: ..."
    return int(match.group(1)) if match else 0
