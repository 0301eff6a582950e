"""Fixtures: real Mosquitto and InfluxDB started by the project's own code, on free loopback ports.

One pair of servers serves the whole session; each test gets its own database and its own topic
tree (`citytest/<random>`), so tests never see each other's data. Tests that kill or restart a
server ask for `private_servers` instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support import IngestProcess

TEST_ROOT = "citytest"
# Each test publishes under its own root `citytest/<hex>`; the broker ACL covers them all.
ACL_ROOT = f"{TEST_ROOT}/+"


@pytest.fixture(autouse=True)
def ingest_processes() -> Iterator[None]:
    """Whatever ingest processes a test started are gone when it ends, pass or fail."""
    yield
    IngestProcess.kill_all()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServers]:
    stack = LocalServers.create(tmp_path_factory.mktemp("servers"), root=ACL_ROOT)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def private_servers(tmp_path: Path) -> Iterator[LocalServers]:
    """Servers of this test alone, for tests that stop, kill or restart them."""
    stack = LocalServers.create(tmp_path / "servers", root=ACL_ROOT)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def topic_root() -> str:
    return f"{TEST_ROOT}/{secrets.token_hex(4)}"


def make_database(stack: LocalServers) -> InfluxConfig:
    config = InfluxConfig(url=stack.influxdb.url, database=f"t_{secrets.token_hex(6)}")
    with InfluxClient(config) as client:
        client.create_database()
    return config


@pytest.fixture
def influx(servers: LocalServers) -> InfluxConfig:
    """A fresh, empty database on the shared InfluxDB."""
    return make_database(servers)
