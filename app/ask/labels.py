"""How a retrieved passage names where it comes from, in the prompt and in citations."""

from __future__ import annotations

from typing import Any


def location_of(hit: Any) -> str:
    """Page, OCR confidence, slide, sheet and heading of a passage, as far as its document has them."""
    parts = []
    if getattr(hit, "page", None):
        parts.append(f"page {hit.page}")
    ocr_confidence = getattr(hit, "ocr_confidence", None)
    if ocr_confidence is not None:  # a scan: the reader should know the text was machine-read
        parts.append(f"OCR, confidence {ocr_confidence:.0f}%")
    if getattr(hit, "slide", None):
        parts.append(f"slide {hit.slide}")
    if getattr(hit, "sheet", None):
        parts.append(f"sheet {hit.sheet}")
    if getattr(hit, "heading_path", None):
        parts.append(hit.heading_path)
    return ", ".join(parts)


def source_label(hit: Any) -> str:
    """How a passage names its origin in the prompt and citations: title (or file name), then location."""
    name = hit.title or hit.path.rsplit("/", 1)[-1]
    loc = location_of(hit)
    return f"{name}, {loc}" if loc else name


def snippet(text: str, limit: int = 300) -> str:
    """A citation's preview: whitespace collapsed, cut at a word before `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"
