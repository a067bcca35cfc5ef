"""Attachments of an e-mail are read by the other loaders: their text is the message's, headed by the file
name, so that a question about a report attached to a mail finds the mail."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from ingestion.loaders import load_file
from ingestion.loaders.eml import MAX_NESTING
from tests.ingestion.mail_messages import DOCX_TYPE, PDF_TYPE, docx_bytes, message, text_pdf


def _save(tmp_path: Path, msg: EmailMessage, name: str = "mail.eml") -> Path:
    path = tmp_path / name
    path.write_bytes(msg.as_bytes())
    return path


def test_pdf_and_docx_attachments_are_read_each_under_its_file_name(tmp_path: Path) -> None:
    pdf = text_pdf(["Budget figures for the harbour project", "The pelican survey closes in June"])
    docx = docx_bytes("Minutes", ["The committee approved the otter bridge."])
    msg = message(
        "Harbour project",
        "Please find the report and the minutes attached.",
        attachments=[("Report 2024.pdf", PDF_TYPE, pdf), ("minutes.docx", DOCX_TYPE, docx)],
    )
    doc = load_file(_save(tmp_path, msg))

    assert doc.title == "Harbour project"
    assert doc.sections[0].kind == "header"
    assert doc.sections[1].text == "Please find the report and the minutes attached."
    pdf_sections = [s for s in doc.sections if s.heading_path[:1] == ("Report 2024.pdf",)]
    assert [(s.page, s.text) for s in pdf_sections] == [
        (1, "Budget figures for the harbour project"),
        (2, "The pelican survey closes in June"),
    ]
    docx_text = [s.text for s in doc.sections if s.heading_path[:1] == ("minutes.docx",)]
    assert "The committee approved the otter bridge." in docx_text
    assert doc.sections[-1].text == "Attachments: Report 2024.pdf, minutes.docx"
    assert "warnings" not in doc.metadata


def test_an_unreadable_attachment_is_a_warning_not_a_failed_message(tmp_path: Path) -> None:
    msg = message(
        "Broken scan",
        "The body is still indexed.",
        attachments=[
            ("scan.pdf", PDF_TYPE, b"%PDF-1.4 this is not really a PDF"),
            ("archive.zip", ("application", "zip"), b"PK\x03\x04 not read by anything"),
        ],
    )
    doc = load_file(_save(tmp_path, msg))

    assert doc.sections[1].text == "The body is still indexed."
    assert doc.metadata["attachments"] == "scan.pdf, archive.zip"
    assert doc.metadata["warnings"].startswith("attachment scan.pdf not read: ")
    assert "archive.zip" not in doc.metadata["warnings"]  # no loader for it: listed, nothing to warn about
    assert not any(s.heading_path[:1] in (("scan.pdf",), ("archive.zip",)) for s in doc.sections)


def test_a_forwarded_message_and_its_attachment_are_read(tmp_path: Path) -> None:
    inner = message(
        "Original question",
        "Where do the kayaks go in winter?",
        attachments=[("plan.pdf", PDF_TYPE, text_pdf(["Kayaks are stored in shed four"]))],
    )
    outer = message("Fwd: Original question", "See below.")
    outer.add_attachment(inner)  # message/rfc822, no file name: known by its subject
    doc = load_file(_save(tmp_path, outer))

    nested = [s for s in doc.sections if s.heading_path[:1] == ("Original question",)]
    assert "Where do the kayaks go in winter?" in [s.text for s in nested]
    assert any(
        s.heading_path == ("Original question", "plan.pdf")
        and s.page == 1
        and s.text == "Kayaks are stored in shed four"
        for s in nested
    )


def test_messages_nested_too_deep_are_named_in_a_warning(tmp_path: Path) -> None:
    msg = message("Level 0", "Outermost.")
    for level in range(1, MAX_NESTING + 2):
        outer = message(f"Level {level}", f"Body at level {level}.")
        outer.add_attachment(msg)
        msg = outer
    doc = load_file(_save(tmp_path, msg))

    texts = [s.text for s in doc.sections]
    assert f"Body at level {MAX_NESTING + 1}." in texts and "Body at level 1." in texts
    assert "Outermost." not in texts
    assert f"nested more than {MAX_NESTING} deep" in doc.metadata["warnings"]
