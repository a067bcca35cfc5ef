"""`sparq ask` and `sparq costs`: answers from the documents, and what they cost."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant, SparqError
from app.cli.common import print_json


def ask(
    question: Annotated[str, typer.Argument(help="The question to answer from your documents.")],
    user: Annotated[
        str | None, typer.Option(help="Ask as this user (their groups decide what is read).")
    ] = None,
    collection: Annotated[
        list[str] | None, typer.Option("--collection", "-c", help="Restrict to collections.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full answer record as JSON.")] = False,
) -> None:
    """Answer a question with citations, and show what it cost."""
    from app.ask import AskError

    streamed: list[str] = []
    with Assistant() as assistant:
        try:
            if as_json:
                answer = assistant.ask(question, user=user, collections=collection)
            else:
                answer = None
                for event in assistant.ask(question, user=user, collections=collection, stream=True):
                    if isinstance(event, str):
                        streamed.append(event)
                        sys.stdout.write(event)
                        sys.stdout.flush()
                    else:
                        answer = event
                sys.stdout.write("\n")
        except AskError as exc:
            raise SparqError(str(exc)) from exc
    assert answer is not None
    if as_json:
        print_json(answer.to_dict())
        return
    if answer.status == "ok" and answer.text.strip() != "".join(streamed).strip():
        # Citations were checked and added after the stream: the answer as recorded, with its sources.
        typer.echo(f"with citations checked: {answer.text}")
    if answer.removed_citations:
        typer.echo(f"(removed citations to passages that were not given: {answer.removed_citations})")
    if answer.unsupported_citations:
        typer.echo(
            f"(removed citations whose passage does not bear the sentence out: {answer.unsupported_citations})"
        )
    for c in answer.citations:
        where = f", {c.location}" if c.location else ""
        added = "  (cited by sparq: the model did not cite it)" if c.attributed else ""
        typer.echo(f"  [{c.ref}] {c.title or Path(c.path).name}{where}  ({c.path}){added}")
    typer.echo(answer.cost.summary_line())


def costs(
    by: Annotated[str, typer.Option("--by", help="user, collection, day, model or status")] = "user",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What the queries cost, rolled up."""
    from app.costs.reports import rollup

    with Assistant() as assistant:
        try:
            rows = rollup(assistant.engine, by)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        typer.echo("no queries logged yet")
    typer.echo(
        f"{by:24} {'queries':>8} {'tokens':>10} {'energy J':>10} {'cost $':>12} {'cloud $':>12} {'saving':>7}"
    )
    for r in rows:
        typer.echo(
            f"{r.key[:24]:24} {r.queries:8} {r.prompt_tokens + r.completion_tokens:10} {r.energy_joules:10.1f} "
            f"{r.cost_usd:12.6f} {r.cloud_cost_usd:12.6f} {r.sparsity_saving:7.1%}"
        )


def register(cli: typer.Typer) -> None:
    """Add `ask` and `costs` to the root app."""
    cli.command()(ask)
    cli.command()(costs)
