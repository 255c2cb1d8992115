#!/usr/bin/env bash
# Install the project into ./.venv, then run the main job end to end on the embedded default
# snapshot (tiny preset, CPU): data assets -> training -> evaluation -> samples, tracked in
# MLflow, recorded in a persistent Dagster instance under ./workspace.
#   scripts/run.sh [hgpt run args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/hgpt run "$@"
