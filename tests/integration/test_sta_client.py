"""A SensorThings client nobody here wrote — FROST-Python-Client (`frost_sta_client` on PyPI,
by Fraunhofer IOSB) — reads CitySense: its Things, their Datastreams and a day of Observations,
following our @iot.nextLink pages itself. Expected answers come from the seeded city."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

frost = pytest.importorskip("frost_sta_client")

from frost_sta_client.service.auth_handler import AuthHandler  # noqa: E402

from citysense.servers import LocalServers  # noqa: E402
from tests.support.api import TOKENS  # noqa: E402
from tests.support.sta import DEVICES, STEPS, StaCity, day_start, sta_city  # noqa: E402
from tests.support.times import rfc3339  # noqa: E402

pytestmark = pytest.mark.integration


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class BearerAuth(AuthHandler):
    """The client's own extension point for credentials: it passes what this returns to
    requests as `auth=`; CitySense takes bearer tokens, not the basic auth it ships."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def add_auth_header(self) -> _Bearer:
        return _Bearer(self.token)


@pytest.fixture(scope="module")
def city(servers: LocalServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaCity]:
    with sta_city(servers, tmp_path_factory.mktemp("sta-client"), day_start(time.time_ns())) as c:
        yield c


def test_frost_client_reads_things_datastreams_and_a_day_of_observations(city: StaCity) -> None:
    service = frost.SensorThingsService(city.root, auth_handler=BearerAuth(TOKENS["city"]))
    things = list(service.things().query().top(2).list())  # two per page: it follows nextLinks
    assert sorted(t.id for t in things) == sorted(d[0] for d in DEVICES)

    thing = service.things().find("WP-1")
    assert thing.name == "WP-1"
    assert thing.properties["district"] == "North"
    streams = list(thing.get_datastreams().query().list())
    assert sorted(s.id for s in streams) == sorted(
        f"WP-1:{f}"
        for f in (
            "pressure",
            "flow",
            "totalVolume",
            "temperature",
            "turbidity",
            "batteryLevel",
            "rssi",
            "leakDetected",
        )
    )
    pressure = next(s for s in streams if s.id == "WP-1:pressure")
    assert pressure.unit_of_measurement.symbol == "kPa"

    since = rfc3339(city.start)
    observations = list(
        pressure.get_observations()
        .query()
        .filter(f"phenomenonTime ge {since}")
        .orderby("phenomenonTime", "ASC")
        .top(100)  # a day is 288: three pages
        .list()
    )
    expected = city.series("WP-1", "pressure")
    assert len(observations) == STEPS == len(expected)
    assert [o.result for o in observations] == [v for _, v in expected]
    assert observations[0].phenomenon_time_as_str().startswith(since[:19])
