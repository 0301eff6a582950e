"""Open data's day-ahead forecasts on real servers: a point is published only if every hour it
was built from summed at least the open-data minimum of meters — the meters that reported, not
the meters registered. Three districts of six registered meters each: all reporting; rolling
out, one reporting; and all reporting but on the last day, when one did."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.core.settings import ApiSettings
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import TOKENS, api_settings, write_tokens
from tests.support.polling import until
from tests.support.seeding import Point, line_protocol

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ZONE = ZoneInfo("Asia/Shanghai")
DAYS = 10  # the forecast needs 8 (api.foresight.forecast.MIN_DAYS): days 9 and 10 are scored
METERS = 6  # registered in each district; the open-data minimum is 5
FULL, ROLLING, GAP = "North", "South", "East"
REGISTRY = "device_id,profile,district,latitude,longitude,address\n" + "".join(
    f"PM-{d[0]}{n},power_meter,{d},30.{n},120.{n},{n} Rd\n"
    for d in (FULL, ROLLING, GAP)
    for n in range(1, METERS + 1)
)


def _reporting(district: str, day: int) -> int:
    """How many of the district's meters report on day `day` (0: the first of the span)."""
    if district == ROLLING:
        return 1
    if district == GAP and day == DAYS - 1:
        return 1
    return METERS


def _points() -> list[Point]:
    midnight = datetime.now(ZONE).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    for day in range(DAYS):
        start = midnight - timedelta(days=DAYS - day)
        for district in (FULL, ROLLING, GAP):
            for n in range(1, _reporting(district, day) + 1):
                for hour in range(24):
                    kw = 1.0 + 0.5 * math.sin(hour / 24 * 2 * math.pi) + 0.01 * n + 0.001 * day
                    when = int((start + timedelta(hours=hour, minutes=30)).timestamp()) * 10**9
                    fields: dict[str, Any] = {"activePower": kw}
                    out.append(Point("power_meter", f"PM-{district[0]}{n}", district, fields, when))
    return out


@pytest.fixture
def app_settings(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> ApiSettings:
    with InfluxClient(influx) as client:
        client.write(line_protocol(_points()))
    return api_settings(
        servers, influx, tmp_path, registry=REGISTRY, tokens=write_tokens(tmp_path / "t.yaml"),
        api_foresight_every=3600.0, api_foresight_first_after=0.0, api_foresight_days=DAYS,
    )  # fmt: skip


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def _by_district(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for point in items:
        out.setdefault(point["tags"]["district"], []).append(point)
    return out


def _errors(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((p for p in points if "mape_model" in p["values"]), key=lambda p: p["time"])


async def test_open_data_gets_only_points_summed_from_enough_reporting_meters(
    api: httpx.AsyncClient,
) -> None:
    async def every_district() -> dict[str, list[dict[str, Any]]] | None:
        answer = await api.get("/forecasts", headers=_auth("city"), params={"limit": 5000})
        found = _by_district(answer.json()["items"])
        # Each district's round whole (written a batch at a time): two models' 24 hours, and
        # the errors of the two days scored.
        whole = {d: len(found.get(d, [])) == 48 + 2 for d in (FULL, ROLLING, GAP)}
        return found if all(whole.values()) else None

    city = await until(every_district, 60, "the round's forecasts of every district")
    # The city sees every point, each saying how many meters it was summed from at the fewest.
    assert {p["values"]["meters"] for p in city[FULL]} == {METERS}
    assert {p["values"]["meters"] for p in city[ROLLING]} == {1}
    assert [p["values"]["meters"] for p in _errors(city[GAP])] == [METERS, 1]
    forecasts_of_gap = [p for p in city[GAP] if "kwh" in p["values"]]
    assert {p["values"]["meters"] for p in forecasts_of_gap} == {1}

    answer = await api.get("/forecasts", headers=_auth("portal"), params={"limit": 5000})
    assert answer.status_code == 200
    public = _by_district(answer.json()["items"])
    # All reporting: everything. Rolling out (six registered, one reporting): nothing, though
    # enough meters are registered. The day one meter reported, and the forecasts built from
    # it: withheld; the day before it: published.
    assert set(public) == {FULL, GAP}
    assert len(public[FULL]) == len(city[FULL]) == 48 + 2
    assert _errors(public[GAP]) == _errors(city[GAP])[:1] and len(public[GAP]) == 1
