"""Pick an engine from configuration; optional dependencies are imported only by the engine used."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model.base import EngineRequest, LLMEngine, ModelError

# Backend name -> the module whose `build(EngineRequest)` makes its engine, imported only when chosen (an
# optional dependency loads only for the engine used). A new engine is one module plus one line here.
ENGINES: dict[str, str] = {
    "llamacpp": "model.llamacpp_engine",
    "ik_llama": "model.ik_llama_engine",
    "transformers": "model.transformers_engine",
    "openai": "model.openai_engine",
}
BACKENDS = tuple(ENGINES)
# Seconds a remote (openai) engine waits for the server. app.config.Settings uses this same default for
# SPARQ_LLM_TIMEOUT_S, so the CLI/UI and `engine_from_env` configure one engine the same way.
DEFAULT_LLM_TIMEOUT_S = 120.0


def create_engine(
    backend: str,
    model: str | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout_s: float = DEFAULT_LLM_TIMEOUT_S,
    n_threads: int | None = None,
    **opts: Any,
) -> LLMEngine:
    """Build the engine for ``backend``.

    * ``llamacpp``: ``model`` is a GGUF path; ``None`` means sparq's embedded default MoE
      (built on first use under ``opts['data_dir']`` or $SPARQ_DATA_DIR). opts: n_ctx, top_k, n_batch,
      repack_weights, reuse_prefix.
    * ``ik_llama``: the same GGUF files and options through ik_llama.cpp (optional extra ``ik``), plus
      fused_moe, run_time_repack, flash_attn.
    * ``transformers``: ``model`` is a checkpoint directory. opts: device, dtype, top_k, context_window.
    * ``openai``: ``model`` is the served model name, ``base_url`` the server. opts: context_window and
      the architecture for modelled accounting (n_layers, hidden_size, n_experts, top_k, ...).
    """
    backend = (backend or "").strip().lower()
    module_name = ENGINES.get(backend)
    if module_name is None:
        raise ModelError(f"unknown LLM backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    build: Callable[[EngineRequest], LLMEngine] = importlib.import_module(module_name).build
    return build(EngineRequest(model, base_url, api_key, timeout_s, n_threads, dict(opts)))


def configured_engine(
    backend: str,
    model: str | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout_s: float = DEFAULT_LLM_TIMEOUT_S,
    n_threads: int | None = None,
    context_window: int | None = None,
    top_k: int | None = None,
    data_dir: Path | str | None = None,
    progress: Any = None,
    **opts: Any,
) -> LLMEngine:
    """The engine for sparq's model settings (SPARQ_LLM_*), mapped to each backend's own options.

    The one path from configuration to an engine: `app.Assistant.llm` (via Settings) and `engine_from_env`
    both come here, so a setting means the same thing on either. ``progress(message, fraction)`` reports the
    default model's build (llamacpp or ik_llama with no model)."""
    backend = (backend or "").strip().lower()
    if backend in ("llamacpp", "ik_llama"):
        if data_dir is not None:
            opts["data_dir"] = data_dir
        if progress is not None:
            opts["progress"] = progress
        if context_window:
            opts["n_ctx"] = context_window
    elif context_window:
        opts["context_window"] = context_window
    if top_k:
        opts["top_k"] = top_k
    return create_engine(
        backend, model, base_url=base_url, api_key=api_key, timeout_s=timeout_s, n_threads=n_threads, **opts
    )


def _env_int(env: Any, name: str) -> int | None:
    value = env.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ModelError(f"{name}={value!r} is not a whole number") from None


def engine_from_env(**opts: Any) -> LLMEngine:
    """The engine the SPARQ_LLM_* environment configures, read with the names and defaults of
    `app.config.Settings`: SPARQ_LLM_BACKEND, SPARQ_LLM_MODEL, SPARQ_LLM_BASE_URL, SPARQ_LLM_API_KEY,
    SPARQ_LLM_TIMEOUT_S, SPARQ_LLM_THREADS, SPARQ_LLM_TOP_K, SPARQ_LLM_CONTEXT_WINDOW, SPARQ_DATA_DIR.
    Keyword arguments win over the environment."""
    env = os.environ
    timeout = env.get("SPARQ_LLM_TIMEOUT_S")
    try:
        timeout_s = float(timeout) if timeout else DEFAULT_LLM_TIMEOUT_S
    except ValueError:
        raise ModelError(f"SPARQ_LLM_TIMEOUT_S={timeout!r} is not a number of seconds") from None
    settings: dict[str, Any] = {
        "base_url": env.get("SPARQ_LLM_BASE_URL") or None,
        "api_key": env.get("SPARQ_LLM_API_KEY") or None,
        "timeout_s": timeout_s,
        "n_threads": _env_int(env, "SPARQ_LLM_THREADS"),
        "context_window": _env_int(env, "SPARQ_LLM_CONTEXT_WINDOW"),
        "top_k": _env_int(env, "SPARQ_LLM_TOP_K"),
        "data_dir": env.get("SPARQ_DATA_DIR") or "sparq-data",
    }
    settings.update(opts)
    return configured_engine(
        env.get("SPARQ_LLM_BACKEND", "llamacpp"), env.get("SPARQ_LLM_MODEL") or None, **settings
    )
