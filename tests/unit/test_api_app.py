"""The app over a fake InfluxDB (httpx.MockTransport): what it asks, how it maps the answers,
how failures become responses. Real-server behaviour is in tests/integration/test_api*.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from api.main import create_app
from api.observe import AccessLog, Metrics
from api.schemas import DeviceListPublic, DevicePublic, FeatureCollectionPublic
from common.influx import InfluxConfig
from device_profiles import ContractError
from tests.support.api import api_settings, running

REGISTRY = """device_id,profile,district,latitude,longitude,address
SL-1,streetlight,North,30.1,120.1,1 Lamp Rd
SL-2,streetlight,North,30.2,120.2,2 Lamp Rd
SL-3,streetlight,South,30.3,120.3,3 Lamp Rd
WP-1,water_pipe,North,30.4,120.4,1 Pipe Rd
PM-1,power_meter,South,30.5,120.5,1 Meter Rd
"""

# Test secrets that must never appear in a response.
TOKEN = "influx-token-do-not-print"
MQTT_PASSWORD = "mqtt-password-do-not-print"
# The app's broker (never reached) and its InfluxDB, which the fake answers for.
MQTT_URL = f"mqtt://citysense-api:{MQTT_PASSWORD}@127.0.0.1:1"
INFLUX = InfluxConfig(url="http://influx.test:8086", database="city", token=TOKEN)

pytestmark = pytest.mark.anyio


class FakeInflux:
    """Records each /query request; answers a query on a measurement with the result set for it,
    any other with the next queued answer (a response, or an exception to raise)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.answers: list[httpx.Response | Exception] = []
        self.by_measurement: dict[str, httpx.Response] = {}
        self.districts: dict[str, list[str]] = {}  # district tag values stored, by measurement

    def series(self, *series: dict[str, object], measurement: str | None = None) -> None:
        body = {"results": [{"statement_id": 0, "series": list(series)}]}
        response = httpx.Response(200, content=orjson.dumps(body))
        if measurement is None:
            self.answers.append(response)
        else:
            self.by_measurement[f'FROM "{measurement}"'] = response

    def reads(self) -> int:
        """Queries so far but the owed marks' (the latest rows' task asks once it wrote them)."""
        return sum("citysense_latest_owed" not in r["q"] for r in self.requests)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/write":  # alarm events; tested against the real InfluxDB
            return httpx.Response(204)
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if '"alarm_events"' in form["q"]:  # replay at start: no alarms stored
            return httpx.Response(200, content=b'{"results":[{"statement_id":0}]}')
        form["authorization"] = request.headers.get("Authorization", "")
        self.requests.append(form)
        if form["q"].startswith("SHOW TAG VALUES"):  # districts stored, for the start-up load
            found = [m for m in self.districts if f'FROM "{m}"' in form["q"]]
            series = [
                {"name": m, "columns": ["key", "value"], "values": [["district", d]]}
                for m in found
                for d in self.districts[m]
            ]
            body = {"results": [{"statement_id": 0, "series": series}]}
            return httpx.Response(200, content=orjson.dumps(body))
        if '"citysense_latest_owed"' in form["q"]:  # no writer stored readings without rows
            return httpx.Response(200, content=b'{"results":[{"statement_id":0}]}')
        for clause, response in self.by_measurement.items():
            if clause in form["q"]:
                return response
        if not self.answers:  # e.g. the start-up load of the latest state: nothing stored
            return httpx.Response(200, content=b'{"results":[{"statement_id":0}]}')
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def params(self, n: int = -1) -> dict[str, object]:
        loaded: dict[str, object] = orjson.loads(self.requests[n]["params"])
        return loaded


@pytest.fixture
def fake() -> FakeInflux:
    return FakeInflux()


@pytest.fixture
async def client(tmp_path: Path, fake: FakeInflux) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        api_settings(MQTT_URL, INFLUX, tmp_path, registry=REGISTRY),
        influx_transport=httpx.MockTransport(fake.handle),
    )
    async with running(app) as api:
        yield api


async def test_latest_state_is_loaded_once_at_start(tmp_path: Path, fake: FakeInflux) -> None:
    fake.series(
        {
            "name": "streetlight",
            "tags": {"device_id": "SL-1"},
            "columns": ["time", "district", "powerConsumption", "powerState", "x"],
            "values": [[1_714_564_800_000_000_001, "North", 42, "on", 7]],
        },
        measurement="streetlight",
    )
    fake.districts["streetlight"] = ["North", "South"]
    app = create_app(
        api_settings(MQTT_URL, INFLUX, tmp_path, registry=REGISTRY),
        influx_transport=httpx.MockTransport(fake.handle),
    )
    async with running(app) as client:
        loaded = fake.reads()
        response = await client.get("/devices/SL-1")
        listed = await client.get("/devices", params={"district": "North"})
        assert fake.reads() == loaded  # served from the cache, not per request
    shown = [r for r in fake.requests if r["q"].startswith("SHOW TAG VALUES")]
    # The change marks, read before the readings (api.live.coverage).
    marks = [r for r in fake.requests if "citysense_changes" in r["q"]]
    assert len(marks) == 1
    # Whether the latest rows are whole (api.live.rows): asked before starting from them, and
    # before the readings, whose rows are then written only if not (this database has none).
    whole = [r for r in fake.requests if "citysense_latest_complete" in r["q"]]
    assert len(whole) == 2
    assert fake.requests.index(whole[1]) < fake.requests.index(shown[0])
    # The newest owed mark (wire.latest), read before the readings (and again once the rows of
    # this state are written, if that came before the app stopped).
    owed = [r for r in fake.requests if "citysense_latest_owed" in r["q"]]
    assert owed and fake.requests.index(owed[0]) < fake.requests.index(shown[0])
    latest = [
        r
        for r in fake.requests
        if not r["q"].startswith("SHOW TAG VALUES")
        and r not in marks
        and r not in whole
        and r not in owed
    ]
    assert len(shown) == 3  # the districts stored, per profile
    # One query per profile and stored district; a profile without any: one for all of it.
    assert sorted(
        (q.split('FROM "')[1].split('"')[0], orjson.loads(q_params).get("district"))
        for q, q_params in ((r["q"], r["params"]) for r in latest)
    ) == [
        ("power_meter", None),
        ("streetlight", "North"),
        ("streetlight", "South"),
        ("water_pipe", None),
    ]
    for sent in fake.requests:
        assert sent["db"] == "city"
        assert sent["epoch"] == "ns"
        assert sent["authorization"] == f"Token {TOKEN}"
    for sent in latest:
        assert 'GROUP BY "device_id"' in sent["q"]
        assert set(orjson.loads(sent["params"])) <= {"since", "district"}
    assert response.status_code == 200
    body = response.json()
    assert body["reading"] == {
        "time": "2024-05-01T12:00:00.000000001Z",
        "values": {"powerConsumption": 42.0, "powerState": "on"},  # x is no contract field
    }
    assert isinstance(body["reading"]["values"]["powerConsumption"], float)
    assert body["status"] == {
        "reporting": "silent",
        "connected": None,
        "last_seen": "2024-05-01T12:00:00.000000001Z",
    }
    assert [d["device_id"] for d in listed.json()["items"]] == ["SL-1", "SL-2", "WP-1"]


async def test_answers_from_the_cache_match_their_documented_models(
    tmp_path: Path, fake: FakeInflux
) -> None:
    # These routes serialize plain dicts with orjson (speed); the models document them.
    fake.series(
        {
            "name": "water_pipe",
            "tags": {"device_id": "WP-1"},
            "columns": ["time", "district", "pressure", "rssi", "leakDetected", "totalVolume"],
            "values": [[1_714_564_800_000_000_000, "North", 312, -71.0, True, 5]],
        },
        measurement="water_pipe",
    )
    app = create_app(
        api_settings(MQTT_URL, INFLUX, tmp_path, registry=REGISTRY),
        influx_transport=httpx.MockTransport(fake.handle),
    )
    async with running(app) as client:
        listed = await client.get("/devices")
        geo = await client.get("/devices.geojson", params={"limit": 2, "offset": 3})
        one = await client.get("/devices/WP-1")
    for response in (listed, geo, one):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
    pages = DeviceListPublic.model_validate_json(listed.content)
    assert pages.model_dump(mode="json") == listed.json()
    assert [d.device_id for d in pages.items] == ["PM-1", "SL-1", "SL-2", "SL-3", "WP-1"]
    collection = FeatureCollectionPublic.model_validate_json(geo.content)
    assert collection.model_dump(mode="json") == geo.json()
    assert [f.id for f in collection.features] == ["SL-3", "WP-1"]
    assert geo.json()["features"][1] == {
        "type": "Feature",
        "id": "WP-1",
        "geometry": {"type": "Point", "coordinates": [120.4, 30.4]},
        "properties": {
            "device_id": "WP-1",
            "profile": "water_pipe",
            "district": "North",
            "reporting": "silent",
            "connected": None,
            "last_seen": "2024-05-01T12:00:00Z",
            "values": {"pressure": 312.0, "rssi": -71, "leakDetected": True, "totalVolume": 5.0},
        },
    }
    device = DevicePublic.model_validate_json(one.content)
    assert device.model_dump(mode="json") == one.json()
    values = one.json()["reading"]["values"]
    assert [type(values[k]) for k in ("pressure", "rssi", "leakDetected")] == [float, int, bool]


async def test_device_that_never_reported(client: httpx.AsyncClient) -> None:
    response = await client.get("/devices/WP-1")
    assert response.status_code == 200
    assert response.json()["reading"] is None
    assert response.json()["status"]["reporting"] == "never"


async def test_unknown_device_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/devices/SL-404")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown device 'SL-404': not in the device registry"}


async def test_empty_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/devices", params={"profile": "power_meter", "offset": 5})
    assert response.json() == {"total": 1, "limit": 100, "offset": 5, "items": []}


@pytest.mark.parametrize("path", ["/devices", "/devices.geojson", "/alarms"])
async def test_an_offset_beyond_any_list_is_422_not_500(
    client: httpx.AsyncClient, path: str
) -> None:
    # Echoed in the answer, 2**64 cannot be JSON for orjson: bounded, it is a parameter error.
    response = await client.get(path, params={"offset": 2**64})
    assert response.status_code == 422, response.text
    assert "offset" in response.text


async def test_history_mapping(client: httpx.AsyncClient, fake: FakeInflux) -> None:
    fake.series(
        {"name": "water_pipe", "columns": ["time", "value"], "values": [[0, 3], [300e9, 4]]}
    )
    response = await client.get(
        "/devices/WP-1/history",
        params={
            "field": "rssi",
            "agg": "mean",
            "every": "5m",
            "start": "1970-01-01T00:00:00Z",
            "end": "1970-01-01T01:00:00Z",
        },
    )
    assert response.status_code == 200
    assert response.json() == {
        "device_id": "WP-1",
        "profile": "water_pipe",
        "field": "rssi",
        "unit": "dBm",
        "agg": "mean",
        "every": "5m",
        "tz": None,
        "every_seconds": 300,
        "start": "1970-01-01T00:00:00Z",
        "end": "1970-01-01T01:00:00Z",
        "points": [
            {"time": "1970-01-01T00:00:00Z", "value": 3.0},
            {"time": "1970-01-01T00:05:00Z", "value": 4.0},
        ],
    }
    assert fake.params() == {"device_id": "WP-1", "start": 0, "end": 3600 * 10**9}
    assert "GROUP BY time(300s)" in fake.requests[-1]["q"]


async def test_history_defaults_to_the_last_24_hours(
    client: httpx.AsyncClient, fake: FakeInflux
) -> None:
    fake.series()
    response = await client.get(
        "/devices/SL-1/history", params={"field": "powerState", "agg": "count"}
    )
    assert response.status_code == 200
    params = fake.params()
    assert params["end"] - params["start"] == 86400 * 10**9  # type: ignore[operator]
    assert response.json()["points"] == []


@pytest.mark.parametrize(
    ("answer", "status", "fragment"),
    [
        (httpx.ConnectError("connection refused"), 503, "InfluxDB is unavailable"),
        (httpx.Response(503, text="overloaded", headers={"Retry-After": "7"}), 503, "overloaded"),
        (
            httpx.Response(
                200, content=b'{"results":[{"statement_id":0,"error":"database not found: city"}]}'
            ),
            502,
            "database not found",
        ),
    ],
)
async def test_influx_failures_become_responses(
    client: httpx.AsyncClient,
    fake: FakeInflux,
    answer: httpx.Response | Exception,
    status: int,
    fragment: str,
) -> None:
    fake.answers.append(answer)
    response = await client.get("/devices/SL-1/history", params={"field": "voltage"})
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    if isinstance(answer, httpx.Response) and "Retry-After" in answer.headers:
        assert response.headers["Retry-After"] == "7"


async def test_errors_never_carry_secrets(tmp_path: Path, fake: FakeInflux) -> None:
    settings = api_settings(MQTT_URL, INFLUX, tmp_path, registry=REGISTRY)
    settings = settings.model_copy(
        update={"influx_url": "http://reader:url-pass-123@influx.test:8086"}
    )
    app = create_app(settings, influx_transport=httpx.MockTransport(fake.handle))
    fake.answers.append(httpx.ConnectError(f"failed for {settings.influx_url} with {TOKEN}"))
    async with running(app) as client:
        response = await client.get("/devices/SL-1")
    assert response.status_code == 503
    for secret in ("url-pass-123", TOKEN, MQTT_PASSWORD):
        assert secret not in response.text
    assert "***" in response.json()["detail"]


async def test_a_broken_contract_stops_startup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = REGISTRY + "XX-1,lamppost,North,30,120,\nXX-2,streetlight,North,91,120,\n"
    app = create_app(api_settings(MQTT_URL, INFLUX, tmp_path, registry=broken))
    with pytest.raises(ContractError) as raised:
        async with running(app):
            pass
    assert "unknown profile 'lamppost'" in str(raised.value)
    assert "latitude" in str(raised.value)
    assert "refusing to start" in caplog.text


async def test_openapi_documents_routes_and_errors(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths) >= {
        "/stream",
        "/alarms",
        "/aggregates",
        "/devices.geojson",
        "/dead-letters",
        "/dead-letters/counts",
        "/devices",
        "/devices/{device_id}",
        "/devices/{device_id}/history",
        "/districts",
        "/districts/{district}/summary",
        "/health",
    }
    for path, item in paths.items():
        for operation in item.values():
            assert operation["summary"], path
            assert "200" in operation["responses"], path
    assert {"404", "422", "503"} <= set(paths["/devices/{device_id}/history"]["get"]["responses"])
    assert "503" in paths["/health"]["get"]["responses"]
    history_params = {p["name"] for p in paths["/devices/{device_id}/history"]["get"]["parameters"]}
    assert history_params == {"device_id", "field", "agg", "every", "tz", "start", "end"}
    assert (await client.get("/docs")).status_code == 200


async def test_an_answer_cut_after_it_began_is_counted_once_and_as_cut() -> None:
    """A streamed answer that fails midway was recorded when it began (200) and then again as a
    500: two requests in the metrics for one."""

    async def streams_then_fails(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("injected: the stream's source failed")

    metrics = Metrics()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope: Scope = {"type": "http", "method": "GET", "path": "/stream", "query_string": b""}
    with pytest.raises(RuntimeError, match="injected"):
        await AccessLog(streams_then_fails, metrics)(scope, receive, send)
    counted = {
        sample.labels["status"]: sample.value
        for metric in metrics.registry.collect()
        if metric.name == "citysense_api_requests"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    assert counted == {"200": 1.0}
    assert (
        metrics.registry.get_sample_value("citysense_api_answers_cut_total", {"route": "unmatched"})
        == 1.0
    )
