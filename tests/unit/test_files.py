"""common.files: a file replaced whole, durably, or left as it was."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from common import files
from common.errors import FileNotWritten


def test_the_new_content_replaces_the_old_with_its_mode_and_no_temporary_stays(
    tmp_path: Path,
) -> None:
    target = tmp_path / "tokens.yaml"
    target.write_text("old\n")
    files.replace_whole(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.yaml"]


def test_the_mode_asked_is_the_file_s_whatever_the_umask(tmp_path: Path) -> None:
    before = os.umask(0o077)
    try:
        files.replace_whole(tmp_path / "registry.csv", b"device_id\n", mode=0o664)
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "registry.csv").stat().st_mode) == 0o664


def test_a_write_the_disk_refuses_is_one_error_naming_the_file_which_is_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails the write or its fsync (tmpfs at the write, ext4 often at the fsync):
    either way the old file stays whole and the error says which file, for the operator's one
    line (test_cli.py's full disk is the same end to end)."""
    target = tmp_path / "tokens.yaml"
    target.write_text("old\n")

    def full(_: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(FileNotWritten, match=f"{target} not written .No space left on device"):
        files.replace_whole(target, b"new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.yaml"]


def test_a_read_only_file_system_is_one_error_though_the_cleanup_fails_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a read-only mount both the temporary's creation and its removal fail (EROFS, even for
    a name that is not there): the error says the file was not written, not the removal's."""
    target = tmp_path / "registry.csv"

    def read_only(*_: object, **__: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.os, "open", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(FileNotWritten, match=r"not written \(Read-only file system\)"):
        files.replace_whole(target, b"device_id\n")


def test_a_check_s_own_os_error_is_its_own_not_the_file_s(tmp_path: Path) -> None:
    """A check that cannot read what it needs (a profile file) is not blamed on the file being
    written: its error is raised as it is, and the file stays as it was."""
    target = tmp_path / "registry.csv"
    target.write_text("device_id\n")

    def check(_: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "profiles/variants.yaml")

    with pytest.raises(PermissionError, match=r"variants\.yaml"):
        files.replace_whole(target, b"device_id\nSL-1\n", check=check)
    assert target.read_text() == "device_id\n"
    assert [p.name for p in tmp_path.iterdir()] == ["registry.csv"]


def test_temporaries_a_crash_left_are_swept_and_a_writer_s_at_work_kept(tmp_path: Path) -> None:
    left = tmp_path / ".dynamic-security.json.0a1b2c3d.tmp"
    working = tmp_path / ".dynamic-security.json.4e5f6a7b.tmp"
    other = tmp_path / ".tokens.yaml.0a1b2c3d.tmp"  # another file's: not this sweep's
    for path in (left, working, other):
        path.write_bytes(b"{}")
    old = time.time() - files.STALE_S - 60
    os.utime(left, (old, old))
    os.utime(other, (old, old))
    files.replace_whole(tmp_path / "dynamic-security.json", b"{}")
    assert not left.exists() and working.exists() and other.exists()


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


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another owner needs root")
def test_a_replaced_file_keeps_the_owner_and_group_an_operator_gave_it(tmp_path: Path) -> None:
    # A broker's key handed to the broker's user: renewed by root, it must stay readable by it.
    key = tmp_path / "server.key"
    key.write_bytes(b"old")
    os.chown(key, 65534, 65533)
    files.replace_whole(key, b"new", mode=0o640, keep_owner=True)
    after = key.stat()
    assert (after.st_uid, after.st_gid, key.read_bytes()) == (65534, 65533, b"new")
    assert stat.S_IMODE(after.st_mode) == 0o640
    fresh = tmp_path / "new.key"
    files.replace_whole(fresh, b"x", keep_owner=True)
    assert (fresh.stat().st_uid, fresh.stat().st_gid) == (os.geteuid(), os.getegid())
    # Not asked: the writer's own, whoever held the file before (a tokens file, say).
    files.replace_whole(key, b"newer")
    assert (key.stat().st_uid, key.stat().st_gid) == (os.geteuid(), os.getegid())


def test_a_group_that_cannot_be_kept_gets_no_access(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who may not give the file its old group (not root, not a member): the group
    bits asked are dropped, or the writer's own group would read a key meant for another."""
    key = tmp_path / "server.key"
    key.write_bytes(b"old")
    before = key.stat()
    modes: list[int] = []

    def refused(descriptor: int, uid: int, gid: int) -> None:
        modes.append(stat.S_IMODE(os.fstat(descriptor).st_mode))  # what the file is meanwhile
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fstat", lambda fd: _other_owner(os.stat(f"/proc/self/fd/{fd}")))
    monkeypatch.setattr(os, "fchown", refused)
    files.replace_whole(key, b"new", mode=0o640, keep_owner=True)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert modes == [0o600, 0o600]  # owner-only while its owner was being settled
    assert key.read_bytes() == b"new" and before.st_ino != key.stat().st_ino


def _other_owner(result: os.stat_result) -> os.stat_result:
    """`result` as if the file were not the one the replaced file's owner made."""
    fields = list(result)
    fields[4], fields[5] = result.st_uid + 1, result.st_gid + 1
    return os.stat_result(fields)
