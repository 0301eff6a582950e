"""Access with rights against the real servers: 401 without or with a bad token, 403 outside the
scope, scopes narrowing lists, health open, no start without a tokens file, tokens never logged."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest

from api.core.settings import ApiSettings
from api.core.tokens import hash_token
from api.main import create_app
from citysense.servers import LocalServers
from common.errors import ConfigError
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import TOKENS, api_settings, running, write_tokens
from tests.support.deadletters import dead_letter_line
from tests.support.seeding import REGISTRY, line_protocol, seed_points
from tests.support.times import S
from wire.retention import DEAD_LETTERS

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
def app_settings(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> ApiSettings:
    """The sample readings and three dead letters; access rights on, with TOKENS."""
    now = (int(time.time()) - 5) * S
    points, _ = seed_points(now)
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
        client.write(
            "\n".join(
                dead_letter_line(now - n * S, "out_of_range", p, d, b"{}")
                for n, (p, d) in enumerate(
                    [("streetlight", "SL-A1"), ("water_pipe", "WP-A1"), ("unknown", "X")], start=1
                )
            ).encode(),
            policy=DEAD_LETTERS,
        )
    return api_settings(servers, influx, tmp_path, tokens=write_tokens(tmp_path / "tokens.yaml"))


PROTECTED = [
    "/devices",
    "/devices/SL-A1",
    "/dead-letters",
    "/districts",
    "/districts/North/summary",
]


@pytest.mark.parametrize("path", PROTECTED)
async def test_no_token_or_a_bad_one_is_401(api: httpx.AsyncClient, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Basic {TOKENS['city']}"},
        {"Authorization": TOKENS["city"]},
    ):
        response = await api.get(path, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await api.get(path, headers=auth("city"))).status_code == 200


async def test_health_and_docs_stay_open(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).status_code == 200
    spec = (await api.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_city_reads_everything(api: httpx.AsyncClient) -> None:
    body = (await api.get("/devices", headers=auth("city"))).json()
    assert body["total"] == len(REGISTRY)
    assert (await api.get("/dead-letters", headers=auth("city"))).json()["total"] == 3


async def test_department_sees_its_profiles_and_districts_only(api: httpx.AsyncClient) -> None:
    headers = auth("water-north")
    body = (await api.get("/devices", headers=headers)).json()
    expected = sorted(d for d, p, district in REGISTRY if (p, district) == ("water_pipe", "North"))
    assert [i["device_id"] for i in body["items"]] == expected
    assert body["total"] == len(expected)
    assert (await api.get("/devices/WP-A1", headers=headers)).status_code == 200
    # A device outside the scope is answered exactly as one that does not exist: the token
    # cannot learn which ids exist.
    for path, params in [
        ("/devices/SL-A1", {}),  # another profile
        ("/devices/WP-K1", {}),  # another district
        ("/devices/WP-K1/history", {"field": "pressure"}),
        ("/devices/NO-SUCH-1", {}),
    ]:
        response = await api.get(path, params=params, headers=headers)
        assert response.status_code == 404, (path, params)
        device = path.split("/")[2]
        assert response.json() == {
            "detail": f"unknown device {device!r}: not in the device registry"
        }
    for path, params in [
        ("/devices", {"profile": "streetlight"}),
        ("/devices", {"district": "South"}),
        ("/districts/South/summary", {}),
        ("/dead-letters", {}),  # district-limited: a dead letter's district is unknown
    ]:
        response = await api.get(path, params=params, headers=headers)
        assert response.status_code == 403, (path, params)
        assert "water-north" in response.json()["detail"]
    districts = (await api.get("/districts", headers=headers)).json()["items"]
    assert districts == [
        {"district": "North", "devices": 2, "profiles": {"water_pipe": 2}},
    ]
    summary = (await api.get("/districts/North/summary", headers=headers)).json()
    assert [p["profile"] for p in summary["profiles"]] == ["water_pipe"]


async def test_department_dead_letters_are_its_profiles(api: httpx.AsyncClient) -> None:
    headers = auth("lights")
    body = (await api.get("/dead-letters", headers=headers)).json()
    assert [i["profile"] for i in body["items"]] == ["streetlight"]
    counts = await api.get("/dead-letters/counts", params={"by": "profile"}, headers=headers)
    assert counts.json()["counts"] == {"streetlight": 1}
    for profile in ("water_pipe", "unknown"):
        response = await api.get("/dead-letters", params={"profile": profile}, headers=headers)
        assert response.status_code == 403


async def test_open_data_never_sees_a_device(api: httpx.AsyncClient) -> None:
    headers = auth("portal")
    for path in ["/devices", "/devices/SL-A1", "/dead-letters", "/districts/North/summary"]:
        response = await api.get(path, headers=headers, params={})
        assert response.status_code == 403, path
        assert "open-data" in response.json()["detail"]
    assert (await api.get("/districts", headers=headers)).status_code == 200


async def test_tokens_are_never_logged(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = api_settings(
        servers, influx, tmp_path, tokens=write_tokens(tmp_path / "tokens.yaml")
    )
    async with running(create_app(settings)) as client:
        for name in TOKENS:
            for path in PROTECTED:
                await client.get(path, headers=auth(name))
        await client.get("/devices", headers={"Authorization": "Bearer wrong-token-never-logged"})
    assert caplog.records  # the app did log (startup, warnings): the check below is not vacuous
    for token in [*TOKENS.values(), "wrong-token-never-logged"]:
        assert token not in caplog.text
        assert hash_token(token) not in caplog.text


async def test_no_tokens_file_refuses_to_start(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings(servers, influx, tmp_path, api_auth="on")
    with pytest.raises(ConfigError, match="CITYSENSE_API_AUTH=off"):
        async with running(create_app(settings)):
            pass
    assert "refusing to start" in caplog.text


async def test_a_scope_naming_an_unknown_district_refuses_to_start(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        '{"tokens": [{"name": "x", "sha256": "' + "a" * 64 + '", "scope": "department", '
        '"profiles": ["water_pipe"], "districts": ["Nowhere"]}]}'
    )
    settings = api_settings(servers, influx, tmp_path, tokens=path)
    with pytest.raises(ConfigError, match="unknown districts \\['Nowhere'\\]"):
        async with running(create_app(settings)):
            pass
