"""A replica with no snapshot of its own starts from a running replica's state (api.live.peer,
GET /state/snapshot), on the real broker and InfluxDB: it asks InfluxDB for no part the peer's
state and the feed vouch for, only for a write announced to nobody, and it misses nothing the
city wrote meanwhile. The state is every device's latest reading: only a city token gets it; a
peer that refuses, or is not there, costs the full load, never a reading.

Writes go as ingest makes them (tests/integration/test_api_feed_session.py's Ingest): readings,
change marks, then the numbered announcement."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from api.core.settings import ApiSettings
from api.live.snapshot import FILE_NAME
from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from tests.support.api import TOKENS, api_settings, running, write_tokens
from tests.support.feed import REGISTRY, Ingest, if_found, latest_times, light
from tests.support.polling import until
from tests.support.seeding import Point
from tests.support.times import S, rfc3339

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _replica(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, root: str, name: str, **extra: Any
) -> ApiSettings:
    """One replica's settings: a data folder of its own (so a broker session of its own); the
    first one, the peer, answers only tokens of the tokens file."""
    return api_settings(
        servers,
        influx,
        tmp_path,
        registry=REGISTRY,
        tokens=write_tokens(tmp_path / "tokens.yaml"),
        topic_root=root,
        api_data_dir=tmp_path / name,
        api_state_reconcile_interval=300.0,  # no catch-up of its own moves what it holds
        # What a replica queries, and whether it loads in full, is what these tests look at:
        # not the latest rows, which the first replica's full load makes whole
        # (test_latest_rows.py).
        api_state_from_rows=False,
        **extra,
    )


def _new_replica(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    root: str,
    transport: httpx.AsyncBaseTransport | None,
    *,
    name: str = "second",
    token: str = "city",
    peer: str = "http://first.test",
    **extra: Any,
) -> FastAPI:
    """A replica with an empty data folder of its own, started from `peer` (reached through
    `transport`: another app in this process) with the named token."""
    settings = _replica(
        servers,
        influx,
        tmp_path,
        root,
        name,
        api_state_peer=peer,
        api_state_peer_token=SecretStr(TOKENS[token]),
        **extra,
    )
    return create_app(settings, peer_transport=transport)


class _WrittenFirst(httpx.AsyncBaseTransport):
    """To the peer, once `before` ran: the city writes between the new replica's subscription
    and the peer's answer, so the peer's state and the new replica's session both hold it."""

    def __init__(self, peer: FastAPI, before: Callable[[], Awaitable[None]]) -> None:
        self._peer = httpx.ASGITransport(app=peer)
        self._before = before

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._before()
        return await self._peer.handle_async_request(request)


async def _trusted(app: FastAPI, ingest: Ingest, now: int) -> None:
    live = app.state.runtime.live
    await until(live.feed.subscribed.is_set, 10, "the feed's subscription")
    ingest.store([light("SL-2", "North", "on", now - 50 * S)])
    await until(lambda: live.coverage.dump()["publishers"], 10, "the publisher heard")
    await until(lambda: live.coverage.trusted, 10, "a trusted feed")


def _city(client: httpx.AsyncClient) -> None:
    client.headers["Authorization"] = f"Bearer {TOKENS['city']}"


async def test_a_new_replica_starts_from_a_running_one_and_queries_nothing(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    ingest.store([light("SL-1", "North", "off", now - 60 * S)])  # before any replica
    first = create_app(_replica(servers, influx, tmp_path, topic_root, "first"))
    async with running(first) as peer:
        _city(peer)
        await _trusted(first, ingest, now)

        async def meanwhile() -> None:  # taken by the peer before it answers
            ingest.store([Point("water_pipe", "WP-1", "South", {"pressure": 2.5}, now - 40 * S)])
            await until(lambda: if_found(peer, "WP-1"), 10, "the peer took it")

        second = _new_replica(
            servers, influx, tmp_path, topic_root, _WrittenFirst(first, meanwhile)
        )
        async with running(second) as client:
            _city(client)
            live = second.state.runtime.live
            assert live.started_from == "peer"
            # Its own copy of the message the peer held already is no gap: nothing queried.
            assert live.coverage.trusted
            assert live.parts_queried == 0
            assert await latest_times(client) == {
                "SL-1": rfc3339(now - 60 * S),
                "SL-2": rfc3339(now - 50 * S),
                "SL-3": None,
                "WP-1": rfc3339(now - 40 * S),
            }
            numbers = live.coverage.dump()["publishers"]
            ingest.store([light("SL-3", "East", "on", now - 30 * S)])
            times = await until(lambda: if_found(client, "SL-3"), 10, "a live reading")
            assert times["SL-3"] == rfc3339(now - 30 * S)
            # Its number is taken just after its readings are applied: then judged.
            await until(lambda: live.coverage.dump()["publishers"] != numbers, 5, "its number")
            assert live.coverage.trusted  # the peer's numbers, then ours: no gap
        # A snapshot of its own for its next start, which starts from it.
        assert (tmp_path / "second" / FILE_NAME).is_file()


async def test_a_write_announced_to_nobody_is_queried_its_part_only(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    first = create_app(_replica(servers, influx, tmp_path, topic_root, "first"))
    async with running(first):
        await _trusted(first, ingest, now)
        # As replay writes: its marks, no announcement; the peer does not hold it either.
        ingest.store([light("SL-3", "East", "on", now - 30 * S)], announce=False)
        peer = httpx.ASGITransport(app=first)
        second = _new_replica(servers, influx, tmp_path, topic_root, peer)
        async with running(second) as client:
            _city(client)
            assert second.state.runtime.live.started_from == "peer"
            assert second.state.runtime.live.parts_queried == 1
            assert (await latest_times(client))["SL-3"] == rfc3339(now - 30 * S)


async def test_only_a_city_token_gets_the_state_and_a_refusal_costs_a_full_load(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    first = create_app(_replica(servers, influx, tmp_path, topic_root, "first"))
    async with running(first) as peer:
        await _trusted(first, ingest, now)
        assert (await peer.get("/state/snapshot")).status_code == 401
        for name in ("lights", "portal"):
            refused = await peer.get(
                "/state/snapshot", headers={"Authorization": f"Bearer {TOKENS[name]}"}
            )
            assert refused.status_code == 403, name
        allowed = await peer.get(
            "/state/snapshot", headers={"Authorization": f"Bearer {TOKENS['city']}"}
        )
        assert allowed.status_code == 200 and allowed.content.startswith(b"CITYSENSE-STATE\n")
        refusing = httpx.ASGITransport(app=first)  # a department token: 403
        for n, (transport, token) in enumerate(((refusing, "lights"), (None, "city"))):
            # The second: no transport, and nothing listens at the peer's address.
            second = _new_replica(
                servers,
                influx,
                tmp_path,
                topic_root,
                transport,
                name=f"second-{n}",
                token=token,
                peer="http://127.0.0.1:9",
            )
            async with running(second) as client:
                _city(client)
                assert (await latest_times(client))["SL-2"] == rfc3339(now - 50 * S)
                assert second.state.runtime.live.started_from == "influxdb"


async def test_a_peer_of_another_registry_is_refused_after_the_transfer(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """A peer whose answer passes the transfer (a city token, 200, a whole snapshot) but not the
    last check: its registry is not ours (a device more). Its state is not taken: the new
    replica loads in full and serves what InfluxDB holds."""
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    other = _replica(servers, influx, tmp_path, topic_root, "first")
    other = other.model_copy(
        update={
            "registry": _written(
                tmp_path / "other.csv", REGISTRY + "SL-9,streetlight,West,30.2,120.1,\n"
            )
        }
    )
    first = create_app(other)
    async with running(first) as peer:
        _city(peer)
        await _trusted(first, ingest, now)
        assert (await peer.get("/state/snapshot")).status_code == 200
        second = _new_replica(servers, influx, tmp_path, topic_root, httpx.ASGITransport(app=first))
        async with running(second) as client:
            _city(client)
            assert second.state.runtime.live.started_from == "influxdb"
            assert (await latest_times(client))["SL-2"] == rfc3339(now - 50 * S)


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def test_a_peers_answer_over_the_byte_bound_is_cut_off_and_costs_a_full_load(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """The peer's state is larger than this replica takes (`api_snapshot_max_bytes`): the
    transfer stops there, nothing of it is used, and the replica loads in full."""
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    first = create_app(_replica(servers, influx, tmp_path, topic_root, "first"))
    async with running(first) as peer:
        _city(peer)
        await _trusted(first, ingest, now)
        size = len((await peer.get("/state/snapshot")).content)
        bound = 1024  # the setting's least
        assert size > bound, size
        second = _new_replica(
            servers,
            influx,
            tmp_path,
            topic_root,
            httpx.ASGITransport(app=first),
            api_snapshot_max_bytes=bound,
        )
        async with running(second) as client:
            _city(client)
            assert second.state.runtime.live.started_from == "influxdb"
            assert (await latest_times(client))["SL-2"] == rfc3339(now - 50 * S)
