from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from pypdf import PdfWriter

from ingestion.loaders import LoaderError, load_file


def test_pages_are_numbered_from_one(load_example) -> None:
    doc = load_example("pdf/multi-column-2p.pdf")
    assert doc.mime == "application/pdf"
    assert [s.page for s in doc.sections] == [1, 2]
    assert "Dense Passage Retrieval" in doc.sections[0].text
    assert doc.metadata["pages"] == "2"


def test_korean_text_survives(load_example) -> None:
    assert "적립 제외 대상" in load_example("pdf/korean-text-with-tables.pdf").text


def test_copy_protected_pdf_opens_with_empty_password(load_example) -> None:
    pytest.importorskip("cryptography")  # the file is AES-encrypted
    doc = load_example("pdf/copy-protected.pdf")
    assert "LayoutParser" in doc.text


def test_password_pdf_is_refused(example_docs: Path) -> None:
    with pytest.raises(LoaderError, match="encrypted PDF"):
        load_file(example_docs / "pdf" / "password.pdf")


def test_scanned_pdf_without_text_layer_is_read_by_ocr(example_docs: Path) -> None:
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed (apt-get install -y tesseract-ocr tesseract-ocr-eng)")
    doc = load_file(example_docs / "pdf" / "loremipsum-flat.pdf")
    assert [s.page for s in doc.sections] == [1]
    assert doc.sections[0].ocr_confidence is not None
    assert "Lorem ipsum dolor sit amet" in doc.text


def test_truncated_pdf(example_docs: Path, tmp_path: Path) -> None:
    data = (example_docs / "pdf" / "multi-column-2p.pdf").read_bytes()
    path = tmp_path / "half.pdf"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoaderError, match="truncated"):
        load_file(path)


def test_random_bytes_pdf(tmp_path: Path) -> None:
    path = tmp_path / "noise.pdf"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(LoaderError, match="not a valid PDF"):
        load_file(path)


def _written(writer: PdfWriter) -> bytes:
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def test_zero_page_pdf(tmp_path: Path) -> None:
    path = tmp_path / "empty.pdf"
    path.write_bytes(_written(PdfWriter()))
    with pytest.raises(LoaderError, match="no pages"):
        load_file(path)


def test_user_password_pdf(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret", algorithm="RC4-128")  # RC4 needs no optional crypto package
    path = tmp_path / "locked.pdf"
    path.write_bytes(_written(writer))
    with pytest.raises(LoaderError, match="encrypted PDF: a password is required"):
        load_file(path)
