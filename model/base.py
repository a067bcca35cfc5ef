"""The engine contract every backend (llama.cpp, transformers, OpenAI-compatible) implements.

The rest of sparq only talks to :class:`LLMEngine`, so the answer path does not care whether
the sparse MoE runs in-process on a CPU or behind a vLLM cluster.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Accounting = Literal["measured", "modelled"]
# What each backend is called in the cost record when an engine does not say more about itself.
ENGINE_NAMES = {
    "llamacpp": "llama.cpp",
    "ik_llama": "ik_llama.cpp",
    "transformers": "transformers",
    "openai": "openai-compatible",
}


class ModelError(RuntimeError):
    """Base class for every model-layer failure, so callers can catch one type."""


class ModelNotFound(ModelError):
    """The model file/directory/served name does not exist or is not readable."""


class UnsupportedArchitecture(ModelError):
    """The checkpoint is readable but its architecture is not one sparq can run/account."""


class ContextTooLong(ModelError):
    """Prompt plus the requested completion does not fit the model's context window."""

    def __init__(self, n_tokens: int, window: int, max_tokens: int = 0) -> None:
        self.n_tokens = n_tokens
        self.window = window
        self.max_tokens = max_tokens
        super().__init__(
            f"prompt of {n_tokens} tokens + max_tokens={max_tokens} exceeds the model's context "
            f"window of {window} tokens; shorten the context (sparq never truncates silently)"
        )


class RemoteEngineError(ModelError):
    """An OpenAI-compatible server was unreachable, too slow or answered with an error."""


@dataclass(frozen=True)
class ModelInfo:
    """Static facts about the loaded model, used for prompt budgeting and cost accounting."""

    name: str
    backend: str
    architecture: str
    context_window: int
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    n_moe_layers: int
    n_experts: int
    n_experts_used: int
    n_shared_experts: int
    expert_ffn_size: int
    shared_ffn_size: int
    dense_ffn_size: int
    total_params: int
    active_params_per_token: int
    tied_embeddings: bool = False
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_moe(self) -> bool:
        """Whether the model routes tokens to experts, which decides how its cost is counted."""
        return self.n_experts > 0 and self.n_moe_layers > 0

    def to_dict(self) -> dict[str, Any]:
        """The model info as plain data, for JSON answers and the cost record."""
        return asdict(self)


@dataclass
class GenerationStats:
    """Per-generation cost figures; ``accounting`` says whether experts were observed or assumed."""

    prompt_tokens: int
    completion_tokens: int
    prefill_seconds: float
    decode_seconds: float
    tokens_per_second: float
    expert_histogram: list[list[int]] | None
    active_params_per_token: float
    flops_prefill: float
    flops_decode: float
    dense_flops_prefill: float
    dense_flops_decode: float
    accounting: Accounting
    prefill_tokens_per_second: float = 0.0

    @property
    def flops_total(self) -> float:
        """Prefill plus decode FLOPs: the compute this generation actually cost."""
        return self.flops_prefill + self.flops_decode

    @property
    def dense_flops_total(self) -> float:
        """What the same generation would cost on a dense model of the same size, for the MoE saving."""
        return self.dense_flops_prefill + self.dense_flops_decode

    def to_dict(self) -> dict[str, Any]:
        """The stats as plain data, for JSON answers and the cost record."""
        return asdict(self)


@dataclass
class Generation:
    """A finished answer: the text plus what it cost."""

    text: str
    stats: GenerationStats
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        """The generation as plain data, its stats included."""
        return {"text": self.text, "finish_reason": self.finish_reason, "stats": self.stats.to_dict()}


@dataclass
class EngineRequest:
    """What the configuration asks of an engine; each engine module's `build(request)` turns it into one
    (model/factory.py maps the backend name to that module)."""

    model: str | None
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = 120.0
    n_threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def gguf_path(self) -> str:
        """The GGUF file to serve: the one named, else sparq's default MoE, built on first use under the
        `data_dir` option (or $SPARQ_DATA_DIR) with the `progress` option reporting the build."""
        if self.model is not None:
            return self.model
        from model.moe.build import ensure_default_model

        data_dir = Path(self.options.get("data_dir") or os.environ.get("SPARQ_DATA_DIR", "sparq-data"))
        return str(ensure_default_model(data_dir, progress=self.options.get("progress")))

    def engine_options(self) -> dict[str, Any]:
        """The options for the engine itself (`data_dir` and `progress` belong to the default build)."""
        return {k: v for k, v in self.options.items() if k not in ("data_dir", "progress")}


class LLMEngine(abc.ABC):
    """A chat model that streams text and reports tokens, timings and expert usage."""

    info: ModelInfo

    @property
    def engine_name(self) -> str:
        """The software that serves the answers (e.g. "llama.cpp (llama-cpp-python 0.3.36)"), which the cost
        record names: speed and cost figures belong to an engine build, not only to a model."""
        return ENGINE_NAMES.get(self.info.backend, self.info.backend)

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of raw text (no chat template)."""

    @abc.abstractmethod
    def count_chat_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens of the full templated prompt, including the assistant header."""

    @abc.abstractmethod
    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[str | Generation]:
        """Yield text pieces, then exactly one :class:`Generation` as the last item."""

    def generate(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Generation:
        """Non-streaming convenience: consume :meth:`stream` and return its Generation."""
        result: Generation | None = None
        for item in self.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop):
            if isinstance(item, Generation):
                if result is not None:
                    raise ModelError("engine yielded more than one Generation")
                result = item
        if result is None:
            raise ModelError("engine stream ended without a Generation")
        return result

    def check_fits(self, n_prompt: int, max_tokens: int) -> None:
        """Raise ContextTooLong before any compute if the request cannot fit."""
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if n_prompt + max_tokens > self.info.context_window:
            raise ContextTooLong(n_prompt, self.info.context_window, max_tokens)

    def close(self) -> None:  # noqa: B027 - optional hook, most engines have nothing to free
        """Free native resources; safe to call twice."""

    def __enter__(self) -> LLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
