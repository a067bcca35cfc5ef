"""`sparq serve` (the HTTP API) and `sparq keys ...` (its API keys), registered on the main CLI."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from app.api_keys import ApiKeyError, ApiKeys, parse_duration
from app.assistant import Assistant
from app.cli import _print_json, cli

keys_app = typer.Typer(no_args_is_help=True, help="API keys for `sparq serve`; each acts as one user.")
cli.add_typer(keys_app, name="keys")


@cli.command()
def serve(
    host: Annotated[
        str, typer.Option("--host", envvar="SPARQ_API_HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", envvar="SPARQ_API_PORT", help="Port to serve on.")
    ] = 8000,
) -> None:
    """Serve the HTTP API (OpenAI-compatible chat, search, documents) on HOST:PORT."""
    import uvicorn

    from app.api import create_app

    assistant = Assistant()
    app = create_app(assistant)
    schedule = None
    if assistant.settings.ldap_sync_minutes:
        from app.cli_directory import ldap_config
        from app.directory_schedule import DirectorySchedule

        schedule = DirectorySchedule(
            ldap_config(assistant.settings), assistant.users, assistant.settings.ldap_sync_minutes * 60
        ).start()
    sources = None
    if assistant.settings.source_schedule:  # due source syncs (app.source_schedule); safe beside `sparq ui`
        from app.source_schedule import SourceSchedule
        from app.sources import service_for

        sources = SourceSchedule(service_for(assistant), poll_s=assistant.settings.source_poll_seconds).start()
    typer.echo(f"sparq: serving the API on http://{host}:{port} (schema at /openapi.json)")
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again: with the default handler that
    # kills the process before the `finally` below stops the schedulers and flushes the index; exit instead.
    signal.signal(signal.SIGTERM, _exit_after_shutdown)
    try:
        # No access log: request lines are enough for a reverse proxy to log, and ours would add nothing.
        uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
    finally:
        if sources is not None:
            sources.stop()
        if schedule is not None:
            schedule.stop()
        assistant.close()


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _keys(assistant: Assistant) -> ApiKeys:
    return ApiKeys(assistant.engine, assistant.users)


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", "-u", help="The user the key acts as.")],
    name: Annotated[str, typer.Option("--name", help="What the key is for (e.g. portal).")] = "",
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime such as 90d, 12h, 30m.")] = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    with Assistant() as assistant:
        try:
            info, key = _keys(assistant).create(
                user, name=name, expires_in=parse_duration(expires) if expires else None
            )
        except ApiKeyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise SystemExit(2) from None
    typer.echo(key)
    typer.echo(
        f"key {info.id} for {info.user}"
        + (f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ", no expiry")
        + ". It is shown only now.",
        err=True,
    )


@keys_app.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List keys (never the keys themselves: id, user, name, prefix, dates)."""
    with Assistant() as assistant:
        rows = _keys(assistant).list(user)
    if as_json:
        _print_json([vars(r) for r in rows])
        return
    for r in rows:
        state = (
            "revoked" if r.revoked_at else (f"expires {r.expires_at:%Y-%m-%d}" if r.expires_at else "active")
        )
        typer.echo(f"{r.id:>5}  {r.user:<20} {r.name:<20} {r.prefix}…  {state}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="The id from `sparq keys list`.")]) -> None:
    """Revoke a key: it stops working at once."""
    with Assistant() as assistant:
        try:
            info = _keys(assistant).revoke(key_id)
        except ApiKeyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise SystemExit(2) from None
    typer.echo(f"revoked key {info.id} of {info.user}")
