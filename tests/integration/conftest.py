"""Fixtures of the integration tests: real Mosquitto and InfluxDB started by the project's own
code, on free loopback ports, and the API over them.

One pair of servers serves the whole session; each test gets its own database and its own topic
tree (`citytest/<random>`), so tests never see each other's data. Tests that kill or restart a
server ask for `private_servers` instead.

`api` is the app in process with a client for it, started with `app_settings`: by default over
the `seed` readings and devices. A test module that needs other data or settings overrides
`app_settings`, seeding there, before the app starts.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from api.core.settings import ApiSettings
from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import api_settings, running
from tests.support.influx import make_database
from tests.support.processes import IngestProcess
from tests.support.seeding import REGISTRY, Seed, line_protocol, seed_points
from tests.support.servers import TEST_ROOT, local_servers
from tests.support.times import S


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


@pytest.fixture
def now() -> int:
    """This second, in ns."""
    return time.time_ns() // S * S


@pytest.fixture
def seed(influx: InfluxConfig, now: int) -> Seed:
    """The sample readings (seeding.seed_points) written to this test's database."""
    points, base = seed_points(now)
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
    return Seed(now, points, base, {d: (p, district) for d, p, district in REGISTRY})


@pytest.fixture
def app_settings(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, seed: Seed
) -> ApiSettings:
    """What `api` starts the app with: by default api_settings over the `seed` data."""
    return api_settings(servers, influx, tmp_path)


@pytest.fixture
async def api(app_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(app_settings)) as client:
        yield client
