"""common.files: a file replaced whole, durably, or left as it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common import files


def test_the_new_content_replaces_the_old_with_its_mode_and_no_temporary_stays(
    tmp_path: Path,
) -> None:
    target = tmp_path / "tokens.yaml"
    target.write_text("old\n")
    files.replace_whole(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.yaml"]


def test_a_refused_check_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "registry.csv"
    target.write_text("device_id\nSL-1\n")
    seen: list[bytes] = []

    def check(candidate: Path) -> None:
        seen.append(candidate.read_bytes())  # written whole before it is judged
        raise ValueError("row 3: unknown profile")

    with pytest.raises(ValueError, match="row 3"):
        files.replace_whole(target, b"device_id\nSL-1\nXX-1\n", mode=0o644, check=check)
    assert seen == [b"device_id\nSL-1\nXX-1\n"]
    assert target.read_text() == "device_id\nSL-1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["registry.csv"]


def test_the_file_and_then_its_folder_are_synced_before_it_is_said_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the two fsyncs a power cut soon after can leave an empty file under the name."""
    synced: list[str] = []
    real = os.fsync

    def fsync(descriptor: int) -> None:
        kind = os.fstat(descriptor).st_mode
        synced.append("folder" if stat.S_ISDIR(kind) else "file")
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    files.replace_whole(tmp_path / "sub" / "dynamic-security.json", b"{}")
    assert synced == ["file", "folder"]
