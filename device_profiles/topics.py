"""Topic layout: `<root>/<profile>/<device_id>/telemetry`.

The root is configurable (default `city`) so that a test can own a unique topic tree on a shared
broker, and a city can run several deployments on one broker.
"""

from __future__ import annotations

from dataclasses import dataclass

TELEMETRY = "telemetry"


@dataclass(frozen=True, slots=True)
class TopicLayout:
    root: str = "city"

    def telemetry(self, profile: str, device_id: str) -> str:
        return f"{self.root}/{profile}/{device_id}/{TELEMETRY}"

    @property
    def subscription(self) -> str:
        """What an ingest worker subscribes to: every profile's telemetry."""
        return f"{self.root}/+/+/{TELEMETRY}"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """(profile, device_id) of a telemetry topic under this root; None for any other shape."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 3 or parts[2] != TELEMETRY or not parts[0] or not parts[1]:
            return None
        return parts[0], parts[1]
