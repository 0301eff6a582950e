"""The API's operators see who asked what (an access log with the token's name, never the
token) and how it runs (/metrics, Prometheus text with HELP lines) — issue 11."""

from __future__ import annotations

import gc
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


async def test_start_up_is_exempt_from_garbage_collection_and_collections_are_timed(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path
) -> None:
    """`CITYSENSE_API_GC_FREEZE` (on by default): what start-up built is frozen (gc.freeze), and
    every collection's pause is on /metrics; with it off, nothing is frozen."""
    settings = api_settings(servers, influx, tmp_path)
    try:
        async with running(create_app(settings.model_copy(update={"api_gc_freeze": True}))) as api:
            frozen = gc.get_freeze_count()
            gc.collect(0)
            metrics = await api.get("/metrics")
        gc.unfreeze()
        async with running(create_app(settings)):
            assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()  # this test process keeps collecting as before
    assert frozen > 10_000  # the app, its contract and state, and what the process had loaded
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    pauses = families["citysense_api_gc_pause_seconds"]
    counts = {s.labels["generation"]: s.value for s in pauses.samples if s.name.endswith("_count")}
    assert counts.get("0", 0) >= 1


async def test_a_feed_subscription_the_broker_refuses_is_not_taken_for_one(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    topic_root: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker's ACL refuses the state feed under a root the API may not read: before, the
    SUBACK's refusal counted as subscribed, and the state moved at the catch-ups' pace with
    nothing said. Now it is logged, and `feed_subscribed` (and its alert) says so."""
    for root, expected in ((topic_root, 1.0), ("not-ours", 0.0)):
        settings = api_settings(servers, influx, tmp_path, topic_root=root)
        async with running(create_app(settings)) as api:
            metrics = (await api.get("/metrics")).text
        [value] = [
            sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if sample.name == "citysense_api_feed_subscribed"
        ]
        assert value == expected, root
    assert any("refused the subscription" in r.getMessage() for r in caplog.records)
