"""`sparq ask`, `sparq costs`, `sparq model ...` and `sparq eval qa` (registered by importing this module)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from app.assistant import Assistant, SparqError
from app.cli import _print_json, cli

model_app = typer.Typer(no_args_is_help=True, help="The local MoE model: build the default, show what is loaded.")
cli.add_typer(model_app, name="model")


@cli.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer from your documents.")],
    user: Annotated[str | None, typer.Option(help="Ask as this user (their groups decide what is read).")] = None,
    collection: Annotated[list[str] | None, typer.Option("--collection", "-c", help="Restrict to collections.")] = None,
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
        _print_json(answer.to_dict())
        return
    if answer.status == "ok" and answer.text.strip() != "".join(streamed).strip():
        # Citations were checked and added after the stream: the answer as recorded, with its sources.
        typer.echo(f"with citations checked: {answer.text}")
    if answer.removed_citations:
        typer.echo(f"(removed citations to passages that were not given: {answer.removed_citations})")
    if answer.unsupported_citations:
        typer.echo(f"(removed citations whose passage does not bear the sentence out: {answer.unsupported_citations})")
    for c in answer.citations:
        where = f", {c.location}" if c.location else ""
        added = "  (cited by sparq: the model did not cite it)" if c.attributed else ""
        typer.echo(f"  [{c.ref}] {c.title or Path(c.path).name}{where}  ({c.path}){added}")
    typer.echo(answer.cost.summary_line())


@cli.command()
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
        _print_json([r.to_dict() for r in rows])
        return
    if not rows:
        typer.echo("no queries logged yet")
    typer.echo(f"{by:24} {'queries':>8} {'tokens':>10} {'energy J':>10} {'cost $':>12} {'cloud $':>12} {'saving':>7}")
    for r in rows:
        typer.echo(
            f"{r.key[:24]:24} {r.queries:8} {r.prompt_tokens + r.completion_tokens:10} {r.energy_joules:10.1f} "
            f"{r.cost_usd:12.6f} {r.cloud_cost_usd:12.6f} {r.sparsity_saving:7.1%}"
        )


@model_app.command("build-default")
def build_default(
    from_documents: Annotated[bool, typer.Option(
        "--from-documents",
        help="Fit the routers on your ingested documents (in the answer prompt) instead of the bundled text; "
        "the result is kept beside the default, as sparq-moe-<source>-documents.")] = False,
    collection: Annotated[list[str] | None, typer.Option(
        "--collection", "-c", help="With --from-documents: sample only these collections.")] = None,
    tokens: Annotated[int | None, typer.Option(
        help="With --from-documents: calibration tokens (default 4096); more fits the routers better, builds "
        "slower.")] = None,
    refit: Annotated[bool, typer.Option(
        "--refit", help="Also refit the down projections to the routers' choices: better short answers with "
        "fewer experts per token (26 instead of 35 on the default source for 90% of the dense model's F1 with "
        "one paragraph as context), but worse answers over several retrieved passages, and no longer equal to "
        "the dense model with every expert active. Kept beside the default as sparq-moe-<source>-refit "
        "(-documents-refit with --from-documents).")] = False,
    if_used: Annotated[bool, typer.Option(
        "--if-used", help="Build only when the configuration answers with the embedded default (backend llamacpp, "
        "no SPARQ_LLM_MODEL); otherwise do nothing. scripts/run.sh uses it before starting the UI.")] = False,
) -> None:
    """Build the embedded default sparse MoE from the shipped dense model (once; cached in the data dir)."""
    from tqdm import tqdm

    from model.base import ModelError
    from model.moe.build import DEFAULT_CALIB_TOKENS, REFIT_LAMBDA, build_default_model, ensure_default_model
    from model.moe.source_weights import default_source

    if (collection or tokens is not None) and not from_documents:
        raise typer.BadParameter("--collection and --tokens apply only with --from-documents")
    if if_used and (from_documents or refit):
        raise typer.BadParameter("--if-used applies only to the plain default build")
    assistant = Assistant()
    settings = assistant.settings
    if if_used and (settings.llm_backend not in ("llamacpp", "ik_llama") or settings.llm_model):
        assistant.close()
        typer.echo(f"the configured model (backend {settings.llm_backend}, model {settings.llm_model or '-'}) is "
                   "not the embedded default: nothing to build")
        return
    n_tokens = tokens or DEFAULT_CALIB_TOKENS
    refit_lambda = REFIT_LAMBDA if refit else None
    if n_tokens < 256:
        raise typer.BadParameter("--tokens must be at least 256")
    bar = tqdm(total=100, unit="%", desc="build default MoE", file=sys.stderr)

    def progress(message: str, fraction: float) -> None:
        bar.n = int(fraction * 100)
        bar.set_postfix_str(message[:60])
        bar.refresh()

    try:
        if from_documents:
            from app.calibration import document_passages
            from model.moe.calibration import document_calibration_samples

            # the chunker counts tokens with the embedder's tokenizer: fetch a margin for the LLM's count
            text = document_passages(assistant.engine, collection, int(n_tokens * 1.5))
            if text.tokens < 256:
                raise ValueError(f"only {text.tokens} tokens of ingested text to calibrate on; at least 256 needed")
            path = build_default_model(
                settings.data_dir, source=default_source(), progress=progress, calib_tokens=n_tokens,
                calibration=document_calibration_samples(text.passages), calibration_id=text.fingerprint,
                variant="documents-refit" if refit else "documents", refit_lambda=refit_lambda,
            )
        elif refit:
            path = build_default_model(settings.data_dir, source=default_source(), progress=progress,
                                       refit_lambda=refit_lambda, variant="refit")
        else:
            path = ensure_default_model(settings.data_dir, progress=progress)
    except (ModelError, ValueError) as exc:
        raise SparqError(str(exc)) from exc
    finally:
        bar.close()
        assistant.close()
    if from_documents:
        import json

        captured = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))["calibration"]
        typer.echo(f"model calibrated on {captured.get('tokens_captured', n_tokens)} tokens of your documents "
                   f"(from {len(text.passages)} sampled passages) ready: {path}")
        typer.echo(f"use it with: SPARQ_LLM_MODEL={path}")
    elif refit:
        typer.echo(f"refitted model ready: {path}")
        typer.echo(f"use it with: SPARQ_LLM_MODEL={path}")
    else:
        typer.echo(f"default model ready: {path}")


@model_app.command("info")
def model_info(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Total and active parameters, experts, top-k and shared experts of the configured model."""
    from model.moe.info import describe_model

    settings = Assistant().settings
    info = describe_model(settings.data_dir, settings.llm_model)
    if as_json:
        _print_json(info)
        return
    for key, value in info.items():
        typer.echo(f"{key:28} {value}")


def _register_eval_qa() -> None:
    from app.cli_retrieval import eval_app

    @eval_app.command("qa")
    def eval_qa(
        squad: Annotated[Path, typer.Option("--squad", help="A SQuAD-format JSON file (SQuAD v1.1, CMRC 2018).")],
        limit: Annotated[int, typer.Option(help="Evaluate the first N questions.")] = 200,
        llm_model: Annotated[str | None, typer.Option(help="Override SPARQ_LLM_MODEL (e.g. the dense source GGUF).")] = None,
        store: Annotated[Path | None, typer.Option(
            "--store", help="Keep the scratch store here and reuse it (e.g. for the dense and the MoE run).")] = None,
        records: Annotated[Path | None, typer.Option(
            "--records", help="Append each answer to this JSON-lines file; a rerun resumes from it.")] = None,
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
        result = evaluate_qa(squad, limit=limit, settings=settings, store_dir=store, records_file=records,
                             progress=lambda n, total: bar.update(n - bar.n))
        bar.close()
        if as_json:
            _print_json(result)
            return
        for key, value in result.items():
            typer.echo(f"{key:30} {value}")


_register_eval_qa()


def _register_eval_feedback() -> None:
    from app.cli_retrieval import eval_app

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
            _print_json(result)
            return
        for key, value in result.items():
            if key != "rows":
                typer.echo(f"{key:20} {value}")


_register_eval_feedback()
