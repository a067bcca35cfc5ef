"""`sparq users ...`: the people who may sign in to the web app, by hand or from the LDAP directory."""

from __future__ import annotations

from typing import Annotated

import typer

from app.assistant import Assistant
from app.cli.common import comma_list, fail, print_json
from app.cli.directory import ldap_config
from app.directory_sync import DirectoryError, sync_ldap
from app.users import ROLES, UserError

users_app = typer.Typer(no_args_is_help=True, help="People who may sign in to the web app.")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ -).")],
    role: Annotated[str, typer.Option("--role", "-r", help=f"One of: {', '.join(ROLES)}.")] = "employee",
    groups: Annotated[str | None, typer.Option("--groups", "-g", help="Comma-separated groups.")] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="SPARQ_NEW_USER_PASSWORD",
            help="Password (at least 8 characters); prompted for when omitted.",
        ),
    ] = None,
) -> None:
    """Create a user who can sign in to the web app."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with Assistant() as assistant:
        try:
            user = assistant.users.add(name, role=role, groups=comma_list(groups), password=password)
        except UserError as exc:
            raise fail(str(exc)) from None
    typer.echo(f"created {user.role} {user.name!r} (groups: {', '.join(user.groups) or 'none'})")


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List users with their roles and groups (never passwords)."""
    with Assistant() as assistant:
        users = assistant.users.list()
    if as_json:
        print_json([{"name": u.name, "role": u.role, "groups": u.groups} for u in users])
        return
    if not users:
        typer.echo("no users")
    for u in users:
        typer.echo(f"{u.name:<24} {u.role:<9} {', '.join(u.groups)}")


@users_app.command("sync-ldap")
def users_sync_ldap(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing.")
    ] = False,
) -> None:
    """Create, regroup and disable users from the LDAP / Active Directory server in SPARQ_LDAP_*."""
    with Assistant() as assistant:
        try:
            plan = sync_ldap(ldap_config(assistant.settings), assistant.users, dry_run=dry_run)
        except DirectoryError as exc:
            raise fail(str(exc)) from None
    for line in plan.lines():
        typer.echo(line)
    verb = "would change" if dry_run else "changed"
    typer.echo(f"{len(plan.lines())} {verb}, {plan.unchanged} unchanged" + (" (dry run)" if dry_run else ""))


def register(cli: typer.Typer) -> None:
    """Add the `users` group to the root app."""
    cli.add_typer(users_app, name="users")
