"""A query's own bound on how long InfluxDB may take to answer: a district's read is as large as a
latest-state load and may wait as long (foresight); others keep the client's (10 s)."""

from __future__ import annotations

import httpx
import pytest

from api.core import query as q
from common.influx import AsyncInfluxClient, InfluxConfig

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
