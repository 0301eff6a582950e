"""An ingest worker in this process, on the test's servers, with settings a test can adjust."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from citysense.servers import LocalServers
from common.influx import InfluxConfig
from ingest.settings import IngestSettings
from ingest.worker import Worker
from tests.support.polling import wait_for


def ingest_settings(
    servers: LocalServers, influx: InfluxConfig, root: str, **extra: Any
) -> IngestSettings:
    """Quick batches and retries, no HTTP port, no spool unless `extra` says otherwise."""
    fields: dict[str, Any] = {
        "mqtt_url": SecretStr(servers.mosquitto.url("citysense-ingest")),
        "influx_url": influx.url,
        "influx_db": influx.database,
        "topic_root": root,
        "client_id": f"ingest-{root.replace('/', '-')}",
        "http_port": 0,
        "flush_interval": 0.05,
        "retry_initial": 0.05,
        "retry_max": 0.5,
        "spool_dir": None,
        **extra,
    }
    return IngestSettings(_env_file=None, **fields)  # type: ignore[call-arg]


@contextmanager
def running_worker(
    settings: IngestSettings, transport: httpx.BaseTransport | None = None
) -> Iterator[Worker]:
    profiles, registry = settings.load_contract()
    worker = Worker(settings, profiles, registry, influx_transport=transport)
    worker.start()
    try:
        wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
        yield worker
    finally:
        worker.stop()
