"""The latest state's start-up load streamed from the real InfluxDB (chunked answers, parsed as
they arrive), and the chunked query itself: every device's reading arrives whole however the
answer is cut into chunks and network blocks; an InfluxQL error met in a chunked answer is an
error, not an empty answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from api.core import query
from api.live import service
from api.main import create_app
from citysense.servers import LocalServers
from common.errors import InfluxRejected
from common.influx import AsyncInfluxClient, InfluxClient, InfluxConfig, ParamValue, _Lines
from tests.support.api import api_settings, running
from tests.support.seeding import Point, line_protocol
from tests.support.times import S, rfc3339

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

LAMPS = 40


def _points(now: int) -> list[Point]:
    """Each lamp: an older reading and its latest, with its own values."""
    points = []
    for n in range(LAMPS):
        device = f"SL-L{n:03d}"
        district = "North" if n % 2 else "South"
        points.append(Point("streetlight", device, district, {"powerState": "off"}, now - 90 * S))
        latest = {"powerState": "on", "voltage": 200.0 + n, "doorOpen": n % 3 == 0}
        points.append(Point("streetlight", device, district, latest, now - n * S))
    return points


async def test_every_device_loaded_whole_across_chunks(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with InfluxClient(influx) as client:
        client.write(line_protocol(_points(now)))
    monkeypatch.setattr(service, "LOAD_SLICE", 3)  # rows per chunk: many chunks per answer
    registry = "device_id,profile,district,latitude,longitude,address\n" + "".join(
        f"SL-L{n:03d},streetlight,{'North' if n % 2 else 'South'},30.2,120.1,\n"
        for n in range(LAMPS)
    )
    settings = api_settings(servers, influx, tmp_path, registry=registry)
    async with running(create_app(settings)) as client:
        body = (await client.get("/devices", params={"limit": 1000})).json()
    assert body["total"] == LAMPS
    got = {item["device_id"]: item["reading"] for item in body["items"]}
    assert got == {
        f"SL-L{n:03d}": {
            "time": rfc3339(now - n * S),
            "values": {"powerState": "on", "voltage": 200.0 + n, "doorOpen": n % 3 == 0},
        }
        for n in range(LAMPS)
    }


async def test_chunked_query_returns_every_row_and_reports_errors(
    influx: InfluxConfig, now: int
) -> None:
    with InfluxClient(influx) as client:
        client.write(line_protocol(_points(now)))
    client = AsyncInfluxClient(influx)
    try:
        rows = []
        async for series in client.query_chunks(
            'SELECT "voltage" FROM "streetlight" GROUP BY "device_id"', epoch="ns", chunk_size=7
        ):
            rows.extend((s.tags["device_id"], *row) for s in series for row in s.values)
        assert sorted(rows) == sorted(
            (f"SL-L{n:03d}", now - n * S, 200.0 + n) for n in range(LAMPS)
        )
        with pytest.raises(InfluxRejected):
            async for _ in client.query_chunks('SELECT nonsense( FROM "streetlight"'):
                pass
    finally:
        await client.aclose()


def test_lines_are_whole_whatever_the_blocks() -> None:
    text = b'{"a":1}\n{"b":22}\n\n{"c":333}'
    for cut in range(1, len(text)):
        lines = _Lines()
        parts = [*lines.feed(text[:cut]), *lines.feed(text[cut:]), *lines.rest()]
        assert [p for p in parts if p] == [b'{"a":1}', b'{"b":22}', b'{"c":333}']


async def test_a_large_part_is_asked_in_pieces_of_few_series(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With at most 3 series a query, every registered lamp is still loaded with its latest
    reading, ids that are prefixes of others and hold punctuation included, and one stored under
    another district than the registry's; no query asks InfluxDB for more than 3 series."""
    ids = [f"L{n}" for n in range(14)] + ["L1.0", "L1:0", "L1_0", "L1-0"]
    registry = "device_id,profile,district,latitude,longitude,address\n" + "".join(
        f"{i},streetlight,{'North' if n % 2 else 'South'},30.2,120.1,\n" for n, i in enumerate(ids)
    )
    stored = {
        i: ("South" if i == "L3" else "North" if n % 2 else "South") for n, i in enumerate(ids)
    }
    points = [
        Point("streetlight", i, stored[i], {"powerState": "on", "voltage": 200.0 + n}, now - n * S)
        for n, i in enumerate(ids)
    ]
    points.append(Point("streetlight", "Q9", "North", {"powerState": "on"}, now))  # unregistered
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
    asked: list[tuple[str, dict[str, ParamValue]]] = []
    fetch_chunks = query.fetch_chunks

    def recording(influx_: AsyncInfluxClient, q: query.Query, *args: Any, **kwargs: Any) -> Any:
        if "LIMIT 1" in q.text:
            asked.append((q.text, dict(q.params)))
        return fetch_chunks(influx_, q, *args, **kwargs)

    monkeypatch.setattr(query, "fetch_chunks", recording)
    settings = api_settings(servers, influx, tmp_path, registry=registry, api_load_series=3)
    async with running(create_app(settings)) as client:
        body = (await client.get("/devices", params={"limit": 1000})).json()
    got = {item["device_id"]: item["reading"] for item in body["items"]}
    assert got == {
        i: {"time": rfc3339(now - n * S), "values": {"powerState": "on", "voltage": 200.0 + n}}
        for n, i in enumerate(ids)
    }
    assert len(asked) > 4  # two districts, cut into pieces, each with its rest
    with InfluxClient(influx) as client:
        for text, params in asked:
            assert len(client.query(text, params)[0]) <= 3, (text, params)
