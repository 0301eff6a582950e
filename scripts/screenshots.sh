#!/usr/bin/env bash
# Regenerates the README's screenshots of the operations screen (docs/screen-desk.png and
# docs/screen-wall.png) from a real run on servers of its own; about two minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# Chinese labels need a CJK font in the pictures (the tests do not).
fc-list :lang=zh | grep -q . || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-wqy-microhei
}
exec .venv/bin/python -m bench.screen.shots "$@"
