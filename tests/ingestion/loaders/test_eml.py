from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.loaders import LoaderError, load_file


def test_headers_and_plain_body(load_example) -> None:
    doc = load_example("eml/fake-email.eml")
    assert doc.mime == "message/rfc822"
    assert doc.title == "Test Email"
    header = doc.sections[0]
    assert header.kind == "header"
    assert header.text.splitlines() == [
        "From: Matthew Robinson <mrobinson@unstructured.io>",
        "To: NotMatthew <NotMatthew@notunstructured.com>",
        "Subject: Test Email",
        "Date: Fri, 16 Dec 2022 17:04:16 -0500",
    ]
    body = doc.sections[1].text
    assert "Roses are red" in body and "<div" not in body  # text/plain preferred over html


def test_attachments_read_and_listed(load_example) -> None:
    doc = load_example("eml/fake-email-attachment.eml")
    assert [s.text for s in doc.sections if s.heading_path == ("fake-attachment.txt",)] == [
        "Hey this is a fake attachment!"
    ]
    assert doc.sections[-1].text == "Attachments: fake-attachment.txt"
    assert doc.metadata["attachments"] == "fake-attachment.txt"


def test_cc_header(load_example) -> None:
    header = load_example("eml/mime-multi-to-cc-bcc.eml").sections[0].text
    assert "Cc: Tom <tom@example.com>" in header


def test_html_only_body_becomes_text(load_example) -> None:
    body = load_example("eml/mime-html-only.eml").sections[1].text
    assert "<" not in body and body.strip()


@pytest.mark.parametrize(
    "name", ["fake-email-utf-16.eml", "fake-email-utf-16-le.eml", "fake-email-utf-16-be.eml"]
)
def test_utf16_messages(load_example, name: str) -> None:
    doc = load_example(f"eml/{name}")
    assert doc.title == "Test Email"
    assert "From: Matthew Robinson" in doc.sections[0].text


def test_not_an_email(tmp_path: Path) -> None:
    path = tmp_path / "x.eml"
    path.write_text("just some words\nwithout headers\n")
    with pytest.raises(LoaderError, match="no message headers"):
        load_file(path)
