"""ik_llama.cpp engine (GGUF on CPU): the llama.cpp fork whose MoE path is fast on CPU.

ik_llama.cpp fuses the MoE up/gate products (``fused_moe_up_gate``), sums expert outputs with one
multi-add node instead of a chain of views and adds, and can repack weights at load time for its
CPU kernels (``repack_tensors``, the CLI's ``-rtr``). The ``ik-llama-cpp-python`` wheel's own
Python layer is thin (a hard-coded Gemma template, greedy sampling looped over the vocabulary in
Python, the KV cache cleared per call), so this engine talks to its C API directly through ctypes:
the model's own chat template from the GGUF, numpy sampling on the logits, reuse of the KV cache
for a prompt that starts with the previous one, and the same measured expert counts as
LlamaCppEngine through ``cb_eval`` on ``ffn_moe_topk-<il>`` (ik_llama.cpp names the node the same).

Two things differ from mainline and are handled here:
* ik's ``struct ggml_tensor`` has ``__backend`` after ``type`` and ``grad`` before ``src``, so the
  name sits at offset 264, not 256 (checked against ``ggml_get_name`` on the first node read);
* both libraries export the same ``llama_*``/``ggml_*`` names. On Linux llama-cpp-python and ik's
  loader both dlopen with RTLD_LOCAL, so each libllama binds to its own libggml and the two engines
  can share a process (the tests load both); we bind our own function objects on ik's handle, so
  the argtypes we set do not change ik's Python layer.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from model.base import EngineRequest, Generation, LLMEngine, ModelError, ModelInfo
from model.chat_template import ChatTemplate
from model.gguf_info import info_from_gguf
from model.llamacpp_engine import _TOPK_RE
from model.token_stream import (
    charge_computed_prompt,
    prefix_reuse_scope,
    reusable_prefix,
    reuse_limit,
    sampled_stats,
    stream_text,
)

IK_PIP = "ik-llama-cpp-python==0.1.5"
GGML_MAX_DIMS = 4
GGML_MAX_OP_PARAMS = 64
GGML_MAX_SRC = 10
GGML_MAX_NAME = 64
LLAMA_KV_OVERRIDE_TYPE_INT = 0
GGML_TYPE_Q4_1 = 3
GGML_TYPE_Q5_1 = 7
# ik 0.1.5 (AVX2 wheel) multiplies Q4_1/Q5_1 weights wrongly in batches of >= 32 tokens when a row is not
# a multiple of 4 blocks of 32 (measured: logits off by the whole logit range on SmolLM2-135M Q4_1, rows
# of 576; rows of 256/384 and Q4_0/Q5_0/Q8_0/Q4_K/Q6_K are fine). Smaller batches take a correct path.
IK_SAFE_BATCH = 31


def _ik_batch_cap(path: Path) -> int | None:
    """IK_SAFE_BATCH if the file holds a tensor that hits ik's Q4_1/Q5_1 large-batch defect, else None."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    for t in reader.tensors:
        if int(t.tensor_type) in (GGML_TYPE_Q4_1, GGML_TYPE_Q5_1) and int(t.shape[0]) % 128:
            return IK_SAFE_BATCH
    return None


class _IkGGMLTensor(ctypes.Structure):
    """Prefix of ik_llama.cpp's ``struct ggml_tensor`` (its ggml.h) up to the name."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("backend", ctypes.c_int),  # enum ggml_backend_type __backend: ik keeps it, mainline dropped it
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("grad", ctypes.c_void_p),  # ik keeps grad, mainline dropped it
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
    ]


_NAME_OFFSET = _IkGGMLTensor.name.offset  # 264
_OP_OFFSET = _IkGGMLTensor.op.offset
_SRC_OFFSET = _IkGGMLTensor.src.offset
GGML_OP_FUSED_RMS_NORM = 24  # ik's enum ggml_op: RMS norm times its weight in one node
_RESIDUAL_RE = re.compile(rb"^(ffn_norm|ffn_inp)-(\d+)$")
_LOG_CB_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


@_LOG_CB_TYPE
def _quiet_log(_level: int, _text: bytes, _ud: int) -> None:
    """ik's log sink when verbose is off (it prints per-tensor lines at load otherwise)."""


class _Ik:
    """ik's libllama (ctypes, our own function objects) plus its ctypes structs."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("ik_llama_cpp")
        if spec is None or spec.origin is None:
            raise ModelError(f"backend 'ik_llama' needs ik-llama-cpp-python: pip install {IK_PIP}")
        override = os.environ.get("IK_LLAMA_CPP_LIB_PATH")  # the same override ik's own loader honours
        path = Path(override) if override else Path(spec.origin).parent / "lib" / "libllama.so"
        if not path.is_file():
            raise ModelError(f"ik_llama.cpp library not found at {path}; reinstall {IK_PIP}")
        # RTLD_LOCAL: ik's llama_*/ggml_* must never become the process's global llama.cpp symbols
        lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
        from ik_llama_cpp import _ctypes_api as capi

        # sizes of 0.1.5's structs, checked with a C compiler against the wheel's llama.h: a wheel whose
        # Python structs disagree would pass garbage by value into the library
        sizes = (
            ctypes.sizeof(capi.llama_model_params),
            ctypes.sizeof(capi.llama_context_params),
            ctypes.sizeof(capi.llama_batch),
            ctypes.sizeof(capi.llama_model_kv_override),
        )
        if sizes != (168, 216, 72, 264):
            raise ModelError(
                f"ik-llama-cpp-python struct sizes {sizes} differ from 0.1.5's; install {IK_PIP}"
            )
        self.capi = capi
        self.lib = lib
        self.path = path
        p, i32, u32, f32, b = ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint32, ctypes.c_float, ctypes.c_bool
        tok_p = ctypes.POINTER(ctypes.c_int32)
        sigs: dict[str, tuple[list[Any], Any]] = {
            "llama_backend_init": ([], None),
            "llama_log_set": ([_LOG_CB_TYPE, p], None),
            "llama_model_default_params": ([], capi.llama_model_params),
            "llama_context_default_params": ([], capi.llama_context_params),
            "llama_model_load_from_file": ([ctypes.c_char_p, capi.llama_model_params], p),
            "llama_free_model": ([p], None),
            "llama_init_from_model": ([p, capi.llama_context_params], p),
            "llama_free": ([p], None),
            "llama_model_n_params": ([p], ctypes.c_uint64),
            "llama_model_get_vocab": ([p], p),
            "llama_n_vocab": ([p], i32),
            "llama_n_ctx": ([p], u32),
            "llama_model_meta_val_str": ([p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t], i32),
            "llama_tokenize": ([p, ctypes.c_char_p, i32, tok_p, i32, b, b], i32),
            "llama_token_to_piece": ([p, i32, ctypes.c_char_p, i32, i32, b], i32),
            "llama_token_get_text": ([p, i32], ctypes.c_char_p),
            "llama_token_bos": ([p], i32),
            "llama_token_eos": ([p], i32),
            "llama_vocab_get_add_bos": ([p], b),
            "llama_token_is_eog": ([p, i32], b),
            "llama_batch_init": ([i32, i32, i32], capi.llama_batch),
            "llama_batch_free": ([capi.llama_batch], None),
            "llama_decode": ([p, capi.llama_batch], i32),
            "llama_get_logits_ith": ([p, i32], ctypes.POINTER(f32)),
            "llama_kv_cache_clear": ([p], None),
            "llama_kv_cache_seq_rm": ([p, i32, i32, i32], b),
            "ggml_get_name": ([p], p),
            "ggml_nbytes": ([p], ctypes.c_size_t),
            "ggml_backend_tensor_get": ([p, p, ctypes.c_size_t, ctypes.c_size_t], None),
        }
        for name, (argtypes, restype) in sigs.items():
            fn = getattr(lib, name)  # ggml_* resolve through libllama to the libggml it is linked with
            fn.argtypes = argtypes
            fn.restype = restype
        lib.llama_backend_init()


_IK: _Ik | None = None
_IK_LOCK = threading.Lock()


def ik_lib() -> _Ik:
    """Load ik's libllama once per process (ModelError naming the pip line if it is missing)."""
    global _IK
    with _IK_LOCK:
        if _IK is None:
            _IK = _Ik()
        return _IK


def ik_available() -> bool:
    """Whether the optional ik_llama_cpp package is installed, without importing it."""
    return importlib.util.find_spec("ik_llama_cpp") is not None


class IkGraphCapture:
    """cb_eval state for ik's graph: expert-id histogram and optional FFN-input capture.

    Same interface as :class:`model.llamacpp_engine.GraphCapture`, with ik's tensor layout and library."""

    def __init__(self, n_layers: int, n_experts: int, capture_ffn_input: bool = False) -> None:
        self.n_layers = n_layers
        self.n_experts = n_experts
        self.capture_ffn_input = capture_ffn_input
        self.enabled = True
        self.on_topk: Callable[[int, np.ndarray], None] | None = None
        self._lib = ik_lib().lib
        self._struct_checked = False
        self.reset()
        self.callback = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)(
            self._cb
        )

    def reset(self) -> None:
        """Forget what earlier evaluations recorded, so the next histogram covers one generation only."""
        self.hist = np.zeros((self.n_layers, max(self.n_experts, 1)), dtype=np.int64)
        self.layer_tokens = np.zeros(self.n_layers, dtype=np.int64)
        self.moe_layers: set[int] = set()
        self.ffn_inputs: dict[int, list[np.ndarray]] = {}
        self.errors: list[BaseException] = []

    def _check_struct(self, t: int, st: _IkGGMLTensor) -> None:
        if self._lib.ggml_get_name(t) != ctypes.addressof(st) + _NAME_OFFSET:
            raise ModelError(
                "ggml_tensor layout mismatch: this ik_llama.cpp build is not supported for expert capture"
            )
        self._struct_checked = True

    def _read(self, t: int, dtype: type) -> np.ndarray:
        st = _IkGGMLTensor.from_address(t)
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

    def _ffn_input_layer(self, t: int) -> int | None:
        """Layer whose normalized FFN input ``t`` is, else None.

        ik names that node differently from mainline: the FFN's input is a FUSED_RMS_NORM node whose
        source is the residual, named ``ffn_norm-<il>`` (dense layers) or ``ffn_inp-<il>`` (MoE layers);
        the norm itself is unnamed (dense) or renamed ``ffn_moe_out-<il>`` (MoE)."""
        if ctypes.c_int.from_address(t + _OP_OFFSET).value != GGML_OP_FUSED_RMS_NORM:
            return None
        src = ctypes.c_void_p.from_address(t + _SRC_OFFSET).value
        if not src:
            return None
        m = _RESIDUAL_RE.match(ctypes.string_at(self._lib.ggml_get_name(src)))
        return int(m.group(2)) if m else None

    def _cb(self, t: int, ask: bool, _ud: int) -> bool:
        try:
            if not self.enabled:
                return not ask
            if self._struct_checked:
                name = ctypes.string_at(t + _NAME_OFFSET)
            else:
                name = ctypes.string_at(self._lib.ggml_get_name(t))
            if ask:  # hot path: called for every graph node
                if name.startswith(b"ffn_moe_topk-"):
                    return True
                return self.capture_ffn_input and self._ffn_input_layer(t) is not None
            m = _TOPK_RE.match(name)
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
            elif self.capture_ffn_input:
                il_in = self._ffn_input_layer(t)
                if il_in is not None:
                    self.ffn_inputs.setdefault(il_in, []).append(self._read(t, np.float32))
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


def sample_token(
    logits: np.ndarray,
    temperature: float,
    rng: np.random.Generator,
    *,
    top_k: int = 40,
    top_p: float = 0.95,
    min_p: float = 0.05,
) -> int:
    """Greedy at temperature 0; otherwise top-k 40, top-p 0.95, min-p 0.05 (llama-cpp-python's defaults)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    k = min(top_k, logits.shape[0])
    cand = np.argpartition(-logits, k - 1)[:k]
    cand = cand[np.argsort(-logits[cand], kind="stable")]
    z = logits[cand].astype(np.float64)
    p = np.exp(z - z[0])
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), top_p) + 1)
    keep = max(min(keep, k), 1)
    keep = max(int((p[:keep] >= min_p * p[0]).sum()), 1)
    z = z[:keep] / temperature
    q = np.exp(z - z.max())
    q /= q.sum()
    return int(cand[int(rng.choice(keep, p=q))])


class IkLlamaEngine(LLMEngine):
    """GGUF model through ik_llama.cpp's C API; measures experts per token on MoE models."""

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
        fused_moe: bool = True,
        run_time_repack: bool = True,
        flash_attn: bool = True,
        reuse_prefix: bool | str = "system",
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        """``reuse_prefix``: how much of a prompt may come from the KV cache of the one before, as for the
        llama.cpp engine (:data:`model.token_stream.PREFIX_REUSE`)."""
        scope = prefix_reuse_scope(reuse_prefix)
        path = Path(path)
        info = info_from_gguf(path, backend="ik_llama", context_window=n_ctx, top_k=top_k)
        ik = ik_lib()
        self._ik = ik
        lib = ik.lib
        if top_k is not None and (not info.is_moe or not 1 <= top_k <= info.n_experts):
            raise ValueError(
                f"top_k={top_k} is invalid for {info.architecture} with {info.n_experts} experts"
            )
        # A NULL callback restores llama.cpp's own logging; typeshed's ctypes.cast omits the None (NULL) it takes.
        lib.llama_log_set(ctypes.cast(None, _LOG_CB_TYPE) if verbose else _quiet_log, None)  # type: ignore[arg-type]
        threads = n_threads or int(os.environ.get("SPARQ_LLM_THREADS", "0")) or max(os.cpu_count() or 1, 1)
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.use_mmap = not run_time_repack  # repacking rewrites the weights: they must be in owned memory
        mp.repack_tensors = run_time_repack
        self._kv = None
        if top_k is not None:
            gguf_arch = "llama" if info.architecture == "mixtral" else info.architecture
            kv = (ik.capi.llama_model_kv_override * 2)()
            kv[0].tag = LLAMA_KV_OVERRIDE_TYPE_INT
            kv[0].key = f"{gguf_arch}.expert_used_count".encode()
            kv[0].value.val_i64 = int(top_k)
            kv[1].key = b""  # terminator
            self._kv = kv
            mp.kv_overrides = ctypes.cast(kv, ctypes.POINTER(ik.capi.llama_model_kv_override))
        self._model = lib.llama_model_load_from_file(str(path).encode("utf-8"), mp)
        if not self._model:
            raise ModelError(f"ik_llama.cpp could not load {path} ({info.architecture})")
        self._ctx: int | None = None
        self._batch: Any = None
        try:
            want_capture = (capture_experts and info.is_moe) or capture_ffn_input
            self.capture = (
                IkGraphCapture(info.n_layers, info.n_experts, capture_ffn_input) if want_capture else None
            )
            cap = _ik_batch_cap(path)
            self.n_batch = max(min(n_batch, info.context_window, cap or n_batch), 1)
            cp = lib.llama_context_default_params()
            cp.seed = seed & 0xFFFFFFFF
            cp.n_ctx = info.context_window
            cp.n_batch = self.n_batch
            cp.n_ubatch = self.n_batch
            cp.n_seq_max = 1
            cp.n_threads = threads
            cp.n_threads_batch = threads
            cp.flash_attn = flash_attn
            cp.fused_moe_up_gate = fused_moe
            if self.capture is not None:
                cp.cb_eval = self.capture.callback
                cp.cb_eval_user_data = None
            self._ctx = lib.llama_init_from_model(self._model, cp)
            if not self._ctx:
                raise ModelError(
                    f"ik_llama.cpp could not create a context of {info.context_window} tokens for {path}"
                )
            self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
            self._n_vocab = int(lib.llama_n_vocab(self._model))
            template = self._meta("tokenizer.chat_template")
            if not template:
                raise ModelError(
                    f"{path} has no chat template (tokenizer.chat_template); sparq needs a chat model"
                )
            bos = int(lib.llama_token_bos(self._model))
            eos = int(lib.llama_token_eos(self._model))
            bos_text = self._token_text(bos) if bos != -1 else ""
            eos_text = self._token_text(eos) if eos != -1 else ""
            self._template = ChatTemplate(template, bos_token=bos_text, eos_token=eos_text)
            self._bos_text = bos_text or None
            self._add_bos = bool(lib.llama_vocab_get_add_bos(lib.llama_model_get_vocab(self._model)))
        except BaseException:
            self.close()
            raise
        n_params = int(lib.llama_model_n_params(self._model))
        self.info: ModelInfo = replace(
            info,
            extra={
                **info.extra,
                "llama_n_params": n_params,
                "threads": threads,
                "engine": "ik_llama.cpp (ik-llama-cpp-python 0.1.5)",
                "fused_moe_up_gate": fused_moe,
                "run_time_repack": run_time_repack,
                "flash_attn": flash_attn,
                "n_batch": self.n_batch,
                **(
                    {"ik_batch_cap": "Q4_1/Q5_1 rows not a multiple of 128: batches capped at 31"}
                    if cap
                    else {}
                ),
            },
        )
        self.reuse_prefix = scope
        self._cached: list[int] = []  # tokens whose K/V sit at positions 0..len-1 of sequence 0
        self.last_reused_tokens = 0  # prompt tokens the last generation took from the cache
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    # ---- small C helpers ---------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        lib = self._ik.lib
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = int(lib.llama_model_meta_val_str(self._model, key.encode(), buf, size))
            if n < 0:
                return None
            if n < size:
                return buf.raw[:n].decode("utf-8")
            size = n + 1

    def _token_text(self, tok: int) -> str:
        raw = self._ik.lib.llama_token_get_text(self._model, tok)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def _tokenize(self, data: bytes, *, add_bos: bool, special: bool) -> list[int]:
        lib = self._ik.lib
        cap = len(data) + 8
        buf = (ctypes.c_int32 * cap)()
        n = int(lib.llama_tokenize(self._model, data, len(data), buf, cap, add_bos, special))
        if n < 0:
            cap = -n
            buf = (ctypes.c_int32 * cap)()
            n = int(lib.llama_tokenize(self._model, data, len(data), buf, cap, add_bos, special))
            if n < 0:
                raise ModelError(f"tokenization failed ({n})")
        return list(buf[:n])

    def _piece(self, tok: int) -> bytes:
        lib = self._ik.lib
        buf = ctypes.create_string_buffer(64)
        n = int(lib.llama_token_to_piece(self._model, tok, buf, 64, 0, False))
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = int(lib.llama_token_to_piece(self._model, tok, buf, -n, 0, False))
        return buf.raw[: max(n, 0)]

    def _reset_cache(self) -> None:
        self._ik.lib.llama_kv_cache_clear(self._ctx)
        self._cached = []

    def _decode(self, tokens: list[int], start: int, *, all_logits: bool = False) -> None:
        """Evaluate ``tokens`` at positions start.. in batches; logits for the last one (or all)."""
        lib = self._ik.lib
        batch = self._batch
        for off in range(0, len(tokens), self.n_batch):
            chunk = tokens[off : off + self.n_batch]
            last = off + len(chunk) == len(tokens)
            for i, tok in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = start + off + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if all_logits or (last and i == len(chunk) - 1) else 0
            batch.n_tokens = len(chunk)
            rc = int(lib.llama_decode(self._ctx, batch))
            if self.capture is not None:
                self.capture.raise_errors()
            if rc != 0:
                self._reset_cache()
                raise ModelError(f"ik_llama.cpp llama_decode failed ({rc}) at position {start + off}")
            self._cached.extend(chunk)

    def _logits(self) -> np.ndarray:
        ptr = self._ik.lib.llama_get_logits_ith(self._ctx, -1)
        if not ptr:
            raise ModelError("ik_llama.cpp returned no logits")
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float32, copy=True)

    def _prefill(self, tokens: list[int], limit: int) -> int:
        """Evaluate a prompt, reusing the cached prefix (at most ``limit`` tokens of it); returns how many
        prompt tokens were reused."""
        keep = reusable_prefix(self._cached, tokens, limit)
        if keep == 0:
            self._reset_cache()
        elif keep < len(self._cached):
            if not self._ik.lib.llama_kv_cache_seq_rm(self._ctx, 0, keep, -1):
                keep = 0
                self._reset_cache()
            else:
                del self._cached[keep:]
        self._decode(tokens[keep:], keep)
        return keep

    # ---- tokens -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of raw text (no chat template, no BOS)."""
        return len(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of raw text (no chat template, no BOS)."""
        return self._tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The templated prompt string (system/user/assistant turns + assistant header)."""
        return self._template.render(messages)

    def chat_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the templated prompt, with BOS only when the template did not already write it."""
        prompt = self.chat_prompt(messages)
        add_bos = self._add_bos and not (self._bos_text and prompt.startswith(self._bos_text))
        return self._tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

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
        if self._ctx is None:
            raise ModelError("engine is closed")
        lib = self._ik.lib
        with self._lock:
            if self.capture is not None:
                self.capture.reset()
            t0 = time.perf_counter()
            reused = self._prefill(tokens, reuse_limit)
            self.last_reused_tokens = reused

            def sampled() -> Iterator[int]:
                """Each next token is sampled from the logits of the one before, evaluated only when asked for."""
                while True:
                    tok = sample_token(self._logits(), temperature, self._rng)
                    yield tok
                    self._decode([tok], len(self._cached))

            out = yield from stream_text(
                sampled(),
                piece=self._piece,
                is_eog=lambda tok: bool(lib.llama_token_is_eog(self._model, tok)),
                stop=stop,
                max_tokens=max_tokens,
                t0=t0,
            )
            stats = sampled_stats(self.info, self.capture, prompt_tokens=len(tokens), t0=t0, out=out)
            charge_computed_prompt(stats, self.info, reused=reused, prompt_tokens=len(tokens))
        yield Generation(text=out.text, stats=stats, finish_reason=out.finish)

    def last_logits(self, text: str) -> np.ndarray:
        """Logits after evaluating raw text from an empty cache (the dense-equivalence checks)."""
        toks = self._tokenize(text.encode("utf-8"), add_bos=self._add_bos, special=False)
        with self._lock:
            self._reset_cache()
            self._decode(toks, 0, all_logits=bool(self.capture and self.capture.capture_ffn_input))
            return self._logits()

    def eval_tokens(self, tokens: list[int]) -> None:
        """Run tokens through the model from an empty cache (calibration capture)."""
        with self._lock:
            self._reset_cache()
            self._decode(tokens, 0, all_logits=bool(self.capture and self.capture.capture_ffn_input))

    def close(self) -> None:
        """Free the batch, context and model ik_llama.cpp allocated; safe to call twice."""
        ik = getattr(self, "_ik", None)
        if ik is None:
            return
        lib = ik.lib
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            lib.llama_free_model(self._model)
            self._model = None


def build(request: EngineRequest) -> LLMEngine:
    """`ik_llama`: the same GGUF files through ik_llama.cpp; checked before a default build it could not serve."""
    if not ik_available():
        raise ModelError(f"backend 'ik_llama' needs ik-llama-cpp-python: pip install {IK_PIP}")
    return IkLlamaEngine(request.gguf_path(), n_threads=request.n_threads, **request.engine_options())
