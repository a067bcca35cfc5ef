"""HTML: visible text in reading order with heading paths from h1..h6, tables as
" | " rows, the page title from <title>; scripts, styles and navigation dropped."""

from __future__ import annotations

import codecs
import warnings
from pathlib import Path

from bs4 import BeautifulSoup, CData, NavigableString, Tag, XMLParsedAsHTMLWarning
from bs4.dammit import EncodingDetector
from bs4.element import PreformattedString

from ._text import (
    HeadingStack,
    SectionBuilder,
    bom_encoding,
    check_not_binary,
    decode_bytes,
    join_table,
    squash,
)
from .base import LoadedDocument, LoaderError, Section

# Never text a reader sees; navigation repeats on every page and pollutes retrieval.
_DROP = (
    "script",
    "style",
    "nav",
    "noscript",
    "template",
    "svg",
    "iframe",
    "object",
    "embed",
    "canvas",
    "head",
)
_MAX_SPAN = 100  # columns or rows one cell may span; more is a broken or hostile page, not a table
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "html",
        "li",
        "main",
        "ol",
        "p",
        "section",
        "summary",
        "ul",
        "caption",
        "legend",
        "option",
    ]
)


def decode_html(data: bytes) -> str:
    """Honour a BOM, then a <meta charset> that actually decodes, then detection.

    A declared charset is often wrong (copy-pasted templates), so it is only
    trusted when the bytes decode cleanly with it; latin-1 means cp1252 on the web.
    """
    if bom_encoding(data) is None:
        declared = EncodingDetector.find_declared_encoding(data, is_html=True, search_entire_document=False)
        if declared:
            try:
                name = codecs.lookup(declared).name
            except LookupError:
                name = None
            if name == "iso8859-1":
                name = "cp1252"
            if name and not name.startswith("utf-16") and not name.startswith("utf-32"):
                try:
                    return data.decode(name)
                except (UnicodeDecodeError, LookupError):  # LookupError: a non-text codec such as "base64"
                    pass
    return decode_bytes(data)


def _table_text(table: Tag) -> str:
    """Rows on the table's grid: a cell with colspan or rowspan leaves empty cells where it spans (as
    Word's merged cells do), so every value stays under its column's header."""
    # A nested table's rows are already inside its parent cell's text.
    rows: list[list[str]] = []
    below: dict[int, int] = {}  # column -> rows a rowspan from above still covers
    for tr in (tr for tr in table.find_all("tr") if tr.find_parent("table") is table):
        cells: list[str] = []
        for cell in tr.find_all(["td", "th"], recursive=False):
            _fill_spanned(cells, below)
            across, down = _span(cell.get("colspan")), _span(cell.get("rowspan"))
            for k in range(across):
                if down > 1:
                    below[len(cells)] = down - 1
                cells.append(cell.get_text(" ") if k == 0 else "")
        _fill_spanned(cells, below)
        for column in [c for c, n in below.items() if c > len(cells) and n > 0]:
            below[column] -= 1  # a spanned cell beyond this row's last one: nothing to show, one row used
        rows.append(cells)
    return join_table(rows)


def _fill_spanned(cells: list[str], below: dict[int, int]) -> None:
    """Empty cells where cells of rows above reach down into this one."""
    while below.get(len(cells), 0) > 0:
        below[len(cells)] -= 1
        cells.append("")


def _span(value: object) -> int:
    """A colspan/rowspan attribute as browsers read it: digits, at least 1, capped (hostile pages)."""
    text = str(value or "").strip()
    return max(1, min(int(text), _MAX_SPAN)) if text.isdigit() else 1


def html_sections(markup: str) -> tuple[list[Section], str | None]:
    """Sections and title of an HTML document; shared with the e-mail loader."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    title_tag = soup.find("title")
    title = squash(title_tag.get_text(" ")) if title_tag else ""
    for tag in soup.find_all(_DROP):
        tag.decompose()
    for special in soup.find_all(
        string=lambda s: isinstance(s, PreformattedString) and not isinstance(s, CData)
    ):
        special.extract()  # comments, doctypes, processing instructions

    out = SectionBuilder()
    headings = HeadingStack()
    buf: list[str] = []

    def flush() -> None:
        lines = (squash(line) for line in "".join(buf).split("\n"))
        out.add("\n".join(line for line in lines if line), heading_path=headings.path)
        buf.clear()

    # Iterative walk: hostile pages nest deeply enough to exhaust recursion.
    stack: list[object] = [soup]
    while stack:
        node = stack.pop()
        if node is None:  # end of a block element
            flush()
            continue
        if isinstance(node, NavigableString):
            buf.append(str(node))
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name
        if name in _HEADINGS:
            flush()
            text = squash(node.get_text(" "))
            if text:
                out.add(text, kind="heading", heading_path=headings.push(_HEADINGS[name], text))
            continue
        if name == "table":
            flush()
            out.add(_table_text(node), kind="table", heading_path=headings.path)
            continue
        if name == "pre":
            flush()
            out.add(node.get_text(), heading_path=headings.path)
            continue
        if name == "br":
            buf.append("\n")
            continue
        block = name in _BLOCKS or name == "[document]"
        if block:
            buf.append("\n")
            stack.append(None)
        stack.extend(reversed(node.contents))

    flush()
    sections = out.sections
    if not title:
        title = next((s.text for s in sections if s.kind == "heading"), "")
    return sections, title or None


class HtmlLoader:
    """HTML pages: visible text under its headings, scripts, styles and comments dropped."""

    mime = "text/html"
    extensions: tuple[str, ...] = (".html", ".htm")

    def load(self, path: Path) -> LoadedDocument:
        """The page's text as sections, titled by its <title>; an empty or binary file is refused."""
        data = path.read_bytes()
        if not data.strip():
            raise LoaderError("empty file")
        markup = decode_html(data)
        check_not_binary(markup)
        sections, title = html_sections(markup)
        return LoadedDocument(sections=sections, mime=self.mime, title=title)
