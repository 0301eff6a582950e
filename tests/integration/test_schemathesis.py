"""Schemathesis against the app in process (real InfluxDB and broker): no request it generates
from the OpenAPI document may get a 500. Skipped where schemathesis is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

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
