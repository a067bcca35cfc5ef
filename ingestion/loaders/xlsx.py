"""Excel .xlsx via openpyxl (read-only, cached values): every sheet, one section per
row, each row carrying its column headers (see `_text.table_rows` for why)."""

from __future__ import annotations

from pathlib import Path

import openpyxl

from ._archive import check_ooxml
from ._text import SectionBuilder, table_rows
from .base import LoadedDocument


class XlsxLoader:
    mime = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    extensions: tuple[str, ...] = (".xlsx",)

    def load(self, path: Path) -> LoadedDocument:
        check_ooxml(path, ".xlsx")
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        out = SectionBuilder()
        try:
            names = list(workbook.sheetnames)
            for sheet in workbook.worksheets:
                # A forged <dimension> would otherwise pad every row to 16384 columns.
                if hasattr(sheet, "reset_dimensions"):
                    sheet.reset_dimensions()
                for kind, line in table_rows(sheet.iter_rows(values_only=True)):
                    out.add(line, kind=kind, sheet=sheet.title)
            title = (workbook.properties.title or "").strip() or None
        finally:
            workbook.close()
        return LoadedDocument(
            sections=out.sections, mime=self.mime, title=title, metadata={"sheets": ", ".join(names)}
        )
