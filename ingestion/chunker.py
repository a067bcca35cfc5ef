"""Structure-aware chunking sized in the embedding model's tokens.

A chunk never spans two source locations (page, slide, sheet, heading), is packed from whole paragraphs,
then whole sentences, then whole words, and carries a few trailing sentences of overlap into the next chunk.
A table (a section of kind "table": one row per line, cells joined by " | ") is packed from whole rows,
one per line, and every chunk of it starts with the table's header row, so that a row such as
"Total revenue | 2022 | 52,862" is never read without the columns it belongs to.
Chinese and Japanese have no spaces, so sentences end at 。！？ and an over-long sentence is cut between
characters (where every CJK character is a word boundary) rather than between spaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingestion.loaders.base import LoadedDocument, Section

TokenCounter = Callable[[Sequence[str]], list[int]]

_PARAGRAPH = re.compile(r"\n\s*\n")
# Sentence ends: Latin punctuation followed by space, or CJK full stops (no space follows those).
_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=\S)|(?<=[。！？；])|\n")
_CJK_CHAR = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uff00-\uffef]")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document sized for the embedder, with the one source location it cites."""

    text: str
    position: int
    token_count: int
    page: int | None = None
    slide: int | None = None
    sheet: str | None = None
    heading_path: tuple[str, ...] = ()
    ocr_confidence: float | None = None  # read by OCR, with the engine's mean word confidence (0-100)

    @property
    def heading(self) -> str | None:
        """The heading path as one "A > B" line, as citations show it; None without headings."""
        return " > ".join(self.heading_path) if self.heading_path else None


def _location(section: Section) -> tuple:
    return (section.page, section.slide, section.sheet, section.heading_path, section.ocr_confidence)


def _split_words(sentence: str) -> list[str]:
    """Pieces that may be packed separately: words for spaced scripts, single characters inside CJK runs."""
    if _CJK_CHAR.search(sentence):
        pieces: list[str] = []
        buffer = ""
        for ch in sentence:
            if _CJK_CHAR.match(ch):
                if buffer:
                    pieces.append(buffer)
                    buffer = ""
                pieces.append(ch)
            elif ch.isspace():
                if buffer:
                    pieces.append(buffer + ch)
                    buffer = ""
                elif pieces:
                    pieces[-1] += ch
            else:
                buffer += ch
        if buffer:
            pieces.append(buffer)
        return pieces
    return re.findall(r"\S+\s*", sentence)


def _join(pieces: Sequence[str]) -> str:
    text = ""
    for piece in pieces:
        if text and not text[-1].isspace() and not (_CJK_CHAR.match(text[-1]) or _CJK_CHAR.match(piece[:1])):
            text += " "
        text += piece
    return text.strip()


class Chunker:
    """Packs a document's sections into chunks of at most `max_tokens` tokens of the embedding model."""

    def __init__(
        self, count_tokens: TokenCounter, *, max_tokens: int = 200, overlap_tokens: int = 32
    ) -> None:
        if max_tokens < 16:
            raise ValueError("max_tokens must be at least 16")
        if not 0 <= overlap_tokens < max_tokens:
            raise ValueError("overlap_tokens must be in [0, max_tokens)")
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def chunk(self, document: LoadedDocument) -> list[Chunk]:
        """The document's chunks in reading order, numbered by `position`."""
        chunks: list[Chunk] = []
        for location, texts, is_table in self._blocks(document.sections):
            packed = self._pack_table(texts[0]) if is_table else self._pack(texts)
            for text, tokens in packed:
                page, slide, sheet, heading_path, ocr_confidence = location
                chunks.append(
                    Chunk(text, len(chunks), tokens, page, slide, sheet, heading_path, ocr_confidence)
                )
        return chunks

    def _blocks(self, sections: Sequence[Section]) -> list[tuple[tuple, list[str], bool]]:
        """Neighbouring sections of one location, merged; a table is always a block of its own."""
        blocks: list[tuple[tuple, list[str], bool]] = []
        for section in sections:
            text = section.text.strip()
            if not text:
                continue
            loc = _location(section)
            is_table = section.kind == "table"
            if blocks and blocks[-1][0] == loc and not is_table and not blocks[-1][2]:
                blocks[-1][1].append(text)
            else:
                blocks.append((loc, [text], is_table))
        return blocks

    def _pack_table(self, text: str) -> list[tuple[str, int]]:
        """Whole rows, one per line; each chunk after the first starts again with the header row."""
        rows = [line.strip() for line in text.splitlines() if line.strip()]
        counts = self.count_tokens(rows)
        header, header_count = rows[0], counts[0]
        if len(rows) == 1 or header_count * 2 > self.max_tokens:  # no room to repeat it: pack as prose
            return self._pack(["\n\n".join(rows)])
        result: list[tuple[str, int]] = []
        current, used = [header], header_count
        for row, count in zip(rows[1:], counts[1:], strict=True):
            if count + header_count > self.max_tokens:  # a row too long for any chunk: cut by words
                if len(current) > 1:
                    result.append(("\n".join(current), used))
                result.extend(self._pack([f"{header}\n\n{row}"]))
                current, used = [header], header_count
                continue
            if len(current) > 1 and used + count > self.max_tokens:
                result.append(("\n".join(current), used))
                current, used = [header], header_count
            current.append(row)
            used += count
        if len(current) > 1:
            result.append(("\n".join(current), used))
        return result

    def _units(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """Sentences (over-long ones cut into word runs) with their token counts; a paragraph's last
        sentence ends with a blank line."""
        sentences: list[str] = []
        for text in texts:
            for paragraph in _PARAGRAPH.split(text):
                parts = [s.strip() for s in _SENTENCE.split(paragraph) if s and s.strip()]
                if parts:
                    parts[-1] += "\n\n"
                    sentences.extend(parts)
        counts = self.count_tokens([s.strip() for s in sentences])
        units: list[str] = []
        unit_counts: list[int] = []
        for sentence, count in zip(sentences, counts, strict=True):
            if count <= self.max_tokens:
                units.append(sentence)
                unit_counts.append(count)
            else:
                pieces = self._cut_long(sentence)
                if pieces:
                    pieces[-1] += "\n\n" if sentence.endswith("\n\n") else ""
                units.extend(pieces)
                unit_counts.extend(self.count_tokens([p.strip() for p in pieces]))
        return units, unit_counts

    def _cut_long(self, sentence: str) -> list[str]:
        pieces = _split_words(sentence)
        counts = self.count_tokens([p.strip() or p for p in pieces])
        out: list[str] = []
        current: list[str] = []
        used = 0
        for piece, count in zip(pieces, counts, strict=True):
            if current and used + count > self.max_tokens:
                out.append(_join(current))
                current, used = [], 0
            current.append(piece)
            used += count
        if current:
            out.append(_join(current))
        return out

    def _pack(self, texts: list[str]) -> list[tuple[str, int]]:
        units, counts = self._units(texts)
        if not units:
            return []
        result: list[tuple[str, int]] = []
        current: list[int] = []  # indices into units
        used = 0
        i = 0
        while i < len(units):
            count = counts[i]
            if current and used + count > self.max_tokens:
                result.append(self._render(units, current, counts))
                # Overlap: keep trailing whole sentences up to overlap_tokens, never the whole chunk.
                keep: list[int] = []
                kept = 0
                for j in reversed(current[1:]):
                    if kept + counts[j] > self.overlap_tokens:
                        break
                    keep.insert(0, j)
                    kept += counts[j]
                if kept + count > self.max_tokens:
                    keep, kept = [], 0
                current, used = keep, kept
            current.append(i)
            used += count
            i += 1
        if current:
            result.append(self._render(units, current, counts))
        return result

    def _render(self, units: list[str], indices: list[int], counts: list[int]) -> tuple[str, int]:
        text = ""
        for idx in indices:
            unit = units[idx]
            if text and not text.endswith("\n\n"):
                last, first = text[-1], unit[:1]
                if not (_CJK_CHAR.match(last) or _CJK_CHAR.match(first)):
                    text += " "
            text += unit.rstrip(" ") if unit.endswith("\n\n") else unit.strip()
        return text.strip(), sum(counts[i] for i in indices)
