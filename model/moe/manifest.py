"""What a build records about itself (``manifest.json`` beside the GGUF), and the check that reuses it.

The manifest is how a build is reused instead of repeated: it holds the settings the build was made with
and the size of the file it wrote, so a later call with the same source checksum and settings returns the
file at once, and a changed setting (or a damaged file) rebuilds. It also carries the figures ``sparq model
info`` and the README quote (router recall, relative errors, active FFN fraction, timings).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from model.moe.gguf_reader import SourceShape
from model.moe.source_weights import DEFAULT_SOURCE, sha256_file
from model.moe.split import DEFAULT_ALIGN, ExpertLayout

BUILD_VERSION = 1
MANIFEST = "manifest.json"
# the per-layer figures averaged into the manifest's calibration.mean
SUMMARY_KEYS = (
    "rel_err_router",
    "rel_err_oracle",
    "rel_err_shared_only",
    "router_recall",
    "rel_err_router_refit",
    "refit_used",
)


def model_dir(data_dir: Path, source: str, variant: str = "") -> Path:
    """Cache folder of a build: data_dir/models/sparq-moe-<source>[-<variant>]."""
    return Path(data_dir) / "models" / (f"sparq-moe-{source}" + (f"-{variant}" if variant else ""))


def build_settings(
    *,
    source: str,
    source_sha256: str,
    train_top_k: int,
    n_experts: int,
    shared_fraction: float,
    calib_tokens: int,
    router_steps: int,
    custom_calibration: str | bool,
    refit_lambda: float | None,
    align: int = DEFAULT_ALIGN,
    default_calibration: str | None = None,
) -> dict[str, Any]:
    """The settings a build is made with: a finished build is reused only if all of them match.

    ``default_calibration`` fingerprints the text a build without custom calibration used
    (:func:`model.moe.calibration.default_calibration_id`): a build made before it was recorded, or on another
    text, is rebuilt, because its routers were fitted on something else than what this version ships."""
    return {
        "build_version": BUILD_VERSION,
        "source": source,
        "source_sha256": source_sha256,
        "train_top_k": train_top_k,
        "n_experts_target": n_experts,
        "shared_fraction": shared_fraction,
        "align": align,
        "calib_tokens": calib_tokens,
        "router_steps": router_steps,
        "custom_calibration": custom_calibration,
        "default_calibration": default_calibration,
        "refit_lambda": refit_lambda,
    }


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the build in ``folder`` (raises if there is none: check with :func:`manifest_ok`)."""
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


# Settings added after builds existed, with the value every build before them was made with: a manifest that
# lacks one is read as that value, so an upgrade does not rebuild a model it would build the same.
SETTINGS_BEFORE_RECORDED = {"align": DEFAULT_ALIGN}


def manifest_ok(manifest: Path, want: dict[str, Any]) -> bool:
    """Whether ``manifest`` describes a complete file made with the settings ``want``."""
    if not manifest.is_file():
        return False
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    gguf_path = manifest.parent / m.get("file", "")
    if not gguf_path.is_file() or gguf_path.stat().st_size != m.get("file_size"):
        return False
    return all(m.get(k, SETTINGS_BEFORE_RECORDED.get(k)) == v for k, v in want.items())


def default_model_manifest(data_dir: Path, source: str = DEFAULT_SOURCE) -> dict[str, Any] | None:
    """The manifest of the built default of ``source``, or None when it is not built."""
    p = model_dir(Path(data_dir), source) / MANIFEST
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def active_ffn_fraction(shared_size: int, expert_size: int, top_k: int, dense_ffn: int) -> float:
    """Share of the dense FFN's neurons a token uses: the shared expert plus top-k routed experts."""
    return (shared_size + top_k * expert_size) / dense_ffn


def mean_metrics(layer_metrics: list[dict[str, float]]) -> dict[str, float]:
    """The per-layer figures of :data:`SUMMARY_KEYS` averaged over the layers that have them."""
    return {
        k: round(float(np.mean([m[k] for m in layer_metrics if k in m])), 5)
        for k in SUMMARY_KEYS
        if any(k in m for m in layer_metrics)
    }


def routing_note(refit: bool) -> str:
    """How the written routers weigh the experts (the exactness trick, and what a refit changes)."""
    return (
        "softmax over router logits scaled to ~1e-3 (weights ~1/E), experts' down proj x E, "
        "shared expert gate ~0.5 and down proj x 2: all experts active == dense block"
        + (
            ""
            if not refit
            else "; down projections ridge-refitted to the top-k masks "
            "(compensates dropped experts, no longer exactly dense with all experts)"
        )
    )


def build_manifest(
    want: dict[str, Any],
    *,
    top_k: int,
    out_file: Path,
    source_file: Path,
    shape: SourceShape,
    layout: ExpertLayout,
    refit: bool,
    calib_tokens: int,
    tokens_captured: int,
    calibration_source: str,
    layer_metrics: list[dict[str, float]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The manifest of a finished build: its settings, the file (size, sha256), the layout and the figures."""
    return {
        **want,
        "top_k": top_k,
        "file": out_file.name,
        "file_size": out_file.stat().st_size,
        "file_sha256": sha256_file(out_file),
        "source_file": source_file.name,
        "architecture": "qwen2moe",
        "n_layers": shape.n_layers,
        "hidden_size": shape.hidden_size,
        "dense_ffn": shape.dense_ffn,
        "n_experts": layout.n_experts,
        "expert_size": layout.expert_size,
        "shared_expert_size": layout.shared_size,
        "active_ffn_fraction": active_ffn_fraction(
            layout.shared_size, layout.expert_size, top_k, shape.dense_ffn
        ),
        "routing": routing_note(refit),
        "calibration": {
            "tokens": calib_tokens,
            "tokens_captured": int(tokens_captured),
            "source": calibration_source,
            "mean": mean_metrics(layer_metrics),
            "per_layer": layer_metrics,
        },
        "seconds": seconds,
        "quantization": "Q4_K_M (llama.cpp), attention/embeddings copied from the source",
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``folder``'s manifest atomically (a reader never sees half of it)."""
    path = folder / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def retarget_manifest(gguf_path: Path, top_k: int) -> None:
    """Record a new served top-k (and the patched file's size and sha256) in the manifest beside ``gguf_path``."""
    m = read_manifest(gguf_path.parent)
    m.update(
        top_k=top_k,
        active_ffn_fraction=active_ffn_fraction(
            m["shared_expert_size"], m["expert_size"], top_k, m["dense_ffn"]
        ),
        file_sha256=sha256_file(gguf_path),
        file_size=gguf_path.stat().st_size,
    )
    write_manifest(gguf_path.parent, m)
