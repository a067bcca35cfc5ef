"""Pre-flight checks for Office Open XML files (docx/pptx/xlsx), run before any
library opens them: uploads are hostile, and a zip bomb must be refused from its
central directory, not discovered by running out of memory."""

from __future__ import annotations

import zipfile
from pathlib import Path

from .base import LoaderError

MAX_TOTAL_UNCOMPRESSED = 500 * 1024 * 1024
MAX_RATIO = 100
RATIO_APPLIES_ABOVE = 20 * 1024 * 1024  # small, very compressible parts (blank XML) are normal
MAX_MEMBERS = 10_000

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Office stores a password-protected OOXML file as an OLE container with these streams.
_ENCRYPTED_MARKERS = ("EncryptionInfo".encode("utf-16-le"), "EncryptedPackage".encode("utf-16-le"))


def check_ooxml(path: Path, ext: str) -> None:
    """Refuse files that are not a sane OOXML zip, with a reason an admin can act on."""
    with path.open("rb") as fh:
        head = fh.read(8)
        if head == _OLE_MAGIC:
            fh.seek(0)
            blob = fh.read(4 * 1024 * 1024)
            if any(marker in blob for marker in _ENCRYPTED_MARKERS):
                raise LoaderError(
                    f"encrypted or password-protected {ext} file; remove the password and re-upload"
                )
            raise LoaderError(
                f"not a valid {ext} (ZIP) file: this is a legacy binary Office file (.doc/.xls/.ppt), "
                "which is not supported; save it in the modern format"
            )
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise LoaderError(f"not a valid {ext} (ZIP) file") from exc
    if len(infos) > MAX_MEMBERS:
        raise LoaderError(f"refusing probable zip bomb: {len(infos)} archive members (limit {MAX_MEMBERS})")
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    if total > MAX_TOTAL_UNCOMPRESSED:
        raise LoaderError(
            f"refusing probable zip bomb: {total} bytes uncompressed (limit {MAX_TOTAL_UNCOMPRESSED})"
        )
    if total > RATIO_APPLIES_ABOVE and total > MAX_RATIO * max(packed, 1):
        raise LoaderError(
            f"refusing probable zip bomb: compression ratio {total // max(packed, 1)}x "
            f"({total} bytes from {packed}; limit {MAX_RATIO}x)"
        )
    if "[Content_Types].xml" not in {i.filename for i in infos}:
        raise LoaderError(f"not a valid {ext} file: ZIP archive without [Content_Types].xml")
