"""Read a GGUF file's header (no weights loaded) into a ModelInfo, and validate it first.

Done with the ``gguf`` reader (memory-mapped) so a missing, truncated or foreign file is reported
with its cause before llama.cpp is asked to load it (llama.cpp only says "failed to load").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.accounting import nominal_active_params
from model.base import ModelError, ModelInfo, ModelNotFound, UnsupportedArchitecture

GGUF_MAGIC = b"GGUF"

# llama.cpp architectures sparq can run *and* account for (dense ones have n_experts = 0).
MOE_ARCHS = {"qwen2moe", "qwen3moe", "olmoe", "deepseek2", "granitemoe", "llama4", "mixtral"}
DENSE_ARCHS = {"llama", "qwen2", "qwen3", "mistral", "granite", "olmo", "olmo2", "gemma", "gemma2", "phi3"}
SUPPORTED_ARCHS = MOE_ARCHS | DENSE_ARCHS


def check_gguf_file(path: Path) -> None:
    """Raise ModelNotFound / ModelError naming what is wrong with the file."""
    if not path.exists():
        raise ModelNotFound(f"model file not found: {path}")
    if not path.is_file():
        raise ModelNotFound(f"model path is not a file: {path}")
    size = path.stat().st_size
    if size < 32:
        raise ModelError(f"model file is corrupt (only {size} bytes): {path}")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"model file is not a GGUF file (magic {magic!r}, expected b'GGUF'): {path}")


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """Metadata (scalars/strings only) and tensor shapes in ggml order; raises ModelError if corrupt."""
    import gguf

    check_gguf_file(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # gguf raises ValueError/IndexError/struct.error on truncation
        raise ModelError(f"model file is corrupt or truncated ({type(exc).__name__}: {exc}): {path}") from exc
    meta: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key in (
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.scores",
        ):
            meta[key + ".len"] = len(fld.data)
            continue
        try:
            meta[key] = fld.contents()
        except Exception as exc:  # malformed field: name it
            raise ModelError(f"model file has an unreadable metadata field {key!r}: {path}") from exc
    shapes = {t.name: tuple(int(v) for v in t.shape) for t in reader.tensors}
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > path.stat().st_size:
        raise ModelError(f"model file is truncated ({path.stat().st_size} < {end} bytes): {path}")
    meta["__n_params__"] = n_params
    return meta, shapes


def info_from_gguf(
    path: Path, *, backend: str, context_window: int | None, top_k: int | None = None
) -> ModelInfo:
    """ModelInfo from the header; ``top_k`` reflects an expert_used_count override if any."""
    meta, shapes = read_gguf_header(path)
    arch = str(meta.get("general.architecture", "?"))
    n_experts = int(meta.get(f"{arch}.expert_count", 0) or 0)
    arch_label = "mixtral" if arch == "llama" and n_experts > 0 else arch
    if arch_label not in SUPPORTED_ARCHS:
        raise UnsupportedArchitecture(
            f"GGUF architecture {arch!r} is not supported by sparq "
            f"(supported: {', '.join(sorted(SUPPORTED_ARCHS))}): {path}"
        )

    def g(key: str, default: int = 0) -> int:
        val = meta.get(f"{arch}.{key}", default)
        if isinstance(val, list):  # per-layer arrays: take the max
            val = max(val) if val else default
        return int(val)

    n_layers = g("block_count")
    d = g("embedding_length")
    n_heads = g("attention.head_count")
    n_kv = g("attention.head_count_kv", n_heads) or n_heads
    head_dim = g("attention.key_length", d // max(n_heads, 1)) or d // max(n_heads, 1)
    vocab = shapes.get("token_embd.weight", (d, 0))[1]
    n_moe_layers = sum(1 for name in shapes if name.endswith("ffn_gate_inp.weight"))
    expert_ffn = g("expert_feed_forward_length")
    if n_experts and not expert_ffn:
        gexp = next((s for n, s in shapes.items() if n.endswith("ffn_gate_exps.weight")), None)
        expert_ffn = gexp[1] if gexp else 0
    shared_ffn = g("expert_shared_feed_forward_length")
    n_shared = g("expert_shared_count")
    shexp = next((s for n, s in shapes.items() if n.endswith("ffn_gate_shexp.weight")), None)
    if shexp and not shared_ffn:
        shared_ffn = shexp[1]
    if shared_ffn and not n_shared:
        n_shared = 1
    used = top_k if top_k is not None else g("expert_used_count")
    train_ctx = g("context_length", 2048)
    window = min(context_window, train_ctx) if context_window else train_ctx
    info = ModelInfo(
        name=str(meta.get("general.name", path.stem)),
        backend=backend,
        architecture=arch_label,
        context_window=window,
        n_layers=n_layers,
        hidden_size=d,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        vocab_size=vocab,
        n_moe_layers=n_moe_layers,
        n_experts=n_experts,
        n_experts_used=used if n_experts else 0,
        n_shared_experts=n_shared,
        expert_ffn_size=expert_ffn,
        shared_ffn_size=shared_ffn,
        dense_ffn_size=g("feed_forward_length"),
        total_params=int(meta["__n_params__"]),
        active_params_per_token=int(meta["__n_params__"]),
        tied_embeddings="output.weight" not in shapes,
        path=str(path),
        extra={
            "train_context": train_ctx,
            "file_type": meta.get("general.file_type"),
            "n_tensors": len(shapes),
        },
    )
    return _with_active(info)


def _with_active(info: ModelInfo) -> ModelInfo:
    from dataclasses import replace

    return replace(info, active_params_per_token=nominal_active_params(info))
