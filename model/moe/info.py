"""What ``sparq model info`` prints: total and active parameters, experts, top-k, shared experts.

It reads headers only (a GGUF's metadata, a checkpoint's config on the meta device), so it answers at once
and never loads weights or builds the default; for a MoEfied build it adds what the manifest recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.moe.manifest import default_model_manifest, model_dir
from model.moe.source_weights import default_source


def _info_from_checkpoint_dir(path: Path) -> Any:
    """ModelInfo of a Hugging Face checkpoint without loading weights (meta device)."""
    import torch
    import transformers

    from model.base import ModelNotFound, UnsupportedArchitecture
    from model.transformers_engine import DENSE_TYPES, FAMILIES, info_from_model

    if not (path / "config.json").is_file():
        raise ModelNotFound(f"{path} is not a Hugging Face checkpoint (no config.json)")
    cfg = transformers.AutoConfig.from_pretrained(str(path))
    if cfg.model_type not in FAMILIES and cfg.model_type not in DENSE_TYPES:
        raise UnsupportedArchitecture(f"model_type {cfg.model_type!r} is not supported: {path}")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return info_from_model(model, name=path.name, path=str(path), context_window=None)


def model_info_summary(path_or_engine: Any) -> dict[str, Any]:
    """What ``sparq model info`` prints: total/active params, experts, top-k, shared experts."""
    from model.base import LLMEngine
    from model.gguf_info import info_from_gguf

    if isinstance(path_or_engine, LLMEngine):
        info = path_or_engine.info
    elif Path(path_or_engine).is_dir():
        info = _info_from_checkpoint_dir(Path(path_or_engine))
    else:
        info = info_from_gguf(Path(path_or_engine), backend="llamacpp", context_window=None)
    dense_ffn_params = 3 * info.hidden_size * info.dense_ffn_size * info.n_moe_layers
    active_ffn = (
        info.n_moe_layers
        * 3
        * info.hidden_size
        * (info.shared_ffn_size + info.n_experts_used * info.expert_ffn_size)
    )
    out: dict[str, Any] = {
        "name": info.name,
        "backend": info.backend,
        "architecture": info.architecture,
        "path": info.path,
        "context_window": info.context_window,
        "layers": info.n_layers,
        "moe_layers": info.n_moe_layers,
        "experts": info.n_experts,
        "top_k": info.n_experts_used,
        "shared_experts": info.n_shared_experts,
        "expert_ffn_size": info.expert_ffn_size,
        "shared_ffn_size": info.shared_ffn_size,
        "total_params": info.total_params,
        "active_params_per_token": info.active_params_per_token,
        "active_fraction": round(info.active_params_per_token / info.total_params, 4)
        if info.total_params
        else None,
    }
    if info.is_moe and dense_ffn_params and info.dense_ffn_size:
        out["active_ffn_fraction_vs_dense"] = round(active_ffn / dense_ffn_params, 4)
    manifest = Path(info.path).parent / "manifest.json" if info.path else None
    if manifest is not None and manifest.is_file():
        m = json.loads(manifest.read_text(encoding="utf-8"))
        out["moefied_from"] = m.get("source")
        out["calibration"] = m.get("calibration", {}).get("mean")
    return out


def describe_model(data_dir: Path, model: str | None = None, *, source: str | None = None) -> dict[str, Any]:
    """``sparq model info``: summary of a GGUF, or of the built default (never builds it)."""
    from model.base import ModelNotFound

    if model is None:
        src = source or default_source()
        m = default_model_manifest(Path(data_dir), src)
        if m is None:
            raise ModelNotFound(
                f"the default model is not built yet under {model_dir(Path(data_dir), src)}: "
                "run `sparq model build-default`"
            )
        model = str(model_dir(Path(data_dir), src) / m["file"])
    return model_info_summary(model)
