"""Word .docx: body paragraphs and tables in document order, heading paths from
Heading styles (or outline levels), then headers/footers, footnotes and comments.

Text is read from the XML directly rather than python-docx's Paragraph.text, which
misses runs inside tracked insertions, content controls and text boxes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import docx
from docx.text.paragraph import Paragraph
from lxml import etree

from ._archive import check_ooxml
from ._text import HeadingStack, SectionBuilder, join_table, squash
from .base import LoadedDocument

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
# Containers whose children are still body content (content controls, custom XML, revisions).
_WRAPPERS = frozenset(_W + t for t in ("sdt", "sdtContent", "customXml", "ins", "smartTag"))
_SKIP = frozenset((_W + "pPr", _W + "rPr", _W + "sdtPr", _W + "del", _W + "instrText", _MC_FALLBACK))
_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_MAX_SPAN = 64  # Word's grid has at most 63 columns; a larger span is a damaged or hostile file
_EXTRA_PARTS = (("/footnotes", "Footnotes"), ("/endnotes", "Endnotes"), ("/comments", "Comments"))


def _blocks(container: etree._Element) -> Iterator[etree._Element]:
    """w:p and w:tbl children in order, looking through wrapper elements."""
    for child in container:
        if child.tag in (_W + "p", _W + "tbl"):
            yield child
        elif child.tag in _WRAPPERS:
            yield from _blocks(child)


def _runs_text(el: etree._Element, parts: list[str], boxes: list[str]) -> None:
    for child in el:
        tag = child.tag
        if not isinstance(tag, str) or tag in _SKIP:
            continue
        if tag == _W + "t":
            parts.append(child.text or "")
        elif tag == _W + "tab":
            parts.append("\t")
        elif tag in (_W + "br", _W + "cr"):
            parts.append("\n")
        elif tag == _W + "noBreakHyphen":
            parts.append("-")
        elif tag == _W + "txbxContent":
            boxes.extend(_block_text(b) for b in _blocks(child))
        else:
            _runs_text(child, parts, boxes)


def _paragraph_text(p: etree._Element) -> tuple[str, list[str]]:
    """The paragraph's own text and the texts of text boxes anchored in it."""
    parts: list[str] = []
    boxes: list[str] = []
    _runs_text(p, parts, boxes)
    return "".join(parts).strip(), [b for b in boxes if b]


def _table_text(tbl: etree._Element) -> str:
    """Rows on the table's grid: a cell spanning columns (gridSpan), and grid columns a row skips
    (gridBefore), leave empty cells, so every value stays under its column's header."""
    rows = []
    for tr in _blocks_of(tbl, "tr"):
        cells = [""] * _grid_count(tr.find(f"{_W}trPr/{_W}gridBefore"))
        for tc in _blocks_of(tr, "tc"):
            cells.append(_cell_text(tc))
            cells.extend([""] * (_grid_count(tc.find(f"{_W}tcPr/{_W}gridSpan"), default=1) - 1))
        rows.append(cells)
    return join_table(rows)


def _grid_count(el: etree._Element | None, default: int = 0) -> int:
    value = el.get(_W + "val", "") if el is not None else ""
    return min(int(value), _MAX_SPAN) if value.isdigit() else default


def _blocks_of(el: etree._Element, local: str) -> Iterator[etree._Element]:
    for child in el:
        if child.tag == _W + local:
            yield child
        elif child.tag in _WRAPPERS:
            yield from _blocks_of(child, local)


def _cell_text(tc: etree._Element) -> str:
    merge = tc.find(f"{_W}tcPr/{_W}vMerge")
    if merge is not None and merge.get(_W + "val", "continue") != "restart":
        return ""  # Word shows the merged cell above; text left in continuation cells is never displayed
    # Nested tables stay inside their cell, rows separated by " / " to keep one line per row.
    return " ".join(
        _block_text(b).replace("\n", " / ") if b.tag == _W + "tbl" else _block_text(b) for b in _blocks(tc)
    )


def _block_text(block: etree._Element) -> str:
    if block.tag == _W + "tbl":
        return _table_text(block)
    text, boxes = _paragraph_text(block)
    return "\n".join([text, *boxes]).strip()


def _heading_level(paragraph: Paragraph) -> int | None:
    """0 for the Title style, 1..9 for headings, None for body text."""
    style = paragraph.style
    for _ in range(4):  # custom styles based on "Heading N" are headings too
        if style is None:
            break
        name = (style.name or "").strip()
        if name.lower() == "title":
            return 0
        match = _HEADING_STYLE.match(name)
        if match:
            return int(match.group(1))
        style = style.base_style
    outline = paragraph._p.find(f"{_W}pPr/{_W}outlineLvl")
    if outline is not None:
        value = outline.get(_W + "val", "")
        if value.isdigit() and int(value) < 9:
            return int(value) + 1
    return None


class DocxLoader:
    """Word .docx: paragraphs under their headings, tables, text boxes, headers/footers and notes."""

    mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    extensions: tuple[str, ...] = (".docx",)

    def load(self, path: Path) -> LoadedDocument:
        """The document in reading order, each paragraph under its heading path; the title from the
        properties or the first heading."""
        check_ooxml(path, ".docx")
        document = docx.Document(str(path))
        out = SectionBuilder()
        headings = HeadingStack()
        first_heading: str | None = None

        for block in _blocks(document.element.body):
            if block.tag == _W + "tbl":
                out.add(_table_text(block), kind="table", heading_path=headings.path)
                continue
            text, boxes = _paragraph_text(block)
            level = _heading_level(Paragraph(block, document)) if text else None
            if level is not None:
                title = squash(text)
                out.add(title, kind="heading", heading_path=headings.push(level, title))
                first_heading = first_heading or title
            else:
                out.add(text, heading_path=headings.path)
            for box in boxes:
                out.add(box, heading_path=headings.path)

        self._add_headers_footers(document, out)
        self._add_notes(document, out)
        document_title = (document.core_properties.title or "").strip() or first_heading
        return LoadedDocument(sections=out.sections, mime=self.mime, title=document_title)

    @staticmethod
    def _add_headers_footers(document: docx.document.Document, out: SectionBuilder) -> None:
        """Each distinct header/footer once: they repeat on every page but may hold facts."""
        seen: set[str] = set()
        for section in document.sections:
            for label, parts in (
                ("Page header", (section.header, section.first_page_header, section.even_page_header)),
                ("Page footer", (section.footer, section.first_page_footer, section.even_page_footer)),
            ):
                for part in parts:
                    if part.is_linked_to_previous:
                        continue
                    text = "\n".join(filter(None, (_block_text(b) for b in _blocks(part._element))))
                    if text and text not in seen:
                        seen.add(text)
                        out.add(text, heading_path=(label,))

    @staticmethod
    def _add_notes(document: docx.document.Document, out: SectionBuilder) -> None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        for rel in document.part.rels.values():
            for suffix, label in _EXTRA_PARTS:
                if rel.is_external or not rel.reltype.endswith(suffix):
                    continue
                root = etree.fromstring(rel.target_part.blob, parser)
                for note in root:
                    text = "\n".join(filter(None, (_block_text(b) for b in _blocks(note))))
                    out.add(text, heading_path=(label,))
