"""`sparq` on the command line: the admin's and developer's entry point.

This root only assembles the command modules of this package; each exposes `register(cli)` and none imports
the root. The order below is the order of `sparq --help` (its commands first, then its groups).
"""

from __future__ import annotations

import logging

import typer

from app.assistant import SparqError
from app.cli import (
    admin,
    ask,
    budgets,
    evaluation,
    feedback,
    ingest,
    keys,
    model,
    retrieval,
    serve,
    sources,
    ui,
    users,
)

cli = typer.Typer(
    add_completion=False, no_args_is_help=True, help="sparq: on-prem answers from your documents."
)

for _module in (ingest, admin, ask, retrieval, ui, feedback, serve):  # top-level commands
    _module.register(cli)
for _module in (model, evaluation, budgets, users, keys, sources):  # command groups
    _module.register(cli)


def main() -> None:
    """The `sparq` console script: a SparqError is one line on stderr and exit status 2, not a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    try:
        cli()
    except SparqError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except ValidationError as exc:  # a wrong SPARQ_* setting: name it and its problem, no traceback
        for problem in exc.errors():
            name = "SPARQ_" + "_".join(str(part) for part in problem["loc"]).upper()
            typer.echo(f"error: setting {name}: {problem['msg']}", err=True)
        raise SystemExit(2) from None
