#!/usr/bin/env bash
# Set up the environment with the test tools, then lint, check formatting and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
venv="${NNDET_VENV:-.venv}"
echo "[test] ruff check"
"$venv/bin/ruff" check .
echo "[test] ruff format --check"
"$venv/bin/ruff" format --check .
echo "[test] pytest"
"$venv/bin/python" -m pytest "$@"
