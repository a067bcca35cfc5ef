"""Uploaded files on disk: data_dir/uploads/<collection id>/<name>, one folder per collection.

Names keep the uploader's Unicode (NFC) minus what could leave the folder or fool a reader (separators,
control and bidi characters, leading dots), bounded in bytes. A name already holding other content gets a
content-hash suffix instead of being overwritten; the same content under the same name is the same file.
Writes go to a temporary file that is fsynced and renamed, under the ingest lock (`Assistant.ingest_upload`),
so two uploads never interleave.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import unicodedata
from pathlib import Path

from retrieval.vector_index import fsync_dir

UPLOADS = "uploads"
MAX_NAME_BYTES = 180  # + "-" + a 64-hex suffix stays under the 255-byte limit of common file systems
_MAX_EXT_BYTES = 32
# Bidirectional controls (U+202A-E, U+2066-9, LRM/RLM/ALM) can make "invoice‮fdp.exe" read as "...exe.pdf".
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def _dropped(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI


def _clip(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in max_bytes (never half a character)."""
    return text.encode("utf-8")[: max(0, max_bytes)].decode("utf-8", "ignore")


def safe_name(name: str, fallback: str = "file", max_bytes: int = MAX_NAME_BYTES) -> str:
    """A file name that cannot leave its folder: the last path component, NFC, without control or bidi
    characters or leading dots, at most `max_bytes` of UTF-8 (the extension kept when it is short)."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if not _dropped(ch))
    name = name.strip().lstrip(".").strip().rstrip(". ")
    if len(name.encode("utf-8")) > max_bytes:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext.encode("utf-8")) < _MAX_EXT_BYTES:
            name = _clip(stem, max_bytes - len(ext.encode("utf-8")) - 1).rstrip(". ") + "." + ext
        else:
            name = _clip(name, max_bytes).rstrip(". ")
    return name or fallback


def uploads_root(data_dir: Path) -> Path:
    """The folder that holds every upload, one subfolder per collection id."""
    return Path(data_dir).resolve() / UPLOADS


def upload_dir(data_dir: Path, collection_id: int) -> Path:
    """Where a collection's uploads live: named by the collection's id, so 'HR/2024' and '2024' never share."""
    return uploads_root(data_dir) / str(int(collection_id))


def is_upload(data_dir: Path, path: str | Path) -> bool:
    """Whether `path` is a file sparq stored from an upload (inside data_dir/uploads), not a server-folder file."""
    root = uploads_root(data_dir)
    return root in Path(path).resolve().parents


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _candidates(name: str, digest: str) -> list[str]:
    stem, dot, ext = name.rpartition(".")
    if not (dot and stem):
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    return [name] + [f"{stem}-{digest[:n]}{suffix}" for n in (8, 16, 64)]


def _write_atomically(target: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsynced, renamed over `target`: readers see all of it or nothing."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def save_upload(data_dir: Path, collection_id: int, filename: str, data: bytes) -> Path:
    """Store an upload and return its path. The caller holds the ingest lock, so checking a name and taking
    it cannot race another upload. Same name and content: the existing file; other content: a suffixed name."""
    folder = upload_dir(data_dir, collection_id)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    for candidate in _candidates(safe_name(filename), digest):
        target = folder / candidate
        if target.parent.resolve() != folder:  # safe_name guarantees this; checked because it is cheap
            raise ValueError(f"refusing to write outside {folder}")
        if not os.path.lexists(target):
            _write_atomically(target, data)
            return target
        if target.is_file() and not target.is_symlink() and _sha256(target) == digest:
            return target
    raise FileExistsError(f"no free name for {filename!r} in {folder}: every candidate holds other content")


def remove_upload(data_dir: Path, path: str | Path) -> bool:
    """Delete a document's stored upload (and its folder once empty). A path outside data_dir/uploads, such
    as a server-folder file, is never touched. Returns whether a file was removed."""
    if not is_upload(data_dir, path):
        return False
    target = Path(path).resolve()
    existed = target.is_file()
    target.unlink(missing_ok=True)
    folder = target.parent
    if folder.parent == uploads_root(data_dir):
        try:
            folder.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
    return existed


def remove_collection_uploads(data_dir: Path, collection_id: int) -> None:
    """Delete a collection's upload folder with everything in it."""
    folder = upload_dir(data_dir, collection_id)
    if folder.is_dir():
        shutil.rmtree(folder)
