"""`sparq model ...`: build the embedded default sparse MoE, show what the configured model is."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from app.assistant import Assistant, SparqError
from app.cli.common import print_json

model_app = typer.Typer(
    no_args_is_help=True, help="The local MoE model: build the default, show what is loaded."
)


@model_app.command("build-default")
def build_default(
    from_documents: Annotated[
        bool,
        typer.Option(
            "--from-documents",
            help="Fit the routers on your ingested documents (in the answer prompt) instead of the bundled text; "
            "the result is kept beside the default, as sparq-moe-<source>-documents.",
        ),
    ] = False,
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="With --from-documents: sample only these collections."),
    ] = None,
    tokens: Annotated[
        int | None,
        typer.Option(
            help="With --from-documents: calibration tokens (default: as many as the bundled build); more fits the "
            "routers better, builds slower."
        ),
    ] = None,
    refit: Annotated[
        bool,
        typer.Option(
            "--refit",
            help="Also refit the down projections to the routers' choices, served at the top-k they were fitted "
            "to (20 of 30 on the default source): better short answers with one paragraph as context on the "
            "earlier 61-expert layout, but worse answers over several retrieved passages every time it was "
            "measured, and no longer equal to the dense model with every expert active. Kept beside the default "
            "as sparq-moe-<source>-refit (-documents-refit with --from-documents).",
        ),
    ] = False,
    if_used: Annotated[
        bool,
        typer.Option(
            "--if-used",
            help="Build only when the configuration answers with the embedded default (backend llamacpp, "
            "no SPARQ_LLM_MODEL); otherwise do nothing. scripts/run.sh uses it before starting the UI.",
        ),
    ] = False,
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
        typer.echo(
            f"the configured model (backend {settings.llm_backend}, model {settings.llm_model or '-'}) is "
            "not the embedded default: nothing to build"
        )
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
                raise ValueError(
                    f"only {text.tokens} tokens of ingested text to calibrate on; at least 256 needed"
                )
            path = build_default_model(
                settings.data_dir,
                source=default_source(),
                progress=progress,
                calib_tokens=n_tokens,
                calibration=document_calibration_samples(text.passages),
                calibration_id=text.fingerprint,
                variant="documents-refit" if refit else "documents",
                refit_lambda=refit_lambda,
            )
        elif refit:
            path = build_default_model(
                settings.data_dir,
                source=default_source(),
                progress=progress,
                refit_lambda=refit_lambda,
                variant="refit",
            )
        else:
            path = ensure_default_model(settings.data_dir, progress=progress)
    except (ModelError, ValueError) as exc:
        raise SparqError(str(exc)) from exc
    finally:
        bar.close()
        assistant.close()
    if from_documents:
        captured = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))["calibration"]
        typer.echo(
            f"model calibrated on {captured.get('tokens_captured', n_tokens)} tokens of your documents "
            f"(from {len(text.passages)} sampled passages) ready: {path}"
        )
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
        print_json(info)
        return
    for key, value in info.items():
        typer.echo(f"{key:28} {value}")


def register(cli: typer.Typer) -> None:
    """Add the `model` group to the root app."""
    cli.add_typer(model_app, name="model")
