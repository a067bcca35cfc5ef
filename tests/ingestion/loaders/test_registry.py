"""The registry in ingestion/loaders/__init__.py and the contract that only LoaderError escapes."""

from __future__ import annotations

import codecs
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.loaders import (
    LoaderError,
    UnsupportedFormat,
    load_file,
    mime_for,
    supported_extensions,
)

FORMATS = {
    ".txt",
    ".md",
    ".html",
    ".htm",
    ".pdf",
    ".docx",
    ".pptx",
    ".xlsx",
    ".csv",
    ".tsv",
    ".eml",
    ".json",
    ".ndjson",
}


def test_supported_extensions() -> None:
    assert supported_extensions() >= FORMATS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in supported_extensions())


def test_mime_for() -> None:
    assert mime_for(Path("a/B.PDF")) == "application/pdf"
    assert mime_for("x.docx") == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert mime_for("x.xyz") == "application/octet-stream"


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xyz"
    path.write_text("hello")
    with pytest.raises(UnsupportedFormat, match=r"no loader for \.xyz files"):
        load_file(path)


def test_unsupported_is_a_loader_error(example_docs: Path) -> None:
    with pytest.raises(LoaderError, match=r"no loader for \.doc files"):
        load_file(example_docs / "fake.doc")


def test_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("x" * 2000)
    with pytest.raises(LoaderError, match="file too large"):
        load_file(path, max_bytes=1000)


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_empty_file_every_format(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"empty{ext}"
    path.write_bytes(b"")
    with pytest.raises(LoaderError, match="empty file"):
        load_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="file not found"):
        load_file(tmp_path / "gone.txt")


@pytest.mark.parametrize("ext", [".docx", ".pptx", ".xlsx"])
def test_office_zip_with_garbage_parts(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"broken{ext}"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", "<not xml")
        zf.writestr("word/document.xml", b"\x00\x01")
    with pytest.raises(LoaderError, match=rf"corrupt or unreadable \{ext} file"):
        load_file(path)


# Prefixes steer random bytes past the first sniffing checks into the parsers.
_PREFIXES = [
    b"",
    b"%PDF-1.7\n",
    b"PK\x03\x04",
    b"{",
    b"[",
    b"<html>",
    b"From: a@b.c\n",
    codecs.BOM_UTF16_LE,
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    b"a,b;c\n",
]
_PAYLOADS = st.tuples(st.sampled_from(_PREFIXES), st.binary(max_size=4096)).map(lambda t: t[0] + t[1])


@pytest.mark.parametrize("ext", sorted(supported_extensions()))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_PAYLOADS)
def test_random_bytes_raise_only_loader_error(ext: str, payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{ext}"
        path.write_bytes(payload)
        try:
            doc = load_file(path)
        except LoaderError:
            return
        assert doc.sections and all(s.text.strip() for s in doc.sections)
