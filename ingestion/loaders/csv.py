"""CSV/TSV: delimiter sniffed (comma, semicolon, tab, pipe), encoding detected, one
section per row with the header kept in each row as for spreadsheets."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from ._text import SectionBuilder, read_text, table_rows
from .base import LoadedDocument, LoaderError

_SNIFF_CHARS = 32 * 1024


def _delimiter(text: str) -> str | None:
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # a cut line would skew the column count
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return None  # no consistent delimiter: one value per line


class CsvLoader:
    """One class for both: a .tsv is always tab-separated, a .csv is sniffed."""

    def __init__(
        self, mime: str = "text/csv", extensions: tuple[str, ...] = (".csv",), delimiter: str | None = None
    ):
        self.mime = mime
        self.extensions = extensions
        self._delimiter = delimiter

    def load(self, path: Path) -> LoadedDocument:
        """Each row as one line that names its columns; malformed CSV is a LoaderError naming the line."""
        text = read_text(path.read_bytes())
        delimiter = self._delimiter or _delimiter(text)
        if delimiter is None:
            rows: Iterator[list[str]] = ([line] for line in text.split("\n"))
        else:
            rows = csv.reader(
                io.StringIO(text), delimiter=delimiter, quotechar='"', doublequote=True, strict=False
            )
        out = SectionBuilder()
        try:
            for kind, line in table_rows(rows):
                out.add(line, kind=kind)
        except csv.Error as exc:
            where = f" at line {rows.line_num}" if hasattr(rows, "line_num") else ""
            raise LoaderError(f"malformed CSV{where}: {exc}") from exc
        return LoadedDocument(sections=out.sections, mime=self.mime)
