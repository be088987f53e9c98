#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv (first time ~1-2 min), then train the DNA
# language model of search_spaces/lm.yaml on the embedded corpus (~4 min on 2 CPU cores).
# Extra arguments are passed on, e.g.: bash jobs/quickstart.sh model.kind=dense
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
exec .venv/bin/dnasweep train search_spaces/lm.yaml "$@"
