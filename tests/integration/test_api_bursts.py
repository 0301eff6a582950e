"""A burst on the state feed does not disconnect an SSE client that keeps up: the feed is applied
in slices, and clients drain between them (issue 10, 7)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from api.live.hub import Event
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from tests.support.polling import until
from tests.support.state import live_settings, stack_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

QUEUE = 100  # events a client may have waiting: far fewer than one feed message brings
LAMPS = [d for d in load_registry(DEFAULT_REGISTRY, load_profiles()).of("streetlight")][:2000]


async def test_a_burst_does_not_disconnect_a_client_that_keeps_up(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    settings = live_settings(
        servers, influx, tmp_path, topic_root, registry=DEFAULT_REGISTRY, api_stream_queue=QUEUE
    )
    async with stack_for(settings, servers) as stack:
        live = stack.app.state.runtime.live
        subscription = live.hub.subscribe(lambda event: event.kind == "reading")
        got: list[Event] = []

        async def keep_up() -> None:  # as the SSE route does: take all that waits, each turn
            while True:
                got.append(await subscription.queue.get())
                while not subscription.queue.empty():
                    got.append(subscription.queue.get_nowait())

        client = asyncio.create_task(keep_up())
        now = time.time_ns()
        readings = [
            ("streetlight", d.device_id, d.district, now - 1000 + n, {"powerState": "on"})
            for n, d in enumerate(LAMPS)
        ]
        for start in range(0, len(readings), 500):  # as ingest announces: 500 a message
            await stack.feed(*readings[start : start + 500])
        await until(lambda: len(got) >= len(readings) or subscription.overflowed, 30, "events")
        client.cancel()
        assert not subscription.overflowed
        assert len(got) == len(readings)
