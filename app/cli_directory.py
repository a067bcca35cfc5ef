"""`sparq users sync-ldap`: users and groups from the company directory (see app.directory_sync)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.assistant import Assistant
from app.cli_ui import users_app
from app.config import Settings
from app.directory_sync import DirectoryError, LdapConfig, sync_ldap


def ldap_config(settings: Settings) -> LdapConfig:
    """The sync's configuration from SPARQ_LDAP_* settings; a clear error names what is missing."""
    missing = [
        name for name in ("ldap_url", "ldap_user_base", "ldap_group_base") if not getattr(settings, name)
    ]
    if missing:
        raise DirectoryError("set " + ", ".join(f"SPARQ_{m.upper()}" for m in missing) + " to sync from LDAP")
    password = settings.ldap_bind_password.get_secret_value() if settings.ldap_bind_password else None
    return LdapConfig(
        url=settings.ldap_url or "",
        bind_dn=settings.ldap_bind_dn,
        bind_password=password,
        user_base=settings.ldap_user_base or "",
        group_base=settings.ldap_group_base or "",
        user_filter=settings.ldap_user_filter,
        group_filter=settings.ldap_group_filter,
        name_attribute=settings.ldap_name_attribute,
        email_attribute=settings.ldap_email_attribute,
        group_name_attribute=settings.ldap_group_name_attribute,
        member_attribute=settings.ldap_member_attribute,
        start_tls=settings.ldap_start_tls,
        ca_file=settings.ldap_ca_file,
    )


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
            typer.echo(f"error: {exc}", err=True)
            raise SystemExit(2) from None
    for line in plan.lines():
        typer.echo(line)
    verb = "would change" if dry_run else "changed"
    typer.echo(f"{len(plan.lines())} {verb}, {plan.unchanged} unchanged" + (" (dry run)" if dry_run else ""))
