"""Fixtures of the integration tests: real Mosquitto and InfluxDB started by the project's own
code, on free loopback ports.

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
from common.influx import InfluxConfig
from tests.support.influx import make_database
from tests.support.processes import IngestProcess
from tests.support.servers import TEST_ROOT, local_servers


@pytest.fixture(autouse=True)
def ingest_processes() -> Iterator[None]:
    """Whatever ingest processes a test started are gone when it ends, pass or fail."""
    yield
    IngestProcess.kill_all()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServers]:
    with local_servers(tmp_path_factory.mktemp("servers")) as stack:
        yield stack


@pytest.fixture
def private_servers(tmp_path: Path) -> Iterator[LocalServers]:
    """Servers of this test alone, for tests that stop, kill or restart them."""
    with local_servers(tmp_path / "servers") as stack:
        yield stack


@pytest.fixture
def topic_root() -> str:
    return f"{TEST_ROOT}/{secrets.token_hex(4)}"


@pytest.fixture
def influx(servers: LocalServers) -> InfluxConfig:
    """A fresh, empty database on the shared InfluxDB."""
    return make_database(servers)
