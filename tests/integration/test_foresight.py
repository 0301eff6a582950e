"""Foresight in the API on real servers: night flows seeded straight into InfluxDB, the
background round computing the leak, storing it, raising the profile's alarm, and the routes
serving it within the tokens' scopes."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.core.settings import ApiSettings
from api.foresight import schedule
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import TOKENS, api_settings, write_tokens
from tests.support.polling import until
from tests.support.seeding import Point, line_protocol

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ZONE = ZoneInfo("Asia/Shanghai")
NIGHTS, LEAK_NIGHT = 12, 8
REGISTRY = "device_id,profile,district,latitude,longitude,address\n" + "".join(
    f"WP-L{n},water_pipe,North,30.{n},120.{n},{n} Rd\n" for n in (1, 2)
)


def _points() -> list[Point]:
    midnight = datetime.now(ZONE).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    for n in range(NIGHTS):
        night = midnight - timedelta(days=NIGHTS - n)
        for device, flow in (("WP-L1", 12.0 if n >= LEAK_NIGHT else 10.0), ("WP-L2", 10.0)):
            for m in range(8):
                when = night + timedelta(hours=2, minutes=15 * m)
                fields: dict[str, Any] = {"flow": flow + 0.01 * m + 0.001 * n, "pressure": 400.0}
                out.append(
                    Point("water_pipe", device, "North", fields, int(when.timestamp()) * 10**9)
                )
    return out


# A district read whole, and one device a query (each pipe its own piece, then the rest: the
# district's night flow still sums both), the round written two points a write.
@pytest.fixture(params=[10_000, 1], ids=["whole", "pieces"])
def app_settings(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> ApiSettings:
    if request.param == 1:
        monkeypatch.setattr(schedule, "WRITE_LINES", 2)
    with InfluxClient(influx) as client:
        client.write(line_protocol(_points()))
    return api_settings(
        servers, influx, tmp_path, registry=REGISTRY, tokens=write_tokens(tmp_path / "t.yaml"),
        api_foresight_every=3600.0, api_foresight_first_after=0.0, api_foresight_days=NIGHTS,
        api_load_series=request.param,
    )  # fmt: skip


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


async def test_a_leak_is_computed_stored_alarmed_and_served(api: httpx.AsyncClient) -> None:
    async def leak_alarm() -> list[dict[str, Any]]:
        answer = await api.get("/alarms", headers=_auth("city"))
        return [a for a in answer.json()["items"] if a["rule"] == "new_leak"]

    (alarm,) = await until(leak_alarm, 30, "the new_leak alarm")
    assert alarm["device_id"] == "WP-L1" and alarm["field"] == "night_flow_rise"
    assert alarm["value"] == pytest.approx(2.0 / 20.0, rel=0.05)  # 2 m3/h of a 20 m3/h district

    answer = await api.get(
        "/signals", params={"signal": "night_flow_rise", "device_id": "WP-L1", "limit": 100},
        headers=_auth("water-north"),
    )  # fmt: skip
    assert answer.status_code == 200
    leaking = sorted(p["time"] for p in answer.json()["items"] if p["values"]["leak"])
    assert len(leaking) == NIGHTS - LEAK_NIGHT

    quality = await api.get("/quality", params={"device_id": "WP-L2"}, headers=_auth("city"))
    (point,) = quality.json()["items"]
    assert 0.0 <= point["values"]["score"] <= 1.0 and "completeness" in point["values"]


async def test_scopes_of_the_foresight_routes(api: httpx.AsyncClient) -> None:
    await until(lambda: api.get("/quality", headers=_auth("city")), 5, "the app")
    assert (await api.get("/signals", headers=_auth("portal"))).status_code == 403
    assert (await api.get("/quality", headers=_auth("portal"))).status_code == 403
    # A department sees none of another profile's signals.
    lights = await api.get("/signals", params={"profile": "water_pipe"}, headers=_auth("lights"))
    assert lights.status_code == 403

    # A district's quality is over every profile there and names its worst devices: a token
    # limited to some profiles does not see it (the lights department saw the pipes' ids).
    async def district_quality() -> list[dict[str, Any]]:
        items = (await api.get("/quality", headers=_auth("city"))).json()["items"]
        return [p for p in items if "profile" not in p["tags"]]

    (row,) = await until(district_quality, 30, "the district's quality")
    assert set(row["values"]["worst"].split(",")) == {"WP-L1", "WP-L2"}
    assert (await api.get("/quality", headers=_auth("lights"))).json()["items"] == []
    water = (await api.get("/quality", headers=_auth("water-north"))).json()["items"]
    assert water and all(p["tags"]["profile"] == "water_pipe" for p in water)
    # Open data gets forecasts of districts with enough meters only: North has none.
    forecasts = await api.get("/forecasts", headers=_auth("portal"))
    assert forecasts.status_code == 200 and forecasts.json()["items"] == []
    assert (await api.get("/signals")).status_code == 401
