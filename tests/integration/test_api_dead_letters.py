"""GET /dead-letters and /dead-letters/counts against the real InfluxDB, seeded with dead letters
shaped as ingest writes them (contract 2), written by the test (tests/support/deadletters.py) so
it does not depend on ingest."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.core.settings import ApiSettings
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import api_settings
from tests.support.deadletters import dead_letter_line
from tests.support.times import S, rfc3339
from wire.retention import DEAD_LETTERS

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


# (seconds ago, reason, profile, device id, raw payload)
LETTERS: list[tuple[int, str, str, str, bytes]] = [
    (60, "out_of_range", "streetlight", "SL-A1", b'{"voltage": 999, "note": "caf\xc3\xa9 \\" ,="}'),
    (120, "out_of_range", "water_pipe", "WP-A1", b'{"pressure": -5}'),
    (180, "invalid_json", "streetlight", "SL-A2", b"{not json"),
    (240, "invalid_utf8", "streetlight", "SL-A1", b"\xff\xfe\x00binary"),
    (300, "unknown_profile", "unknown", "X-1", b"{}"),
    (3 * 86400, "out_of_range", "streetlight", "SL-A1", b'{"old": true}'),  # outside 24 h
]


@pytest.fixture
def app_settings(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, now: int
) -> ApiSettings:
    """LETTERS, stored `now` minus their seconds ago; one of them replayed."""
    lines = [
        dead_letter_line(now - ago * S, reason, profile, device, raw)
        for ago, reason, profile, device, raw in LETTERS
    ]
    lines.append(  # replayed after a profile fix: fields merged onto the same point
        dead_letter_line(
            now - 120 * S,
            "out_of_range",
            "water_pipe",
            "WP-A1",
            b'{"pressure": -5}',
            replayed=(now - 10 * S, "stored"),
        )
    )
    with InfluxClient(influx) as client:
        client.write("\n".join(lines).encode(), policy=DEAD_LETTERS)
    return api_settings(servers, influx, tmp_path)


async def test_list_is_newest_first_with_payloads_decoded(api: httpx.AsyncClient, now: int) -> None:
    response = await api.get("/dead-letters")
    assert response.status_code == 200, response.text
    body = response.json()
    recent = [letter for letter in LETTERS if letter[0] < 86400]
    assert body["total"] == len(recent)
    assert [i["time"] for i in body["items"]] == [rfc3339(now - ago * S) for ago, *_ in recent]
    first = body["items"][0]
    assert first["payload"] == LETTERS[0][4].decode()  # the exact text, quotes and all
    assert first["payload_encoding"] == "text"
    assert (first["reason"], first["profile"], first["device_id"]) == (
        "out_of_range",
        "streetlight",
        "SL-A1",
    )
    assert first["payload_bytes"] == len(LETTERS[0][4])
    assert first["worker"] == "w1"
    assert first["replayed_at"] is None
    binary = next(i for i in body["items"] if i["reason"] == "invalid_utf8")
    assert binary["payload_encoding"] == "base64"
    assert base64.b64decode(binary["payload"]) == LETTERS[3][4]
    replayed = next(i for i in body["items"] if i["device_id"] == "WP-A1")
    assert replayed["replayed_at"] == rfc3339(now - 10 * S)
    assert replayed["replay_result"] == "stored"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"reason": "out_of_range"}, [60, 120]),
        ({"reason": ["invalid_json", "invalid_utf8"]}, [180, 240]),
        ({"profile": "streetlight"}, [60, 180, 240]),
        ({"profile": "unknown"}, [300]),
        ({"device_id": "SL-A1"}, [60, 240]),
        ({"device_id": "SL-A1' OR '1'='1"}, []),
        ({"reason": "out_of_range", "profile": "streetlight", "device_id": "SL-A1"}, [60]),
        ({"limit": 2, "offset": 1}, [120, 180]),
    ],
)
async def test_filters(
    api: httpx.AsyncClient, now: int, params: dict[str, Any], expected: list[int]
) -> None:
    response = await api.get("/dead-letters", params=params)
    assert response.status_code == 200, response.text
    assert [i["time"] for i in response.json()["items"]] == [rfc3339(now - a * S) for a in expected]


async def test_time_window(api: httpx.AsyncClient, now: int) -> None:
    params = {"start": rfc3339(now - 4 * 86400 * S), "end": rfc3339(now - 150 * S)}
    body = (await api.get("/dead-letters", params=params)).json()
    assert [i["time"] for i in body["items"]] == [
        rfc3339(now - a * S) for a in (180, 240, 300, 3 * 86400)
    ]


@pytest.mark.parametrize("by", ["reason", "profile"])
async def test_counts(api: httpx.AsyncClient, by: str) -> None:
    response = await api.get("/dead-letters/counts", params={"by": by})
    assert response.status_code == 200
    index = 1 if by == "reason" else 2
    expected = Counter(letter[index] for letter in LETTERS if letter[0] < 86400)
    assert response.json()["counts"] == dict(sorted(expected.items()))
    assert response.json()["total"] == sum(expected.values())


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"reason": "no_such_reason"}, ["query", "reason", 0]),
        ({"profile": "lamppost"}, ["query", "profile"]),
        ({"start": "yesterday"}, ["query", "start"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"by": "device_id"}, ["query", "by"]),
    ],
)
async def test_bad_parameters(
    api: httpx.AsyncClient, params: dict[str, Any], loc: list[Any]
) -> None:
    path = "/dead-letters/counts" if "by" in params else "/dead-letters"
    response = await api.get(path, params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
