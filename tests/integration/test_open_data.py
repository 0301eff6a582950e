"""Open data at its boundary: a cell is published when exactly k devices contributed, suppressed
at k - 1, and a count of devices in a state (lamps on) is judged by the lamps that reported, not
by the lamps registered (issue 10, 8)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.core.settings import ApiSettings
from api.core.tokens import hash_token
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import api_settings
from tests.support.seeding import Point, line_protocol
from tests.support.times import S, rfc3339, yesterday

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

K = 5
PORTAL = "open-data-boundary-token"
# Every district registers k lamps and k pipes; what differs is how many report.
REPORTING = {"North": K, "South": K - 1, "East": 1}


def lamps(district: str) -> list[str]:
    return [f"SL-{district[0]}{n}" for n in range(K)]


def pipes(district: str) -> list[str]:
    return [f"WP-{district[0]}{n}" for n in range(K)]


@pytest.fixture
def app_settings(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> ApiSettings:
    dusk = yesterday() + 19 * 3600 * S
    points = []
    for district, reporting in REPORTING.items():
        for n in range(reporting):  # every reporting lamp is on, every pipe at 300 kPa
            points.append(
                Point("streetlight", lamps(district)[n], district, {"powerState": "on"}, dusk)
            )
            points.append(
                Point("water_pipe", pipes(district)[n], district, {"pressure": 300.0}, dusk)
            )
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
    registry = tmp_path / "registry.csv"
    rows = [
        f"{device},{profile},{district},30,120,"
        for district in REPORTING
        for profile, devices in (("streetlight", lamps(district)), ("water_pipe", pipes(district)))
        for device in devices
    ]
    registry.write_text(
        "device_id,profile,district,latitude,longitude,address\n" + "\n".join(rows) + "\n"
    )
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"tokens:\n  - {{name: portal, sha256: {hash_token(PORTAL)}, scope: open_data}}\n"
    )
    return api_settings(
        servers, influx, tmp_path, registry=registry, tokens=tokens, api_open_data_min_devices=K
    )


async def day_rows(api: httpx.AsyncClient, **params: str) -> dict[str, dict[str, object]]:
    day = yesterday()
    response = await api.get(
        "/aggregates",
        params={"every": "day", "start": rfc3339(day), "end": rfc3339(day + 86400 * S), **params},
        headers={"Authorization": f"Bearer {PORTAL}"},
    )
    assert response.status_code == 200, response.text
    return {str(r["district"]): r for r in response.json()["rows"]}


async def test_a_mean_is_published_over_k_devices_and_suppressed_over_k_minus_one(
    api: httpx.AsyncClient,
) -> None:
    rows = await day_rows(api, profile="water_pipe", field="pressure", agg="mean")
    assert (rows["North"]["value"], rows["North"]["devices"]) == (300.0, K)
    for district in ("South", "East"):
        assert rows[district]["suppressed"] and rows[district]["value"] is None, district


async def test_lamps_on_are_judged_by_the_lamps_that_reported(api: httpx.AsyncClient) -> None:
    rows = await day_rows(api, profile="streetlight", field="powerState", agg="count", equals="on")
    assert (rows["North"]["value"], rows["North"]["devices"]) == (K, K)
    assert not rows["North"]["suppressed"]
    # k lamps registered in each; South has k - 1 reporting, East one: publishing their count
    # would publish those few lamps' states.
    for district in ("South", "East"):
        row = rows[district]
        assert row["registered"] == K
        assert row["suppressed"] and row["value"] is None and row["devices"] is None, district
