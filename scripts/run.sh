#!/usr/bin/env bash
# Set up (first time) and run sparq on the embedded defaults: with no arguments the web UI,
# otherwise the CLI with the given arguments (e.g. `scripts/run.sh ingest ./docs --collection handbook`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- ui
fi
if [ "$1" = ui ]; then
  # Build the embedded default model now (once, with a progress bar; minutes on a fresh install), so no
  # employee's first question waits for it. Does nothing when another model is configured; if the build
  # fails, the UI still starts (search and ingest work) and the chat page shows the error.
  .venv/bin/sparq model build-default --if-used \
    || echo "sparq: the default model could not be built (see above); starting the UI anyway" >&2
fi
exec .venv/bin/sparq "$@"
