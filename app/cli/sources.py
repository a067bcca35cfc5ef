"""`sparq sources ...`: sources that sync themselves (folders, mailboxes, web sites; see app.sources).
Like every sparq command these are the server operator's: whoever can run them
can read the data dir anyway."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.assistant import Assistant, SparqError
from app.cli.common import comma_list, fail, print_json
from app.sources import (
    RunInfo,
    SourceBusy,
    SourceInfo,
    SourceService,
    SyncFailed,
    parse_option,
    service_for,
)

if TYPE_CHECKING:
    from ingestion.pipeline import FileEvent

sources_app = typer.Typer(
    no_args_is_help=True,
    help="Sources that sync themselves on a schedule: server folders, IMAP mailboxes, intranet web sites.",
)
KINDS = ("folder", "imap", "web")


def _when(moment: datetime | None, now: datetime, *, due: bool = False) -> str:
    """A moment for the listing: "just now" / "in 40 s" / "due now" close by, else the UTC minute."""
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    if due and seconds <= 0:
        return "due now"
    if abs(seconds) < 60:
        return "just now" if seconds <= 0 else f"in {seconds:.0f} s"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _run_line(run: RunInfo) -> str:
    return (
        f"{run.files_new} new, {run.files_updated} updated, {run.files_unchanged} unchanged, "
        f"{run.files_removed} removed, {run.files_failed} failed in {run.duration_s:.1f} s"
    )


def _source_dict(info: SourceInfo) -> dict[str, Any]:
    last = info.last_run
    return {
        "name": info.name,
        "kind": info.kind,
        "collection": info.collection,
        "groups": info.groups,
        "schedule": info.schedule,
        "enabled": info.enabled,
        "options": info.options,
        "next_due_at": info.next_due_at,
        "failures": info.failures,
        "syncing_by": info.syncing_by,
        "created_at": info.created_at,
        "last_run": None
        if last is None
        else {
            "status": last.status,
            "started_at": last.started_at,
            "finished_at": last.finished_at,
            "duration_s": round(last.duration_s, 3),
            "error": last.error,
            "files_new": last.files_new,
            "files_updated": last.files_updated,
            "files_unchanged": last.files_unchanged,
            "files_removed": last.files_removed,
            "files_failed": last.files_failed,
            "notes": last.notes,
        },
    }


@sources_app.command("add")
def sources_add(
    name: Annotated[str, typer.Argument(help="A name for the source (letters, digits, _ . @ -).")],
    kind: Annotated[str, typer.Option("--kind", "-k", help=f"One of: {', '.join(KINDS)}.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection its documents go into.")],
    groups: Annotated[
        str | None,
        typer.Option(
            "--groups",
            "-g",
            help="Comma-separated groups that may read every document of it (besides the groups "
            "its own permissions grant).",
        ),
    ] = None,
    schedule: Annotated[
        str, typer.Option("--schedule", help="'every 30m', 'every 2h', 'every 1d', 'every 45s' or 'manual'.")
    ] = "every 1h",
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="A connector option key=value (repeatable), e.g. group_rule=none, max_pages=200, "
            "tls=starttls. Never a password: use --password-env or --password-file.",
        ),
    ] = None,
    path: Annotated[str | None, typer.Option("--path", help="folder: the folder on this server.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="web: the start page (option start_url).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="imap: the mail server's host name.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="imap: the account to sign in as.")] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            help="imap: the environment variable of the sparq processes that holds the password.",
        ),
    ] = None,
    password_file: Annotated[
        str | None,
        typer.Option(
            "--password-file", help="imap: a file (readable only by sparq's account) that holds the password."
        ),
    ] = None,
    mailbox: Annotated[
        list[str] | None,
        typer.Option("--mailbox", help="imap: a mailbox to sync (repeatable; default INBOX)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new source as JSON.")] = False,
) -> None:
    """Add a source; its settings are checked by building its connector. A scheduled source syncs at once."""
    try:
        options: dict[str, Any] = dict(parse_option(o) for o in option or [])
        for key, value in (
            ("path", path),
            ("start_url", url),
            ("host", host),
            ("user", user),
            ("password_env", password_env),
            ("password_file", password_file),
        ):
            if value is not None:
                options[key] = value
        if mailbox:
            options["mailboxes"] = list(mailbox)
        with Assistant() as assistant:
            info = service_for(assistant).add(
                name,
                kind,
                collection=collection,
                groups=comma_list(groups),
                schedule=schedule,
                options=options,
            )
    except SparqError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(_source_dict(info))
        return
    due = (
        "syncs when `sparq serve` or `sparq ui` next checks"
        if info.next_due_at
        else "syncs on `sparq sources sync`"
    )
    typer.echo(
        f"added {info.kind} source {info.name!r} into collection {info.collection!r} "
        f"(groups: {', '.join(info.groups) or 'none'}; {info.schedule}); it {due}"
    )


@sources_app.command("list")
def sources_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List sources with their last run (outcome, duration, error) and when each is due next."""
    with Assistant() as assistant:
        service = service_for(assistant)
        rows = service.list()
        now = service.clock()
    if as_json:
        print_json([_source_dict(r) for r in rows])
        return
    if not rows:
        typer.echo(
            "no sources yet: add one with `sparq sources add NAME --kind folder --path DIR --collection C`"
        )
        return
    for r in rows:
        last = r.last_run
        if r.syncing_by:
            outcome = f"syncing now ({r.syncing_by})"
        elif last is None:
            outcome = "never synced"
        else:
            outcome = f"{last.status} {_when(last.started_at, now)}, {last.duration_s:.1f} s"
        state = "" if r.enabled else " (disabled)"
        next_due = _when(r.next_due_at, now, due=True) if r.enabled else "-"
        typer.echo(
            f"{r.name:<20} {r.kind:<6} {r.collection:<16} {r.schedule:<11}{state}  last: {outcome}  "
            f"next: {next_due}"
        )
        if last is not None and last.status == "failed":
            typer.echo(f"    error: {last.error} ({r.failures} failure(s) in a row)")
        elif last is not None:
            typer.echo(f"    {_run_line(last)}")


def _progress_bar(name: str, quiet: bool) -> tuple[Callable[[FileEvent], None], Any]:  # the bar: a tqdm
    from tqdm import tqdm

    bar = tqdm(unit="file", desc=name, disable=quiet or not sys.stderr.isatty(), file=sys.stderr)

    def progress(event: FileEvent) -> None:
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        bar.set_postfix_str(f"{event.status}: {Path(event.path).name[:40]}")
        bar.update(1)
        if event.status == "failed" and not quiet:
            bar.write(f"failed: {event.path}: {event.error}")

    return progress, bar


def _sync_one(service: SourceService, name: str, *, allow_empty: bool, as_json: bool) -> RunInfo | None:
    progress, bar = _progress_bar(name, as_json)
    try:
        run = service.sync(name, progress=progress, allow_empty=allow_empty)
    except SyncFailed as exc:
        bar.close()
        if not as_json:
            typer.echo(f"error: {exc}", err=True)
        return exc.run
    except SourceBusy as exc:
        bar.close()
        typer.echo(f"error: {exc}", err=True)
        return None
    bar.close()
    if not as_json:
        typer.echo(f"source {name}: {_run_line(run)}")
        for note in run.notes:
            typer.echo(f"  {note}")
    return run


@sources_app.command("sync")
def sources_sync(
    name: Annotated[str | None, typer.Argument(help="The source to sync now.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Sync every enabled source, one after another.")
    ] = False,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="Let a source that lists nothing remove all its stored documents (it really is "
            "empty now, not unmounted).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """Sync a source now (or --all), whatever its schedule; exits 1 if a sync failed or was already running."""
    if (name is None) == (not every):
        raise fail("give a source NAME or --all, not both")
    runs: list[RunInfo | None] = []
    try:
        with Assistant() as assistant:
            service = service_for(assistant)
            names = [s.name for s in service.list() if s.enabled] if every else [name]
            for one in names:
                runs.append(_sync_one(service, one, allow_empty=allow_empty, as_json=as_json))  # type: ignore[arg-type]
    except SparqError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json([None if r is None else {**vars(r), "duration_s": round(r.duration_s, 3)} for r in runs])
    if any(r is None or r.status != "completed" for r in runs):
        raise typer.Exit(1)


@sources_app.command("remove")
def sources_remove(
    name: Annotated[str, typer.Argument(help="The source to remove.")],
    delete_documents: Annotated[
        bool,
        typer.Option(
            "--delete-documents",
            help="Also delete the documents it synced (kept by default, as ordinary documents).",
        ),
    ] = False,
) -> None:
    """Remove a source and its run history."""
    try:
        with Assistant() as assistant:
            deleted = service_for(assistant).remove(name, delete_documents=delete_documents)
    except SparqError as exc:
        raise fail(str(exc)) from None
    kept = f"; {deleted} documents deleted" if delete_documents else "; its documents are kept"
    typer.echo(f"removed source {name!r}{kept}")


def _set_enabled(name: str, enabled: bool) -> None:
    try:
        with Assistant() as assistant:
            info = service_for(assistant).set_enabled(name, enabled)
    except SparqError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"source {info.name!r} {'enabled' if info.enabled else 'disabled'}")


@sources_app.command("disable")
def sources_disable(name: Annotated[str, typer.Argument(help="The source to pause.")]) -> None:
    """Stop syncing a source on its schedule (`sparq sources sync` still syncs it)."""
    _set_enabled(name, False)


@sources_app.command("enable")
def sources_enable(name: Annotated[str, typer.Argument(help="The source to resume.")]) -> None:
    """Resume a disabled source's schedule; it is due at once."""
    _set_enabled(name, True)


def register(cli: typer.Typer) -> None:
    """Add the `sources` group to the root app."""
    cli.add_typer(sources_app, name="sources")
