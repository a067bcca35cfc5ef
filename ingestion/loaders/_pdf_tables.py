"""Tables on a PDF page, found from where its words and rules sit, as rows of cells.

A table is a run of lines whose words fall into columns: x-ranges that no line's words cross (a
whitespace river or a vertical rule), with at least three lines that have words in two columns or more.
That covers ruled tables and the whitespace-aligned statements of annual reports alike. Prose is kept out
by these tests: a paragraph line has no gap wide enough to split it; a page set in two columns of running
text is split at its gutter and each column read on its own; a table may have one "prose" column (six
words or more per cell) at most, and only as its last (notes); a single line that crosses a column gap
ends the table there; at least 60% of a table's cells hold text (text blocks of a designed page that
happen to line up leave most cells empty).

Statement layout is read the way a person reads it: "$" signs set apart from their numbers join them,
a label continued on the next line (starting in lower case) is one label, caption lines over the
figures ("Year Ended June 30,") and stacked header lines ("June 30," over "2022") join the header row.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from ._pdf_layout import PageLayout, Rule, Word

_NUMBER = re.compile(r"^[(\[]?[-+−–—]?[$€£¥₹`]?[(]?\d[\d,.' ]*[)\]]?%?\*?$|^[-−–—]+$")
_CURRENCY = frozenset("$€£¥₹`") | {"US$", "USD", "EUR", "C$", "A$", "HK$", "Rs.", "Rs", "₹"}
_TRAILERS = frozenset({")", "%", ")%", "%)", "*"})
_MIN_ROWS = 3  # lines with words in two columns or more
_PROSE_WORDS = 6  # median words per cell from which a column is running text
_MAX_CAPTION_WORDS = 10
_MIN_FILL = 0.6  # share of a table's cells that hold text


@dataclass(frozen=True)
class PdfTable:
    """A table found on a PDF page: its rows of cells, and what it takes out of the page's running text."""

    rows: tuple[tuple[str, ...], ...]  # the first row is the header
    # each printed line it took (captions too), words joined by spaces: what leaves the page's running text
    lines: tuple[str, ...]
    top: float
    bottom: float


@dataclass
class _Line:
    words: list[Word]
    cells: list[list[Word]]

    @property
    def top(self) -> float:
        return min(w.top for w in self.words)

    @property
    def bottom(self) -> float:
        return max(w.bottom for w in self.words)

    @property
    def x0(self) -> float:
        return self.words[0].x0

    @property
    def x1(self) -> float:
        return max(w.x1 for w in self.words)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


def find_tables(layout: PageLayout) -> list[PdfTable]:
    """Every table on the page, top to bottom."""
    if not layout.words:
        return []
    height = statistics.median(w.height for w in layout.words)
    vertical = [r for r in layout.rules if r.vertical]
    horizontal = [r for r in layout.rules if not r.vertical]
    lines = [_cells(words, vertical) for words in _group_lines(layout.words)]
    gutter = _gutter(lines)
    if gutter is None:
        streams = [lines]
    else:  # two page columns: each is read on its own, lines across the gutter (wide tables) apart
        left: list[_Line] = []
        right: list[_Line] = []
        across: list[_Line] = []
        for line in lines:
            sides = [
                (stream, [w for w in line.words if test(w)])
                for stream, test in (
                    (left, lambda w: w.x1 <= gutter[0]),
                    (right, lambda w: w.x0 >= gutter[1]),
                )
            ]
            halves = [(stream, _cells(words, vertical)) for stream, words in sides if words]
            crossing = any(w.x0 < gutter[1] and w.x1 > gutter[0] for w in line.words)
            prose = any(len(h.cells) == 1 and len(h.words) >= 4 for _, h in halves)
            if crossing or (len(halves) == 2 and not prose and any(len(h.cells) >= 2 for _, h in halves)):
                across.append(line)  # a heading, or a wide table's row with columns on both sides
                continue
            for stream, half in halves:
                stream.append(half)
        streams = [across, left, right]
    tables: list[PdfTable] = []
    for stream in streams:
        start = 0
        for end in range(1, len(stream) + 1):
            if end < len(stream) and stream[end].top - stream[end - 1].bottom <= 2.2 * height:
                continue
            tables.extend(_tables_in(stream, start, end, horizontal, layout.width, height))
            start = end
    return sorted(tables, key=lambda t: t.top)


def _group_lines(words: tuple[Word, ...]) -> list[list[Word]]:
    """Words grouped into visual lines by their middles, left to right."""
    lines: list[list[Word]] = []
    for word in sorted(words, key=lambda w: (w.middle, w.x0)):
        if lines and abs(word.middle - lines[-1][0].middle) <= 0.4 * min(word.height, lines[-1][0].height):
            lines[-1].append(word)
        else:
            lines.append([word])
    for line in lines:
        line.sort(key=lambda w: w.x0)
    return lines


def _cells(words: list[Word], vertical: list[Rule]) -> _Line:
    """A line split into cells at gaps wider than about an em and at vertical rules."""
    gap = 0.9 * statistics.median(w.height for w in words)
    middle = words[0].middle
    cells: list[list[Word]] = [[words[0]]]
    for prev, word in zip(words, words[1:], strict=False):
        ruled = any(
            r.top <= middle <= r.bottom and prev.x1 - 1 <= r.x0 and r.x1 <= word.x0 + 1 for r in vertical
        )
        if ruled or word.x0 - prev.x1 > gap:
            cells.append([word])
        else:
            cells[-1].append(word)
    return _Line(words, cells)


def _gutter(lines: list[_Line]) -> tuple[float, float] | None:
    """The strip between two page columns of running text: the gap shared by lines that are two runs of
    four words or more, if five lines or more share it."""
    gaps = [
        (line.cells[0][-1].x1, line.cells[1][0].x0)
        for line in lines
        if len(line.cells) == 2 and len(line.cells[0]) >= 4 and len(line.cells[1]) >= 4
    ]
    if len(gaps) < 5:
        return None
    centre = statistics.median((a + b) / 2 for a, b in gaps)
    sharing = [(a, b) for a, b in gaps if a <= centre <= b]
    if len(sharing) < max(5, 0.6 * len(gaps)):
        return None
    return max(a for a, _ in sharing), min(b for _, b in sharing)


def _tables_in(
    lines: list[_Line], start: int, end: int, horizontal: list[Rule], page_width: float, height: float
) -> list[PdfTable]:
    """Tables among lines[start:end] (a block with no wide vertical gap): a run of multi-cell lines, with
    at most three single-cell lines in a row between them (headings, wrapped labels), is a candidate."""
    found: list[PdfTable] = []
    i = start
    while i < end:
        if len(lines[i].cells) < 2:
            i += 1
            continue
        j, singles = i + 1, 0
        last_multi = i
        while j < end and singles < 4:
            if len(lines[j].cells) >= 2:
                last_multi, singles = j, 0
            else:
                singles += 1
            j += 1
        table = _table(lines, i, last_multi + 1, horizontal, page_width, height, floor=start)
        if table is None:
            i += 1
            continue
        found.append(table)
        i = last_multi + 1
    return found


def _table(
    lines: list[_Line], i: int, j: int, horizontal: list[Rule], page_width: float, height: float, floor: int
) -> PdfTable | None:
    """The table made of lines[i:j], if it is one; cut short at a line that crosses its columns."""
    while j - i >= _MIN_ROWS:
        region = lines[i:j]
        multi = [line for line in region if len(line.cells) >= 2]
        if len(multi) < _MIN_ROWS:
            return None
        bounds = _columns(multi)
        if len(bounds) < 2:
            return None
        crossing = next(
            (k for k, line in enumerate(region) if len(line.cells) < 2 and _crosses(line, bounds)), None
        )
        if crossing is not None:
            if crossing >= _MIN_ROWS:
                j = i + crossing
            else:  # start again at the next multi-cell line below it
                i += crossing + 1
                while i < j and len(lines[i].cells) < 2:
                    i += 1
            continue
        grid = [_assign(line, bounds) for line in region]
        grid = _merge_symbol_columns(grid)
        if not _is_table(grid, bounds, page_width):
            return None
        rules_between = [_rule_between(horizontal, a, b) for a, b in zip(region, region[1:], strict=False)]
        rows = _rows(grid, rules_between)
        captions = _captions(lines, i, floor, bounds, horizontal, height)
        if captions:
            label = " ".join(line.text for line in captions)
            rows[0][0] = f"{label} {rows[0][0]}".strip()
        if len(rows) < _MIN_ROWS or sum(1 for row in rows if sum(1 for c in row if c) >= 2) < 2:
            return None  # lines that joined into a row or two: text blocks side by side, not a table
        taken = [*captions, *region]
        return PdfTable(
            rows=tuple(tuple(row) for row in rows),
            lines=tuple(line.text for line in taken),
            top=taken[0].top,
            bottom=taken[-1].bottom,
        )
    return None


def _columns(multi: list[_Line]) -> list[tuple[float, float]]:
    """Column x-ranges: where the cells of the multi-cell lines lie, split at x-runs no cell covers
    (a tenth of the lines may cross, for the odd over-long label in a long table)."""
    spans = [[(c[0].x0, max(w.x1 for w in c)) for c in line.cells] for line in multi]
    edges = sorted({v for line in spans for span in line for v in span})
    covered = [0] * (len(edges) - 1)  # lines covering each stretch between neighbouring edges
    for line in spans:
        k = 0
        for a, b in line:
            while k < len(covered) and edges[k + 1] <= a:
                k += 1
            j = k
            while j < len(covered) and edges[j] < b:
                covered[j] += 1
                j += 1
    allowed = len(multi) // 10
    columns: list[tuple[float, float]] = []
    current: float | None = None
    for k, count in enumerate(covered):
        if count > allowed:
            current = edges[k] if current is None else current
        elif current is not None:
            columns.append((current, edges[k]))
            current = None
    if current is not None:
        columns.append((current, edges[-1]))
    return columns


def _crosses(line: _Line, bounds: list[tuple[float, float]]) -> bool:
    """Whether a single-cell line runs across a gap between two columns (a paragraph line, not a cell)."""
    return any(
        line.x0 < a_end and line.x1 > b_start
        for (_, a_end), (b_start, _) in zip(bounds, bounds[1:], strict=False)
    )


def _assign(line: _Line, bounds: list[tuple[float, float]]) -> list[str]:
    cells: list[list[str]] = [[] for _ in bounds]
    for word in line.words:
        centre = (word.x0 + word.x1) / 2
        best = min(range(len(bounds)), key=lambda k: _distance(centre, bounds[k]))
        cells[best].append(word.text)
    return [" ".join(c) for c in cells]


def _distance(x: float, span: tuple[float, float]) -> float:
    return 0.0 if span[0] <= x <= span[1] else min(abs(x - span[0]), abs(x - span[1]))


def _merge_symbol_columns(grid: list[list[str]]) -> list[list[str]]:
    """A column of lone "$" signs joins the figures to its right; one of lone ")" or "%" the figures to its left."""
    k = 0
    while k < len(grid[0]):
        values = {row[k] for row in grid if row[k]}
        if values and values <= _CURRENCY and k + 1 < len(grid[0]):
            for row in grid:
                row[k + 1] = f"{row[k]}{row[k + 1]}" if row[k + 1] else row[k]
                del row[k]
            continue
        if values and values <= _TRAILERS and k > 0:
            for row in grid:
                row[k - 1] = f"{row[k - 1]}{row[k]}"
                del row[k]
            continue
        if not values:
            for row in grid:
                del row[k]
            continue
        k += 1
    return grid


def _is_table(grid: list[list[str]], bounds: list[tuple[float, float]], page_width: float) -> bool:
    columns = len(grid[0]) if grid else 0
    if columns < 2:
        return False
    filled_rows = sum(1 for row in grid if sum(1 for c in row if c) >= 2)
    if filled_rows < _MIN_ROWS:
        return False
    if sum(1 for row in grid for c in row if c) < _MIN_FILL * columns * len(grid):
        return False  # text blocks of a designed page that happen to line up, mostly gaps
    prose = [
        k
        for k in range(columns)
        if statistics.median(len(row[k].split()) for row in grid if row[k]) >= _PROSE_WORDS
    ]
    if len(prose) >= 2:
        return False  # running text in page columns, read across
    # running text beside something: only a last column of notes may read like prose
    return not prose or (prose[0] == columns - 1 and max(b - a for a, b in bounds) <= 0.4 * page_width)


def _rule_between(horizontal: list[Rule], a: _Line, b: _Line) -> bool:
    return any(
        a.bottom - 1 <= r.top and r.bottom <= b.top + 1 and r.x0 < b.x1 and r.x1 > b.x0 for r in horizontal
    )


def _is_number(text: str) -> bool:
    return bool(_NUMBER.match(text))


def _rows(grid: list[list[str]], rules_between: list[bool]) -> list[list[str]]:
    """Physical lines to table rows: stacked header lines, wrapped cells and continued labels joined."""
    rows: list[list[str]] = []
    label_only: list[bool] = []
    for k, cells in enumerate(grid):
        ruled = k > 0 and rules_between[k - 1]
        values = [c for c in cells[1:] if c]
        label = cells[0]
        if rows and not ruled:
            prev = rows[-1]
            prev_label = prev[0]
            open_label = not prev_label.endswith(":")
            lower = (
                bool(label) and not label[:1].isupper()
            )  # "activities", "24,000; outstanding ...": continued
            numbers = any(_is_number(c) for c in cells if c)
            going_on = all(not c[:1].isupper() for c in cells if c)  # every piece continues in lower case
            # stacked header lines: "June 30," over "2022"; header cells wrapped ("Corrosion" over "rate")
            header_run = len(rows) == 1 and (
                (not prev_label and not label)
                or (not numbers and going_on and sum(1 for c in cells if c) >= 2)
            )
            wrapped = not label and values and not numbers and going_on  # a body cell wrapped onto a line
            if header_run or wrapped:
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(prev, cells, strict=True)]
                continue
            if label and lower and open_label and label_only[-1] and prev_label:
                rows[-1] = [f"{prev_label} {label}", *cells[1:]]
                label_only[-1] = not values
                continue
            if label and lower and open_label and not values and prev_label:
                rows[-1][0] = f"{prev_label} {label}"
                continue
        rows.append(list(cells))
        label_only.append(bool(label) and not values)
    return rows


def _captions(
    lines: list[_Line],
    i: int,
    floor: int,
    bounds: list[tuple[float, float]],
    horizontal: list[Rule],
    height: float,
) -> list[_Line]:
    """Up to two short lines directly over the table's first line (a statement's "(In millions)",
    "Year Ended June 30,"), read as part of its header."""
    taken: list[_Line] = []
    below = lines[i]
    left, right = bounds[0][0], bounds[-1][1]
    for k in range(i - 1, max(floor, i - 2) - 1, -1):
        line = lines[k]
        words = line.text.split()
        if (
            len(line.cells) > 1
            or len(words) > _MAX_CAPTION_WORDS
            or line.text.endswith((".", ":"))
            or below.top - line.bottom > height
            or line.x0 < left - 2 * height
            or line.x1 > right + 2 * height
            or _rule_between(horizontal, line, below)
        ):
            break
        taken.insert(0, line)
        below = line
    return taken
