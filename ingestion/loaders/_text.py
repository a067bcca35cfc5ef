"""Helpers shared by the loaders: decoding unknown bytes, spotting binary junk,
rendering table rows so each one stands alone, and collecting located sections."""

from __future__ import annotations

import codecs
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TypedDict

import charset_normalizer

from .base import LoaderError, Section

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Control characters and U+FFFD; tab, newlines, form feed and ESC (colour codes in logs) are text.
_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd]")
_SAMPLE = 1 << 20


def bom_encoding(data: bytes) -> tuple[str, int] | None:
    """The encoding a byte-order mark announces and the mark's length."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, len(bom)
    return None


def bomless_utf_encoding(data: bytes) -> str | None:
    """Guess UTF-16/32 without a BOM from where the zero bytes sit.

    Mostly-ASCII text in UTF-16 has a NUL in every other byte on one side only;
    charset detection libraries do not reliably see this, random bytes never look like it.
    """
    sample = data[: 64 * 1024]
    n = len(sample) - len(sample) % 4
    if n < 8 or b"\x00" not in sample:
        return None
    lanes = [sample[i:n:4].count(0) / (n // 4) for i in range(4)]
    if lanes[1] > 0.9 and lanes[2] > 0.9 and lanes[3] > 0.9 and lanes[0] < 0.1:
        return "utf-32-le"
    if lanes[0] > 0.9 and lanes[1] > 0.9 and lanes[2] > 0.9 and lanes[3] < 0.1:
        return "utf-32-be"
    even = (lanes[0] + lanes[2]) / 2
    odd = (lanes[1] + lanes[3]) / 2
    if odd > 0.3 and even < 0.05:
        return "utf-16-le"
    if even > 0.3 and odd < 0.05:
        return "utf-16-be"
    return None


def _detected_legacy_encoding(data: bytes) -> str | None:
    """Best charset guess, preferring cp1252 when it fits as well as the winner.

    Detection cannot tell cp1250/cp1252/latin-1 apart on short Western text and
    tends to pick cp1250, which turns Spanish "ñ" into "ń"; cp1252 is the common
    legacy encoding in the documents we ingest, so it wins ties.
    """
    matches = charset_normalizer.from_bytes(data[:_SAMPLE])
    best = matches.best()
    if best is None:
        return None
    for match in matches:
        if match.chaos <= best.chaos + 0.01 and "cp1252" in match.could_be_from_charset:
            return "cp1252"
    return best.encoding


def decode_bytes(data: bytes) -> str:
    """Decode text of unknown encoding: BOM, BOM-less UTF-16/32, UTF-8, detection, cp1252."""
    found = bom_encoding(data)
    if found:
        name, skip = found
        return data[skip:].decode(name, errors="replace")
    guess = bomless_utf_encoding(data)
    if guess:
        return data.decode(guess, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if b"\x00" in data[:_SAMPLE]:
        raise LoaderError("binary content in a text file")
    encoding = _detected_legacy_encoding(data) or "cp1252"
    return data.decode(encoding, errors="replace")


def check_not_binary(text: str) -> None:
    """Refuse text that is really binary data, so junk never reaches the index."""
    sample = text[:_SAMPLE]
    if not sample:
        return
    if "\x00" in sample:
        raise LoaderError("binary content in a text file")
    if len(_NOT_TEXT.findall(sample)) / len(sample) > 0.05:
        raise LoaderError("binary content in a text file")


def read_text(data: bytes) -> str:
    """Bytes of a text format to checked, newline-normalised text."""
    if not data.strip():
        raise LoaderError("empty file")
    text = decode_bytes(data)
    check_not_binary(text)
    text = normalize_newlines(text)
    if not text.strip():
        raise LoaderError("empty file")
    return text


def normalize_newlines(text: str) -> str:
    """Windows and old Mac line ends as \\n, so chunking and offsets see one kind."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


_WS = re.compile(r"\s+")


def squash(text: str) -> str:
    """Collapse runs of whitespace, for text whose layout carries no meaning."""
    return _WS.sub(" ", text).strip()


def format_cell(value: object) -> str:
    """A cell value as a person would read it: 13 not 13.0, dates without midnight."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return format(value, ".15g")
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return squash(str(value))


_HEADER_LOOKAHEAD = 20


def _cells(raw: Sequence[object]) -> list[str]:
    cells = [format_cell(v) for v in raw]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def table_rows(rows: Iterable[Sequence[object]]) -> Iterator[tuple[str, str]]:
    """Render spreadsheet-like rows as ("text"|"row", line) pairs, each row carrying its header.

    Every data row becomes "Header1: v1; Header2: v2" rather than a header line
    followed by bare rows: chunks are cut anywhere, and a row that names its own
    columns still answers "how many cups did TOR win" when the header row landed in
    another chunk; embedding models also match "Location: TOR" far better than "TOR".
    The header is the first row that fills at least half of the widest of the
    first rows (and two cells); single-cell lines above it (sheet titles) are
    kept as plain text. Tables of one column have no header to repeat.
    """
    iterator = iter(rows)
    pending: list[list[str]] = []
    for raw in iterator:
        cells = _cells(raw)
        if cells:
            pending.append(cells)
        if len(pending) >= _HEADER_LOOKAHEAD:
            break
    widest = max((sum(1 for c in r if c) for r in pending), default=0)
    header: list[str] | None = None
    for idx, cells in enumerate(pending):
        filled = sum(1 for c in cells if c)
        if widest >= 2 and filled >= 2 and filled * 2 >= widest:
            header = cells
            for before in pending[:idx]:
                yield "text", " | ".join(c for c in before if c)
            pending = pending[idx + 1 :]
            break

    def render(cells: list[str]) -> str:
        if header is None:
            return " | ".join(c for c in cells if c)
        parts = []
        for i, value in enumerate(cells):
            if not value:
                continue
            name = header[i] if i < len(header) else ""
            parts.append(f"{name}: {value}" if name else value)
        return "; ".join(parts)

    for cells in pending:
        line = render(cells)
        if line:
            yield "row", line
    for raw in iterator:
        line = render(_cells(raw))
        if line:
            yield "row", line


class _Where(TypedDict, total=False):
    """Where a section's text sits: the location fields of Section."""

    page: int | None
    slide: int | None
    sheet: str | None
    heading_path: tuple[str, ...]


class SectionBuilder:
    """Collects sections in reading order, merging neighbouring prose that shares a
    location so a paragraph-per-section format does not hand the chunker crumbs."""

    def __init__(self) -> None:
        self._done: list[Section] = []
        self._lines: list[str] = []
        self._where: _Where = {}

    def add(
        self,
        text: str,
        *,
        kind: str = "text",
        page: int | None = None,
        slide: int | None = None,
        sheet: str | None = None,
        heading_path: tuple[str, ...] = (),
    ) -> None:
        """Add a piece of text; consecutive text at the same place joins one section, a table stands alone."""
        text = text.strip("\n")
        if not text.strip():
            return
        where: _Where = {
            "page": page,
            "slide": slide,
            "sheet": sheet,
            "heading_path": heading_path,
        }
        if kind == "text" and self._lines and where == self._where:
            self._lines.append(text)
            return
        self._flush()
        if kind == "text":
            self._lines, self._where = [text], where
        else:
            self._done.append(Section(text=text, kind=kind, **where))

    def _flush(self) -> None:
        if self._lines:
            self._done.append(Section(text="\n".join(self._lines), kind="text", **self._where))
            self._lines = []

    @property
    def sections(self) -> list[Section]:
        """Every section added so far, the pending text included."""
        self._flush()
        return self._done


class HeadingStack:
    """Tracks the chain of headings above the current text (levels 1..9)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []

    def push(self, level: int, title: str) -> tuple[str, ...]:
        """Enter a heading of `level`, leaving those at its level or below; returns the new path."""
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        return self.path

    @property
    def path(self) -> tuple[str, ...]:
        """The headings above the current text, outermost first."""
        return tuple(t for _, t in self._stack)


def join_table(rows: Iterable[Iterable[object]]) -> str:
    """A document table as text, the one format of every loader's tables (PDF, DOCX, PPTX, HTML): cells
    joined by " | ", one row per line, the header row first, so the chunker can keep rows whole and repeat
    the header. Cells read as in spreadsheets (`format_cell`), a cell's line breaks become spaces, an
    empty cell stays in place so later cells keep their column; trailing empty cells and empty rows go."""
    lines = []
    for row in rows:
        cells = [format_cell(c) for c in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            lines.append(" | ".join(cells))
    return "\n".join(lines)
