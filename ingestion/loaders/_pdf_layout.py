"""Where the words and ruling lines of a PDF page are, read with pypdfium2, for finding tables.

PDFium reads a page's characters with their boxes in 0.02-0.04 s; pdfplumber (pdfminer) took 0.36-0.56 s
per page on the same example files, which would push a 300-page annual report past the loader's time
limit. Coordinates are points with the origin at the page's top left, so `top < bottom`.
"""

from __future__ import annotations

import ctypes
import unicodedata
from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

_MIN_RULE = 6.0  # points: shorter strokes are glyph parts, ticks or bullets, not table rules
_THIN = 2.5  # points: a filled shape this thin is drawn as a rule


@dataclass(frozen=True)
class Word:
    """A word PDFium placed on the page, with its box in points from the top left."""

    text: str
    x0: float
    x1: float
    top: float
    bottom: float

    @property
    def height(self) -> float:
        """The word's line height: how far apart two rows must be to be two rows."""
        return self.bottom - self.top

    @property
    def middle(self) -> float:
        """The vertical centre, which decides the row a word belongs to."""
        return (self.top + self.bottom) / 2


@dataclass(frozen=True)
class Rule:
    """A straight horizontal or vertical line drawn on the page (a table's ruling, an underline)."""

    x0: float
    top: float
    x1: float
    bottom: float

    @property
    def vertical(self) -> bool:
        """Whether the rule separates columns (taller than wide) rather than rows."""
        return self.bottom - self.top > self.x1 - self.x0


@dataclass(frozen=True)
class PageLayout:
    """One page's words and ruling lines: what the table finder reads."""

    width: float
    height: float
    words: tuple[Word, ...]
    rules: tuple[Rule, ...]


def page_layout(page: pdfium.PdfPage) -> PageLayout:
    """The page's upright words (split at spaces and gaps) and its ruling lines."""
    width, height = page.get_size()
    textpage = page.get_textpage()
    try:
        words = _words(textpage, height)
    finally:
        textpage.close()
    return PageLayout(width, height, tuple(words), tuple(_rules(page, height)))


def _words(textpage: pdfium.PdfTextPage, page_height: float) -> list[Word]:
    """Words as PDFium spaces them; only each word's first and last character boxes are read (a page has
    thousands of characters), and a word wider than its letters can be is read character by character."""
    raw = textpage.raw
    count = textpage.count_chars()
    text = textpage.get_text_range(0, count)
    if len(text) != count:  # characters outside the BMP: one code per character index instead
        text = "".join(chr(pdfium_c.FPDFText_GetUnicode(raw, i)) for i in range(count))
    words: list[Word] = []
    start = None
    for index in range(count + 1):
        ch = text[index] if index < count else " "
        if ch.isspace() or ord(ch) < 32 or ch in "\ufffe\uffff":
            if start is not None:
                words.extend(_word(textpage, text, start, index, page_height))
                start = None
        elif start is None:
            start = index
    return words


def _word(textpage: pdfium.PdfTextPage, text: str, start: int, end: int, page_height: float) -> list[Word]:
    raw = textpage.raw
    if abs(pdfium_c.FPDFText_GetCharAngle(raw, start)) > 0.01:
        return []  # rotated text is no table cell
    left, bottom, right, top = textpage.get_charbox(start, loose=True)
    last = textpage.get_charbox(end - 1, loose=True) if end - 1 > start else (left, bottom, right, top)
    height = top - bottom
    if height <= 0:
        return []
    x1 = max(right, last[2])
    if x1 - left <= (end - start) * height * 1.2 and abs((last[1] + last[3]) - (bottom + top)) <= height:
        return [_made(text[start:end], left, page_height - top, x1, page_height - bottom)]
    return _by_character(textpage, text, start, end, page_height)


def _by_character(
    textpage: pdfium.PdfTextPage, text: str, start: int, end: int, page_height: float
) -> list[Word]:
    """A run without spaces split where its characters leave a gap or change line."""
    words: list[Word] = []
    box: list[float] = []
    first = start
    for index in range(start, end):
        left, bottom, right, top = textpage.get_charbox(index, loose=True)
        x0, x1, y0, y1 = left, right, page_height - top, page_height - bottom
        if box:
            height = box[3] - box[1]
            gap = x0 - box[2]
            if gap > 0.25 * height or gap < -height or abs((y0 + y1) - (box[1] + box[3])) > height:
                words.append(_made(text[first:index], *box))
                box = []
        if not box:
            box, first = [x0, y0, x1, y1], index
        else:
            box = [min(box[0], x0), min(box[1], y0), max(box[2], x1), max(box[3], y1)]
    if box:
        words.append(_made(text[first:end], *box))
    return [w for w in words if w.text and w.bottom > w.top]


def _made(text: str, x0: float, top: float, x1: float, bottom: float) -> Word:
    return Word(unicodedata.normalize("NFKC", text), x0, x1, top, bottom)


def _rules(page: pdfium.PdfPage, page_height: float) -> list[Rule]:
    """Axis-aligned strokes and thin filled bars of the page's own path objects (not inside forms)."""
    rules: list[Rule] = []
    fill, stroke = ctypes.c_int(), ctypes.c_int()
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_PATH,), max_depth=1):
        left, bottom, right, top = obj.get_bounds()
        w, h = right - left, top - bottom
        if max(w, h) < _MIN_RULE:
            continue
        if min(w, h) <= _THIN:
            rules.append(Rule(left, page_height - top, right, page_height - bottom))
            continue
        pdfium_c.FPDFPath_GetDrawMode(obj.raw, ctypes.byref(fill), ctypes.byref(stroke))
        if stroke.value:  # an outlined box or grid: each of its straight edges is a rule
            rules.extend(_segments(obj, page_height))
    return rules


def _segments(obj: pdfium.PdfObject, page_height: float) -> list[Rule]:
    matrix = obj.get_matrix()
    x, y = ctypes.c_float(), ctypes.c_float()
    out: list[Rule] = []
    start = last = None
    for i in range(pdfium_c.FPDFPath_CountSegments(obj.raw)):
        segment = pdfium_c.FPDFPath_GetPathSegment(obj.raw, i)
        pdfium_c.FPDFPathSegment_GetPoint(segment, ctypes.byref(x), ctypes.byref(y))
        point = matrix.on_point(x.value, y.value)
        kind = pdfium_c.FPDFPathSegment_GetType(segment)
        if kind == pdfium_c.FPDF_SEGMENT_LINETO and last is not None:
            out.extend(_straight(last, point, page_height))
        if kind == pdfium_c.FPDF_SEGMENT_MOVETO or start is None:
            start = point
        last = point
        if pdfium_c.FPDFPathSegment_GetClose(segment) and start is not None:
            out.extend(_straight(point, start, page_height))
            last = start
    return out


def _straight(a: tuple[float, float], b: tuple[float, float], page_height: float) -> list[Rule]:
    (ax, ay), (bx, by) = a, b
    if abs(ax - bx) <= 1 and abs(ay - by) >= _MIN_RULE or abs(ay - by) <= 1 and abs(ax - bx) >= _MIN_RULE:
        return [Rule(min(ax, bx), page_height - max(ay, by), max(ax, bx), page_height - min(ay, by))]
    return []
