"""What every command module shares: JSON output, comma-separated lists, and how a command fails."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer


def json_default(value: object) -> object:
    """Dates and paths as JSON strings; anything else is a bug in the caller, so it raises."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(data: object) -> None:
    """`--json` output: indented, non-ASCII kept readable."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=json_default))


def comma_list(value: str | None) -> list[str]:
    """`--groups a, b` (or collections, extensions) as a list; blanks dropped."""
    return [g.strip() for g in (value or "").split(",") if g.strip()]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: MESSAGE` on stderr and return the exit to raise (`raise fail(...) from None`)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
