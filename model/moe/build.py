"""The embedded default's build, as a sequence of named steps reporting progress.

``build_default_model`` checks the settings, takes the build lock, reuses a finished build whose manifest
matches (re-targeting only its served top-k where that alone changed), and otherwise runs :data:`STEPS`
in order, layer by layer with bounded memory: join and checksum the source's parts; prepare a temporary
folder; capture each layer's FFN input on calibration chats; split each layer and fit its router (and, for
``--refit`` builds, refit its down projection); write an F16 MoE GGUF copying the attention/embedding
tensors byte for byte; quantize it to Q4_K_M with llama.cpp's quantizer; write the manifest; rename the
folder into place atomically. Each step is a small function of
the :class:`Build` it reads and fills, and reports its progress through the build's ``(message, fraction)``
callback (the CLI draws it as a tqdm bar).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.base import ModelError
from model.moe.build_lock import build_lock
from model.moe.calibration import default_calibration_id, default_calibration_samples, squad_path
from model.moe.capture import capture_ffn_inputs
from model.moe.gguf_reader import SourceShape, dequant_ffn, source_shape
from model.moe.gguf_writer import quantize_gguf, set_expert_used_count, write_moe_gguf
from model.moe.layer import moefy_ffn
from model.moe.manifest import (
    MANIFEST,
    build_manifest,
    build_settings,
    manifest_ok,
    model_dir,
    read_manifest,
    retarget_manifest,
    write_manifest,
)
from model.moe.progress import Progress, recording, say
from model.moe.source_weights import DEFAULT_SOURCE, SOURCES, default_source, source_gguf
from model.moe.split import DEFAULT_ALIGN, ExpertLayout, choose_layout
from model.moe.tensors import expert_tensors


@dataclass(frozen=True)
class Layout:
    """A source's default expert layout: routed experts (about), the shared expert's share, the alignment."""

    n_experts: int
    shared_fraction: float
    align: int


# The 1.5B source: 30 experts of 256 neurons and a 1,280-neuron shared expert, so every expert tensor stays in
# Q4_K/Q6_K blocks and llama.cpp runs fewer, larger products. On the full ask path's first 20 questions of each
# set (README, session 15), served at top-24 (83% of the dense FFN), its answers contain the gold answer as
# often as dense's on SQuAD (85%) and more often on CMRC (70% against 65%), at 0.94x and 0.93x the dense time
# per query; the 61 x 128 layout of sessions 10-14 (Layout(64, 0.125, 32), top-35, 63% of the FFN) took
# 1.30-1.36x, and this layout at top-20 (71%) answered 65% on SQuAD.
DEFAULT_LAYOUT = {"qwen2.5-coder-1.5b": Layout(30, 1280 / 8960, 256)}
# other sources (the 0.5B test source): about 64 experts, 1/8 shared, 32-aligned
OTHER_LAYOUT = Layout(64, 0.125, DEFAULT_ALIGN)
# experts per token the router (and the down-projection refit) is fitted for
TRAIN_TOP_K = {"qwen2.5-coder-1.5b": 20, "qwen2.5-coder-0.5b": 28}
# the top-k the exact split serves (see DEFAULT_LAYOUT); the routers rank all experts, so it may exceed the
# trained top-k
DEFAULT_TOP_K = {"qwen2.5-coder-1.5b": 24, "qwen2.5-coder-0.5b": 28}
# A refitted build (``--refit``) serves the top-k it was fitted to. On the 61 x 128 layout it reached 0.91 of the
# dense F1 at 26 with the gold paragraph, and on the 256 layout at top-16 (session 14) it answered 55% on the
# full path against dense's 85%: worse than the exact split every time, so it is not the default.
REFIT_TOP_K = {"qwen2.5-coder-1.5b": 20, "qwen2.5-coder-0.5b": 28}
# 8,192 tokens of the bundled text (about 76 of its 92 passages): on the full ask path's first 20 questions
# (README, session 13) 80% of SQuAD and 75% of CMRC answers contain the gold answer against 70% and 65% at
# 4,096 tokens, at 2.4 times the build time of the earlier 1,926-token text.
DEFAULT_CALIB_TOKENS = 8192
# ridge strength of the down-projection refit of ``--refit`` builds (bench/moe_layouts.py --refit-lambdas)
REFIT_LAMBDA = 0.1
OUT_NAME = "model-q4_k_m.gguf"
F16_NAME = "model-f16.gguf"


def build_top_k(
    source: str, top_k: int | None, train_top_k: int | None, refit_lambda: float | None
) -> tuple[int, int]:
    """(top-k the routers and refit are fitted for, top-k served) of a build."""
    served = REFIT_TOP_K if refit_lambda is not None else DEFAULT_TOP_K
    k_train = train_top_k or TRAIN_TOP_K.get(source) or top_k or served.get(source, 16)
    if top_k:
        return k_train, top_k
    if refit_lambda is not None and train_top_k is not None:
        return k_train, train_top_k  # a refit is fitted to the trained top-k's selections: serve that
    return k_train, served.get(source, k_train)


@dataclass
class Build:
    """One build: its settings (fixed before the lock is taken) and what its steps have made so far."""

    source: str
    final_dir: Path
    want: dict[str, Any]  # the settings the manifest records and a reuse must match
    k_train: int
    k_served: int
    n_experts: int
    shared_fraction: float
    align: int
    calib_tokens: int
    router_steps: int
    calibration: Iterable[list[dict[str, str]]] | None
    n_threads: int | None
    refit_lambda: float | None
    data_dir: Path
    progress: Progress | None = None
    t_start: float = 0.0
    # filled in by the steps, in order
    src_path: Path | None = None
    reader: Any = None
    shape: SourceShape | None = None
    layout: ExpertLayout | None = None
    tmp_dir: Path | None = None
    ffn_inputs: dict[int, np.ndarray] = field(default_factory=dict)
    tokens_captured: int = 0
    layers: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    layer_metrics: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def out_file(self) -> Path:
        """The quantized GGUF in the build's temporary folder."""
        assert self.tmp_dir is not None
        return self.tmp_dir / OUT_NAME


def build_default_model(
    data_dir: Path,
    *,
    source: str = DEFAULT_SOURCE,
    progress: Progress | None = None,
    top_k: int | None = None,
    train_top_k: int | None = None,
    n_experts: int | None = None,
    shared_fraction: float | None = None,
    align: int | None = None,
    calib_tokens: int = DEFAULT_CALIB_TOKENS,
    router_steps: int = 300,
    calibration: Iterable[list[dict[str, str]]] | None = None,
    n_threads: int | None = None,
    force: bool = False,
    refit_lambda: float | None = None,
    variant: str = "",
    calibration_id: str | None = None,
) -> Path:
    """MoEfy ``source`` into a qwen2moe Q4_K_M GGUF under data_dir/models/ and return its path.

    Idempotent: a finished build with the same source checksum and settings is reused.
    Writes into a temporary folder and renames it into place, so an interrupted build never
    leaves a half-written model that looks valid.

    ``refit_lambda``: ``None`` (the default) builds the exact split, which equals the dense model with every
    expert active; a value ridge-refits each layer's down projection to the router's top-k selections (the
    kept experts make up for the dropped ones: bench/moe.py F1 0.91 of dense at 50% active FFN, but worse
    answers than the exact split on the six-passage answer path, see README).
    ``n_experts``, ``shared_fraction``, ``align``: the expert layout, each defaulting to the source's
    :data:`DEFAULT_LAYOUT`. Expert and shared sizes are multiples of ``align``: 256 keeps every expert tensor
    (the down projections' rows are one expert long) in Q4_K/Q6_K blocks; at 32 the quantizer falls back to
    Q5_0/Q8_0 for them (issue 15).
    ``variant`` names a build kept beside the default (``sparq-moe-<source>-<variant>``), e.g. one
    calibrated on the customer's documents; ``calibration_id`` fingerprints custom calibration text
    so that a changed text rebuilds instead of reusing the old routers.

    The whole check-and-build runs under a lock file beside the build (``models/.<name>.lock``, an flock the
    kernel releases if the holder dies), so a second process or thread waits, reporting the running build's
    progress (from ``models/.<name>.progress.json``), and then reuses its result instead of building again.
    """
    if source not in SOURCES:
        raise ModelError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    data_dir = Path(data_dir)
    layout = DEFAULT_LAYOUT.get(source, OTHER_LAYOUT)
    n_experts = layout.n_experts if n_experts is None else n_experts
    shared_fraction = layout.shared_fraction if shared_fraction is None else shared_fraction
    align = layout.align if align is None else align
    k_train, k_served = build_top_k(source, top_k, train_top_k, refit_lambda)
    want = build_settings(
        source=source,
        source_sha256=SOURCES[source].sha256,
        train_top_k=k_train,
        n_experts=n_experts,
        shared_fraction=shared_fraction,
        calib_tokens=calib_tokens,
        router_steps=router_steps,
        custom_calibration=calibration_id or (calibration is not None),
        refit_lambda=refit_lambda,
        align=align,
        default_calibration=None if calibration is not None else default_calibration_id(),
    )
    build = Build(
        source=source,
        final_dir=model_dir(data_dir, source, variant),
        want=want,
        k_train=k_train,
        k_served=k_served,
        n_experts=n_experts,
        shared_fraction=shared_fraction,
        align=align,
        calib_tokens=calib_tokens,
        router_steps=router_steps,
        calibration=calibration,
        n_threads=n_threads,
        refit_lambda=refit_lambda,
        data_dir=data_dir,
    )
    with build_lock(build.final_dir, progress):
        build.progress = recording(build.final_dir, progress)
        build.t_start = time.time()
        if not force and (reused := reuse_finished(build)) is not None:
            return reused
        return run_steps(build)


def reuse_finished(b: Build) -> Path | None:
    """The finished build's file where its manifest matches ``b``'s settings (its served top-k re-targeted
    in place if only that changed), else None: build it."""
    if not manifest_ok(b.final_dir / MANIFEST, b.want):
        return None
    m = read_manifest(b.final_dir)
    if m.get("top_k") != b.k_served:
        set_default_top_k(b.final_dir / m["file"], b.k_served)
        say(b.progress, f"default top-k set to {b.k_served} (was {m.get('top_k')}), no rebuild needed", 1.0)
    else:
        say(b.progress, "default model already built", 1.0)
    return b.final_dir / m["file"]


def join_source(b: Build) -> None:
    """Join and checksum the source's parts; read its shape; choose the expert layout; check the top-ks."""
    import gguf

    say(b.progress, f"joining and checking source {b.source}", 0.0)
    b.src_path = source_gguf(b.source, b.data_dir)
    b.reader = gguf.GGUFReader(str(b.src_path))
    b.shape = source_shape(b.reader)
    b.layout = choose_layout(
        b.shape.dense_ffn, n_experts=b.n_experts, shared_fraction=b.shared_fraction, align=b.align
    )
    for k in (b.k_served, b.k_train):
        if not 1 <= k <= b.layout.n_experts:
            raise ModelError(f"top_k={k} out of range for {b.layout.n_experts} experts")


def prepare_folder(b: Build) -> None:
    """A fresh temporary folder beside the final one; folders left by killed builds are removed."""
    final_dir = b.final_dir
    b.tmp_dir = tmp_dir = final_dir.parent / f".{final_dir.name}.tmp{os.getpid()}"
    for pattern in (f".{final_dir.name}.tmp*", f".{final_dir.name}.old*"):  # left by killed builds
        for stale in final_dir.parent.glob(pattern):
            pid = stale.name.rsplit(".tmp" if ".tmp" in stale.name else ".old", 1)[-1]
            if stale != tmp_dir and stale.is_dir() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(stale, ignore_errors=True)
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)


def capture_inputs(b: Build) -> None:
    """Run the dense source on the calibration chats, keeping every layer's FFN input."""
    assert b.src_path is not None and b.shape is not None
    samples = b.calibration if b.calibration is not None else default_calibration_samples()
    b.ffn_inputs = capture_ffn_inputs(
        b.src_path, samples, b.calib_tokens, n_threads=b.n_threads, progress=b.progress
    )
    if sorted(b.ffn_inputs) != list(range(b.shape.n_layers)):
        raise ModelError(
            f"calibration captured layers {sorted(b.ffn_inputs)}, expected 0..{b.shape.n_layers - 1}"
        )
    b.tokens_captured = b.ffn_inputs[0].shape[0]


def split_layers(b: Build) -> None:
    """MoEfy each layer in turn (dequantize, split, fit the router, refit if asked), reporting its figures."""
    assert b.shape is not None and b.layout is not None
    n_layers = b.shape.n_layers
    for il in range(n_layers):
        wg, wu, wd = dequant_ffn(b.reader, il)
        layer = moefy_ffn(
            wg,
            wu,
            wd,
            b.ffn_inputs.pop(il),
            b.layout,
            top_k=b.k_train,
            router_steps=b.router_steps,
            seed=il,
            refit_lambda=b.refit_lambda,
        )
        tens = expert_tensors(wg, wu, wd, layer, b.shape.hidden_size)
        b.layers[il] = {
            k: (v.astype(np.float16) if v.ndim > 1 and k != "router" else v) for k, v in tens.items()
        }
        b.layer_metrics.append({"layer": il, **{k: round(v, 5) for k, v in layer.metrics.items()}})
        say(
            b.progress,
            f"layer {il + 1}/{n_layers}: router recall {layer.metrics.get('router_recall', 0):.2f}, "
            f"rel. error router {layer.metrics.get('rel_err_router', 0):.3f} vs oracle "
            f"{layer.metrics.get('rel_err_oracle', 0):.3f}",
            0.05 + 0.75 * (il + 1) / n_layers,
        )


def write_f16(b: Build) -> None:
    """Write the MoE as an F16 qwen2moe GGUF (attention and embeddings copied from the source)."""
    assert b.src_path is not None and b.tmp_dir is not None and b.layout is not None
    say(b.progress, "writing F16 MoE GGUF", 0.82)
    write_moe_gguf(b.src_path, b.tmp_dir / F16_NAME, b.layers, b.layout, b.k_served)
    b.layers = {}


def quantize(b: Build) -> None:
    """Quantize the F16 GGUF to Q4_K_M with llama.cpp, then drop the F16 file."""
    assert b.tmp_dir is not None
    say(b.progress, "quantizing to Q4_K_M with llama.cpp", 0.88)
    f16 = b.tmp_dir / F16_NAME
    quantize_gguf(f16, b.out_file, n_threads=b.n_threads)
    f16.unlink()


def write_build_manifest(b: Build) -> None:
    """Record the settings, the file and the figures in the temporary folder's manifest."""
    assert b.tmp_dir is not None and b.src_path is not None and b.shape is not None and b.layout is not None
    manifest = build_manifest(
        b.want,
        top_k=b.k_served,
        out_file=b.out_file,
        source_file=b.src_path,
        shape=b.shape,
        layout=b.layout,
        refit=b.refit_lambda is not None,
        calib_tokens=b.calib_tokens,
        tokens_captured=b.tokens_captured,
        calibration_source="custom" if b.calibration is not None else str(squad_path() or "bundled"),
        layer_metrics=b.layer_metrics,
        seconds={
            "capture": round(b.seconds["capture"], 1),
            "split": round(b.seconds["split"], 1),
            "total": round(time.time() - b.t_start, 1),
        },
    )
    write_manifest(b.tmp_dir, manifest)


def install(b: Build) -> None:
    """Rename the finished folder into place; a forced rebuild moves the old one aside first, then deletes it."""
    assert b.tmp_dir is not None
    final_dir = b.final_dir
    if final_dir.exists():
        old_dir = final_dir.parent / f".{final_dir.name}.old{os.getpid()}"
        if old_dir.exists():
            shutil.rmtree(old_dir)
        os.replace(final_dir, old_dir)
        os.replace(b.tmp_dir, final_dir)
        shutil.rmtree(old_dir)
    else:
        os.replace(b.tmp_dir, final_dir)


Step = Callable[[Build], None]
# the steps of a new build, in order; "capture" and "split" name the times the manifest records
STEPS: tuple[tuple[str, Step], ...] = (
    ("source", join_source),
    ("folder", prepare_folder),
    ("capture", capture_inputs),
    ("split", split_layers),
    ("write_f16", write_f16),
    ("quantize", quantize),
    ("manifest", write_build_manifest),
    ("install", install),
)


def run_steps(b: Build) -> Path:
    """Make the build: run :data:`STEPS` in order, timing each by its name; the temporary folder is removed
    whatever happens (after ``install`` it is gone: renamed into place)."""
    try:
        for name, step in STEPS:
            t0 = time.time()
            step(b)
            b.seconds[name] = time.time() - t0
    finally:
        if b.tmp_dir is not None and b.tmp_dir.exists():
            shutil.rmtree(b.tmp_dir)
    say(b.progress, f"default model ready in {time.time() - b.t_start:.0f} s", 1.0)
    return b.final_dir / OUT_NAME


def set_default_top_k(gguf_path: Path, top_k: int) -> None:
    """Change the served experts-per-token of a built default in place (a 4-byte header field),
    and record it in its manifest; routers rank all experts, so no retraining is needed."""
    m = read_manifest(gguf_path.parent)
    if not 1 <= top_k <= int(m["n_experts"]):
        raise ModelError(f"top_k={top_k} out of range for {m['n_experts']} experts")
    set_expert_used_count(gguf_path, top_k)
    retarget_manifest(gguf_path, top_k)


def ensure_default_model(data_dir: Path, progress: Progress | None = None) -> Path:
    """The default model path, building it on first use (what the first ``ask`` calls)."""
    return build_default_model(Path(data_dir), source=default_source(), progress=progress)
