"""`citysense secrets` run again over a deploy/secrets folder an older version wrote: the API's
tokens file moves into the folder the API's container mounts, readable by its user."""

from __future__ import annotations

import stat
from pathlib import Path

from citysense import secrets


def test_an_older_tokens_file_is_moved_and_made_readable(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    out.mkdir(mode=0o700)
    old = out / "api_tokens.yaml"
    old.write_text("tokens:\n  - {name: operator, sha256: " + "0" * 64 + ", scope: city}\n")
    old.chmod(0o600)  # as `citysense tokens` wrote it before
    text = old.read_text()
    secrets._operator_token(out)
    moved = out / secrets.TOKENS_FOLDER / "api_tokens.yaml"
    assert not old.exists() and moved.read_text() == text
    assert stat.S_IMODE(moved.stat().st_mode) == 0o644
    assert stat.S_IMODE(moved.parent.stat().st_mode) == 0o755
