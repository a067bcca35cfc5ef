"""E-mail .eml (RFC 822/MIME): a "header" section (From/To/Cc/Subject/Date), the body
(text/plain preferred, else HTML converted to text), then the text of each attachment that sparq has a
loader for (PDF, DOCX, a forwarded message, ...), read by that loader, each of its sections headed by the
attachment's file name; last, the list of all attachments by name.

An attachment that cannot be read costs a warning on the message, not the message. Images embedded in the
body (logos, signatures) are not read by OCR; image files attached as such are. Forwarded messages are
read to a depth of MAX_NESTING."""

from __future__ import annotations

import email
import mimetypes
import re
import tempfile
from dataclasses import replace
from email import policy
from email.message import EmailMessage, MIMEPart
from pathlib import Path

from ._text import bom_encoding, bomless_utf_encoding, decode_bytes, normalize_newlines
from .base import LoadedDocument, LoaderError, Section, UnsupportedFormat
from .html import html_sections

_SHOWN_HEADERS = ("From", "To", "Cc", "Subject", "Date")
_ANY_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Received")
MAX_NESTING = 3  # a message attached to a message attached to a message: deeper ones are only named
_EXTENSION = re.compile(r"\.[a-z0-9]{1,10}")


def _parse(data: bytes) -> EmailMessage:
    # Some tools save whole messages as UTF-16; the parser only understands bytes of ASCII headers.
    if bom_encoding(data) or bomless_utf_encoding(data):
        msg = email.message_from_string(decode_bytes(data), policy=policy.default)
    else:
        msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _payload_bytes(part: MIMEPart) -> bytes:
    """A part's decoded payload, b"" when it has none (decode=True gives bytes or None, never a Message)."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _part_text(part: MIMEPart) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):  # unknown or lying charset: detect it instead
        content = decode_bytes(_payload_bytes(part))
    if isinstance(content, bytes):
        content = decode_bytes(content)
    if part.get_content_subtype() == "html":
        sections, _ = html_sections(content)
        return "\n".join(s.text for s in sections)
    return normalize_newlines(content)


def _extension(part: MIMEPart, name: str | None) -> str | None:
    """The loader-picking extension of an attachment: its file name's, else its content type's."""
    if part.get_content_type() == "message/rfc822":
        return ".eml"
    if name:
        suffix = Path(name.replace("\\", "/")).suffix.lower()
        if _EXTENSION.fullmatch(suffix):
            return suffix
    return mimetypes.guess_extension(part.get_content_type(), strict=False)


def _headed(sections: list[Section], name: str) -> list[Section]:
    return [replace(s, heading_path=(name, *s.heading_path)) for s in sections]


class _Attachments:
    """Reads a message's attachments through the other loaders, collecting their sections and warnings."""

    def __init__(self, folder: Path, depth: int) -> None:
        self.folder = folder
        self.depth = depth
        self.sections: list[Section] = []
        self.warnings: list[str] = []

    def read(self, index: int, part: MIMEPart, name: str) -> None:
        if part.get_content_maintype() == "image" and part.get_content_disposition() != "attachment":
            return  # a picture in the body (logo, signature): not worth OCR
        ext = _extension(part, part.get_filename())
        if ext == ".eml":
            self._message(part, name)
            return
        # Imported here: the loader registry (ingestion.loaders) imports this module.
        from . import load_file, supported_extensions

        if ext is None or ext not in supported_extensions():
            return  # named in the attachment list; nothing to read it with
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload.strip():
            return
        path = self.folder / f"attachment-{self.depth}-{index}{ext}"  # never the sender's file name
        path.write_bytes(payload)
        try:
            document = load_file(path)
        except UnsupportedFormat:
            return
        except LoaderError as exc:
            self.warnings.append(f"attachment {name} not read: {exc}")
            return
        finally:
            path.unlink()
        self.sections.extend(_headed(document.sections, name))
        if document.metadata.get("warnings"):
            self.warnings.append(f"attachment {name}: {document.metadata['warnings']}")

    def _message(self, part: MIMEPart, name: str) -> None:
        if self.depth >= MAX_NESTING:
            self.warnings.append(f"attachment {name} not read: messages nested more than {MAX_NESTING} deep")
            return
        content = part.get_content() if part.get_content_type() == "message/rfc822" else None
        if not isinstance(content, EmailMessage):
            content = _parse(_payload_bytes(part))
        inner = _message_document(content, self.folder, self.depth + 1)
        if part.get_filename() is None and inner.title:
            name = inner.title  # a forwarded message is known by its subject
        self.sections.extend(_headed(inner.sections, name))
        if inner.metadata.get("warnings"):
            self.warnings.append(f"attachment {name}: {inner.metadata['warnings']}")


def _message_document(msg: EmailMessage, folder: Path, depth: int) -> LoadedDocument:
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

    attachments = _Attachments(folder, depth)
    names: list[str] = []
    for index, part in enumerate(msg.iter_attachments()):
        assert isinstance(part, EmailMessage)
        name = part.get_filename() or part.get_content_type()
        names.append(name)
        attachments.read(index, part, name)
    sections.extend(attachments.sections)
    if names:
        sections.append(Section(text="Attachments: " + ", ".join(names), heading_path=("Attachments",)))
        metadata["attachments"] = ", ".join(names)
    if attachments.warnings:
        metadata["warnings"] = "; ".join(attachments.warnings)
    for name in ("From", "To", "Date", "Message-ID"):
        if msg.get(name) is not None:
            metadata[name.lower()] = str(msg[name])
    subject = str(msg["Subject"]).strip() if msg.get("Subject") is not None else ""
    return LoadedDocument(sections=sections, mime=EmlLoader.mime, title=subject or None, metadata=metadata)


class EmlLoader:
    """E-mail .eml files, read with their attachments (see the module)."""

    mime = "message/rfc822"
    extensions: tuple[str, ...] = (".eml",)

    def load(self, path: Path) -> LoadedDocument:
        """Headers, body and readable attachments; a file without message headers is refused, not read as text."""
        data = path.read_bytes()
        if not data.strip():
            raise LoaderError("empty file")
        msg = _parse(data)
        if not any(msg.get(name) is not None for name in _ANY_HEADERS):
            raise LoaderError("not a valid e-mail (.eml) file: no message headers found")
        with tempfile.TemporaryDirectory(prefix="sparq-eml-") as folder:
            return _message_document(msg, Path(folder), depth=0)
