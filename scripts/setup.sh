#!/usr/bin/env bash
# Set up a fresh Debian machine for CitySense: Mosquitto, InfluxDB and Chromium from Debian's
# packages when missing, and a Python virtual environment in .venv with the project installed.
# Idempotent and quick when nothing changed. Sourced by scripts/up.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif have sudo; then sudo "$@"; else
    echo "need root to run: $*" >&2; exit 1
  fi
}

missing=()
have mosquitto || missing+=(mosquitto)
have mosquitto_passwd || missing+=(mosquitto-clients)
have influxd || missing+=(influxdb)
have promtool || missing+=(prometheus)  # the shipped Prometheus config is tested with it
# ip and tc: the network tests put each part on a host of its own (network namespaces, veth).
{ have ip && have tc; } || missing+=(iproute2)
# The operations screen's tests drive Debian's Chromium (Playwright downloads no browser here).
have chromium || missing+=(chromium)
# `docker-compose config` validates docker-compose.yml in the tests (no container engine needed).
have docker-compose || missing+=(docker-compose)
have python3 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "CitySense needs Python 3.11 or newer; found $(python3 --version)" >&2; exit 1
}

# Reinstall only when the dependencies changed.
stamp=.venv/.citysense-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "creating the virtual environment in .venv"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
