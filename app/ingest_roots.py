"""Which server paths may be ingested: inside the configured roots (SPARQ_INGEST_ROOTS), never the data dir.

The rule, in one place for the Python API, the CLI and the web UI:
- The data dir (database, index, initial-admin-password.txt) is never ingested, even under a root; only its
  uploads folder is, since sparq wrote those files itself (re-ingesting an uploaded document).
- With roots configured, a path is accepted only when its real path (symbolic links resolved) is inside one.
- With none configured, the web UI refuses server folders (`require_roots`): an admin in a browser must not
  reach every file the server account can read. The operator at the console (CLI, Python) may name any path.
Inside an accepted folder, the walk itself skips symbolic links that leave it (ingestion.sources.walk_files).
"""

from __future__ import annotations

from pathlib import Path

from app.assistant import SparqError
from app.uploads import uploads_root

ROOTS_ENV = "SPARQ_INGEST_ROOTS"


class IngestPathRefused(SparqError):
    """A server path that sparq will not read; the message names the rule and the setting."""


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_ingest_path(
    path: str | Path, *, data_dir: Path, roots: list[Path], require_roots: bool = False
) -> Path:
    """The real path to ingest, or IngestPathRefused (or SparqError for a path that does not exist)."""
    given = Path(path).expanduser()
    if not given.exists():
        raise SparqError(f"{given} does not exist")
    real = given.resolve()
    data = Path(data_dir).resolve()
    if _within(real, uploads_root(data)):
        return real
    if _within(real, data):
        raise IngestPathRefused(
            f"{given} is inside sparq's data dir {data} (database, index, secrets), which is never ingested"
        )
    if not roots:
        if require_roots:
            raise IngestPathRefused(
                f"server-folder ingest is off: set {ROOTS_ENV} to the folders that may be ingested "
                f"(e.g. {ROOTS_ENV}=/srv/share), or upload the files"
            )
        return real
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if not any(_within(real, r) for r in allowed):
        where = f"{given} (really {real})" if real != given.absolute() else str(given)
        raise IngestPathRefused(
            f"{where} is outside the folders that may be ingested ({ROOTS_ENV}: "
            + ", ".join(str(r) for r in allowed)
            + ")"
        )
    return real
