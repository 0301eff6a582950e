"""The process computing a foresight round (api.foresight.worker) hands InfluxDB's errors back as
the same kind: a round InfluxDB could not answer is tried again soon, one it refused waits for
the next interval (api.foresight.schedule.after_failure), and neither may reach the API as a
pickling error or a dead pool."""

from __future__ import annotations

import pickle
import socket

import pytest

from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.foresight import worker
from api.foresight.run import Span
from common.errors import InfluxRejected, InfluxUnavailable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_influxdb_not_there_comes_back_as_unavailable() -> None:
    settings = ApiSettings(influx_url=f"http://127.0.0.1:{_closed_port()}")
    profiles, registry = settings.load_contract()
    worker.started(Contract.build(profiles, registry), 0)
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
