from __future__ import annotations

from pathlib import Path

import pptx
from pptx.util import Inches

from ingestion.loaders import load_file


def test_slide_numbers_and_titles(load_example) -> None:
    doc = load_example("sample-presentation.pptx")
    assert doc.metadata["slides"] == "4"
    assert {s.slide for s in doc.sections} == {1, 2, 3, 4}
    bullets = next(s for s in doc.sections if "sub-sub-bullet" in s.text)
    assert bullets.slide == 2
    assert bullets.heading_path == ("This is the first content slide",)
    table = next(s for s in doc.sections if s.kind == "table")
    assert table.slide == 4
    assert table.text.splitlines()[1] == "1 | A1 | B1 | C1"


def test_table_slide(load_example) -> None:
    doc = load_example("fake-power-point-table.pptx")
    table = next(s for s in doc.sections if s.kind == "table")
    assert table.text.splitlines()[0] == "Column 1 | Column 2 | Column 3"


def test_grouped_shapes(load_example) -> None:
    text = load_example("group-shapes-nested.pptx").text
    assert set(text.split()) >= set("ABCDEFGHIJ")


def test_notes_and_chinese(tmp_path: Path) -> None:
    presentation = pptx.Presentation()
    for title in ("第一页", "Second"):
        slide = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
        slide.shapes.title.text = title
        box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(4), Inches(1))
        box.text_frame.text = f"正文 {title}"
        slide.notes_slide.notes_text_frame.text = f"speaker notes {title}"
    path = tmp_path / "deck.pptx"
    presentation.save(path)
    doc = load_file(path)
    notes = [s for s in doc.sections if s.heading_path[-1:] == ("Notes",)]
    assert [(s.slide, s.text) for s in notes] == [(1, "speaker notes 第一页"), (2, "speaker notes Second")]
    body = next(s for s in doc.sections if s.text == "正文 第一页")
    assert body.slide == 1 and body.heading_path == ("第一页",)
