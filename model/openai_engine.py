"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp server): the scale-out path.

Token usage comes from the server (``stream_options.include_usage``). Which experts ran is not
visible through the API, so expert accounting is *modelled* from the architecture passed in
the options (top-k etc.) and labelled as such.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Any, cast

from model.accounting import build_stats, estimate_total_params, nominal_active_params
from model.base import (
    EngineRequest,
    Generation,
    LLMEngine,
    ModelError,
    ModelInfo,
    ModelNotFound,
    RemoteEngineError,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

# ModelInfo fields a caller may pass as options (e.g. from the served model's config.json)
_ARCH_KEYS = {
    "architecture",
    "context_window",
    "n_layers",
    "hidden_size",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "vocab_size",
    "n_moe_layers",
    "n_experts",
    "n_experts_used",
    "n_shared_experts",
    "expert_ffn_size",
    "shared_ffn_size",
    "dense_ffn_size",
    "total_params",
    "tied_embeddings",
}
_ALIASES = {"top_k": "n_experts_used", "num_experts_per_tok": "n_experts_used", "num_experts": "n_experts"}


def _model_info(model: str, base_url: str, opts: dict[str, Any], server_window: int | None) -> ModelInfo:
    vals: dict[str, Any] = {
        "architecture": "remote",
        "context_window": 0,
        "n_layers": 0,
        "hidden_size": 0,
        "n_heads": 1,
        "n_kv_heads": 1,
        "head_dim": 0,
        "vocab_size": 0,
        "n_moe_layers": 0,
        "n_experts": 0,
        "n_experts_used": 0,
        "n_shared_experts": 0,
        "expert_ffn_size": 0,
        "shared_ffn_size": 0,
        "dense_ffn_size": 0,
        "total_params": 0,
        "tied_embeddings": False,
    }
    for k, v in opts.items():
        key = _ALIASES.get(k, k)
        if key in _ARCH_KEYS:
            vals[key] = v
    if vals["n_experts"] and not vals["n_moe_layers"]:
        vals["n_moe_layers"] = vals["n_layers"]
    if not vals["head_dim"] and vals["hidden_size"]:
        vals["head_dim"] = vals["hidden_size"] // max(vals["n_heads"], 1)
    window = vals["context_window"] or server_window
    if not window:
        raise ModelError(
            f"context window of {model!r} at {base_url} is unknown: pass context_window=... "
            "(sparq must know it to budget prompts; it never truncates silently)"
        )
    vals["context_window"] = int(window)
    info = ModelInfo(name=model, backend="openai", active_params_per_token=0, path=base_url, **vals)
    from dataclasses import replace

    if not info.total_params and info.hidden_size:
        info = replace(info, total_params=estimate_total_params(info))
    return replace(info, active_params_per_token=nominal_active_params(info))


class OpenAIEngine(LLMEngine):
    """Chat completions over HTTP with timeouts, streaming usage and modelled expert accounting."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        tokenizer: Any = None,
        **opts: Any,
    ) -> None:
        try:
            import openai
        except ImportError as exc:
            raise ModelError("backend 'openai' needs the openai package: pip install openai") from exc
        if not model:
            raise ModelNotFound("backend 'openai' needs a served model name (SPARQ_LLM_MODEL)")
        if not base_url:
            raise ModelError("backend 'openai' needs base_url (SPARQ_LLM_BASE_URL)")
        self._openai = openai
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.model = model
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key or "sparq-no-key", timeout=self.timeout_s, max_retries=0
        )
        self._tokenizer = tokenizer
        server_window = None if opts.get("context_window") else self._server_window()
        self.info = _model_info(model, self.base_url, opts, server_window)
        unknown = set(opts) - _ARCH_KEYS - set(_ALIASES) - {f.name for f in fields(ModelInfo)}
        if unknown:
            raise TypeError(f"unknown options for the openai backend: {sorted(unknown)}")

    def _server_window(self) -> int | None:
        """vLLM/SGLang advertise ``max_model_len`` on /v1/models; also checks the model is served."""
        try:
            models = self.client.models.list()
        except self._openai.APITimeoutError as exc:
            raise RemoteEngineError(
                f"LLM server at {self.base_url} did not answer within {self.timeout_s:g} s"
            ) from exc
        except self._openai.APIConnectionError as exc:
            raise RemoteEngineError(f"LLM server at {self.base_url} is unreachable: {exc}") from exc
        except self._openai.APIStatusError as exc:
            raise RemoteEngineError(
                f"LLM server at {self.base_url} answered {exc.status_code} on /models"
            ) from exc
        ids = [m.id for m in models.data]
        if self.model not in ids:
            raise ModelNotFound(f"model {self.model!r} is not served at {self.base_url} (served: {ids})")
        card = next(m for m in models.data if m.id == self.model)
        extra = getattr(card, "model_extra", None) or {}
        val = extra.get("max_model_len") or extra.get("context_length")
        return int(val) if val else None

    # ---- tokens -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of raw text: the local tokenizer, else the server's /tokenize, else a safe over-estimate."""
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False))
        n = self._server_tokenize(text)
        if n is not None:
            return n
        # no tokenizer anywhere: an upper bound (UTF-8 bytes / 3), never an under-count in practice
        return max(1, (len(text.encode("utf-8")) + 2) // 3)

    def _server_tokenize(self, text: str) -> int | None:
        """vLLM exposes POST /tokenize at the server root; absent elsewhere (then None)."""
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        req = urllib.request.Request(
            root + "/tokenize",
            data=json.dumps({"model": self.model, "prompt": text}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise RemoteEngineError(f"LLM server at {root} unreachable for /tokenize: {exc}") from exc
        if "count" in body:
            return int(body["count"])
        return len(body["tokens"]) if "tokens" in body else None

    def count_chat_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens of the templated prompt: exact with a local chat template, else a ChatML-style estimate."""
        if self._tokenizer is not None and getattr(self._tokenizer, "chat_template", None):
            return len(
                self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            )
        # ChatML-style overhead: ~4 tokens per turn + 3 for the assistant header
        return sum(self.count_tokens(m.get("content", "")) + 4 for m in messages) + 3

    # ---- generation ---------------------------------------------------------------------------
    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[str | Generation]:
        """Yield text pieces as the server streams them, then one Generation (usage from the server when it says)."""
        n_prompt = self.count_chat_tokens(messages)
        self.check_fits(n_prompt, max_tokens)
        return self._stream(messages, n_prompt, max_tokens, temperature, stop)

    def _stream(
        self,
        messages: list[dict[str, str]],
        n_prompt: int,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None,
    ) -> Iterator[str | Generation]:
        oa = self._openai
        t0 = time.perf_counter()
        t_first: float | None = None
        parts: list[str] = []
        finish = "length"
        usage = None
        try:
            # sparq's messages are {"role", "content"} dicts: the shape of OpenAI's message TypedDicts.
            resp = self.client.chat.completions.create(
                model=self.model,
                messages=cast("list[ChatCompletionMessageParam]", messages),
                max_tokens=max_tokens,
                temperature=temperature,
                stop=stop or None,
                stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in resp:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        if t_first is None:
                            t_first = time.perf_counter()
                        parts.append(delta)
                        yield delta
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except oa.APITimeoutError as exc:
            raise RemoteEngineError(
                f"LLM server at {self.base_url} timed out after {self.timeout_s:g} s"
            ) from exc
        except oa.APIConnectionError as exc:
            raise RemoteEngineError(f"LLM server at {self.base_url} is unreachable: {exc}") from exc
        except oa.NotFoundError as exc:
            raise ModelNotFound(f"model {self.model!r} not found at {self.base_url}: {exc.message}") from exc
        except oa.APIStatusError as exc:
            raise RemoteEngineError(
                f"LLM server at {self.base_url} answered HTTP {exc.status_code}: {exc.message}"
            ) from exc
        t_end = time.perf_counter()
        if t_first is None:
            t_first = t_end
        if usage is not None:
            prompt_tokens, completion_tokens = int(usage.prompt_tokens), int(usage.completion_tokens)
        else:  # servers that ignore include_usage: count locally, and say so in the stats
            prompt_tokens, completion_tokens = n_prompt, self.count_tokens("".join(parts))
        stats = build_stats(
            self.info,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            prefill_seconds=t_first - t0,
            decode_seconds=t_end - t_first,
            histogram=None,
            histogram_tokens=0,
            accounting="modelled",
        )
        stats.tokens_per_second = (
            (completion_tokens - 1) / stats.decode_seconds
            if stats.decode_seconds > 0 and completion_tokens > 1
            else 0.0
        )
        yield Generation(text="".join(parts), stats=stats, finish_reason=finish)

    def close(self) -> None:
        """Close the HTTP client's connections."""
        self.client.close()


def build(request: EngineRequest) -> LLMEngine:
    """`openai`: a model served over the OpenAI-compatible API (vLLM, llama.cpp server, SGLang)."""
    return OpenAIEngine(
        request.model or "",
        base_url=request.base_url or "",
        api_key=request.api_key,
        timeout_s=request.timeout_s,
        **request.engine_options(),
    )
