"""PowerPoint .pptx: sections per slide (1-based `slide`), the slide title as heading,
text frames, tables and grouped shapes in shape order, then the speaker notes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pptx
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.shapes.autoshape import Shape
from pptx.shapes.base import BaseShape
from pptx.shapes.graphfrm import GraphicFrame
from pptx.shapes.group import GroupShape
from pptx.shapes.shapetree import GroupShapes, SlideShapes
from pptx.text.text import TextFrame

from ._archive import check_ooxml
from ._text import SectionBuilder, join_table, squash
from .base import LoadedDocument


def _shapes(shapes: SlideShapes | GroupShapes) -> Iterator[BaseShape]:
    """Every leaf shape, descending into groups without recursion (groups nest)."""
    stack = list(reversed(list(shapes)))
    while stack:
        shape = stack.pop()
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:  # only a GroupShape has this type
            stack.extend(reversed(list(cast(GroupShape, shape).shapes)))
        else:
            yield shape


def _frame_text(frame: TextFrame) -> str:
    """A text frame's paragraphs as lines, so bullets stay apart."""
    return "\n".join(p.text for p in frame.paragraphs).strip()


class PptxLoader:
    """PowerPoint .pptx: slides' text, tables and speaker notes (see the module)."""

    mime = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    extensions: tuple[str, ...] = (".pptx",)

    def load(self, path: Path) -> LoadedDocument:
        """Sections per slide under the slide's title; the title comes from properties or the first slide title."""
        check_ooxml(path, ".pptx")
        presentation = pptx.Presentation(str(path))
        out = SectionBuilder()
        first_title: str | None = None
        for number, slide in enumerate(presentation.slides, start=1):
            title_shape = slide.shapes.title
            title = squash(title_shape.text_frame.text) if title_shape is not None else ""
            heading_path = (title,) if title else ()
            if title:
                out.add(title, kind="heading", slide=number, heading_path=heading_path)
                first_title = first_title or title
            for shape in _shapes(slide.shapes):
                if title_shape is not None and shape.shape_id == title_shape.shape_id:
                    continue
                if shape.has_text_frame:  # True only on a pptx Shape (an autoshape, text box or placeholder)
                    out.add(
                        _frame_text(cast(Shape, shape).text_frame), slide=number, heading_path=heading_path
                    )
                if getattr(shape, "has_table", False):  # True only on a GraphicFrame holding a table
                    table = cast(GraphicFrame, shape).table
                    out.add(
                        join_table([cell.text for cell in row.cells] for row in table.rows),
                        kind="table",
                        slide=number,
                        heading_path=heading_path,
                    )
            if slide.has_notes_slide:
                frame = slide.notes_slide.notes_text_frame
                if frame is not None:
                    out.add(_frame_text(frame), slide=number, heading_path=(*heading_path, "Notes"))
        document_title = (presentation.core_properties.title or "").strip() or first_title
        return LoadedDocument(
            sections=out.sections,
            mime=self.mime,
            title=document_title,
            metadata={"slides": str(len(presentation.slides))},
        )
