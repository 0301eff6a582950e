"""A query's own bound on how long InfluxDB may take to answer: a district's read is as large as a
latest-state load and may wait as long (foresight); others keep the client's (10 s)."""

from __future__ import annotations

import httpx
import pytest

from api.core import query as q
from common.errors import InfluxUnavailable
from common.influx import AsyncInfluxClient, InfluxClient, InfluxConfig

pytestmark = pytest.mark.anyio

EMPTY = b'{"results":[{"statement_id":0}]}'


async def test_a_querys_timeout_replaces_the_clients_and_only_for_it() -> None:
    seen: list[dict[str, float | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, content=EMPTY)

    influx = AsyncInfluxClient(InfluxConfig(timeout=10.0), transport=httpx.MockTransport(answer))
    try:
        await q.fetch(influx, q.Query("SELECT 1", {}), timeout=600.0)
        await q.fetch(influx, q.Query("SELECT 1", {}))
    finally:
        await influx.aclose()
    assert [t["read"] for t in seen] == [600.0, 10.0]


PAGE = b"<html><body>502 Bad Gateway</body></html>"


async def test_an_answer_that_is_not_json_is_an_outage_not_a_crash() -> None:
    """A proxy's page in front of InfluxDB answered 200: InfluxUnavailable, which every caller
    retries, not orjson's error, which no caller expects (the task, then the process, died)."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=PAGE))
    influx = AsyncInfluxClient(InfluxConfig(), transport=transport)
    try:
        with pytest.raises(InfluxUnavailable, match="not JSON"):
            await influx.query("SELECT 1")
        with pytest.raises(InfluxUnavailable, match="not JSON"):
            async for _ in influx.query_chunks("SELECT 1"):
                pass
    finally:
        await influx.aclose()
    with (
        InfluxClient(InfluxConfig(), transport=transport) as client,
        pytest.raises(InfluxUnavailable, match="not JSON"),
    ):
        client.query("SELECT 1")


async def test_an_answer_asked_uncompressed_is_asked_so_and_others_keep_gzip() -> None:
    """The latest rows are read uncompressed (a few series in large chunks: gzip only costs
    InfluxDB CPU); the readings' answers, a chunk per series, stay compressed."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding", ""))
        return httpx.Response(200, content=EMPTY)

    influx = AsyncInfluxClient(InfluxConfig(token="t"), transport=httpx.MockTransport(answer))
    try:
        for compressed in (False, True):
            async for _ in q.fetch_chunks(
                influx, q.Query("SELECT 1", {}), 10, 5.0, compressed=compressed
            ):
                pass
    finally:
        await influx.aclose()
    assert asked[0] == "identity"
    assert "gzip" in asked[1]


async def test_a_write_answered_otherwise_than_204_is_an_outage_not_stored() -> None:
    """InfluxDB answers a stored write 204. A proxy's 200 page, taken as stored, lost the
    readings it acknowledged with no record: an outage, which ingest retries and spools."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=PAGE))
    influx = AsyncInfluxClient(InfluxConfig(), transport=transport)
    try:
        with pytest.raises(InfluxUnavailable, match="200, not 204"):
            await influx.write(b"m v=1 1")
    finally:
        await influx.aclose()
    with InfluxClient(InfluxConfig(), transport=transport) as client:
        with pytest.raises(InfluxUnavailable, match="200, not 204"):
            client.write(b"m v=1 1")
        stored = httpx.MockTransport(lambda request: httpx.Response(204))
        with InfluxClient(InfluxConfig(), transport=stored) as good:
            good.write(b"m v=1 1")
