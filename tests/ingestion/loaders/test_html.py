from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.loaders import load_file


def test_heading_path_and_table(load_example) -> None:
    doc = load_example("fake-html.html")
    assert doc.mime == "text/html"
    para = next(s for s in doc.sections if "lorem ipsum" in s.text)
    assert para.heading_path == ("My First Heading", "My Second Heading")
    assert "With sub-bullets!" in para.text
    table = next(s for s in doc.sections if s.kind == "table")
    assert table.heading_path[-1] == "A Third Heading"
    assert table.text.splitlines() == [
        "Column 1 | Column 2",
        "Row 1, Cell 1 | Row 1, Cell 2",
        "Row 2, Cell 1 | Row 2, Cell 2",
    ]


def test_scripts_styles_and_nav_are_dropped(load_example) -> None:
    doc = load_example("example-with-scripts.html")
    assert doc.title == "Russian Offensive Campaign Assessment, December 13 | Institute for the Study of War"
    assert "Belarusian" in doc.text
    assert "@import url" not in doc.text  # <style>
    assert "function(" not in doc.text and "jQuery" not in doc.text  # <script>


def test_cp1252_without_declaration(load_example) -> None:
    text = load_example("fake-html-cp1252.html").text
    assert "Die schöne Frau" in text
    assert "niño" in text and "señora" in text  # cp1250 would give "ń"
    assert "15,50 €" in text


def test_utf16_html_matches_utf8(load_example) -> None:
    assert (
        load_example("example-steelJIS-datasheet-utf-16.html").text
        == load_example("example-steelJIS-datasheet.html").text
    )


def test_nav_dropped_and_chinese_kept(tmp_path: Path) -> None:
    path = tmp_path / "zh.htm"
    path.write_text(
        "<html><head><title>季度报告</title><style>p{}</style></head><body><nav>首页 | 关于</nav>"
        "<h1>概述</h1><p>收入增长<b>百分之十</b>。</p><script>var x = 1;</script></body></html>",
        encoding="utf-8",
    )
    doc = load_file(path)
    assert doc.title == "季度报告"
    assert "首页" not in doc.text and "var x" not in doc.text
    body = [s for s in doc.sections if s.kind == "text"]
    assert body[0].text == "收入增长百分之十。"
    assert body[0].heading_path == ("概述",)


@pytest.mark.parametrize("charset", ["base64", "zlib", "no-such-charset", "utf-8"])
def test_odd_or_lying_meta_charset(tmp_path: Path, charset: str) -> None:
    path = tmp_path / "odd.html"
    path.write_bytes(f'<meta charset="{charset}"><p>Caf\u00e9 cr\u00e8me</p>'.encode("cp1252"))
    assert load_file(path).text == "Caf\u00e9 cr\u00e8me"
