"""`sparq ingest`, `collections`, `documents` and `delete`: what is in the document store."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.assistant import Assistant
from app.cli.common import comma_list, print_json

if TYPE_CHECKING:
    from ingestion.pipeline import FileEvent


def ingest(
    path: Annotated[Path, typer.Argument(help="A file or a folder tree to ingest.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to ingest into.")],
    groups: Annotated[
        str | None, typer.Option(help="Comma-separated groups that may read these documents.")
    ] = None,
    sync: Annotated[
        bool, typer.Option("--sync", help="Remove stored documents whose files are gone.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest documents: new and changed files are embedded, unchanged ones are skipped."""
    from tqdm import tqdm

    bar = tqdm(unit="file", desc="ingest", disable=as_json or not sys.stderr.isatty(), file=sys.stderr)

    def progress(event: FileEvent) -> None:
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        bar.set_postfix_str(f"{event.status}: {Path(event.path).name[:40]}")
        bar.update(1)
        if event.status == "failed" and not as_json:
            bar.write(f"failed: {event.path}: {event.error}")

    with Assistant() as assistant:
        summary = assistant.ingest(
            path,
            collection=collection,
            groups=None if groups is None else comma_list(groups),
            sync=sync,
            progress=progress,
        )
    bar.close()
    if as_json:
        print_json(summary.to_dict())
        return
    typer.echo(
        f"collection {summary.collection}: {summary.files_new} new, {summary.files_updated} updated, "
        f"{summary.files_unchanged} unchanged, {summary.files_failed} failed, {summary.files_skipped} skipped, "
        f"{summary.files_removed} removed; {summary.chunks_added} chunks written, {summary.chunks_removed} removed "
        f"in {summary.seconds:.1f} s"
    )
    for failure in summary.failures:
        typer.echo(f"  failed  {failure.path}: {failure.error}")
    for skipped in summary.skipped:
        typer.echo(f"  skipped {skipped.path}: {skipped.error}")


def collections(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List collections with their document and chunk counts."""
    with Assistant() as assistant:
        rows = assistant.collections()
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    if not rows:
        typer.echo("no collections yet: run `sparq ingest PATH --collection NAME`")
    for r in rows:
        typer.echo(f"{r.name:30} {r.documents:8} documents {r.chunks:10} chunks")


def documents(
    collection: Annotated[str | None, typer.Option("--collection", "-c")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List stored documents, with their status and any error."""
    with Assistant() as assistant:
        rows = assistant.documents(collection)
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    for r in rows:
        extra = f"  ({r.error})" if r.error else ""
        if r.status == "stale":  # its last re-read failed: search still serves the last good version
            extra = f"  (stale, last good version still searched: {r.error})"
        typer.echo(f"{r.id:6} {r.collection:16} {r.status:9} {r.chunks:5} chunks  {r.path}{extra}")


def delete(
    document: Annotated[int | None, typer.Option("--document", help="Document id to delete.")] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", help="Collection to delete, whole.")
    ] = None,
) -> None:
    """Delete a document or a whole collection, with its chunks and vectors."""
    if (document is None) == (collection is None):
        raise typer.BadParameter("give exactly one of --document ID or --collection NAME")
    with Assistant() as assistant:
        if document is not None:
            assistant.delete_document(document)
            typer.echo(f"deleted document {document}")
        else:
            n = assistant.delete_collection(collection)  # type: ignore[arg-type]
            typer.echo(f"deleted collection {collection} ({n} documents)")


def register(cli: typer.Typer) -> None:
    """Add `ingest`, `collections`, `documents` and `delete` to the root app."""
    for command in (ingest, collections, documents, delete):
        cli.command()(command)
