"""The default model's build runs once: concurrent builders (threads or processes) wait for the running build
and reuse its result instead of building again and replacing (deleting) each other's output.

The builds are real (`build_default_model` on a random-weight two-layer qwen2 GGUF registered as a source,
seconds to build), so the lock, the manifest re-check and the rename into place are the shipped code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "tiny-lock-test"
PACKAGE = "sparq_tiny_lock_source"
BUILD_KW = dict(
    source=SOURCE, top_k=2, train_top_k=2, n_experts=4, calib_tokens=96, router_steps=20, n_threads=1
)
SAMPLES = [
    [
        {"role": "user", "content": f"Sample {i}: meals are reimbursed up to 40 euros per day."},
        {"role": "assistant", "content": "40 euros"},
    ]
    for i in range(8)
]


CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def write_byte_tokenizer_gguf(path: Path) -> Path:
    """A GGUF holding only a byte-level BPE tokenizer (263 tokens, ChatML template): a tiny model borrowing it
    loads and converts in a second, where a real 49k-token vocabulary takes tens of seconds to copy."""
    import gguf

    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = iter(range(256, 512))
    byte_chars = [chr(b if b in printable else next(shifted)) for b in range(256)]  # GPT-2's byte mapping
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + byte_chars + ["Ġt", "he", "in", "er"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    w.add_token_merges(["Ġ t", "h e", "i n", "e r"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_source(tmp_path, monkeypatch) -> Path:
    """A dense random-weight qwen2 GGUF installed as the importable package a source names (like the
    shipped weight packages), registered in SOURCES for this test; returns the folder holding the package."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from model.moe.source_weights import SOURCES, SourceModel, sha256_file
    from model.tiny import write_tiny_qwen2_gguf

    site = tmp_path / "site"
    pkg = site / PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    gguf_path = write_tiny_qwen2_gguf(
        pkg / "dense.gguf", write_byte_tokenizer_gguf(tmp_path / "tokenizer.gguf")
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(
        SOURCES,
        SOURCE,
        SourceModel(SOURCE, "tiny test source", (PACKAGE,), ("none",), sha256_file(gguf_path), 0),
    )
    return site


def _check_result(data_dir: Path, path: Path) -> dict:
    """The build's manifest, after checking it describes the file that is there (none half-written)."""
    from model.moe.manifest import model_dir
    from model.moe.source_weights import sha256_file

    folder = model_dir(data_dir, SOURCE)
    assert path.parent == folder and path.is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["file_size"] == path.stat().st_size and manifest["file_sha256"] == sha256_file(path)
    assert not list(folder.parent.glob(f".{folder.name}.tmp*"))  # no build left behind
    return manifest


def test_a_second_builder_waits_shows_the_running_build_and_reuses_it(tmp_path, tiny_source):
    from model.moe.build import build_default_model

    data_dir = tmp_path / "data"
    inside, release = threading.Event(), threading.Event()
    first: dict = {}

    def slow_progress(message: str, fraction: float) -> None:
        if message.startswith("layer 1/2"):  # hold the first build in the middle of its work
            inside.set()
            assert release.wait(60)

    def build_first() -> None:
        first["path"] = build_default_model(data_dir, calibration=SAMPLES, progress=slow_progress, **BUILD_KW)

    builder = threading.Thread(target=build_first)
    builder.start()
    try:
        assert inside.wait(120), "the first build did not start"
        seen: list[tuple[str, float]] = []
        second: dict = {}
        waiter = threading.Thread(
            target=lambda: second.setdefault(
                "path",
                build_default_model(
                    data_dir, calibration=SAMPLES, progress=lambda m, f: seen.append((m, f)), **BUILD_KW
                ),
            )
        )
        waiter.start()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiter.is_alive(), f"the second builder did not wait for the running build: {seen}"
        assert any("layer 1/2" in m for m, _ in seen), seen  # it relays the running build's progress
    finally:
        release.set()
        builder.join(120)
    waiter.join(120)
    assert not waiter.is_alive()
    assert second["path"] == first["path"]
    assert not any(m.startswith(("joining", "calibration capture", "layer")) for m, _ in seen), (
        seen
    )  # no 2nd build
    assert seen[-1][0] == "default model already built"
    _check_result(data_dir, first["path"])


CHILD = r"""
import json, sys, time
from pathlib import Path
root, site, data_dir, me, sha = sys.argv[1:6]
sys.path[:0] = [root, site]
from model.moe.source_weights import SOURCES, SourceModel
SOURCES[{source!r}] = SourceModel({source!r}, "tiny test source", ({package!r},), ("none",), sha, 0)
from model.moe.build import build_default_model
import llama_cpp, gguf  # imported before the start line, so both builds start together
Path(data_dir, me + ".ready").write_text("")
while not Path(data_dir, "go").exists():
    time.sleep(0.005)
steps = []
path = build_default_model(Path(data_dir), calibration={samples!r}, progress=lambda m, f: steps.append(m), **{kw!r})
print(json.dumps({{"path": str(path), "steps": steps}}))
"""


def test_two_processes_building_at_once_build_once_and_keep_the_result(tmp_path, tiny_source):
    from model.moe.source_weights import SOURCES

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    code = CHILD.format(source=SOURCE, package=PACKAGE, samples=SAMPLES, kw=BUILD_KW)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                str(ROOT),
                str(tiny_source),
                str(data_dir),
                name,
                SOURCES[SOURCE].sha256,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((data_dir / f"{n}.ready").exists() for n in "ab"):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
                p.communicate() for p in procs if p.poll() is not None
            ]
            time.sleep(0.05)
        (data_dir / "go").write_text("")
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    built = [r for r in results if any(s.startswith("layer 1/2") for s in r["steps"])]
    assert len(built) == 1, [r["steps"] for r in results]  # exactly one build ran
    assert results[0]["path"] == results[1]["path"]
    reused = next(r for r in results if r is not built[0])
    assert reused["steps"][-1] == "default model already built"
    _check_result(data_dir, Path(results[0]["path"]))
