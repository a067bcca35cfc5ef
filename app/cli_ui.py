"""`sparq ui` and `sparq users ...` (registered on the main CLI by importing this module)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant
from app.cli import _groups, _print_json, cli
from app.source_schedule import UI_SCHEDULE_ENV
from app.users import ROLES, UserError

ENTRY = Path(__file__).resolve().parent / "ui" / "main.py"
SSO_ENTRY = ENTRY.with_name("sso_app.py")  # the same pages behind Streamlit's ASGI app, with OpenID Connect

users_app = typer.Typer(no_args_is_help=True, help="People who may sign in to the web app.")
cli.add_typer(users_app, name="users")


@cli.command()
def ui(
    port: Annotated[int, typer.Option("--port", "-p", envvar="SPARQ_UI_PORT", help="Port to serve on.")] = 8501,
    address: Annotated[str, typer.Option("--address", envvar="SPARQ_UI_ADDRESS",
                                         help="Interface to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
) -> None:
    """Start the web app (Streamlit, headless) on ADDRESS:PORT; with SPARQ_OIDC_ISSUER, with single sign-on."""
    from app.oidc import cookie_secret
    from app.ui.session import ensure_admin

    with Assistant() as assistant:  # first run: create the admin here, where the operator reads the console
        ensure_admin(assistant, announce=typer.echo)
        settings = assistant.settings
        max_upload_mb = settings.max_file_mb
        if settings.oidc_enabled:
            cookie_secret(settings)  # made once here, so replicas started later share it
    entry = SSO_ENTRY if settings.oidc_enabled else ENTRY
    typer.echo(f"sparq: serving the web app on http://{address}:{port}"
               + (f" (single sign-on with {settings.oidc_issuer})" if settings.oidc_enabled else ""))
    command = [
        sys.executable, "-m", "streamlit", "run", str(entry),
        "--server.headless=true", f"--server.port={port}", f"--server.address={address}",
        "--browser.gatherUsageStats=false", "--client.showErrorDetails=none",
        "--client.toolbarMode=viewer", "--server.fileWatcherType=none", f"--server.maxUploadSize={max_upload_mb}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ENTRY.parents[2]), os.environ.get("PYTHONPATH")]))}
    env[UI_SCHEDULE_ENV] = "1"  # this server process runs the source scheduler (app.ui.main)
    # Replace this process with Streamlit, so a supervisor's signals (stop, restart) reach the server itself.
    os.execve(sys.executable, command, env)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ -).")],
    role: Annotated[str, typer.Option("--role", "-r", help=f"One of: {', '.join(ROLES)}.")] = "employee",
    groups: Annotated[str | None, typer.Option("--groups", "-g", help="Comma-separated groups.")] = None,
    password: Annotated[str | None, typer.Option(
        "--password", envvar="SPARQ_NEW_USER_PASSWORD",
        help="Password (at least 8 characters); prompted for when omitted.")] = None,
) -> None:
    """Create a user who can sign in to the web app."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with Assistant() as assistant:
        try:
            user = assistant.users.add(name, role=role, groups=_groups(groups), password=password)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(f"created {user.role} {user.name!r} (groups: {', '.join(user.groups) or 'none'})")


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List users with their roles and groups (never passwords)."""
    with Assistant() as assistant:
        users = assistant.users.list()
    if as_json:
        _print_json([{"name": u.name, "role": u.role, "groups": u.groups} for u in users])
        return
    if not users:
        typer.echo("no users")
    for u in users:
        typer.echo(f"{u.name:<24} {u.role:<9} {', '.join(u.groups)}")
