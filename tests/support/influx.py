"""A fresh database on a test InfluxDB, and reading back what it holds."""

from __future__ import annotations

import secrets

from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from common.schema import Retention, ensure_schema, withdraw_rows_whole
from device_profiles import load_profiles
from wire.retention import qualified


def make_database(stack: LocalServers) -> InfluxConfig:
    """A new, empty database of its own on the InfluxDB of `stack`, set up as ingest sets it up
    at start (retention policies, roll-ups of the shipped profiles), except that readings are
    kept for ever: tests seed history years back (calendar windows, counters across a year)."""
    config = InfluxConfig(url=stack.influxdb.url, database=f"t_{secrets.token_hex(6)}")
    with InfluxClient(config) as client:
        ensure_schema(client, Retention(readings="INF"), load_profiles())
        # Tests seed readings straight into InfluxDB, as no writer that keeps latest rows does
        # (common.schema): the API's first start reads them in full, as after an import.
        withdraw_rows_whole(client)
    return config


def count(config: InfluxConfig, measurement: str, where: str = "") -> int:
    """Points in a measurement, counted by time (every point has one)."""
    with InfluxClient(config) as client:
        rows = client.query(f"SELECT * FROM {qualified(measurement)} {where}", epoch="ns")
    return sum(len(s.values) for s in rows[0]) if rows else 0


def rows(config: InfluxConfig, query: str) -> list[dict[str, object]]:
    with InfluxClient(config) as client:
        result = client.query(query, epoch="ns")
    return [row for series in (result[0] if result else []) for row in series.rows()]
