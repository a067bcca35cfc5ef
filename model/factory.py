"""Pick an engine from configuration; optional dependencies are imported only by the engine used."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from model.base import LLMEngine, ModelError

BACKENDS = ("llamacpp", "transformers", "openai")


def create_engine(
    backend: str,
    model: str | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 60.0,
    n_threads: int | None = None,
    **opts: Any,
) -> LLMEngine:
    """Build the engine for ``backend``.

    * ``llamacpp``: ``model`` is a GGUF path; ``None`` means sparq's embedded default MoE
      (built on first use under ``opts['data_dir']`` or $SPARQ_DATA_DIR). opts: n_ctx, top_k, n_batch.
    * ``transformers``: ``model`` is a checkpoint directory. opts: device, dtype, top_k, context_window.
    * ``openai``: ``model`` is the served model name, ``base_url`` the server. opts: context_window and
      the architecture for modelled accounting (n_layers, hidden_size, n_experts, top_k, ...).
    """
    backend = (backend or "").strip().lower()
    if backend == "llamacpp":
        from model.llamacpp_engine import LlamaCppEngine

        if model is None:
            from model.default_model import ensure_default_model

            data_dir = Path(opts.pop("data_dir", None) or os.environ.get("SPARQ_DATA_DIR", "sparq-data"))
            model = str(ensure_default_model(data_dir, progress=opts.pop("progress", None)))
        opts.pop("data_dir", None)
        opts.pop("progress", None)
        return LlamaCppEngine(model, n_threads=n_threads, **opts)
    if backend == "transformers":
        from model.transformers_engine import TransformersEngine

        if model is None:
            raise ModelError("backend 'transformers' needs a checkpoint directory (SPARQ_LLM_MODEL)")
        return TransformersEngine(model, n_threads=n_threads, **opts)
    if backend == "openai":
        from model.openai_engine import OpenAIEngine

        return OpenAIEngine(model or "", base_url=base_url or "", api_key=api_key, timeout_s=timeout_s, **opts)
    raise ModelError(f"unknown LLM backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def engine_from_env(**opts: Any) -> LLMEngine:
    """SPARQ_LLM_BACKEND / SPARQ_LLM_MODEL / SPARQ_LLM_BASE_URL / SPARQ_LLM_API_KEY / SPARQ_LLM_TIMEOUT."""
    env = os.environ
    return create_engine(
        env.get("SPARQ_LLM_BACKEND", "llamacpp"),
        env.get("SPARQ_LLM_MODEL") or None,
        base_url=env.get("SPARQ_LLM_BASE_URL") or None,
        api_key=env.get("SPARQ_LLM_API_KEY") or None,
        timeout_s=float(env.get("SPARQ_LLM_TIMEOUT", "60")),
        **opts,
    )
