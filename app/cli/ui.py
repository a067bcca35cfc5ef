"""`sparq ui`: the web app (Streamlit), started in place of this process."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant
from app.source_schedule import UI_SCHEDULE_ENV

ENTRY = Path(__file__).resolve().parents[1] / "ui" / "main.py"
SSO_ENTRY = ENTRY.with_name("sso_app.py")  # the same pages behind Streamlit's ASGI app, with OpenID Connect


def ui(
    port: Annotated[
        int, typer.Option("--port", "-p", envvar="SPARQ_UI_PORT", help="Port to serve on.")
    ] = 8501,
    address: Annotated[
        str,
        typer.Option(
            "--address",
            envvar="SPARQ_UI_ADDRESS",
            help="Interface to listen on (0.0.0.0 for every interface).",
        ),
    ] = "127.0.0.1",
) -> None:
    """Start the web app (Streamlit, headless) on ADDRESS:PORT; with SPARQ_OIDC_ISSUER, with single sign-on."""
    from app.oidc import cookie_secret
    from app.ui.bootstrap import ensure_admin

    with Assistant() as assistant:  # first run: create the admin here, where the operator reads the console
        ensure_admin(assistant.users, assistant.settings.data_dir, announce=typer.echo)
        settings = assistant.settings
        max_upload_mb = settings.max_file_mb
        if settings.oidc_enabled:
            cookie_secret(settings)  # made once here, so replicas started later share it
    entry = SSO_ENTRY if settings.oidc_enabled else ENTRY
    typer.echo(
        f"sparq: serving the web app on http://{address}:{port}"
        + (f" (single sign-on with {settings.oidc_issuer})" if settings.oidc_enabled else "")
    )
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(entry),
        "--server.headless=true",
        f"--server.port={port}",
        f"--server.address={address}",
        "--browser.gatherUsageStats=false",
        "--client.showErrorDetails=none",
        "--client.toolbarMode=viewer",
        "--server.fileWatcherType=none",
        f"--server.maxUploadSize={max_upload_mb}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ENTRY.parents[2]), os.environ.get("PYTHONPATH")])),
    }
    env[UI_SCHEDULE_ENV] = "1"  # this server process runs the source scheduler (app.ui.main)
    # Replace this process with Streamlit, so a supervisor's signals (stop, restart) reach the server itself.
    os.execve(sys.executable, command, env)


def register(cli: typer.Typer) -> None:
    """Add `ui` to the root app."""
    cli.command()(ui)
