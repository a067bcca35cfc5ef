#!/usr/bin/env bash
# Set up (first time) and run sparq on the embedded defaults: with no arguments the web UI,
# otherwise the CLI with the given arguments (e.g. `scripts/run.sh ingest ./docs --collection handbook`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  exec .venv/bin/sparq ui
fi
exec .venv/bin/sparq "$@"
