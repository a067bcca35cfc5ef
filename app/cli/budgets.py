"""`sparq budgets ...`: per-user and per-group spending limits, checked before every answer."""

from __future__ import annotations

from typing import Annotated

import typer

from app.assistant import Assistant
from app.cli.common import fail, print_json
from app.costs.budgets import BudgetError

budgets_app = typer.Typer(no_args_is_help=True, help="Limits on what a user's or group's queries may cost.")

_LIMITS = {
    "usd_per_day": ("usd", "day"),
    "usd_per_month": ("usd", "month"),
    "tokens_per_day": ("tokens", "day"),
    "tokens_per_month": ("tokens", "month"),
    "joules_per_day": ("joules", "day"),
    "joules_per_month": ("joules", "month"),
}


@budgets_app.command("set")
def budgets_set(
    user: Annotated[str | None, typer.Option("--user", "-u", help="A user's own budget.")] = None,
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="A group's budget (its members together).")
    ] = None,
    usd_per_day: Annotated[float | None, typer.Option("--usd-per-day")] = None,
    usd_per_month: Annotated[float | None, typer.Option("--usd-per-month")] = None,
    tokens_per_day: Annotated[float | None, typer.Option("--tokens-per-day")] = None,
    tokens_per_month: Annotated[float | None, typer.Option("--tokens-per-month")] = None,
    joules_per_day: Annotated[float | None, typer.Option("--joules-per-day")] = None,
    joules_per_month: Annotated[float | None, typer.Option("--joules-per-month")] = None,
) -> None:
    """Set one or more limits, e.g. `sparq budgets set --group sales --usd-per-month 20`."""
    if (user is None) == (group is None):
        raise fail("give exactly one of --user or --group")
    given = {k: v for k, v in locals().items() if k in _LIMITS and v is not None}
    if not given:
        raise fail("give at least one limit, e.g. --usd-per-month 20")
    scope, subject = ("user", user) if user is not None else ("group", group)
    with Assistant() as assistant:
        if scope == "user" and assistant.users.get(subject or "") is None:
            raise fail(f"unknown user {subject!r}")
        for key, value in given.items():
            metric, period = _LIMITS[key]
            try:
                info = assistant.budgets.set(scope, subject or "", metric, period, float(value))
            except BudgetError as exc:
                raise fail(str(exc)) from None
            typer.echo(f"budget {info.id}: {info.describe()}")


@budgets_app.command("list")
def budgets_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every budget."""
    with Assistant() as assistant:
        rows = assistant.budgets.list()
    if as_json:
        print_json([vars(r) for r in rows])
        return
    for r in rows:
        typer.echo(f"{r.id:>4}  {r.describe()}")


@budgets_app.command("remove")
def budgets_remove(
    budget_id: Annotated[int, typer.Argument(help="The id from `sparq budgets list`.")],
) -> None:
    """Remove a budget."""
    with Assistant() as assistant:
        try:
            assistant.budgets.remove(budget_id)
        except BudgetError as exc:
            raise fail(str(exc)) from None
    typer.echo(f"removed budget {budget_id}")


def register(cli: typer.Typer) -> None:
    """Add the `budgets` group to the root app."""
    cli.add_typer(budgets_app, name="budgets")
