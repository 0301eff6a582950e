"""The process computing a foresight round (api.foresight.worker) hands InfluxDB's errors back as
the same kind: a round InfluxDB could not answer is tried again soon, one it refused waits for
the next interval (api.foresight.schedule.after_failure), and neither may reach the API as a
pickling error or a dead pool."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import pickle
import socket
import time
from pathlib import Path

import pytest

from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.foresight import worker
from api.foresight.run import Span
from api.foresight.schedule import Scheduler, after_failure
from common.errors import InfluxRejected, InfluxUnavailable
from common.influx import AsyncInfluxClient


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_influxdb_not_there_comes_back_as_unavailable() -> None:
    settings = ApiSettings(influx_url=f"http://127.0.0.1:{_closed_port()}")
    outcome = worker.compute(settings, Span(0, 86_400 * 10**9), Span(0, 86_400 * 10**9))
    # As the parent gets it: through pickle, as run_in_executor hands it over.
    outcome = pickle.loads(pickle.dumps(outcome))
    assert outcome.failure is not None and outcome.lines == []
    error = outcome.failure.error()
    assert isinstance(error, InfluxUnavailable)


@pytest.mark.parametrize("unavailable", [True, False])
def test_a_failure_is_raised_again_as_its_kind(unavailable: bool) -> None:
    failure = worker.Failure(unavailable, "no", 503 if unavailable else 400, 7.0)
    error = pickle.loads(pickle.dumps(failure)).error()
    assert isinstance(error, InfluxUnavailable if unavailable else InfluxRejected)
    assert str(error) == "no" and error.status == failure.status
    if unavailable:
        assert isinstance(error, InfluxUnavailable) and error.retry_after == 7.0


def test_contract_files_broken_since_start_come_back_as_refused(tmp_path: Path) -> None:
    """Not as an exception that ends foresight's task, nor a dead pool: the next interval."""
    registry = tmp_path / "registry.csv"
    registry.write_text("device_id,profile,district,latitude,longitude,address\nX,nope,A,1,2,\n")
    settings = ApiSettings(influx_url=f"http://127.0.0.1:{_closed_port()}", registry=registry)
    outcome = pickle.loads(pickle.dumps(worker.compute(settings, Span(0, 1), Span(0, 1))))
    assert outcome.failure is not None and not outcome.failure.unavailable
    assert "contract" in outcome.failure.message and "nope" in outcome.failure.message


@pytest.mark.anyio
async def test_stopping_during_a_round_ends_its_child_at_once() -> None:
    """A round whose InfluxDB never answers (a socket that accepts and stays silent) is running
    in the child when the API stops: the child is ended, not waited for."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = ApiSettings(influx_url=url, api_load_timeout=600, api_foresight_first_after=0)
        profiles, registry = settings.load_contract()
        influx = AsyncInfluxClient(settings.influx)
        scheduler = Scheduler(
            settings,
            Contract.build(profiles, registry),
            influx,
            None,
            Supervisor(),  # type: ignore[arg-type]
        )
        # A child an earlier test left exiting (this process runs a file of tests) is not ours.
        known = {c.pid for c in multiprocessing.active_children() if c.pid is not None}
        scheduler.start()
        child = await _child_of_a_round(known)
        await asyncio.sleep(1.0)  # inside its round: connected, waiting for an answer
        assert child.is_alive()
        began = time.monotonic()
        await scheduler.stop()
        # Not child.join() and is_alive(): the pool's own thread reaps the child too, and of two
        # waitpid()s on one pid the later gets ECHILD, which multiprocessing takes for "still
        # running" (is_alive() True of a child already gone, until that thread stores its exit
        # code: this test failed so about once in 25 runs of the unit suite). The child's
        # sentinel is readable once it has ended, whoever reaps it.
        ended = multiprocessing.connection.wait([child.sentinel], 10)
        await influx.aclose()
    assert ended, "the round's child was not ended"
    assert time.monotonic() - began < 10


async def _child_of_a_round(known: set[int]) -> multiprocessing.Process:
    """The child a round runs in, once it has been spawned (not one in `known`)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fresh = [c for c in multiprocessing.active_children() if c.pid not in known]
        if fresh:
            return fresh[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no child spawned for the round")


@pytest.mark.anyio
async def test_a_child_killed_during_a_round_is_a_round_tried_again_soon_in_a_new_child() -> None:
    """Killed (out of memory, an operator) while InfluxDB is slow to answer it: the round is
    "unavailable", so tried again soon rather than at the next interval, and the next round gets
    a child of its own instead of the broken pool."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = ApiSettings(influx_url=url, api_load_timeout=600)
        profiles, registry = settings.load_contract()
        influx = AsyncInfluxClient(settings.influx)
        contract = Contract.build(profiles, registry)
        scheduler = Scheduler(settings, contract, influx, None, Supervisor())  # type: ignore[arg-type]
        try:
            first = asyncio.ensure_future(scheduler.round_once())
            child = await _child_of_a_round(set())
            await asyncio.sleep(1.0)  # inside its round
            child.kill()
            with pytest.raises(InfluxUnavailable, match="died during a round") as caught:
                await asyncio.wait_for(first, 30)
            assert after_failure(caught.value, 0, scheduler.every) < scheduler.every
            second = asyncio.ensure_future(scheduler.round_once())
            again = await _child_of_a_round({child.pid} if child.pid else set())
            await asyncio.sleep(1.0)
            assert again.is_alive() and not second.done()
            second.cancel()
        finally:
            await scheduler.stop()
            await influx.aclose()
