"""transformers + torch engine for local Hugging Face MoE checkpoints, with router hooks.

In transformers 5.x every supported MoE family has a router module (``*TopKRouter`` /
``*TopkRouter``) whose forward returns ``(router_logits, top_k_weights, top_k_index)``; a forward
hook on it sees the experts each token selected. The families differ in where that module lives
(``mlp.gate`` for Qwen2/3-MoE, OLMoE, Mixtral, DeepSeek-V2/V3; ``block_sparse_moe.router`` for
GraniteMoE), in the config names for expert counts/sizes and in shared experts; the tables below
hold those differences.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.accounting import build_stats, nominal_active_params
from model.base import (
    EngineRequest,
    Generation,
    LLMEngine,
    ModelError,
    ModelInfo,
    ModelNotFound,
    UnsupportedArchitecture,
)


@dataclass(frozen=True)
class Family:
    """Where a family keeps its router and how its config names the MoE sizes."""

    router_suffix: str  # module path suffix inside a decoder layer
    expert_ffn_attr: str
    shared: str  # "none" | "qwen" (one shared expert of shared_expert_intermediate_size) | "deepseek"


FAMILIES: dict[str, Family] = {
    "qwen2_moe": Family("mlp.gate", "moe_intermediate_size", "qwen"),
    "qwen3_moe": Family("mlp.gate", "moe_intermediate_size", "none"),
    "olmoe": Family("mlp.gate", "intermediate_size", "none"),
    "mixtral": Family("mlp.gate", "intermediate_size", "none"),
    "granitemoe": Family("block_sparse_moe.router", "intermediate_size", "none"),
    "deepseek_v2": Family("mlp.gate", "moe_intermediate_size", "deepseek"),
    "deepseek_v3": Family("mlp.gate", "moe_intermediate_size", "deepseek"),
}
DENSE_TYPES = {"llama", "qwen2", "qwen3", "mistral", "olmo", "olmo2", "granite", "gemma", "gemma2", "phi3"}
_LAYER_RE = re.compile(r"layers\.(\d+)\.")


def _n_experts(cfg: Any) -> int:
    for attr in ("n_routed_experts", "num_experts", "num_local_experts"):
        v = getattr(cfg, attr, None)
        if v:
            return int(v)
    return 0


def info_from_model(model: Any, *, name: str, path: str | None, context_window: int | None) -> ModelInfo:
    """ModelInfo from a loaded transformers model (exact parameter count, MoE shapes from config)."""
    cfg = model.config
    mtype = cfg.model_type
    fam = FAMILIES.get(mtype)
    d = int(cfg.hidden_size)
    n_heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or d // n_heads)
    routers = find_routers(model) if fam else {}
    n_exp = _n_experts(cfg) if fam else 0
    top_k = int(getattr(cfg, "num_experts_per_tok", 0) or 0) if fam else 0
    expert_ffn = int(getattr(cfg, fam.expert_ffn_attr)) if fam else 0
    shared_ffn, n_shared = 0, 0
    if fam and fam.shared == "qwen":
        shared_ffn = int(getattr(cfg, "shared_expert_intermediate_size", 0) or 0)
        n_shared = 1 if shared_ffn else 0
    elif fam and fam.shared == "deepseek":
        n_shared = int(getattr(cfg, "n_shared_experts", 0) or 0)
        shared_ffn = n_shared * expert_ffn
    total = int(sum(p.numel() for p in model.parameters()))
    train_ctx = int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
    window = min(context_window, train_ctx) if context_window else train_ctx
    info = ModelInfo(
        name=name,
        backend="transformers",
        architecture=mtype,
        context_window=window,
        n_layers=int(cfg.num_hidden_layers),
        hidden_size=d,
        n_heads=n_heads,
        n_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or n_heads),
        head_dim=head_dim,
        vocab_size=int(cfg.vocab_size),
        n_moe_layers=len(routers),
        n_experts=n_exp,
        n_experts_used=top_k,
        n_shared_experts=n_shared,
        expert_ffn_size=expert_ffn,
        shared_ffn_size=shared_ffn,
        dense_ffn_size=int(getattr(cfg, "intermediate_size", 0) or 0),
        total_params=total,
        active_params_per_token=total,
        tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        path=path,
        extra={"train_context": train_ctx},
    )
    from dataclasses import replace

    return replace(info, active_params_per_token=nominal_active_params(info))


def find_routers(model: Any) -> dict[int, Any]:
    """Layer index -> router module, for the model's family (empty for dense models)."""
    fam = FAMILIES.get(model.config.model_type)
    if fam is None:
        return {}
    out: dict[int, Any] = {}
    for name, mod in model.named_modules():
        if name.endswith("." + fam.router_suffix):
            m = _LAYER_RE.search(name + ".")
            if m:
                out[int(m.group(1))] = mod
    return out


def cache_keyword(model: Any) -> str:
    """The forward() argument that takes the KV cache (transformers >= 5.2x renamed past_key_values)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward() returned, under either name."""
    return out.get("cache", out.get("past_key_values"))


class RouterRecorder:
    """Forward hooks on every router: per-layer histogram of selected expert ids.

    Counts accumulate on the model's device and are copied to the host once per ``histogram()``,
    so on a GPU the hooks never force a synchronisation inside the forward pass.
    """

    def __init__(self, model: Any, n_experts: int) -> None:
        self.n_experts = n_experts
        self.routers = find_routers(model)
        self.layers = sorted(self.routers)
        self.errors: list[BaseException] = []
        self.reset()
        self._handles = [mod.register_forward_hook(self._make_hook(il)) for il, mod in self.routers.items()]

    def reset(self) -> None:
        """Forget what earlier forwards recorded, so the next histogram covers one generation only."""
        self._counts: dict[int, Any] = {}
        self.tokens = dict.fromkeys(self.layers, 0)

    def _make_hook(self, il: int) -> Any:
        import torch

        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            items = out if isinstance(out, tuple) else (out,)
            idx = next((t for t in items if isinstance(t, torch.Tensor) and not t.is_floating_point()), None)
            if idx is None:
                self.errors.append(ModelError(f"router of layer {il} returned no expert indices"))
                return
            ids = idx.detach().reshape(-1, idx.shape[-1])
            flat = ids.reshape(-1).long()
            acc = self._counts.get(il)
            if acc is None:
                acc = self._counts[il] = torch.zeros(self.n_experts, dtype=torch.int64, device=flat.device)
            # index_add_ needs no host round trip (bincount on CUDA reads the max id back to size its output).
            acc.index_add_(
                0, flat, torch.ones((), dtype=torch.int64, device=flat.device).expand(flat.numel())
            )
            self.tokens[il] += ids.shape[0]

        return hook

    def histogram(self) -> tuple[list[list[int]], list[int]] | None:
        """Expert-id counts and token counts per router layer (raising what a hook caught); None when none
        was routed."""
        if self.errors:
            err = self.errors[0]
            self.errors = []
            raise ModelError(f"expert capture failed: {err}") from err
        if not self.layers or not any(self.tokens.values()):
            return None
        hist = []
        for il in self.layers:
            counts = self._counts.get(il)
            hist.append([0] * self.n_experts if counts is None else counts.cpu().tolist())
        return hist, [self.tokens[il] for il in self.layers]

    def remove(self) -> None:
        """Take the hooks off the model, so it runs unobserved again."""
        for h in self._handles:
            h.remove()
        self._handles = []


def set_top_k(model: Any, top_k: int) -> None:
    """Change experts per token at run time (router modules read ``top_k`` on every forward)."""
    n = _n_experts(model.config)
    if not 1 <= top_k <= n:
        raise ValueError(f"top_k={top_k} outside 1..{n}")
    for mod in find_routers(model).values():
        mod.top_k = top_k
    model.config.num_experts_per_tok = top_k


class TransformersEngine(LLMEngine):
    """A local HF checkpoint directory (safetensors) run with transformers on CPU or GPU."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        device: str | None = None,
        dtype: str | None = None,
        top_k: int | None = None,
        capture_experts: bool = True,
        n_threads: int | None = None,
        context_window: int | None = None,
        name: str | None = None,
    ) -> None:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise ModelError("backend 'transformers' needs torch and transformers installed") from exc
        if n_threads:
            torch.set_num_threads(n_threads)
        self._torch = torch
        if model is None:
            if path is None:
                raise ModelNotFound("transformers backend needs a checkpoint directory")
            p = Path(path)
            if not p.exists():
                raise ModelNotFound(f"checkpoint directory not found: {p}")
            if not (p / "config.json").is_file():
                raise ModelNotFound(f"{p} is not a Hugging Face checkpoint (no config.json)")
            try:
                cfg = transformers.AutoConfig.from_pretrained(str(p))
            except (ValueError, OSError) as exc:
                raise ModelError(f"unreadable config.json in {p}: {exc}") from exc
            if cfg.model_type not in FAMILIES and cfg.model_type not in DENSE_TYPES:
                raise UnsupportedArchitecture(
                    f"model_type {cfg.model_type!r} is not supported (MoE: {', '.join(sorted(FAMILIES))}; "
                    f"dense: {', '.join(sorted(DENSE_TYPES))}): {p}"
                )
            if top_k is not None and cfg.model_type in FAMILIES:
                cfg.num_experts_per_tok = int(top_k)
            torch_dtype = getattr(torch, dtype) if dtype else torch.float32
            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    str(p), config=cfg, dtype=torch_dtype
                )
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(p))
            except OSError as exc:
                raise ModelError(f"could not load checkpoint {p}: {exc}") from exc
            except Exception as exc:  # safetensors raises its own error types on corrupt files
                if "safetensor" in type(exc).__module__.lower() or "header" in str(exc).lower():
                    raise ModelError(f"corrupt weights in {p}: {exc}") from exc
                raise
            name = name or p.name
        if tokenizer is None:
            raise ModelError("transformers engine needs a tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError("tokenizer has no chat template; sparq needs a chat model")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        if top_k is not None and model.config.model_type in FAMILIES:
            set_top_k(self.model, int(top_k))
        self.info: ModelInfo = info_from_model(
            self.model, name=name or "model", path=str(path) if path else None, context_window=context_window
        )
        self.recorder = (
            RouterRecorder(self.model, self.info.n_experts) if capture_experts and self.info.is_moe else None
        )
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(int(tokenizer.eos_token_id))
        self._eos = eos_ids
        self._lock = threading.Lock()
        self._cache_kw = cache_keyword(self.model)

    @property
    def engine_name(self) -> str:
        """transformers and torch versions and the device, which the cost record names."""
        import transformers

        return f"transformers {transformers.__version__} (torch {self._torch.__version__}, {self.device})"

    def count_tokens(self, text: str) -> int:
        """Tokens of raw text (no chat template, no special tokens)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the templated prompt with the assistant header, whatever the tokenizer returns them as."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def count_chat_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens of the full templated prompt, as the context-window check needs."""
        return len(self.chat_ids(messages))

    def forward_logits(self, input_ids: list[int]) -> np.ndarray:
        """Last-position logits for raw ids (dense-equivalence checks)."""
        torch = self._torch
        with torch.no_grad():
            out = self.model(torch.tensor([input_ids], device=self.device))
        return out.logits[0, -1].float().cpu().numpy()

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[str | Generation]:
        """Yield text pieces as they are generated, then one Generation with tokens, timings and expert usage."""
        ids = self.chat_ids(messages)
        self.check_fits(len(ids), max_tokens)
        return self._generate(ids, max_tokens, temperature, stop or [])

    def _generate(
        self, ids: list[int], max_tokens: int, temperature: float, stop: list[str]
    ) -> Iterator[str | Generation]:
        torch = self._torch
        with self._lock, torch.no_grad():
            if self.recorder is not None:
                self.recorder.reset()
            gen = torch.Generator(device="cpu").manual_seed(0)
            t0 = time.perf_counter()
            out = self.model(torch.tensor([ids], device=self.device), use_cache=True)
            past = output_cache(out)
            logits = out.logits[0, -1]
            t_first = t0
            new: list[int] = []
            text, emitted, finish = "", 0, "length"
            hold = max((len(s) for s in stop), default=0)
            while True:
                if temperature > 0:
                    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
                    tok = int(torch.multinomial(probs, 1, generator=gen))
                else:
                    tok = int(torch.argmax(logits))
                if not new:
                    t_first = time.perf_counter()
                new.append(tok)
                if tok in self._eos:
                    finish = "stop"
                    break
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # incomplete multi-byte sequence: wait for more
                    text = text[:-1]
                cut = min((text.find(s) for s in stop if s in text), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                    break
                if len(text) - hold > emitted:
                    yield text[emitted : len(text) - hold]
                    emitted = len(text) - hold
                if len(new) >= max_tokens:
                    break
                out = self.model(
                    torch.tensor([[tok]], device=self.device), use_cache=True, **{self._cache_kw: past}
                )
                past = output_cache(out)
                logits = out.logits[0, -1]
            t_end = time.perf_counter()
            if finish == "length":
                text = self.tokenizer.decode(new, skip_special_tokens=True)
            if len(text) > emitted:
                yield text[emitted:]
            hist = self.recorder.histogram() if self.recorder is not None else None
            stats = build_stats(
                self.info,
                prompt_tokens=len(ids),
                completion_tokens=len(new),
                prefill_seconds=t_first - t0,
                decode_seconds=t_end - t_first if len(new) > 1 else 0.0,
                histogram=hist[0] if hist else None,
                histogram_tokens=hist[1] if hist else 0,
                accounting="measured" if (hist or not self.info.is_moe) else "modelled",
            )
            stats.tokens_per_second = (
                (len(new) - 1) / stats.decode_seconds if stats.decode_seconds > 0 else 0.0
            )
        yield Generation(text=text, stats=stats, finish_reason=finish)

    def close(self) -> None:
        """Take the router hooks off the model; safe to call twice."""
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None


def build(request: EngineRequest) -> LLMEngine:
    """`transformers`: a Hugging Face checkpoint directory (GPU or CPU); it has no default model."""
    if request.model is None:
        raise ModelError("backend 'transformers' needs a checkpoint directory (SPARQ_LLM_MODEL)")
    return TransformersEngine(request.model, n_threads=request.n_threads, **request.engine_options())
