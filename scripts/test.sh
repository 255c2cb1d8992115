#!/usr/bin/env bash
# Install the project with its test dependencies (and Ray, which the Ray executor's tests start)
# into ./.venv, then run the whole test suite.
#   scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,ray
exec .venv/bin/python -m pytest "$@"
