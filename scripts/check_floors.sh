#!/usr/bin/env bash
# Check the version floors pyproject.toml declares: resolve the OLDEST allowed release of every
# direct dependency (uv's lowest-direct resolution) for the oldest Python it allows, install that
# set into a fresh virtual environment and run tests on it (the default tier of the files given,
# or of all of them). Needs uv (pip install uv) and a Python 3.10 (FLOORS_PYTHON=/path/to/python3.10).
#   scripts/check_floors.sh tests/test_rl.py tests/test_tabular.py
set -euo pipefail
cd "$(dirname "$0")/.."
python="${FLOORS_PYTHON:-python3.10}"
work="$(mktemp -d)"
uv pip compile pyproject.toml --extra dev --resolution lowest-direct --python-version 3.10 \
  --python-platform x86_64-unknown-linux-gnu -q -o "$work/floors.txt"
grep -E '^[A-Za-z0-9_.-]+==' "$work/floors.txt" > "$work/pins.txt"
echo "== the floor set ($work/floors.txt): $(wc -l < "$work/pins.txt") packages"
uv venv -q -p "$python" "$work/venv"
uv pip install -q -p "$work/venv/bin/python" -r "$work/floors.txt" pytest-timeout
uv pip install -q -p "$work/venv/bin/python" --no-deps -e .
"$work/venv/bin/python" -m pytest -m "not slow and not e2e" -q -p no:cacheprovider --timeout 900 "$@"
