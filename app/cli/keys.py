"""`sparq keys ...`: API keys for `sparq serve`, each acting as one user (only a key's hash is stored)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.api_keys import ApiKeyError, ApiKeys, parse_duration
from app.assistant import Assistant
from app.cli.common import fail, print_json

keys_app = typer.Typer(no_args_is_help=True, help="API keys for `sparq serve`; each acts as one user.")


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
            raise fail(str(exc)) from None
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
        print_json([vars(r) for r in rows])
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
            raise fail(str(exc)) from None
    typer.echo(f"revoked key {info.id} of {info.user}")


def register(cli: typer.Typer) -> None:
    """Add the `keys` group to the root app."""
    cli.add_typer(keys_app, name="keys")
