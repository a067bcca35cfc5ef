from __future__ import annotations

from pathlib import Path

from ingestion.loaders import load_file


def test_readme_heading_paths(load_example) -> None:
    doc = load_example("README.md")
    assert doc.mime == "text/markdown"
    assert doc.title == "Example Docs"
    xbrl = [s for s in doc.sections if s.kind == "text" and "curl" in s.text]
    assert xbrl and xbrl[0].heading_path == ("Example Docs", "XBRL 10-K")


def test_non_utf8_markdown(load_example) -> None:
    doc = load_example("umlauts-non-utf8.md")
    assert "äöüß" in doc.text
    assert doc.sections[0].heading_path == ("können",)


def test_hash_lines_in_code_fences_are_not_headings(tmp_path: Path) -> None:
    path = tmp_path / "x.md"
    path.write_text(
        "# 标题\n\n```bash\n# just a comment\necho hi\n```\n\nSub\n---\n\ntext 中文\n", encoding="utf-8"
    )
    doc = load_file(path)
    headings = [s.text for s in doc.sections if s.kind == "heading"]
    assert headings == ["标题", "Sub"]
    assert "# just a comment" in doc.text
    assert doc.sections[-1].heading_path == ("标题", "Sub")
    assert doc.sections[-1].text == "text 中文"
