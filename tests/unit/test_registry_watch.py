"""ingest.registry_watch: a changed registry file is used once it loads, ignored (and the old one
kept) while it does not."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from device_profiles import Registry, load_profiles
from ingest.registry_watch import RegistryWatch

HEADER = "device_id,profile,district,latitude,longitude,address\n"


def touch_later(path: Path, text: str, step: int) -> None:
    path.write_text(text)
    stat = path.stat()  # a distinct mtime even within one clock tick
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + step * 1_000_000_000))


def test_reloads_a_good_change_and_keeps_the_old_registry_on_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.csv"
    path.write_text(HEADER + "SL-1,streetlight,North,30.1,120.1,a\n")
    used: list[Registry] = []
    watch = RegistryWatch(path, load_profiles(), {}, used.append)
    assert not watch.check()  # unchanged since the worker loaded it
    touch_later(
        path, HEADER + "SL-1,streetlight,North,30.1,120.1,a\nSL-2,water_pipe,South,30,120,b\n", 1
    )
    assert watch.check()
    assert sorted(used[-1].devices) == ["SL-1", "SL-2"]
    assert not watch.broken
    with caplog.at_level(logging.ERROR):
        touch_later(path, HEADER + "SL-3,no_such_profile,North,30,120,c\n", 2)
        assert not watch.check()
    assert len(used) == 1 and "no_such_profile" in caplog.text
    assert watch.broken  # the gauge registry_broken, until a change loads
    assert not watch.check()  # looked at again unchanged: still broken, not logged again
    assert watch.broken
    touch_later(path, HEADER + "SL-3,water_pipe,North,30,120,c\n", 3)
    assert watch.check()
    assert not watch.broken


def test_a_change_saved_in_another_encoding_keeps_the_registry_and_the_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "registry.csv"
    path.write_text(HEADER + "SL-1,streetlight,North,30.1,120.1,a\n")
    used: list[Registry] = []
    watch = RegistryWatch(path, load_profiles(), {}, used.append)
    path.write_bytes((HEADER + "SL-1,streetlight,North,30.1,120.1,Café\n").encode("latin-1"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not watch.check()  # before: UnicodeDecodeError ended the thread, and the worker
    assert watch.broken and used == []


def test_a_registry_file_gone_is_said_once_and_its_return_is_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted or moved away (a deploy gone wrong): the registry in use is kept, the watch says
    it is broken and logs it once — before, a missing file read as unchanged, and every device
    added afterwards would have been unknown, unnoticed. Back, it is loaded."""
    path = tmp_path / "registry.csv"
    path.write_text(HEADER + "SL-1,streetlight,North,30.1,120.1,a\n")
    used: list[Registry] = []
    watch = RegistryWatch(path, load_profiles(), {}, used.append)
    path.unlink()
    with caplog.at_level(logging.ERROR):
        assert not watch.check()
        assert not watch.check()
    assert watch.broken and used == []
    assert [r.getMessage() for r in caplog.records] == [
        f"registry {path} is gone or unreadable; keeping the old one"
    ]
    path.write_text(
        HEADER + "SL-1,streetlight,North,30.1,120.1,a\nSL-2,water_pipe,South,30,120,b\n"
    )
    assert watch.check() and not watch.broken
    assert sorted(used[-1].devices) == ["SL-1", "SL-2"]
