"""Markdown: keeps the raw markup (readable as is) and builds heading paths from
ATX (`#`) and setext (underlined) headings, ignoring `#` lines inside code fences."""

from __future__ import annotations

import re
from pathlib import Path

from ._text import HeadingStack, SectionBuilder, read_text
from .base import LoadedDocument

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_NOT_SETEXT_TEXT = re.compile(r"^\s*([-*+>|]|\d+[.)])")  # list items, quotes, tables


class MarkdownLoader:
    """Markdown: paragraphs under their # headings, code fences kept whole."""

    mime = "text/markdown"
    extensions: tuple[str, ...] = (".md", ".markdown")

    def load(self, path: Path) -> LoadedDocument:
        """The text as sections under its heading paths; the first heading is the title."""
        lines = read_text(path.read_bytes()).split("\n")
        out = SectionBuilder()
        headings = HeadingStack()
        title: str | None = None
        paragraph: list[str] = []
        fence: str | None = None

        def flush() -> None:
            if paragraph:
                out.add("\n".join(paragraph), heading_path=headings.path)
                paragraph.clear()

        def heading(level: int, text: str) -> None:
            nonlocal title
            flush()
            path = headings.push(level, text)
            out.add(text, kind="heading", heading_path=path)
            if title is None and level == 1:
                title = text

        if lines and lines[0].strip() == "---" and "---" in (ln.strip() for ln in lines[1:]):
            end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
            out.add("\n".join(lines[: end + 1]))  # front matter: kept as text, never a heading
            lines = lines[end + 1 :]

        for line in lines:
            if fence is not None:
                paragraph.append(line)
                if line.strip().startswith(fence):
                    fence = None
                continue
            fence_match = _FENCE.match(line)
            if fence_match:
                fence = fence_match.group(1)[0] * 3
                paragraph.append(line)
                continue
            atx = _ATX.match(line)
            if atx and (atx.group(2) or "").strip():
                heading(len(atx.group(1)), atx.group(2).strip())
                continue
            setext = _SETEXT.match(line)
            if setext and paragraph and paragraph[-1].strip() and not _NOT_SETEXT_TEXT.match(paragraph[-1]):
                underlined = paragraph.pop().strip()
                heading(1 if setext.group(1)[0] == "=" else 2, underlined)
                continue
            if not line.strip():
                flush()
            else:
                paragraph.append(line)
        flush()
        sections = out.sections
        if title is None:
            title = next((s.text for s in sections if s.kind == "heading"), None)
        return LoadedDocument(sections=sections, mime=self.mime, title=title)
