"""The SensorThings MQTT extension (receive updates): a client subscribed on the broker to
`v1.1/Datastreams('<id>')/Observations` receives each new Observation once ingest announces it
stored (the state feed, published here as ingest publishes it); the ACL lets `citysense-sta`
read those topics and nobody without the rule."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import orjson
import pytest

from citysense.servers import LocalServers
from common.influx import InfluxConfig
from tests.support.mqtt import listen
from tests.support.polling import until
from tests.support.state import live_settings, stack_for
from tests.support.times import S, rfc3339

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_new_observations_are_published_on_their_datastream_topic(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    # A device id of this test alone: the v1.1 topics are shared by every API on this broker.
    device = f"SL-{secrets.token_hex(3)}"
    registry = (
        "device_id,profile,district,latitude,longitude,address\n"
        f"{device},streetlight,North,30.1,120.1,1 Test Rd\n"
    )
    settings = live_settings(servers, influx, tmp_path, topic_root, registry=registry)
    power = f"v1.1/Datastreams('{device}:powerConsumption')/Observations"
    state = f"v1.1/Datastreams('{device}:powerState')/Observations"
    heard, reader = listen(servers.mosquitto.url("citysense-sta"), [power, state])
    stranger_heard, stranger = listen(servers.mosquitto.url("citysense-simulator"), ["v1.1/#"])
    try:
        async with stack_for(settings, servers) as stack:
            t = time.time_ns() // S * S
            readings = [
                (
                    "streetlight",
                    device,
                    "North",
                    t,
                    {"powerConsumption": 120.5, "powerState": "on"},
                ),
                ("streetlight", device, "North", t + S, {"powerConsumption": 80.0, "bogus": 1}),
            ]
            await stack.feed(*readings)
            await until(lambda: len(heard) >= 3, 10, "three observations on the broker")
            await asyncio.sleep(0.3)  # anything more (the undeclared field) would arrive now
    finally:
        reader.disconnect()
        stranger.disconnect()
    received = sorted(((t, orjson.loads(p)) for t, p in heard), key=by_id)
    assert received == sorted(
        [
            (power, observation(f"{device}:powerConsumption", t, 120.5)),
            (state, observation(f"{device}:powerState", t, "on")),
            (power, observation(f"{device}:powerConsumption", t + S, 80.0)),
        ],
        key=by_id,
    )
    assert [topic for topic, _ in stranger_heard if device in topic] == []  # the ACL said no


def by_id(item: tuple[str, dict[str, object]]) -> str:
    return str(item[1]["@iot.id"])


def observation(datastream: str, time_ns: int, result: object) -> dict[str, object]:
    return {
        "@iot.id": f"{datastream}:{time_ns}",
        "phenomenonTime": rfc3339(time_ns),
        "resultTime": None,
        "result": result,
    }
