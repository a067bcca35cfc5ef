"""Excel .xlsx via openpyxl (read-only, cached values): every sheet, one section per
row, each row carrying its column headers (see `_text.table_rows` for why).

A formula cell is read as the value Excel cached when it saved the file. A file written by a script
(openpyxl, many exporters) has formulas and no cached values: those cells are shown as their formula,
marked "not computed", and the document carries a warning saying how many, never an empty cell
without a word."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

import openpyxl

from ._archive import check_ooxml
from ._text import SectionBuilder, table_rows
from .base import LoadedDocument


class XlsxLoader:
    """Excel .xlsx: each sheet's rows, every row naming its columns."""

    mime = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    extensions: tuple[str, ...] = (".xlsx",)

    def load(self, path: Path) -> LoadedDocument:
        """Sections per sheet from the cached values; formulas never computed are reported, not silently empty."""
        check_ooxml(path, ".xlsx")
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        formulas = openpyxl.load_workbook(path, read_only=True, data_only=False)
        out = SectionBuilder()
        uncomputed: dict[str, int] = {}
        try:
            names = list(workbook.sheetnames)
            for sheet, formula_sheet in zip(workbook.worksheets, formulas.worksheets, strict=True):
                # A forged <dimension> would otherwise pad every row to 16384 columns.
                for ws in (sheet, formula_sheet):
                    if hasattr(ws, "reset_dimensions"):
                        ws.reset_dimensions()
                rows = _with_formulas(
                    sheet.iter_rows(values_only=True),
                    formula_sheet.iter_rows(values_only=True),
                    uncomputed,
                    sheet.title,
                )
                for kind, line in table_rows(rows):
                    out.add(line, kind=kind, sheet=sheet.title)
            title = (workbook.properties.title or "").strip() or None
        finally:
            workbook.close()
            formulas.close()
        metadata = {"sheets": ", ".join(names)}
        if uncomputed:
            where = ", ".join(f"{n} in sheet {name!r}" for name, n in uncomputed.items())
            metadata["warnings"] = (
                f"{sum(uncomputed.values())} formula cells have no computed value ({where}): the file was saved "
                "without calculating them (e.g. written by a program); they are indexed as their formulas. Open "
                "and save it in Excel or LibreOffice to index the values."
            )
        return LoadedDocument(sections=out.sections, mime=self.mime, title=title, metadata=metadata)


def _with_formulas(
    values: Iterator[tuple[object, ...]],
    formulas: Iterator[tuple[object, ...]],
    uncomputed: dict[str, int],
    sheet: str,
) -> Iterator[tuple[object, ...]]:
    """Cached values, with each formula that has none shown as "=FORMULA (not computed)" and counted."""
    for value_row, formula_row in zip_longest(values, formulas, fillvalue=()):
        row = list(value_row)
        for i, cell in enumerate(formula_row):
            formula = cell if isinstance(cell, str) else getattr(cell, "text", None)  # ArrayFormula has .text
            if isinstance(formula, str) and formula.startswith("=") and (i >= len(row) or row[i] is None):
                while len(row) <= i:
                    row.append(None)
                row[i] = f"{formula} (not computed)"
                uncomputed[sheet] = uncomputed.get(sheet, 0) + 1
        yield tuple(row)
