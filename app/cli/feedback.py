"""`sparq feedback --export csv|json`: the employees' ratings of answers, with question, answer and cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant
from app.cli.common import fail
from app.feedback import FeedbackError, FeedbackLog, export


def feedback(
    export_format: Annotated[str, typer.Option("--export", help="csv or json.")] = "csv",
    rating: Annotated[str | None, typer.Option("--rating", help="Only up or only down.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only answers of this model.")] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Only this collection.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export feedback on answers (thumbs up/down and comments) as CSV or JSON."""
    with Assistant() as assistant:
        try:
            text = export(
                FeedbackLog(assistant.engine).records(rating=rating, model=model, collection=collection),
                export_format,
            )
        except FeedbackError as exc:
            raise fail(str(exc)) from None
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"feedback written to {output}")


def register(cli: typer.Typer) -> None:
    """Add `feedback` to the root app."""
    cli.command()(feedback)
