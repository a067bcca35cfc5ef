"""PDF tables keep their rows and columns: real PDFs typeset here with reportlab (a whitespace-aligned
statement, a ruled grid, running text), one shared example paper, and the same table from DOCX and HTML."""

from __future__ import annotations

from pathlib import Path

import docx
import pytest
from reportlab.lib.pagesizes import letter
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

from ingestion.chunker import Chunker
from ingestion.loaders import LoadedDocument, load_file
from ingestion.loaders.pdf import PdfLoader

HEADER = ("(In millions)", "2022", "2021")
ROWS = [
    ("Product", "72,732", "71,074"),
    ("Service and other", "125,538", "97,014"),
    ("Total revenue", "198,270", "168,088"),
    ("Research and development", "24,512", "20,716"),
    ("Other income (expense), net", "(334)", "1,186"),
    ("Net income", "72,738", "61,271"),
]


def _statement(path: Path, rows: list[tuple[str, str, str]], *, dollar: bool = False) -> Path:
    """A statement as annual reports print it: labels at the left, figures right-aligned under their
    years, no ruling lines, a title above and a note below."""
    canvas = Canvas(str(path), pagesize=letter)
    y = 720.0
    canvas.setFont("Helvetica-Bold", 10)
    canvas.drawString(54, y, "INCOME STATEMENTS")
    y -= 30
    canvas.setFont("Helvetica", 9)
    for label, *values in [HEADER, *rows]:
        canvas.drawString(54, y, label)
        for x, value in zip((470, 550), values, strict=True):
            canvas.drawRightString(x, y, value)
            if dollar and label == "Product":
                canvas.drawString(x - 55, y, "$")
        y -= 12.5
        if y < 80:
            canvas.showPage()
            canvas.setFont("Helvetica", 9)
            y = 720.0
    canvas.drawString(54, y - 20, "Refer to accompanying notes.")
    canvas.save()
    return path


def _prose(path: Path) -> Path:
    """Running text only: a paragraph at full width, then two page columns side by side."""
    canvas = Canvas(str(path), pagesize=letter)
    sentence = (
        "Revenue increased 18% driven by growth across each of our segments and in every region "
        "while operating expenses grew more slowly than revenue did during the year. "
    )
    words = (sentence * 6).split()
    canvas.setFont("Helvetica", 10)
    y = 720.0
    for i in range(0, 60, 15):
        canvas.drawString(54, y, " ".join(words[i : i + 15]))
        y -= 13
    y -= 20
    for i in range(0, 96, 6):
        canvas.drawString(54, y, " ".join(words[i : i + 6]))
        canvas.drawString(320, y, " ".join(words[i + 3 : i + 9]))
        y -= 13
    canvas.save()
    return path


def _table_sections(doc: LoadedDocument) -> list[str]:
    return [s.text for s in doc.sections if s.kind == "table"]


def test_whitespace_statement_becomes_rows_with_its_header(tmp_path: Path) -> None:
    doc = load_file(_statement(tmp_path / "statement.pdf", ROWS, dollar=True))
    [table] = _table_sections(doc)
    lines = table.splitlines()
    assert lines[0] == "(In millions) | 2022 | 2021"
    assert "Product | $72,732 | $71,074" in lines  # the "$" set apart joins its figure
    assert "Total revenue | 198,270 | 168,088" in lines
    assert "Other income (expense), net | (334) | 1,186" in lines
    running = "\n".join(s.text for s in doc.sections if s.kind != "table")
    assert "INCOME STATEMENTS" in running and "Refer to accompanying notes." in running
    assert "198,270" not in running and "Total revenue" not in running  # indexed once, as the table
    kinds = [s.kind for s in doc.sections]
    assert kinds == ["text", "table", "text"]  # the table stands where it was printed


def test_old_path_without_tables_keeps_the_flat_text(tmp_path: Path) -> None:
    doc = PdfLoader(tables=False).load(_statement(tmp_path / "statement.pdf", ROWS))
    assert not _table_sections(doc)
    assert "198,270" in doc.text


def test_a_row_stays_in_one_chunk_with_the_header_years(tmp_path: Path, embedder) -> None:
    rows = [(f"Segment {i} revenue", f"{40_000 + 37 * i:,}", f"{30_000 + 11 * i:,}") for i in range(40)]
    rows.insert(25, ("Total revenue", "52,862", "49,360"))
    doc = load_file(_statement(tmp_path / "long.pdf", rows))
    chunks = Chunker(embedder.count_tokens, max_tokens=64, overlap_tokens=16).chunk(doc)
    table_chunks = [c for c in chunks if " | " in c.text]
    assert len(table_chunks) > 3  # the table does not fit one 64-token chunk
    for chunk in table_chunks:
        assert chunk.text.splitlines()[0] == "(In millions) | 2022 | 2021", chunk.text
    [home] = [c for c in table_chunks if "Total revenue" in c.text]
    assert "Total revenue | 52,862 | 49,360" in home.text.splitlines()


def test_ruled_grid_with_a_wrapped_cell(tmp_path: Path) -> None:
    style = getSampleStyleSheet()["BodyText"]
    data = [
        ["Dataset", "Base model", "Notes"],
        ["PubLayNet", "F / M", Paragraph("Layouts of modern scientific documents and their figures", style)],
        ["PRImA", "M", "Layouts of scanned magazines"],
        ["TableBank", "F", "Tables in business documents"],
    ]
    table = Table(data, colWidths=[90, 80, 150])
    table.setStyle(
        TableStyle([("GRID", (0, 0), (-1, -1), 0.5, "black"), ("VALIGN", (0, 0), (-1, -1), "TOP")])
    )
    path = tmp_path / "grid.pdf"
    SimpleDocTemplate(str(path), pagesize=letter).build([Paragraph("Table 1: Models", style), table])
    [text] = _table_sections(load_file(path))
    assert text.splitlines() == [
        "Dataset | Base model | Notes",
        "PubLayNet | F / M | Layouts of modern scientific documents and their figures",
        "PRImA | M | Layouts of scanned magazines",
        "TableBank | F | Tables in business documents",
    ]


def test_running_text_yields_no_table(tmp_path: Path) -> None:
    doc = load_file(_prose(tmp_path / "prose.pdf"))
    assert not _table_sections(doc)
    assert "Revenue increased 18%" in doc.text


def test_shared_example_paper_table(load_example) -> None:
    doc = load_example("pdf/layout-parser-paper-with-table.pdf")
    [table] = _table_sections(doc)
    lines = table.splitlines()
    assert lines[0] == "Dataset | Base Model1 | Large Model | Notes"
    assert "PubLayNet [38] | F / M | M | Layouts of modern scientific documents" in lines
    assert "HJDataset [31] | F / M | - | Layouts of history Japanese documents" in lines
    running = "\n".join(s.text for s in doc.sections if s.kind != "table")
    assert "Layouts of history Japanese documents" not in running
    assert "Table 1: Current layout detection models" in running  # the caption stays text, before the table


def test_shared_example_prose_pages_yield_no_table(load_example) -> None:
    assert not _table_sections(load_example("pdf/multi-column-2p.pdf"))  # two page columns of text
    assert not _table_sections(load_example("pdf/fake-memo.pdf"))


def test_docx_html_and_pdf_give_the_same_rows(tmp_path: Path) -> None:
    rows = [HEADER, *ROWS]
    pdf = _statement(tmp_path / "t.pdf", ROWS)
    document = docx.Document()
    grid = document.add_table(rows=len(rows), cols=3)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            grid.cell(r, c).text = value
    document.save(str(tmp_path / "t.docx"))
    cells = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    (tmp_path / "t.html").write_text(f"<html><body><table>{cells}</table></body></html>", encoding="utf-8")
    expected = "\n".join(" | ".join(row) for row in rows)
    for path in (pdf, tmp_path / "t.docx", tmp_path / "t.html"):
        assert _table_sections(load_file(path)) == [expected], path.suffix


def test_spanned_cells_keep_later_values_under_their_columns(tmp_path: Path) -> None:
    html = (
        "<table><tr><th rowspan=2>Item</th><th colspan=2>Year</th></tr><tr><th>2022</th><th>2021</th></tr>"
        "<tr><td>Total revenue</td><td>52,862</td><td>49,360</td></tr></table>"
    )
    (tmp_path / "span.html").write_text(html, encoding="utf-8")
    assert _table_sections(load_file(tmp_path / "span.html")) == [
        "Item | Year\n | 2022 | 2021\nTotal revenue | 52,862 | 49,360"
    ]
    document = docx.Document()
    grid = document.add_table(rows=2, cols=3)
    merged = grid.cell(0, 0).merge(grid.cell(0, 1))
    merged.text = "Revenue by year"
    grid.cell(0, 2).text = "Note"
    for c, value in enumerate(("Total revenue", "52,862", "1")):
        grid.cell(1, c).text = value
    document.save(str(tmp_path / "span.docx"))
    assert _table_sections(load_file(tmp_path / "span.docx")) == [
        "Revenue by year |  | Note\nTotal revenue | 52,862 | 1"
    ]


@pytest.mark.parametrize("dollar", [False, True])
def test_statement_spread_over_two_pages_keeps_every_row(tmp_path: Path, dollar: bool) -> None:
    rows = [(f"Line item {i}", f"{1_000 + i:,}", f"{2_000 + i:,}") for i in range(60)]
    doc = load_file(_statement(tmp_path / "two.pdf", rows, dollar=dollar))
    found = [line for text in _table_sections(doc) for line in text.splitlines()]
    for label, a, b in rows:
        assert f"{label} | {a} | {b}" in found
    assert {s.page for s in doc.sections if s.kind == "table"} == {1, 2}
