"""llama.cpp engine (GGUF on CPU) with measured expert selection via the graph eval callback.

llama.cpp names each MoE layer's selected-experts node ``ffn_moe_topk-<il>`` (an I32 view of
shape [n_expert_used, n_tokens] whose row stride is 4 x n_expert). The scheduler's ``cb_eval``
asks, node by node, whether we want to observe it; we say yes only for those nodes (and for
``ffn_norm-<il>`` when a calibration capture is requested), copy them out with
``ggml_backend_tensor_get`` and rebuild them with their strides.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from model.base import EngineRequest, Generation, LLMEngine, ModelError, ModelInfo
from model.gguf_info import info_from_gguf
from model.token_stream import (
    charge_computed_prompt,
    prefix_reuse_scope,
    reusable_prefix,
    reuse_limit,
    sampled_stats,
    stream_text,
)

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

GGML_MAX_DIMS = 4
GGML_MAX_OP_PARAMS = 64
GGML_MAX_SRC = 10
GGML_MAX_NAME = 64
GGML_TYPE_F32 = 0
GGML_TYPE_I32 = 26


class _GGMLTensor(ctypes.Structure):
    """Prefix of ``struct ggml_tensor`` (ggml.h) up to the name; offsets are checked at load."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
    ]


_GGML: ctypes.CDLL | None = None
_NAME_OFFSET = _GGMLTensor.name.offset


def _ggml() -> ctypes.CDLL:
    """libggml-base from the llama_cpp wheel (same process copy llama.cpp uses)."""
    global _GGML
    if _GGML is None:
        import llama_cpp

        libdir = Path(llama_cpp.__file__).parent / "lib"
        cands = sorted(libdir.glob("libggml-base.so*")) + sorted(libdir.glob("libggml-base.dylib"))
        if not cands:
            raise ModelError(f"libggml-base not found next to llama_cpp in {libdir}")
        lib = ctypes.CDLL(str(cands[0]))
        lib.ggml_backend_tensor_get.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
        ]
        lib.ggml_backend_tensor_get.restype = None
        lib.ggml_get_name.argtypes = [ctypes.c_void_p]
        lib.ggml_get_name.restype = ctypes.c_void_p
        lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
        lib.ggml_nbytes.restype = ctypes.c_size_t
        _GGML = lib
    return _GGML


_TOPK_RE = re.compile(rb"^ffn_moe_topk-(\d+)$")
_NORM_RE = re.compile(rb"^ffn_norm-(\d+)$")


class GraphCapture:
    """State behind a cb_eval callback: expert-id histogram and optional FFN-input capture."""

    def __init__(self, n_layers: int, n_experts: int, capture_ffn_input: bool = False) -> None:
        self.n_layers = n_layers
        self.n_experts = n_experts
        self.capture_ffn_input = capture_ffn_input
        self.enabled = True
        self.errors: list[BaseException] = []
        self.ffn_inputs: dict[int, list[np.ndarray]] = {}
        self.on_topk: Callable[[int, np.ndarray], None] | None = None
        self.reset()
        self._lib = _ggml()
        self._struct_checked = False
        self.callback = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)(
            self._cb
        )

    def reset(self) -> None:
        """Forget what earlier evaluations recorded, so the next histogram covers one generation only."""
        self.hist = np.zeros((self.n_layers, max(self.n_experts, 1)), dtype=np.int64)
        self.layer_tokens = np.zeros(self.n_layers, dtype=np.int64)
        self.moe_layers: set[int] = set()
        self.ffn_inputs = {}
        self.errors = []

    def _name(self, t: int) -> bytes:
        return ctypes.string_at(self._lib.ggml_get_name(t))

    def _check_struct(self, t: int, st: _GGMLTensor) -> None:
        # our struct layout must agree with the library's: the name field address proves it
        addr = ctypes.addressof(st) + _GGMLTensor.name.offset
        if self._lib.ggml_get_name(t) != addr:
            raise ModelError(
                "ggml_tensor layout mismatch: this llama_cpp build is not supported for expert capture"
            )
        self._struct_checked = True

    def _read(self, t: int, dtype: type, ncols_stride: int | None = None) -> np.ndarray:
        st = _GGMLTensor.from_address(t)
        if not self._struct_checked:
            self._check_struct(t, st)
        ne0, ne1 = int(st.ne[0]), int(st.ne[1])
        nb0, nb1 = int(st.nb[0]), int(st.nb[1])
        nbytes = int(self._lib.ggml_nbytes(t))
        buf = np.empty(nbytes, dtype=np.uint8)
        self._lib.ggml_backend_tensor_get(t, buf.ctypes.data, 0, nbytes)
        arr: np.ndarray = np.lib.stride_tricks.as_strided(
            buf.view(dtype), shape=(ne1, ne0), strides=(nb1, nb0)
        )
        return np.array(arr)  # [n_tokens, ne0]

    def _cb(self, t: int, ask: bool, _ud: int) -> bool:
        try:
            if not self.enabled:
                return not ask
            name = ctypes.string_at(t + _NAME_OFFSET) if self._struct_checked else self._name(t)
            if ask:  # hot path: called for every graph node, keep it cheap
                if name.startswith(b"ffn_moe_topk-"):
                    return True
                return self.capture_ffn_input and name.startswith(b"ffn_norm-")
            m = _TOPK_RE.match(name)
            n = _NORM_RE.match(name) if self.capture_ffn_input else None
            if m:
                il = int(m.group(1))
                ids = self._read(t, np.int32)  # [n_tokens, n_expert_used]
                if ids.size and (ids.min() < 0 or ids.max() >= self.n_experts):
                    raise ModelError(f"expert id out of range in layer {il}: {ids.min()}..{ids.max()}")
                np.add.at(self.hist[il], ids.reshape(-1), 1)
                self.layer_tokens[il] += ids.shape[0]
                self.moe_layers.add(il)
                if self.on_topk is not None:
                    self.on_topk(il, ids)
            elif n:
                il = int(n.group(1))
                self.ffn_inputs.setdefault(il, []).append(self._read(t, np.float32))
            return True
        except BaseException as exc:  # never let an exception cross into C; re-raised after decode
            self.errors.append(exc)
            return True

    def raise_errors(self) -> None:
        """Raise the first error the callback caught: an exception cannot cross the C callback itself."""
        if self.errors:
            err = self.errors[0]
            self.errors = []
            raise ModelError(f"expert capture failed: {err}") from err

    def histogram(self) -> tuple[list[list[int]], list[int]] | None:
        """Expert-id counts and token counts per MoE layer seen; None when no MoE layer ran."""
        if not self.moe_layers:
            return None
        layers = sorted(self.moe_layers)
        return [self.hist[i].tolist() for i in layers], [int(self.layer_tokens[i]) for i in layers]


_CTX_LOCK = threading.Lock()


@contextlib.contextmanager
def _patched_params(capture: GraphCapture | None, repack_weights: bool) -> Iterator[None]:
    """Llama() builds its context and model params internally: for the duration of __init__, inject cb_eval
    (when capturing) and turn off llama.cpp's weight repacking (when ``repack_weights`` is False)."""
    import llama_cpp.llama_cpp as lc

    if capture is None and repack_weights:
        yield
        return
    orig_ctx, orig_model = lc.llama_context_default_params, lc.llama_model_default_params

    def patched_ctx() -> object:
        p = orig_ctx()
        if capture is not None:
            p.cb_eval = capture.callback
            p.cb_eval_user_data = None
        return p

    def patched_model() -> object:
        p = orig_model()
        p.use_extra_bufts = repack_weights
        return p

    with _CTX_LOCK:
        lc.llama_context_default_params, lc.llama_model_default_params = patched_ctx, patched_model
        try:
            yield
        finally:
            lc.llama_context_default_params, lc.llama_model_default_params = orig_ctx, orig_model


def repack_by_default(info: ModelInfo) -> bool:
    """Repack unless the model is a MoE whose experts are a multiple of 256 neurons long.

    Such experts stay Q4_K/Q6_K, which llama.cpp repacks, and its MoE product (``MUL_MAT_ID``) then runs
    the repacked experts token by token: a 256-aligned split prefills about 1.25x faster unrepacked. The
    default split's 128-neuron experts fall back to Q5_0/Q8_0 down projections and prefill about 10%
    slower unrepacked, and dense models gain from repacking (README, Benchmarks)."""
    return not (info.is_moe and info.expert_ffn_size > 0 and info.expert_ffn_size % 256 == 0)


def check_graph_budget(path: Path, info: ModelInfo, top_k: int) -> None:
    """Refuse top-k values whose graph would overflow llama.cpp's node pool (it aborts the process).

    llama.cpp sizes the graph at max(1024, 8 x n_tensors) nodes and adds ~2 nodes per selected
    expert per MoE layer (one view + one add when summing expert outputs). The per-layer constant
    is empirical: on the 28-layer 1.5B default (479 tensors) top-k 35 runs and 36 aborts in ggml.
    """
    n_tensors = info.extra.get("n_tensors")
    if n_tensors is None:
        from model.gguf_info import read_gguf_header

        n_tensors = len(read_gguf_header(path)[1])
    budget = max(1024, 8 * int(n_tensors))
    need = info.n_moe_layers * (2 * top_k + 66)
    if need > budget:
        max_k = max(budget // max(info.n_moe_layers, 1) - 66, 2) // 2
        raise ValueError(
            f"top_k={top_k} needs ~{need} graph nodes but llama.cpp allows {budget} for this model; "
            f"use top_k <= {max_k}"
        )


class LlamaCppEngine(LLMEngine):
    """GGUF model through llama-cpp-python; measures experts per token on MoE models."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int | None = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        top_k: int | None = None,
        capture_experts: bool = True,
        capture_ffn_input: bool = False,
        repack_weights: bool | None = None,
        reuse_prefix: bool | str = "system",
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        """``repack_weights``: let llama.cpp repack weights for its CPU GEMM kernels; None decides by
        :func:`repack_by_default`. ``reuse_prefix``: keep the KV cache of the last prompt and compute only
        what follows the part a new prompt shares with it, up to the end of the system turn ("system", the
        default), anywhere ("all") or never ("off"); see :data:`model.token_stream.PREFIX_REUSE`."""
        scope = prefix_reuse_scope(reuse_prefix)
        try:
            import llama_cpp
        except ImportError as exc:
            raise ModelError(
                "backend 'llamacpp' needs llama-cpp-python: pip install llama-cpp-python==0.3.36"
            ) from exc
        path = Path(path)
        info = info_from_gguf(path, backend="llamacpp", context_window=n_ctx, top_k=top_k)
        if top_k is not None and (not info.is_moe or not 1 <= top_k <= info.n_experts):
            raise ValueError(
                f"top_k={top_k} is invalid for {info.architecture} with {info.n_experts} experts"
            )
        if top_k is not None:
            check_graph_budget(path, info, top_k)
        kv: dict[str, bool | int | float | str] = {}
        gguf_arch = "llama" if info.architecture == "mixtral" else info.architecture
        if top_k is not None:
            kv[f"{gguf_arch}.expert_used_count"] = int(top_k)
        want_capture = (capture_experts and info.is_moe) or capture_ffn_input
        self.capture = (
            GraphCapture(info.n_layers, info.n_experts, capture_ffn_input) if want_capture else None
        )
        threads = n_threads or int(os.environ.get("SPARQ_LLM_THREADS", "0")) or max(os.cpu_count() or 1, 1)
        try:
            repack = repack_by_default(info) if repack_weights is None else repack_weights
            with _patched_params(self.capture, repack):
                self._llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=info.context_window,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_batch=min(n_batch, info.context_window),
                    seed=seed,
                    kv_overrides=kv or None,
                    logits_all=capture_ffn_input,  # otherwise the last layer's FFN sees 1 token only
                    verbose=verbose,
                )
        except ValueError as exc:
            raise ModelError(f"llama.cpp could not load {path} ({info.architecture}): {exc}") from exc
        n_params = int(self._llm._model.n_params())
        self.info: ModelInfo = replace(
            info,
            extra={**info.extra, "llama_n_params": n_params, "threads": threads, "repacked_weights": repack},
        )
        self._lock = threading.Lock()
        self.reuse_prefix = scope
        self.last_reused_tokens = 0  # prompt tokens the last generation took from the cache
        eos = self._llm.token_eos()
        bos = self._llm.token_bos()
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(
                f"{path} has no chat template (tokenizer.chat_template); sparq needs a chat model"
            )
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self._llm._model.token_get_text(bos) if bos != -1 else "",
        )
        self._bos_text = self._llm._model.token_get_text(bos) if bos != -1 else None

    @property
    def engine_name(self) -> str:
        """llama.cpp with the llama-cpp-python version, which the cost record names."""
        import llama_cpp

        return f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"

    # ---- tokens -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of raw text (no chat template, no BOS)."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The templated prompt string (system/user/assistant turns + assistant header)."""
        # sparq's messages are {"role", "content"} dicts: the shape of llama_cpp's message TypedDicts.
        return self._formatter(messages=cast("list[ChatCompletionRequestMessage]", messages)).prompt

    def chat_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the templated prompt, with BOS only when the template did not already write it."""
        prompt = self.chat_prompt(messages)
        add_bos = self._llm._model.add_bos_token() and not (
            self._bos_text and prompt.startswith(self._bos_text)
        )
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def count_chat_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens of the full templated prompt, as the context-window check needs."""
        return len(self.chat_tokens(messages))

    # ---- generation ---------------------------------------------------------------------------
    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[str | Generation]:
        """Yield text pieces as they are sampled, then one Generation with tokens, timings and expert usage."""
        tokens = self.chat_tokens(messages)
        self.check_fits(len(tokens), max_tokens)
        limit = reuse_limit(self.reuse_prefix, messages, tokens, self.chat_tokens)
        return self._stream_tokens(
            tokens, max_tokens=max_tokens, temperature=temperature, stop=stop or [], reuse_limit=limit
        )

    def _stream_tokens(
        self, tokens: list[int], *, max_tokens: int, temperature: float, stop: list[str], reuse_limit: int
    ) -> Iterator[str | Generation]:
        import llama_cpp

        with self._lock:
            llm = self._llm
            vocab = llm._model.vocab
            if self.capture is not None:
                self.capture.reset()
            t0 = time.perf_counter()
            reused = self._keep_prefix(tokens, reuse_limit)
            self.last_reused_tokens = reused
            gen = llm.generate(
                tokens[reused:], temp=temperature, top_k=40, top_p=0.95, repeat_penalty=1.0, reset=False
            )
            try:
                out = yield from stream_text(
                    gen,
                    piece=lambda tok: llm.detokenize([tok], prev_tokens=None),
                    is_eog=lambda tok: bool(llama_cpp.llama_vocab_is_eog(vocab, tok)),
                    stop=stop,
                    max_tokens=max_tokens,
                    t0=t0,
                    check=self.capture.raise_errors if self.capture is not None else None,
                )
            finally:
                gen.close()
            stats = sampled_stats(self.info, self.capture, prompt_tokens=len(tokens), t0=t0, out=out)
            charge_computed_prompt(stats, self.info, reused=reused, prompt_tokens=len(tokens))
        yield Generation(text=out.text, stats=stats, finish_reason=out.finish)

    def _keep_prefix(self, tokens: list[int], limit: int) -> int:
        """Drop the cache after the part ``tokens`` share with what it holds (at most ``limit`` tokens);
        returns how many are kept."""
        llm = self._llm
        keep = reusable_prefix(llm._input_ids.tolist(), tokens, limit)
        if keep and llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm.n_tokens = keep
            return keep
        llm.reset()
        return 0

    def last_logits(self, text: str) -> np.ndarray:
        """Logits after evaluating raw text (used by the dense-equivalence checks)."""
        toks = self._llm.tokenize(
            text.encode("utf-8"), add_bos=self._llm._model.add_bos_token(), special=False
        )
        with self._lock:
            self._llm.reset()
            self._llm.eval(toks)
            if self.capture is not None:
                self.capture.raise_errors()
            n_vocab = self._llm.n_vocab()
            if self._llm._logits_all:
                return np.array(self._llm.scores[self._llm.n_tokens - 1], dtype=np.float32)
            ptr = self._llm._ctx.get_logits()  # last row only when logits_all is off
            return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32, copy=True)

    def eval_tokens(self, tokens: list[int]) -> None:
        """Run tokens through the model from an empty cache (calibration capture)."""
        with self._lock:
            self._llm.reset()
            self._llm.eval(tokens)
            if self.capture is not None:
                self.capture.raise_errors()

    def tokenize(self, text: str) -> list[int]:
        """Token ids of raw text (no chat template, no BOS)."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def close(self) -> None:
        """Free the llama.cpp model and context; safe to call twice."""
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            del self._llm  # closed: a later call fails with AttributeError, a second close() does nothing


def build(request: EngineRequest) -> LLMEngine:
    """`llamacpp`: a GGUF file through llama-cpp-python; no model named serves the default MoE."""
    return LlamaCppEngine(request.gguf_path(), n_threads=request.n_threads, **request.engine_options())
