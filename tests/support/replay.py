"""`citysense replay` run as an operator runs it: its summary (the JSON last line)."""

from __future__ import annotations

import subprocess
import sys

import orjson


def replay(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "citysense.cli", "replay", "--no-progress", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result
