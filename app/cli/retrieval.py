"""`sparq search`: the passages a user may read that best match a query, as the retriever ranks them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant
from app.cli.common import comma_list, print_json
from retrieval.filters import SearchFilters


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Search as this user (default: the operator).")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, max=1000, help="How many passages.")] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Comma-separated collections.")
    ] = None,
    path_prefix: Annotated[
        str | None, typer.Option("--path-prefix", help="Only documents under this path.")
    ] = None,
    doc_type: Annotated[
        str | None, typer.Option("--type", help="Comma-separated extensions, e.g. pdf,docx.")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, dense or keyword.")] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Find the passages that best match QUERY, among those the user may read."""
    filters = SearchFilters(
        collections=tuple(comma_list(collection)),
        path_prefix=path_prefix,
        extensions=tuple(comma_list(doc_type)),
    )
    with Assistant() as assistant:
        hits = assistant.search(query, user=user, k=k, filters=None if filters.empty else filters, mode=mode)
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    if not hits:
        typer.echo("no matching passages")
    for h in hits:
        where = ", ".join(
            part
            for part in (
                f"page {h.page}" if h.page else "",
                f"slide {h.slide}" if h.slide else "",
                f"sheet {h.sheet}" if h.sheet else "",
                h.heading_path or "",
            )
            if part
        )
        scores = " ".join(
            f"{name}={value:.4f}"
            for name, value in (
                ("fused", h.score_fused),
                ("dense", h.score_dense),
                ("keyword", h.score_keyword),
            )
            if value is not None
        )
        typer.echo(
            f"{h.rank:3}. [{h.collection}] {h.title or Path(h.path).name}  {h.path}"
            + (f"  ({where})" if where else "")
        )
        typer.echo(f"     {scores}")
        snippet = " ".join(h.text.split())
        typer.echo(f"     {snippet[:300]}{'…' if len(snippet) > 300 else ''}")


def register(cli: typer.Typer) -> None:
    """Add `search` to the root app."""
    cli.command()(search)
