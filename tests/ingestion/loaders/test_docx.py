from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ingestion.loaders import LoaderError, load_file


def test_tables_in_body_order(load_example) -> None:
    doc = load_example("docx-tables.docx")
    kinds = [(s.kind, s.text.splitlines()[0]) for s in doc.sections]
    assert kinds[:2] == [("text", "Simple uniform table"), ("table", "Header Col 1 | Header Col 2")]
    tables = [s.text for s in doc.sections if s.kind == "table"]
    assert tables[0] == "Header Col 1 | Header Col 2\nLorem ipsum | A link example"
    assert "g&t" in tables[1]  # nested table text is kept inside its cell
    assert len(tables) == 3


def test_heading_paths(load_example) -> None:
    doc = load_example("category-level.docx")
    assert doc.title == "A Heading 1"
    pistol = next(s for s in doc.sections if "pistol and ball" in s.text)
    assert pistol.heading_path == ("A Heading 1", "A Heading 2")
    manhattoes = next(s for s in doc.sections if "Manhattoes" in s.text)
    assert manhattoes.heading_path == ("Another Heading 1",)


def test_headers_footers_once_and_hidden_merge_text_skipped(load_example) -> None:
    doc = load_example("docx-hdrftr.docx")
    header = [s for s in doc.sections if s.heading_path == ("Page header",)]
    assert header and "First header para" in header[0].text
    assert "I should not be included" not in doc.text


def test_random_bytes_named_docx(tmp_path: Path) -> None:
    path = tmp_path / "fake.docx"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(LoaderError, match=r"not a valid \.docx \(ZIP\) file"):
        load_file(path)


def test_legacy_doc_renamed(example_docs: Path, tmp_path: Path) -> None:
    path = tmp_path / "old.docx"
    path.write_bytes((example_docs / "simple.doc").read_bytes())
    with pytest.raises(LoaderError, match="legacy binary Office file"):
        load_file(path)


def _bomb(path: Path, megabytes: int) -> None:
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("word/document.xml", "w", force_zip64=True) as fh:
            for _ in range(megabytes):
                fh.write(chunk)


def test_zip_bomb_by_size(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    _bomb(path, 1024)
    with pytest.raises(LoaderError, match="refusing probable zip bomb: .* uncompressed"):
        load_file(path)


def test_zip_bomb_by_ratio(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    _bomb(path, 64)
    with pytest.raises(LoaderError, match="refusing probable zip bomb: compression ratio"):
        load_file(path)


def test_zip_that_is_not_office(tmp_path: Path) -> None:
    path = tmp_path / "archive.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(LoaderError, match=r"without \[Content_Types\].xml"):
        load_file(path)
