#!/usr/bin/env bash
# Install the project with its test dependencies into ./.venv, then run the whole test suite.
#   scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
