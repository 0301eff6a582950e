"""/health needs no token, so asking it must not make the API open a broker connection per call
(issue 10): one probe answers every ask within api_health_probe_every."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from tests.support.api import api_settings, running

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_many_asks_one_broker_probe(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path
) -> None:
    settings = api_settings(servers, influx, tmp_path, api_health_probe_every=3600.0)
    app = create_app(settings)
    async with running(app) as api:
        answers = await asyncio.gather(*(api.get("/health") for _ in range(20)))
        answers += [await api.get("/health") for _ in range(20)]
        probes = app.state.runtime.live.broker.probes
    assert {a.status_code for a in answers} == {200}
    assert probes == 1
