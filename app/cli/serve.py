"""`sparq serve`: the HTTP API, with the scheduled LDAP and source syncs beside it."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from app.assistant import Assistant


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
        from app.cli.directory import ldap_config
        from app.directory_schedule import DirectorySchedule

        schedule = DirectorySchedule(
            ldap_config(assistant.settings), assistant.users, assistant.settings.ldap_sync_minutes * 60
        ).start()
    sources = None
    if assistant.settings.source_schedule:  # due source syncs (app.source_schedule); safe beside `sparq ui`
        from app.source_schedule import SourceSchedule
        from app.sources import service_for

        sources = SourceSchedule(
            service_for(assistant), poll_s=assistant.settings.source_poll_seconds
        ).start()
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


def register(cli: typer.Typer) -> None:
    """Add `serve` to the root app."""
    cli.command()(serve)
