"""The MQTT topic tree under a configurable root (default `city`):

- `<root>/<profile>/<device_id>/telemetry` — readings, published by devices (QoS 1)
- `<root>/<profile>/<device_id>/status` — retained `online` / `offline` (a device's last will)
- `<root>/_ingested/<client_id>` — the state feed (wire.statefeed), published by ingest

The root is configurable so that a test can own a unique topic tree on a shared broker, and a city
can run several deployments on one broker.
"""

from __future__ import annotations

from dataclasses import dataclass

TELEMETRY = "telemetry"
STATUS = "status"
STATE_FEED = "_ingested"
STATUS_WORDS = {b"online": True, b"offline": False}


@dataclass(frozen=True, slots=True)
class TopicLayout:
    root: str = "city"

    def telemetry(self, profile: str, device_id: str) -> str:
        return f"{self.root}/{profile}/{device_id}/{TELEMETRY}"

    def status(self, profile: str, device_id: str) -> str:
        return f"{self.root}/{profile}/{device_id}/{STATUS}"

    def state_feed(self, client_id: str) -> str:
        return f"{self.root}/{STATE_FEED}/{client_id}"

    @property
    def subscription(self) -> str:
        """What an ingest worker subscribes to: every profile's telemetry."""
        return f"{self.root}/+/+/{TELEMETRY}"

    @property
    def status_subscription(self) -> str:
        return f"{self.root}/+/+/{STATUS}"

    @property
    def state_feed_subscription(self) -> str:
        return f"{self.root}/{STATE_FEED}/+"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """(profile, device_id) of a telemetry topic under this root; None for any other shape."""
        return self._parse(topic, TELEMETRY)

    def parse_status(self, topic: str) -> tuple[str, str] | None:
        """(profile, device_id) of a status topic under this root; None for any other shape."""
        return self._parse(topic, STATUS)

    def _parse(self, topic: str, kind: str) -> tuple[str, str] | None:
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 3 or parts[2] != kind or not parts[0] or not parts[1]:
            return None
        return parts[0], parts[1]
