"""E-mail .eml (RFC 822/MIME): a "header" section (From/To/Cc/Subject/Date), the body
(text/plain preferred, else HTML converted to text), attachments named but not parsed."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from pathlib import Path

from ._text import bom_encoding, bomless_utf_encoding, decode_bytes, normalize_newlines
from .base import LoadedDocument, LoaderError, Section
from .html import html_sections

_SHOWN_HEADERS = ("From", "To", "Cc", "Subject", "Date")
_ANY_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Received")


def _parse(data: bytes) -> EmailMessage:
    # Some tools save whole messages as UTF-16; the parser only understands bytes of ASCII headers.
    if bom_encoding(data) or bomless_utf_encoding(data):
        msg = email.message_from_string(decode_bytes(data), policy=policy.default)
    else:
        msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _part_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):  # unknown or lying charset: detect it instead
        content = decode_bytes(part.get_payload(decode=True) or b"")
    if isinstance(content, bytes):
        content = decode_bytes(content)
    if part.get_content_subtype() == "html":
        sections, _ = html_sections(content)
        return "\n".join(s.text for s in sections)
    return normalize_newlines(content)


class EmlLoader:
    mime = "message/rfc822"
    extensions: tuple[str, ...] = (".eml",)

    def load(self, path: Path) -> LoadedDocument:
        data = path.read_bytes()
        if not data.strip():
            raise LoaderError("empty file")
        msg = _parse(data)
        if not any(msg.get(name) is not None for name in _ANY_HEADERS):
            raise LoaderError("not a valid e-mail (.eml) file: no message headers found")

        sections: list[Section] = []
        header_lines = [f"{name}: {msg[name]}" for name in _SHOWN_HEADERS if msg.get(name) is not None]
        if header_lines:
            sections.append(Section(text="\n".join(header_lines), kind="header"))

        metadata: dict[str, str] = {}
        body = msg.get_body(preferencelist=("plain", "html"))
        if body is not None:
            text = _part_text(body)
            if text.strip():
                sections.append(Section(text=text.strip()))
        elif msg.get_content_type() in ("application/pkcs7-mime", "multipart/encrypted"):
            metadata["body"] = "encrypted; not indexed"

        names = [part.get_filename() or part.get_content_type() for part in msg.iter_attachments()]
        if names:
            sections.append(Section(text="Attachments: " + ", ".join(names), heading_path=("Attachments",)))
            metadata["attachments"] = ", ".join(names)
        for name in ("From", "To", "Date", "Message-ID"):
            if msg.get(name) is not None:
                metadata[name.lower()] = str(msg[name])
        subject = str(msg["Subject"]).strip() if msg.get("Subject") is not None else ""
        return LoadedDocument(sections=sections, mime=self.mime, title=subject or None, metadata=metadata)
