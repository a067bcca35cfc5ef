"""Do financial statements keep their rows and columns through ingestion? Before/after table extraction.

    python bench/tables.py [--out bench/results/tables.json] [--keep DIR]

There is no network here, so the filings are typeset by this script (reportlab) the way a 10-K prints
them: a label column with indented items and labels wrapped onto a second line, two or three year
columns of right-aligned figures with thousands separators, "$" set apart on first and total rows,
parentheses for negatives, short rules over totals, no ruling between rows, a page header and footer,
and one page of running text with figures in its sentences. The figures are real published ones, from
memory of the companies' annual reports on Form 10-K (every subtotal and total reconciles):

- Microsoft Corporation, INCOME STATEMENTS, fiscal years ended June 30, 2022, 2021 and 2020;
- Microsoft Corporation, BALANCE SHEETS, June 30, 2022 and 2021;
- Apple Inc., CONSOLIDATED STATEMENTS OF OPERATIONS, fiscal years ended September 24, 2022,
  September 25, 2021 and September 26, 2020 (two-line date headers).

Gold: every (row label, year, figure) of the statements. Metric: the share of gold figures that appear
in one chunk together with their row label and their column's year, after the real pipeline chunks the
document (the chunker with the real embedder's token counter and the configured chunk size, as
bench/ingest.py builds it), measured for the old path (PdfLoader with tables=False: pypdf's page text)
and the new one (table sections) in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from reportlab.lib.pagesizes import letter
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.assistant import Assistant  # noqa: E402
from app.config import Settings  # noqa: E402
from ingestion.loaders.pdf import PdfLoader  # noqa: E402

FONT, BOLD, SIZE, LEADING = "Helvetica", "Helvetica-Bold", 9, 12.5


@dataclass(frozen=True)
class Row:
    label: str
    values: tuple[str, ...] = ()  # empty: a heading line such as "Revenue:"
    indent: int = 0  # levels of 10 points
    dollar: bool = False  # "$" set apart at the left of each figure column
    total: bool = False  # a short rule over the figures


@dataclass(frozen=True)
class Statement:
    company: str
    title: str
    unit: str
    caption: str  # over the figure columns, e.g. "Year Ended June 30,"
    columns: tuple[tuple[str, ...], ...]  # each column's header lines, the last one is the year
    rows: tuple[Row, ...]
    label_width: float  # points before a label wraps


def _r(label: str, *values: str, indent: int = 1, dollar: bool = False, total: bool = False) -> Row:
    return Row(label, values, indent, dollar, total)


MSFT_INCOME = Statement(
    company="MICROSOFT CORPORATION",
    title="INCOME STATEMENTS",
    unit="(In millions, except per share amounts)",
    caption="Year Ended June 30,",
    columns=(("2022",), ("2021",), ("2020",)),
    label_width=230,
    rows=(
        Row("Revenue:"),
        _r("Product", "72,732", "71,074", "68,041", dollar=True),
        _r("Service and other", "125,538", "97,014", "74,974"),
        _r("Total revenue", "198,270", "168,088", "143,015", indent=2, total=True),
        Row("Cost of revenue:"),
        _r("Product", "19,064", "18,219", "16,017"),
        _r("Service and other", "43,586", "34,013", "30,061"),
        _r("Total cost of revenue", "62,650", "52,232", "46,078", indent=2, total=True),
        _r("Gross margin", "135,620", "115,856", "96,937", indent=0, total=True),
        _r("Research and development", "24,512", "20,716", "19,269", indent=0),
        _r("Sales and marketing", "21,825", "20,117", "19,598", indent=0),
        _r("General and administrative", "5,900", "5,107", "5,111", indent=0),
        _r("Operating income", "83,383", "69,916", "52,959", indent=0, total=True),
        _r("Other income, net", "333", "1,186", "77", indent=0),
        _r("Income before income taxes", "83,716", "71,102", "53,036", indent=0, total=True),
        _r("Provision for income taxes", "10,978", "9,831", "8,755", indent=0),
        _r("Net income", "72,738", "61,271", "44,281", indent=0, dollar=True, total=True),
        Row("Earnings per share:"),
        _r("Basic", "9.70", "8.12", "5.82", dollar=True),
        _r("Diluted", "9.65", "8.05", "5.76", dollar=True),
        Row("Weighted-average shares outstanding:"),
        _r("Basic", "7,496", "7,547", "7,610"),
        _r("Diluted", "7,540", "7,608", "7,683"),
    ),
)

MSFT_BALANCE = Statement(
    company="MICROSOFT CORPORATION",
    title="BALANCE SHEETS",
    unit="(In millions)",
    caption="June 30,",
    columns=(("2022",), ("2021",)),
    label_width=230,
    rows=(
        Row("Assets"),
        Row("Current assets:"),
        _r("Cash and cash equivalents", "13,931", "14,224", dollar=True),
        _r("Short-term investments", "90,826", "116,110"),
        _r(
            "Total cash, cash equivalents, and short-term investments",
            "104,757",
            "130,334",
            indent=2,
            total=True,
        ),
        _r(
            "Accounts receivable, net of allowance for doubtful accounts of $633 and $751", "44,261", "38,043"
        ),
        _r("Inventories", "3,742", "2,636"),
        _r("Other current assets", "16,924", "13,393"),
        _r("Total current assets", "169,684", "184,406", indent=2, total=True),
        _r(
            "Property and equipment, net of accumulated depreciation of $59,660 and $51,351",
            "74,398",
            "59,715",
            indent=0,
        ),
        _r("Operating lease right-of-use assets", "13,148", "11,088", indent=0),
        _r("Equity investments", "6,891", "5,984", indent=0),
        _r("Goodwill", "67,524", "49,711", indent=0),
        _r("Intangible assets, net", "11,298", "7,800", indent=0),
        _r("Other long-term assets", "21,897", "15,075", indent=0),
        _r("Total assets", "364,840", "333,779", indent=2, dollar=True, total=True),
        Row("Liabilities and stockholders' equity"),
        Row("Current liabilities:"),
        _r("Accounts payable", "19,000", "15,163", dollar=True),
        _r("Current portion of long-term debt", "2,749", "8,072"),
        _r("Accrued compensation", "10,661", "10,057"),
        _r("Short-term income taxes", "4,067", "2,174"),
        _r("Short-term unearned revenue", "45,538", "41,525"),
        _r("Other current liabilities", "13,067", "11,666"),
        _r("Total current liabilities", "95,082", "88,657", indent=2, total=True),
        _r("Long-term debt", "47,032", "50,074", indent=0),
        _r("Long-term income taxes", "26,069", "27,190", indent=0),
        _r("Long-term unearned revenue", "2,870", "2,616", indent=0),
        _r("Deferred income taxes", "230", "198", indent=0),
        _r("Operating lease liabilities", "11,489", "9,629", indent=0),
        _r("Other long-term liabilities", "15,526", "13,427", indent=0),
        _r("Total liabilities", "198,298", "191,791", indent=2, total=True),
        Row("Commitments and contingencies"),
        Row("Stockholders' equity:"),
        _r(
            "Common stock and paid-in capital - shares authorized 24,000; outstanding 7,464 and 7,519",
            "86,939",
            "83,111",
        ),
        _r("Retained earnings", "84,281", "57,055"),
        _r("Accumulated other comprehensive income (loss)", "(4,678)", "1,822"),
        _r("Total stockholders' equity", "166,542", "141,988", indent=2, total=True),
        _r(
            "Total liabilities and stockholders' equity",
            "364,840",
            "333,779",
            indent=2,
            dollar=True,
            total=True,
        ),
    ),
)

APPLE_OPERATIONS = Statement(
    company="Apple Inc.",
    title="CONSOLIDATED STATEMENTS OF OPERATIONS",
    unit="(In millions, except number of shares, which are reflected in thousands, and per-share amounts)",
    caption="Years ended",
    columns=(("September 24,", "2022"), ("September 25,", "2021"), ("September 26,", "2020")),
    label_width=170,
    rows=(
        Row("Net sales:"),
        _r("Products", "316,199", "297,392", "220,747", dollar=True),
        _r("Services", "78,129", "68,425", "53,768"),
        _r("Total net sales", "394,328", "365,817", "274,515", indent=2, total=True),
        Row("Cost of sales:"),
        _r("Products", "201,471", "192,266", "151,286"),
        _r("Services", "22,075", "20,715", "18,273"),
        _r("Total cost of sales", "223,546", "212,981", "169,559", indent=2, total=True),
        _r("Gross margin", "170,782", "152,836", "104,956", indent=2, total=True),
        Row("Operating expenses:"),
        _r("Research and development", "26,251", "21,914", "18,752"),
        _r("Selling, general and administrative", "25,094", "21,973", "19,916"),
        _r("Total operating expenses", "51,345", "43,887", "38,668", indent=2, total=True),
        _r("Operating income", "119,437", "108,949", "66,288", indent=0, total=True),
        _r("Other income/(expense), net", "(334)", "258", "803", indent=0),
        _r("Income before provision for income taxes", "119,103", "109,207", "67,091", indent=0, total=True),
        _r("Provision for income taxes", "19,300", "14,527", "9,680", indent=0),
        _r("Net income", "99,803", "94,680", "57,411", indent=0, dollar=True, total=True),
        Row("Earnings per share:"),
        _r("Basic", "6.15", "5.67", "3.31", dollar=True),
        _r("Diluted", "6.11", "5.61", "3.28", dollar=True),
        Row("Shares used in computing earnings per share:"),
        _r("Basic", "16,215,963", "16,701,272", "17,352,119"),
        _r("Diluted", "16,325,819", "16,864,919", "17,528,214"),
    ),
)

FILINGS = {
    "microsoft-2022-income-statements.pdf": (MSFT_INCOME,),
    "microsoft-2022-balance-sheets.pdf": (MSFT_BALANCE,),
    "apple-2022-statements-of-operations.pdf": (APPLE_OPERATIONS,),
}

NARRATIVE = (
    "Revenue increased $30.2 billion or 18% driven by growth across each of our segments. Intelligent "
    "Cloud revenue increased driven by Azure and other cloud services. Productivity and Business Processes "
    "revenue increased driven by Office 365 Commercial and LinkedIn. More Personal Computing revenue "
    "increased driven by Gaming, Windows OEM and Search and news advertising. Cost of revenue increased "
    "$10.4 billion or 20%, driven by growth in Microsoft Cloud. Gross margin increased $19.8 billion or 17% "
    "driven by growth across each of our segments. Operating expenses increased $6.3 billion or 14% driven "
    "by investments in cloud engineering, LinkedIn, Gaming, and commercial sales. The following discussion "
    "should be read together with the financial statements and the accompanying notes."
)


def _wrap(text: str, width: float, font: str = FONT) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and stringWidth(trial, font, SIZE) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    return [*lines, current] if current else lines


def typeset(statements: tuple[Statement, ...], path: Path, *, narrative: bool = True) -> None:
    """A 10-K-like PDF: a page of running text, then one page per statement."""
    canvas = Canvas(str(path), pagesize=letter)
    width, height = letter
    if narrative:
        y = height - 72
        canvas.setFont(BOLD, 11)
        canvas.drawString(54, y, "Item 7. Management's Discussion and Analysis")
        canvas.setFont(FONT, 10)
        for line in _wrap(NARRATIVE, width - 108):
            y -= 14
            canvas.drawString(54, y, line)
        canvas.showPage()
    for page, st in enumerate(statements, start=1):
        _statement_page(canvas, st, width, height, page)
        canvas.showPage()
    canvas.save()


def _statement_page(canvas: Canvas, st: Statement, width: float, height: float, page: int) -> None:
    right = [width - 54 - 72 * k for k in reversed(range(len(st.columns)))]  # figure columns' right edges
    canvas.setFont(FONT, 8)
    canvas.drawString(54, height - 40, "PART II")
    canvas.drawRightString(width - 54, height - 40, "Item 8")
    y = height - 72
    for text, font in ((st.title, BOLD), (st.unit, FONT)):
        canvas.setFont(font, SIZE)
        canvas.drawString(54, y, text)
        y -= LEADING
    y -= LEADING
    canvas.setFont(BOLD, SIZE)
    canvas.drawCentredString((right[0] - 50 + right[-1]) / 2, y, st.caption)
    y -= LEADING + 4
    header_lines = max(len(c) for c in st.columns)
    for k in range(header_lines):
        for x, column in zip(right, st.columns, strict=True):
            lines = ("",) * (header_lines - len(column)) + column
            canvas.drawRightString(x, y, lines[k])
        y -= LEADING
    canvas.setLineWidth(0.5)
    for x in right:
        canvas.line(x - 50, y + LEADING - 3, x, y + LEADING - 3)
    y -= 4
    for row in st.rows:
        x0 = 54 + 10 * row.indent
        if not row.values:
            canvas.setFont(FONT, SIZE)
            canvas.drawString(54, y, row.label)
            y -= LEADING
            continue
        if row.total:
            for x in right:
                canvas.line(x - 50, y + LEADING - 3, x, y + LEADING - 3)
        wrapped = _wrap(row.label, st.label_width - 10 * row.indent)
        canvas.setFont(FONT, SIZE)
        for k, line in enumerate(wrapped[:-1]):
            canvas.drawString(x0 + (10 if k else 0), y, line)
            y -= LEADING
        canvas.drawString(x0 + (10 if len(wrapped) > 1 else 0), y, wrapped[-1])
        for x, value in zip(right, row.values, strict=True):
            canvas.drawRightString(x, y, value)
            if row.dollar:
                canvas.drawString(x - 58, y, "$")
        y -= LEADING
    canvas.setFont(FONT, 8)
    canvas.drawString(54, 50, "Refer to accompanying notes.")
    canvas.drawCentredString(width / 2, 36, str(56 + page))


def gold(statements: tuple[Statement, ...]) -> list[tuple[str, str, str]]:
    """(row label, year, figure as printed) for every figure of the statements."""
    out: list[tuple[str, str, str]] = []
    for st in statements:
        years = [c[-1] for c in st.columns]
        for row in st.rows:
            if row.values:
                out.extend((row.label, year, value) for year, value in zip(years, row.values, strict=True))
    return out


def _squash(text: str) -> str:
    return " ".join(text.split())


def _has(text: str, token: str) -> bool:
    """`token` in `text` as a whole figure or year (52,862 is not found in 152,862 nor in 52,8620)."""
    return re.search(rf"(?<![\d,.]){re.escape(token)}(?![\d]|[,.]\d)", text) is not None


def score(chunks: list[str], triples: list[tuple[str, str, str]]) -> dict[str, float | int]:
    together = sum(
        1
        for label, year, value in triples
        if any(_squash(label) in _squash(c) and _has(c, value) and _has(c, year) for c in chunks)
    )
    return {
        "gold": len(triples),
        "with_label_and_year": together,
        "fraction": round(together / len(triples), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/tables.json")
    parser.add_argument("--keep", type=Path, default=None, help="write the typeset filings here too")
    args = parser.parse_args()
    documents: dict[str, dict[str, object]] = {}
    totals = {"before": [0, 0], "after": [0, 0]}  # gold figures, found with label and year
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "filings"
        folder.mkdir(parents=True, exist_ok=True)
        assistant = Assistant(Settings(data_dir=Path(tmp) / "data"))
        pipeline = assistant.pipeline()
        for name, statements in FILINGS.items():
            path = folder / name
            typeset(statements, path)
            triples = gold(statements)
            sides: dict[str, dict[str, float | int]] = {}
            for side, loader in (("before", PdfLoader(tables=False)), ("after", PdfLoader())):
                t0 = time.perf_counter()
                loaded = loader.load(path)
                load_s = time.perf_counter() - t0
                records, _ = pipeline._chunk(loaded)
                sides[side] = score([r.text for r in records], triples) | {
                    "chunks": len(records),
                    "table_sections": sum(1 for s in loaded.sections if s.kind == "table"),
                    "load_seconds": round(load_s, 3),
                }
                totals[side][0] += int(sides[side]["gold"])
                totals[side][1] += int(sides[side]["with_label_and_year"])
            documents[name] = {"statements": [f"{s.company}: {s.title}" for s in statements], **sides}
            before, after = sides["before"], sides["after"]
            print(
                f"{name}: {before['fraction']:.3f} -> {after['fraction']:.3f} of {after['gold']} figures "
                f"(chunks {before['chunks']} -> {after['chunks']})"
            )
        chunk_tokens = pipeline.chunker.max_tokens
        assistant.close()
    summary = {
        side: {"gold": n, "with_label_and_year": found, "fraction": round(found / n, 4)}
        for side, (n, found) in totals.items()
    }
    print(
        f"all filings: figures in one chunk with their row label and year {summary['before']['fraction']:.3f} "
        f"(old path, pypdf page text) -> {summary['after']['fraction']:.3f} (table sections)"
    )
    result = {"chunk_tokens": chunk_tokens, **summary, "documents": documents, "machine": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
