"""The state feed as ingest makes it, for the API's feed-session and peer tests: readings and
their change marks stored in the real InfluxDB, then announced, numbered, through ingest's own
Announcer to the real broker; and the API's view of the devices' latest times."""

from __future__ import annotations

from typing import Any

from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from ingest.announce import Announcer
from ingest.changes import change_lines
from tests.support.mqtt import publish
from tests.support.seeding import Point, line_protocol
from wire.changes import window_of
from wire.retention import CHANGES
from wire.statefeed import StoredReading
from wire.topics import TopicLayout

REGISTRY = (
    "device_id,profile,district,latitude,longitude,address\n"
    "SL-1,streetlight,North,30.2,120.1,\n"
    "SL-2,streetlight,North,30.2,120.1,\n"
    "SL-3,streetlight,East,30.2,120.1,\n"
    "WP-1,water_pipe,South,30.2,120.1,\n"
)


class Ingest:
    """Stores and announces as an ingest worker does, one publisher run."""

    def __init__(self, servers: LocalServers, influx: InfluxConfig, root: str) -> None:
        self.influx = influx
        self.url = servers.mosquitto.url("citysense-ingest")
        self.sent: list[tuple[str, bytes]] = []
        topic = TopicLayout(root).state_feed("ingest-test")
        self.announcer = Announcer(lambda t, p: self.sent.append((t, p)), topic, "ingest-test")

    def store(self, points: list[Point], *, announce: bool = True, lost: bool = False) -> None:
        """Stored with marks, then announced (numbered) and published, unless `announce` is
        off (as replay writes: quiet marks, wire.changes) or the announcement is `lost` on its
        way (its number used)."""
        changes = {(p.measurement, p.district, window_of(p.time_ns)) for p in points}
        marks = change_lines(changes, quiet=not announce)
        with InfluxClient(self.influx) as client:
            client.write(line_protocol(points))
            client.write("\n".join(marks).encode(), policy=CHANGES)
        if announce:
            stored = [
                StoredReading(p.measurement, p.device_id, p.district, p.time_ns, p.fields)
                for p in points
            ]
            self.announcer.announce(stored, marks)
            if not lost:
                publish(self.url, self.sent, qos=0)
            self.sent.clear()


def light(device: str, district: str, state: str, time_ns: int) -> Point:
    return Point("streetlight", device, district, {"powerState": state}, time_ns)


async def latest_times(client: Any) -> dict[str, str | None]:
    body = (await client.get("/devices", params={"limit": 100})).json()
    return {
        item["device_id"]: item["reading"] and item["reading"]["time"] for item in body["items"]
    }


async def if_found(client: Any, device: str) -> dict[str, str | None] | None:
    found = await latest_times(client)
    return found if found[device] is not None else None
