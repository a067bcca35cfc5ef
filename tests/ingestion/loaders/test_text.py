from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from ingestion.loaders import LoaderError, load_file

CHINESE = "检索增强生成系统必须保留中文文本：北京、上海和深圳的季度报告。"


@pytest.mark.parametrize(
    "name",
    [
        "fake-text.txt",
        "fake-text-utf-16.txt",
        "fake-text-utf-16-le.txt",
        "fake-text-utf-16-be.txt",
        "fake-text-utf-32.txt",
    ],
)
def test_utf_variants_decode_to_the_same_words(load_example, name: str) -> None:
    doc = load_example(name)
    assert doc.mime == "text/plain"
    assert "This is a test document to use for unit tests." in doc.text
    assert "Doylestown, PA 18901" in doc.text
    assert "\x00" not in doc.text


def test_whitespace_only_file_is_empty(example_docs: Path) -> None:
    with pytest.raises(LoaderError, match="empty file"):
        load_file(example_docs / "fake-text-all-whitespace.txt")


def test_zero_byte_file_is_empty(example_docs: Path) -> None:
    with pytest.raises(LoaderError, match="empty file"):
        load_file(example_docs / "empty.txt")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32", "gb18030"])
def test_chinese_survives_every_encoding(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "zh.txt"
    path.write_bytes((CHINESE * 3).encode(encoding))
    assert CHINESE in load_file(path).text


def test_cp1252_is_detected(tmp_path: Path) -> None:
    text = "El niño pagó 25,75 € por la paella. Die schöne Frau lächelte. L'été était très chaud."
    path = tmp_path / "legacy.txt"
    path.write_bytes(text.encode("cp1252"))
    assert load_file(path).text == text


def test_binary_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    with pytest.raises(LoaderError, match="binary content in a text file"):
        load_file(path)


def test_bom_only_utf16_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + "   \n".encode("utf-16-le"))
    with pytest.raises(LoaderError, match="empty file"):
        load_file(path)
