"""Schemathesis against the app in process (real InfluxDB and broker): no request it generates
from the OpenAPI document may get a 500. Skipped where schemathesis is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from api.main import create_app  # noqa: E402
from citysense.servers import LocalServers  # noqa: E402
from common.influx import InfluxConfig  # noqa: E402
from tests.support.api import api_settings  # noqa: E402

pytestmark = pytest.mark.integration


def test_no_request_gets_a_500(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> None:
    app = create_app(api_settings(servers, influx, tmp_path, api_stream_heartbeat=0.05))
    with TestClient(app) as client:  # runs the lifespan
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        failures = []
        sent: list[int] = []
        for operation in schema.get_all_operations():
            op = operation.ok()
            if op.path == "/stream":
                continue  # an endless stream; covered by test_api_stream

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def check(case: object) -> None:
                kwargs = case.as_transport_kwargs(base_url="")  # type: ignore[attr-defined]
                response = client.request(
                    **{
                        k: v
                        for k, v in kwargs.items()
                        if k in ("method", "url", "params", "headers", "json", "cookies", "content")
                    }
                )
                sent.append(response.status_code)
                if response.status_code >= 500 and response.status_code != 503:
                    failures.append((kwargs["url"], response.status_code, response.text[:200]))

            check()
        assert failures == []
        assert len(sent) > 100 and any(s == 200 for s in sent)  # it really exercised the API


def test_no_sensorthings_request_gets_a_500(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, seed: object
) -> None:
    """/sta/v1.1 on its own, over seeded readings: schemathesis's requests from the OpenAPI
    document, then paths and query options drawn from the SensorThings vocabulary, so that most
    requests get past the path and into the query options and InfluxDB."""
    app = create_app(api_settings(servers, influx, tmp_path))
    with TestClient(app) as client:
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        failures: list[tuple[str, int, str]] = []
        sent: list[int] = []

        def send(url: str, params: object = None) -> None:
            response = client.get(url, params=params)  # type: ignore[arg-type]
            sent.append(response.status_code)
            if response.status_code >= 500 and response.status_code != 503:
                failures.append((url, response.status_code, response.text[:200]))

        for operation in schema.get_all_operations():
            op = operation.ok()
            if not op.path.startswith("/sta"):
                continue

            @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def generated(case: object) -> None:
                kwargs = case.as_transport_kwargs(base_url="")  # type: ignore[attr-defined]
                send(kwargs["url"], kwargs.get("params"))

            generated()

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=STA_PATHS, options=STA_OPTIONS)
        def vocabulary(path: str, options: dict[str, str]) -> None:
            send(f"/sta/v1.1/{path}", options)

        vocabulary()
        assert failures == []
        assert sent.count(200) > 20 and sent.count(400) > 20  # it reached both sides


_SETS = ["Things", "Locations", "Datastreams", "Sensors", "ObservedProperties", "Observations"]
_IDS = ["'SL-A1'", "'SL-A1:powerConsumption'", "'WP-A2:pressure'", "'streetlight'", "1", "''"]
_NAVS = ["", "/Datastreams", "/Observations", "/Thing", "/Locations", "/$ref", "/name/$value"]
STA_PATHS = st.builds(
    lambda s, i, n: f"{s}({i}){n}" if i else s,
    st.sampled_from(_SETS),
    st.sampled_from(["", *_IDS]),
    st.sampled_from(_NAVS),
)
_ATOMS = [
    "result gt 100",
    "result eq 'on'",
    "name eq 'SL-A1'",
    "phenomenonTime ge 2024-01-01T00:00:00Z",
    "properties/district eq 'North'",
    "result add 1e308 mul 10 gt 0",
    "startswith(name, 'SL')",
    "geo.intersects(Locations/location, geography'POINT(120.01 30.01)')",
    "st_within(location, geography'POLYGON((0 0, 1 0, 1 1, 0 0))')",
]
_FILTERS = st.recursive(
    st.sampled_from(_ATOMS) | st.text(max_size=30),
    lambda inner: (
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(["and", "or"]), inner)
        | st.builds(lambda a: f"not {a}", inner)
    ),
    max_leaves=6,
)
STA_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "$filter": _FILTERS,
        "$top": st.sampled_from(["0", "1", "5", "-1", "1000000", "x"]),
        "$skip": st.sampled_from(["0", "3", "99999999999"]),
        "$count": st.sampled_from(["true", "false", "maybe"]),
        "$orderby": st.sampled_from(["phenomenonTime desc", "name", "id desc", "result"]),
        "$select": st.sampled_from(["id,name", "result,phenomenonTime", "nope"]),
        "$expand": st.sampled_from(
            ["Datastreams", "Datastreams($top=1;$expand=Observations($top=2))", "Thing/Locations"]
        ),
        "$resultFormat": st.sampled_from(["dataArray", "csv"]),
    },
)
