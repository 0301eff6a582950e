"""Ingest worker settings: CITYSENSE_* environment variables (see CommonSettings) plus these."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from common.retry import RetryPolicy
from common.settings import CommonSettings
from ingest.decode import DecodeLimits


class IngestSettings(CommonSettings):
    # A stable client id is what lets the broker keep our session (and our unacknowledged
    # messages) across a crash or restart. Give each worker of a group its own.
    # Seconds between looks at the registry file for devices added while running (0: never).
    registry_check: float = Field(default=5.0, ge=0)
    client_id: str = Field(default="citysense-ingest", min_length=1, max_length=64)
    # When set, workers share `$share/<group>/...`: the broker spreads messages over them.
    share_group: str = Field(default="", pattern=r"^[A-Za-z0-9_-]*$")
    session_expiry: int = Field(default=7 * 86400, ge=0)
    # Unacknowledged messages we may hold (MQTT 5 Receive Maximum): while InfluxDB is down the
    # broker, not this process, keeps the backlog.
    receive_maximum: int = Field(default=20_000, ge=1, le=65_535)
    # Seconds between the keepalive pings the broker expects; it drops a connection silent for
    # 1.5 times this. Kept while the byte budget holds the MQTT thread (ingest.consume).
    mqtt_keepalive: int = Field(default=30, ge=2, le=3600)
    # A worker that goes away without stopping cleanly, and is not back within this many
    # seconds, has the broker tell the API's state feed so (its will, wire.statefeed): the API
    # then checks InfluxDB's change marks rather than trust that nothing was lost.
    state_feed_will_delay: int = Field(default=30, ge=0, le=86_400)
    # Bytes we may hold between receiving messages and storing them, whatever their shape
    # (ingest.budget): past it, we stop reading from the broker until a batch is stored.
    max_held_bytes: int = Field(default=256 * 1024**2, ge=1024**2)
    # Largest request body sent to InfluxDB; larger batches go in several requests.
    max_request_bytes: int = Field(default=8 * 1024**2, ge=64 * 1024)
    batch_size: int = Field(default=5000, ge=1)
    flush_interval: float = Field(default=0.2, gt=0)
    drain_timeout: float = Field(default=10.0, gt=0)
    max_payload_bytes: int = Field(default=64 * 1024, ge=64)
    max_json_depth: int = Field(default=8, ge=2)
    max_readings_per_message: int = Field(default=1000, ge=1)
    dead_letter_max_payload: int = Field(default=8192, ge=64)
    retry_initial: float = Field(default=0.25, gt=0)
    retry_max: float = Field(default=30.0, gt=0)
    # A device not in the registry: reject it (dead letter `unknown_device`), or accept its
    # readings under district "unassigned" so a new installation is not lost while the registry
    # catches up.
    unknown_devices: Literal["reject", "accept"] = "reject"
    # Readings remembered to recognise duplicates (about 200 bytes each).
    dedupe_window: int = Field(default=200_000, ge=0)
    # Publish each stored batch's readings on <root>/_ingested/<client_id> for the API's live
    # state (QoS 0; the API can always rebuild from InfluxDB).
    state_feed: bool = True
    # While InfluxDB is away, batches older than `spill_after` seconds go to a disk spool (one
    # folder per client id) and are acknowledged; at `spool_max_bytes` the worker stops
    # acknowledging instead. Unset CITYSENSE_SPOOL_DIR to rely on the broker's queue alone.
    spool_dir: Path | None = Path(".citysense/spool")
    spool_max_bytes: int = Field(default=1024**3, ge=1024)
    spill_after: float = Field(default=5.0, gt=0)
    create_database: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9101, ge=0, le=65535)  # 0: no /metrics, /ready endpoint
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _no_spool(cls, value: object) -> object:
        return None if value in ("", None) else value

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(
            max_payload_bytes=self.max_payload_bytes,
            max_depth=self.max_json_depth,
            max_readings=self.max_readings_per_message,
        )

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(initial=self.retry_initial, maximum=self.retry_max)

    @property
    def subscription(self) -> str:
        topic = self.topics.subscription
        return f"$share/{self.share_group}/{topic}" if self.share_group else topic
