#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv (first time ~1-2 min), then run a real
# sweep on the embedded corpus: search_spaces/lm.yaml with its smoke overlay, 8 DNA trainings,
# 2 at a time on a local Ray cluster, chosen by Optuna (~2 min on 2 CPU cores), ending with routing
# reports on the front and the Pareto table. Extra arguments are passed on, e.g.: budget.trials=4
# The cluster is a new local one of the sweep's own (never one `ray start` left running on the machine);
# if there is no Ray token yet, dnasweep creates ~/.ray/auth_token with mode 600 (Ray alone: 644).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
exec .venv/bin/dnasweep run search_spaces/lm.yaml --smoke "$@"
