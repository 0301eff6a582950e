#!/usr/bin/env bash
# Set up (if needed) and start the whole CitySense stack locally: Mosquitto, InfluxDB, an ingest
# worker, the API and a simulated city publishing live. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/citysense up "$@"
