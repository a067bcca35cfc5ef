"""Where documents come from: files in a folder tree, or in-memory records (BEIR corpora, uploads)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ingestion.loaders.base import LoadedDocument, Section


@dataclass
class SourceItem:
    """One document to ingest. `key` is what the store records as the document's path."""

    key: str
    size: int
    mtime: float
    load: Callable[[], LoadedDocument]
    digest: Callable[[], str]
    extension: str = ""
    skip_reason: str | None = None  # set: never read, reported as skipped with this reason
    # Who may read this document (a source's own permissions); None: the run's groups apply.
    groups: tuple[str, ...] | None = None
    # Drops what `digest` kept for `load` (a fetched copy on disk) once the item is settled without being
    # loaded (unchanged, duplicate): `load` fetches again should it be needed after all.
    release: Callable[[], None] | None = None


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """The file's SHA-256, read in blocks so a large file never sits in memory whole."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class Skipped:
    """An entry a folder walk did not take, and why (reported in the ingest summary, never dropped silently)."""

    path: Path
    reason: str


@dataclass
class FileListing:
    """What a folder walk found: the files to read (real paths) and the entries it refused."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files) + len(self.skipped)

    def items(self, loader: Callable[[Path], LoadedDocument]) -> Iterator[SourceItem]:
        """The files as source items read with `loader`, then the refused entries as skipped items."""
        yield from file_items(self.files, loader)
        for entry in self.skipped:
            yield skipped_item(entry)

    @property
    def unreadable_folders(self) -> list[Path]:
        """Folders the walk could not list: what they hold is unknown this time, not gone."""
        return [s.path for s in self.skipped if s.reason.startswith(UNREADABLE_FOLDER_REASON)]


EXCLUDED_REASON = "inside sparq's data dir (database, index, secrets): never ingested"
UNREADABLE_FOLDER_REASON = "cannot list folder"


def walk_files(root: Path, *, exclude: Iterable[Path] = ()) -> FileListing:
    """Regular files under root in a stable order, as real paths. Hidden entries are left out. A symbolic
    link (to a file or a folder) whose target resolves outside root, or into an excluded folder such as the
    data dir, is skipped with its reason; a link inside root is not followed (its target is listed under its
    own path, once). Excluded folders met on the way are skipped, not entered; an excluded folder that holds
    root itself does not apply (the caller has cleared root)."""
    real_root = Path(root).resolve()
    excluded = [e for e in (Path(x).resolve() for x in exclude) if not _within(real_root, e)]

    def refusal(target: Path) -> str | None:
        if any(_within(target, e) for e in excluded):
            return "symbolic link into sparq's data dir: not followed"
        if not _within(target, real_root):
            return f"symbolic link to something outside {real_root}: not followed"
        return None

    if real_root.is_file():
        return FileListing(files=[real_root])
    if not real_root.is_dir():
        raise FileNotFoundError(f"{root} is neither a file nor a folder")
    listing = FileListing()
    seen: set[Path] = set()

    def unreadable(exc: OSError) -> None:  # reported, never dropped silently (a folder sparq may not read)
        where = Path(exc.filename) if exc.filename else real_root
        listing.skipped.append(Skipped(where, f"{UNREADABLE_FOLDER_REASON}: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(real_root, onerror=unreadable, followlinks=False):
        here = Path(dirpath)
        keep: list[str] = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            path = here / name
            if path.is_symlink():
                reason = refusal(path.resolve())
                if reason is not None:
                    listing.skipped.append(Skipped(path, reason))
                continue  # never entered: a target inside root is walked under its own path
            if any(_within(path, e) for e in excluded):
                listing.skipped.append(Skipped(path, EXCLUDED_REASON))
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            if path.is_symlink():
                target = path.resolve()
                reason = refusal(target)
                if reason is None and not target.is_file():
                    reason = "symbolic link to nothing readable (broken, or not a regular file)"
                if reason is not None:
                    listing.skipped.append(Skipped(path, reason))
                    continue
                path = target
            elif not path.is_file():
                continue  # sockets, fifos, devices: not documents
            if path not in seen:
                seen.add(path)
                listing.files.append(path)
    return listing


def _unmoved(path: Path) -> Path:
    """The listed real path, refused if it has turned into (or now runs through) a symbolic link since."""
    if Path(os.path.realpath(path)) != path:
        raise OSError(f"{path} became a symbolic link after it was listed; not read")
    return path


def file_items(paths: list[Path], loader: Callable[[Path], LoadedDocument]) -> Iterator[SourceItem]:
    """Items for files read in place; a file that vanished after listing fails when loaded, with the reason."""
    for path in paths:
        try:
            st = path.stat()
        except OSError as exc:  # vanished between listing and reading: report through load()
            message = f"cannot stat file: {exc}"

            def fail(message: str = message) -> LoadedDocument:
                raise OSError(message)

            yield SourceItem(str(path), 0, 0.0, fail, lambda: "", path.suffix.lower())
            continue
        yield local_file_item(str(path), path, st.st_size, st.st_mtime, loader)


def local_file_item(
    key: str,
    path: Path,
    size: int,
    mtime: float,
    loader: Callable[[Path], LoadedDocument],
    *,
    groups: tuple[str, ...] | None = None,
) -> SourceItem:
    """A file read in place, stored under `key`; refused if it has become a symbolic link since it was listed."""
    return SourceItem(
        key=key,
        size=size,
        mtime=mtime,
        load=lambda: loader(_unmoved(path)),
        digest=lambda: sha256_file(_unmoved(path)),
        extension=path.suffix.lower(),
        groups=groups,
    )


def skipped_item(entry: Skipped) -> SourceItem:
    """A source item that is never read: the pipeline reports it as skipped, with the reason."""

    def refuse(entry: Skipped = entry) -> LoadedDocument:
        raise OSError(f"{entry.path}: {entry.reason}")

    return SourceItem(
        str(entry.path), 0, 0.0, refuse, lambda: "", entry.path.suffix.lower(), skip_reason=entry.reason
    )


@dataclass(frozen=True)
class TextRecord:
    """A document that is already text, e.g. one line of a BEIR corpus.jsonl."""

    key: str
    text: str
    title: str | None = None


def record_items(records: Iterator[TextRecord] | list[TextRecord]) -> Iterator[SourceItem]:
    """Items for text records, each hashed from its title and text so an unchanged record is skipped."""
    for record in records:
        body = record.text
        digest = hashlib.sha256(((record.title or "") + "\n" + body).encode()).hexdigest()

        def load(r: TextRecord = record) -> LoadedDocument:
            return LoadedDocument([Section(r.text)], mime="text/plain", title=r.title)

        def digest_of(d: str = digest) -> str:
            return d

        yield SourceItem(record.key, len(body.encode()), 0.0, load, digest_of, ".txt")
