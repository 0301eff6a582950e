"""Long windows past the readings' retention, from the hourly roll-ups of the `long_term` policy
(the continuous queries' own SELECT, run here over the past hours as InfluxDB runs it on its
schedule), on the real InfluxDB. InfluxDB's retention has dropped the readings older than 24 h
first: those buckets can only come from the roll-ups. Expected values are computed here from the
raw readings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.core.settings import ApiSettings
from citysense.servers import LocalServers
from common.influx import InfluxClient
from common.schema import rollup_pieces, rollup_select
from tests.support.api import api_settings
from tests.support.influx import make_database, rows
from tests.support.polling import wait_for
from tests.support.seeding import Point, line_protocol
from tests.support.servers import ACL_ROOT
from tests.support.times import HOUR, MIN, rfc3339

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

EVERY = 6 * HOUR
DAYS = 3
REGISTRY = "device_id,profile,district,latitude,longitude,address\nWP-1,water_pipe,North,30,120,\n"


def raw(now: int) -> list[tuple[int, float]]:
    """A pressure reading every 10 minutes for three days up to the last whole hour."""
    last_hour = now - now % HOUR
    first = last_hour - DAYS * 24 * HOUR
    return [(t, 1.0 + (n * 7 % 13) / 10) for n, t in enumerate(range(first, last_hour, 10 * MIN))]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalServers]:
    """Servers whose InfluxDB drops expired shard groups every second."""
    servers = LocalServers.create(tmp_path / "servers", root=ACL_ROOT)
    servers.influxdb.retention_check = "1s"
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def app_settings(stack: LocalServers, tmp_path: Path, now: int) -> ApiSettings:
    """Three days of readings, rolled up hour by hour; then the readings' policy shortened to
    24 h, so that InfluxDB itself drops the older readings (hour-long shard groups)."""
    influx = make_database(stack)
    readings = raw(now)
    points = [Point("water_pipe", "WP-1", "North", {"pressure": v}, t) for t, v in readings]
    first, end = readings[0][0], readings[-1][0] + 10 * MIN
    policy = f'"readings" ON "{influx.database}"'
    with InfluxClient(influx) as client:
        client.query(f"ALTER RETENTION POLICY {policy} SHARD DURATION 1h")
        client.write(line_protocol(points))
        for _, ids in rollup_pieces():  # as the continuous queries roll it up, piece by piece
            where = f"{ids} AND time >= {first:d} AND time < {end:d}"
            select = rollup_select(influx.database, "water_pipe", where)
            client.query(f"{select} GROUP BY time(1h), *")
        client.query(f"ALTER RETENTION POLICY {policy} DURATION 24h")
    oldest = "SELECT * FROM water_pipe ORDER BY time ASC LIMIT 1"
    wait_for(
        lambda: rows(influx, oldest)[0]["time"] >= now - 25 * HOUR, 20, what="readings dropped"
    )
    return api_settings(stack, influx, tmp_path, registry=REGISTRY, retention_readings="24h")


def expected(now: int, agg: str) -> dict[str, float]:
    buckets: dict[int, list[float]] = defaultdict(list)
    for t, v in raw(now):
        buckets[t - t % EVERY].append(v)
    combine = {"mean": lambda b: sum(b) / len(b), "min": min, "max": max, "count": len, "sum": sum}
    return {rfc3339(t): float(combine[agg](b)) for t, b in sorted(buckets.items())}


@pytest.mark.parametrize("agg", ["mean", "min", "max", "count", "sum"])
async def test_a_window_longer_than_the_retention_is_answered_in_full(
    api: httpx.AsyncClient, now: int, agg: str
) -> None:
    readings = raw(now)
    params: dict[str, Any] = {"field": "pressure", "agg": agg, "every": "6h"}
    params |= {"start": rfc3339(readings[0][0]), "end": rfc3339(now - now % HOUR)}
    response = await api.get("/devices/WP-1/history", params=params)
    assert response.status_code == 200, response.text
    got = {p["time"]: p["value"] for p in response.json()["points"]}
    want = expected(now, agg)
    assert got.keys() == want.keys()  # the buckets before the retention are there too
    for bucket, value in want.items():
        assert got[bucket] == pytest.approx(value, rel=1e-9), bucket
    assert min(want) < rfc3339(now - 25 * HOUR)  # the question reached past the retention
