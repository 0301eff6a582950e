"""The API's operators see who asked what (an access log with the token's name, never the
token) and how it runs (/metrics, Prometheus text with HELP lines) — issue 11."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from common.logs import JsonFormatter
from tests.support.api import TOKENS, api_settings, running, write_tokens

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_every_request_is_logged_with_its_token_name_and_counted(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings(servers, influx, tmp_path, tokens=write_tokens(tmp_path / "t.yaml"))
    caplog.set_level(logging.INFO, logger="citysense.api.access")
    async with running(create_app(settings)) as api:
        headers = {"Authorization": f"Bearer {TOKENS['city']}"}
        assert (await api.get("/devices", params={"limit": 2}, headers=headers)).status_code == 200
        assert (await api.get("/devices/NOPE", headers=headers)).status_code == 404
        assert (
            await api.get("/devices", headers={"Authorization": "Bearer wrong"})
        ).status_code == 401
        metrics = await api.get("/metrics")
    entries = [r.fields for r in caplog.records if r.name == "citysense.api.access"]  # type: ignore[attr-defined]
    by_path = {(e["path"], e["status"]): e for e in entries}
    assert by_path[("/devices", 200)]["token"] == "city"
    assert by_path[("/devices", 200)]["query"] == "limit=2"
    assert by_path[("/devices/NOPE", 404)]["token"] == "city"
    assert by_path[("/devices", 401)]["token"] is None
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert all(token not in logged for token in TOKENS.values())
    assert '"token":"city"' in logged  # the JSON line carries the name

    assert metrics.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    requests = families["citysense_api_requests"]
    counted = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in requests.samples
        if s.name.endswith("_total")
    }
    assert counted[("/devices", "200")] == 1
    assert counted[("/devices/{device_id}", "404")] == 1
    assert counted[("/devices", "401")] == 1
    assert families["citysense_api_devices"].samples[0].value > 0
    assert "# HELP citysense_api_requests_total" in metrics.text
