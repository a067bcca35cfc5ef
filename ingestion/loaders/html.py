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
    # A nested table's rows are already inside its parent cell's text.
    rows = (tr for tr in table.find_all("tr") if tr.find_parent("table") is table)
    return join_table([c.get_text(" ") for c in tr.find_all(["td", "th"], recursive=False)] for tr in rows)


def html_sections(markup: str) -> tuple[list[Section], str | None]:
    """Sections and title of an HTML document; shared with the e-mail loader."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    title_tag = soup.find("title")
    title = squash(title_tag.get_text(" ")) if title_tag else ""
    for tag in soup.find_all(_DROP):
        tag.decompose()
    for node in soup.find_all(
        string=lambda s: isinstance(s, PreformattedString) and not isinstance(s, CData)
    ):
        node.extract()  # comments, doctypes, processing instructions

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
    mime = "text/html"
    extensions: tuple[str, ...] = (".html", ".htm")

    def load(self, path: Path) -> LoadedDocument:
        data = path.read_bytes()
        if not data.strip():
            raise LoaderError("empty file")
        markup = decode_html(data)
        check_not_binary(markup)
        sections, title = html_sections(markup)
        return LoadedDocument(sections=sections, mime=self.mime, title=title)
