#!/usr/bin/env bash
# Set up (if needed) and run every check CI runs: lint, types, and the test suite against real
# Mosquitto and InfluxDB servers that the tests start themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== import-linter (the layers of the tree)"
.venv/bin/lint-imports
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
# Two processes, a test file each at a time (its module fixtures stay in one process); each
# process starts its own servers.
.venv/bin/pytest -q -n 2 --dist loadfile "$@"
