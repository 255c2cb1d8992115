#!/usr/bin/env bash
# Create ./.venv (once) and install the project into it, editable, with the given extras.
#   scripts/setup.sh            # runtime only
#   scripts/setup.sh test       # + test dependencies
#   scripts/setup.sh test,ray   # + Ray, for the Ray executor (what scripts/test.sh installs)
# torch is installed first, pinned to 2.13.0 unless HGPT_TORCH overrides it (e.g. a CUDA build
# on a GPU machine): a bare "torch" requirement can make pip fetch a multi-GB CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip() {
    # Some machines' pip configs list local package mirrors that may be absent: drop that noise.
    .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    pip install "${HGPT_TORCH:-torch==2.13.0}"
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
pip install -e "$target"
