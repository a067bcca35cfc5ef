from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from ingestion.loaders import LoaderError, load_file


def test_sheets_and_header_kept_rows(load_example) -> None:
    doc = load_example("stanley-cups.xlsx")
    assert doc.metadata["sheets"] == "Stanley Cups, Stanley Cups Since 67"
    assert {s.sheet for s in doc.sections} == {"Stanley Cups", "Stanley Cups Since 67"}
    rows = [(s.sheet, s.text) for s in doc.sections if s.kind == "row"]
    assert ("Stanley Cups", "Team: Maple Leafs; Location: TOR; Stanley Cups: 13") in rows
    assert ("Stanley Cups Since 67", "Team: Maple Leafs; Location: TOR; Stanley Cups: 0") in rows
    titles = [s.text for s in doc.sections if s.kind == "text"]
    assert titles == ["Stanley Cups", "Stanley Cups Since 67"]


def test_password_protected_xlsx(example_docs: Path) -> None:
    with pytest.raises(LoaderError, match="password-protected"):
        load_file(example_docs / "password_protected.xlsx")


def test_empty_workbook(example_docs: Path) -> None:
    with pytest.raises(LoaderError, match="no extractable text"):
        load_file(example_docs / "empty.xlsx")


def test_chinese_cells(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "销售"
    sheet.append(["城市", "收入"])
    sheet.append(["北京", 12.5])
    path = tmp_path / "zh.xlsx"
    workbook.save(path)
    doc = load_file(path)
    assert [(s.sheet, s.text) for s in doc.sections] == [("销售", "城市: 北京; 收入: 12.5")]


def test_formulas_without_cached_values_are_shown_and_reported(tmp_path: Path) -> None:
    """openpyxl (like many exporters) writes formulas and no computed values: such a cell must not be read
    as empty without a word."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Revenue"
    sheet.append(["Item", "2022", "2023"])
    sheet.append(["Licences", 30000, 31000])
    sheet.append(["Services", 22862, 24000])
    sheet.append(["Total revenue", "=SUM(B2:B3)", "=SUM(C2:C3)"])
    path = tmp_path / "filing.xlsx"
    workbook.save(path)
    doc = load_file(path)
    rows = [s.text for s in doc.sections if s.kind == "row"]
    assert "Item: Total revenue; 2022: =SUM(B2:B3) (not computed); 2023: =SUM(C2:C3) (not computed)" in rows
    assert "Item: Licences; 2022: 30000; 2023: 31000" in rows
    assert "2 formula cells have no computed value (2 in sheet 'Revenue')" in doc.metadata["warnings"]


def test_cached_formula_values_are_used_without_a_warning(load_example) -> None:
    doc = load_example("stanley-cups.xlsx")
    assert "warnings" not in doc.metadata
    assert not any("not computed" in s.text for s in doc.sections)
