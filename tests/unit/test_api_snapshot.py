"""The latest state's snapshot (api.live.snapshot) without servers: what is written comes back
equal and of the same type, a snapshot that cannot be trusted is refused with its reason and
changes nothing, and the change marks say which parts moved."""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.core.contract import Contract
from api.core.readings import Reading, Value
from api.live import snapshot
from api.live.coverage import Marks
from api.live.hub import Hub
from api.live.state import LiveState
from device_profiles import load_profiles, load_registry

PROFILES = load_profiles()
S = 1_000_000_000
NOW = 1_800_000_000 * S
DB = "citysense"

REGISTRY = (
    "device_id,profile,district,latitude,longitude,address\n"
    "SL-1,streetlight,North,30.2,120.1,\n"
    "SL-2,streetlight,South,30.2,120.1,\n"
    "SL-3,streetlight,South,30.2,120.1,\n"  # never reports
    "WP-1,water_pipe,North,30.2,120.1,\n"
)

READINGS: dict[str, tuple[str, int, dict[str, Value]]] = {
    "SL-1": ("streetlight", NOW - 60 * S, {"powerState": "on", "voltage": 1.0, "doorOpen": True}),
    "SL-2": ("streetlight", NOW - 7 * S, {"powerState": "fault", "status": "odd text"}),
    # Values that do not fit their column (kept as they are), and floats JSON would change.
    "WP-1": (
        "water_pipe",
        NOW - 5 * S,
        {"pressure": "n/a", "rssi": 2**70, "flow": math.inf, "temperature": -0.0},
    ),
}
MARKS: Marks = {("streetlight", "North"): {NOW - 900 * S: 12345}}


def _state(tmp_path: Path, registry: str = REGISTRY) -> LiveState:
    path = tmp_path / "registry.csv"
    path.write_text(registry)
    contract = Contract.build(PROFILES, load_registry(path, PROFILES))
    return LiveState(contract, Hub(100), late_after=1.5, silent_after=3.0)


def _fp(state: LiveState) -> str:
    return snapshot.fingerprint(state, DB)


def _readings(state: LiveState) -> dict[str, Reading | None]:
    return {d.device_id: state.reading_of(n) for n, d in enumerate(state.registered)}


def _written(tmp_path: Path) -> bytes:
    state = _state(tmp_path)
    for device_id, (profile, time_ns, values) in READINGS.items():
        state.apply(device_id, profile, time_ns, values, NOW, announce=False)
    return b"".join(snapshot.encode(state, _fp(state), NOW - 30 * S, MARKS, NOW))


def test_what_is_written_comes_back_equal_and_of_its_type(tmp_path: Path) -> None:
    data = _written(tmp_path)
    state = _state(tmp_path)
    restored = snapshot.restore(state, _fp(state), data, NOW, 3600)
    assert restored.as_of_ns == NOW - 30 * S
    assert restored.marks == MARKS
    got = _readings(state)
    assert got["SL-3"] is None
    for device_id, (_profile, time_ns, values) in READINGS.items():
        reading = got[device_id]
        assert reading is not None
        assert reading.time_ns == time_ns
        assert reading.values == values
        assert {k: type(v) for k, v in reading.values.items()} == {
            k: type(v) for k, v in values.items()
        }
    assert math.copysign(1, float(got["WP-1"].values["temperature"])) == -1  # type: ignore[union-attr]
    # A state value seen for the first time after the restore gets a code of its own.
    state.apply("SL-3", "streetlight", NOW, {"powerState": "off"}, NOW, announce=False)
    assert state.reading_of(2) == Reading(NOW, {"powerState": "off"})
    assert _readings(state)["SL-2"] == Reading(NOW - 7 * S, READINGS["SL-2"][2])


def test_it_survives_the_file_round_trip(tmp_path: Path) -> None:
    data = _written(tmp_path)
    folder = tmp_path / "data"
    assert snapshot.write(folder, [data[:10], data[10:]], 10**9)
    assert snapshot.read(folder, 10**9) == data
    assert [p.name for p in folder.iterdir()] == [snapshot.FILE_NAME]  # no temporary left


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda d: b"something else" + d, "not a state snapshot"),
        (_flip, "checksum"),
        (lambda d: d[: len(d) - 10], "checksum"),
    ],
)
def test_a_spoilt_snapshot_is_refused_and_changes_nothing(
    tmp_path: Path, spoil: object, reason: str
) -> None:
    data = spoil(_written(tmp_path))  # type: ignore[operator]
    state = _state(tmp_path)
    with pytest.raises(snapshot.Refused, match=reason):
        snapshot.restore(state, _fp(state), data, NOW, 3600)
    assert set(_readings(state).values()) == {None}


def test_a_snapshot_of_another_registry_database_or_age_is_refused(tmp_path: Path) -> None:
    data = _written(tmp_path)
    other = _state(tmp_path, REGISTRY + "SL-4,streetlight,North,30.2,120.1,\n")
    with pytest.raises(snapshot.Refused, match="another registry"):
        snapshot.restore(other, _fp(other), data, NOW, 3600)
    with pytest.raises(snapshot.Refused, match="another database"):
        state = _state(tmp_path)
        snapshot.restore(state, snapshot.fingerprint(state, "elsewhere"), data, NOW, 3600)
    with pytest.raises(snapshot.Refused, match="ago"):
        state = _state(tmp_path)
        snapshot.restore(state, _fp(state), data, NOW + 7200 * S, 3600)


def test_a_snapshot_over_the_bound_is_neither_written_nor_read(tmp_path: Path) -> None:
    data = _written(tmp_path)
    assert not snapshot.write(tmp_path / "small", [data], len(data) - 1)
    assert snapshot.write(tmp_path / "big", [data], len(data))
    with pytest.raises(snapshot.Refused, match="over the bound"):
        snapshot.read(tmp_path / "big", len(data) - 1)
    with pytest.raises(snapshot.Refused, match="no snapshot"):
        snapshot.read(tmp_path / "small", len(data))


# A child process that writes a snapshot bigger than the files it may make: the kernel refuses
# the write part-way (EFBIG), the same path through `snapshot.write` as a full disk (ENOSPC).
_WRITE_OVER_LIMIT = """
import resource, signal, sys
from pathlib import Path
from api.live import snapshot
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    snapshot.write(Path(sys.argv[1]), [b"x" * 3000, b"y" * 3000], 1 << 20)
except OSError as exc:
    print(exc.errno)
else:
    print("written")
"""


def test_a_write_the_disk_refuses_leaves_the_old_snapshot_and_no_partial_file(
    tmp_path: Path,
) -> None:
    data = _written(tmp_path)
    folder = tmp_path / "data"
    assert snapshot.write(folder, [data], len(data))
    child = subprocess.run(
        [sys.executable, "-c", _WRITE_OVER_LIMIT, str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == str(errno.EFBIG), child.stderr
    assert sorted(p.name for p in folder.iterdir()) == [snapshot.FILE_NAME]
    assert snapshot.read(folder, len(data)) == data


def test_partial_files_of_killed_writers_are_swept_but_not_a_write_under_way(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data"
    data = _written(tmp_path)
    assert snapshot.write(folder, [data], len(data))
    old = folder / f".{snapshot.FILE_NAME}.123.abcd.tmp"
    fresh = folder / f".{snapshot.FILE_NAME}.456.ef01.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    now = 1_900_000_000.0
    os.utime(old, (now - 601, now - 601))
    os.utime(fresh, (now - 5, now - 5))
    assert snapshot.sweep(folder, 600.0, now) == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted([snapshot.FILE_NAME, fresh.name])
    assert snapshot.sweep(tmp_path / "none", 600.0, now) == 0
