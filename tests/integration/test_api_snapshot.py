"""The API restarted from its state snapshot (api.live.snapshot) on the real InfluxDB and broker:
what was stored while it was down is in its state after the restart, whatever its age; a late
reading older than the snapshot's value does not replace it; only the parts whose change marks
moved are queried again; a snapshot that cannot be trusted is refused and the full load is exact.

Readings are written as ingest writes them: the readings, then one change mark per (profile,
district, window) with a fresh stamp (ingest.changes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from api.core.settings import ApiSettings
from api.live import snapshot
from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from ingest.changes import change_lines
from tests.support.api import api_settings, running
from tests.support.seeding import Point, line_protocol
from tests.support.times import S, rfc3339
from wire.changes import window_of
from wire.retention import CHANGES

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REGISTRY = (
    "device_id,profile,district,latitude,longitude,address\n"
    "SL-1,streetlight,North,30.2,120.1,\n"
    "SL-2,streetlight,North,30.2,120.1,\n"
    "SL-3,streetlight,North,30.2,120.1,\n"
    "WP-1,water_pipe,South,30.2,120.1,\n"
)
LOG = "api.live.service"


def _store(influx: InfluxConfig, points: list[Point], *, marks: bool = True) -> None:
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
        if marks:
            changes = {(p.measurement, p.district, window_of(p.time_ns)) for p in points}
            client.write("\n".join(change_lines(changes)).encode(), policy=CHANGES)


def _light(device: str, state: str, time_ns: int) -> Point:
    return Point("streetlight", device, "North", {"powerState": state}, time_ns)


async def _readings(settings: ApiSettings) -> dict[str, object]:
    async with running(create_app(settings)) as client:
        body = (await client.get("/devices", params={"limit": 100})).json()
    return {item["device_id"]: item["reading"] for item in body["items"]}


def _reading(state: str, time_ns: int) -> dict[str, object]:
    return {"time": rfc3339(time_ns), "values": {"powerState": state}}


def _settings(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> ApiSettings:
    return api_settings(
        servers, influx, tmp_path, registry=REGISTRY, api_data_dir=tmp_path / "data"
    )


async def test_a_restart_from_the_snapshot_has_what_was_stored_while_down(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _store(
        influx,
        [
            _light("SL-1", "off", now - 3 * 3600 * S),
            _light("SL-2", "on", now - 600 * S),
            _light("SL-3", "off", now - 7200 * S),
            Point("water_pipe", "WP-1", "South", {"pressure": 3.5}, now - 300 * S),
        ],
    )
    settings = _settings(servers, influx, tmp_path)
    with caplog.at_level(logging.INFO, logger=LOG):
        first = await _readings(settings)  # the full load; the snapshot written at shutdown
    assert "from InfluxDB in full" in caplog.text
    assert first["SL-1"] == _reading("off", now - 3 * 3600 * S)
    assert (tmp_path / "data" / snapshot.FILE_NAME).is_file()

    # While the API is down:
    _store(
        influx,
        [
            # a late reading, an hour before the snapshot was taken, newer than SL-1's value;
            _light("SL-1", "fault", now - 3600 * S),
            # a late reading older than SL-2's value in the snapshot;
            _light("SL-2", "off", now - 1200 * S),
            # a new reading.
            _light("SL-3", "on", now),
        ],
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOG):
        second = await _readings(settings)
    assert "from the snapshot" in caplog.text
    # Only streetlights in North were written since: the water pipes were not queried again.
    assert "(1 changed profile and district parts" in caplog.text
    assert second == {
        "SL-1": _reading("fault", now - 3600 * S),
        "SL-2": _reading("on", now - 600 * S),
        "SL-3": _reading("on", now),
        "WP-1": {"time": rfc3339(now - 300 * S), "values": {"pressure": 3.5}},
    }


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "case",
    [
        (_flip, "checksum mismatch"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "checksum mismatch"),
        (lambda p: p.write_bytes(b""), "not a state snapshot"),
    ],
)
async def test_a_spoilt_snapshot_is_refused_and_the_full_load_is_exact(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: tuple[Callable[[Path], object], str],
) -> None:
    spoil, reason = case
    now = time.time_ns() // S * S
    _store(influx, [_light("SL-1", "off", now - 600 * S)])
    settings = _settings(servers, influx, tmp_path)
    await _readings(settings)
    spoil(tmp_path / "data" / snapshot.FILE_NAME)
    # Without a mark: only a full load can find it.
    _store(influx, [_light("SL-1", "on", now - 60 * S)], marks=False)
    with caplog.at_level(logging.INFO, logger=LOG):
        readings = await _readings(settings)
    assert f"not used ({reason}" in caplog.text
    assert "from InfluxDB in full" in caplog.text
    assert readings["SL-1"] == _reading("on", now - 60 * S)
    assert readings["SL-2"] is None


async def test_a_snapshot_of_another_registry_is_refused(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _store(influx, [_light("SL-1", "off", now - 600 * S)])
    await _readings(_settings(servers, influx, tmp_path))
    _store(influx, [_light("SL-4", "on", now - 60 * S)], marks=False)
    grown = _settings(servers, influx, tmp_path).model_copy(
        update={"registry": tmp_path / "grown.csv"}
    )
    (tmp_path / "grown.csv").write_text(REGISTRY + "SL-4,streetlight,North,30.2,120.1,\n")
    with caplog.at_level(logging.INFO, logger=LOG):
        readings = await _readings(grown)
    assert "not used (written for another database, other profiles or another registry)" in (
        caplog.text
    )
    assert readings["SL-4"] == _reading("on", now - 60 * S)
    assert readings["SL-1"] == _reading("off", now - 600 * S)
