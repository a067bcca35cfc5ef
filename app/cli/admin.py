"""`sparq backup` and `sparq restore`: the whole installation to a folder and back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant, SparqError


def backup(
    target: Annotated[Path, typer.Argument(help="A new, empty folder to write the backup into.")],
) -> None:
    """Back up the database, the vector index and uploaded documents."""
    from app.backup import BackupError

    with Assistant() as assistant:
        try:
            manifest = assistant.backup(target)
        except BackupError as exc:
            raise SparqError(str(exc)) from exc
    rows = manifest["rows"]
    typer.echo(
        f"backup written to {target}: {rows.get('documents', 0)} documents, {rows.get('chunks', 0)} chunks"
    )


def restore(source: Annotated[Path, typer.Argument(help="A folder written by `sparq backup`.")]) -> None:
    """Restore a backup into an empty installation (SQLite or PostgreSQL, either way round)."""
    from app.backup import BackupError

    with Assistant() as assistant:
        try:
            manifest = assistant.restore(source)
        except BackupError as exc:
            raise SparqError(str(exc)) from exc
    typer.echo(f"restored backup of {manifest['created_at']} ({manifest['rows'].get('chunks', 0)} chunks)")


def register(cli: typer.Typer) -> None:
    """Add `backup` and `restore` to the root app."""
    cli.command()(backup)
    cli.command()(restore)
