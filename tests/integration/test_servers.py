"""citysense.servers: a port chosen for a server and taken by someone else before the server
binds it is chosen again on a first start; a port that was given is never changed; InfluxDB runs
with its collector tuned unless the operator set it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from citysense.servers import INFLUXD_GOGC, LocalServers

pytestmark = pytest.mark.integration


def test_a_chosen_port_taken_meanwhile_is_chosen_again(tmp_path: Path) -> None:
    stack = LocalServers.create(tmp_path)
    with socket.socket() as squatter:  # takes the broker's and InfluxDB's ports first
        squatter.bind(("127.0.0.1", stack.mosquitto.port))
        squatter.listen()
        with socket.socket() as other:
            other.bind(("127.0.0.1", stack.influxdb.port))
            other.listen()
            taken = (stack.mosquitto.port, stack.influxdb.port)
            stack.start()
            try:
                assert stack.mosquitto.running and stack.influxdb.running
                assert (stack.mosquitto.port, stack.influxdb.port) != taken
                assert stack.mosquitto.port != taken[0] and stack.influxdb.port != taken[1]
            finally:
                stack.stop()


def test_a_given_port_is_never_changed(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = LocalServers.create(tmp_path, mqtt_port=port)
        with pytest.raises(RuntimeError, match="already in use"):
            stack.mosquitto.start()
        assert stack.mosquitto.port == port


def _environ(pid: int) -> dict[str, str]:
    items = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


def test_influxdb_runs_with_gogc_200_unless_the_operator_set_one(
    servers: LocalServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert servers.influxdb.process is not None
    expected = os.environ.get("GOGC", INFLUXD_GOGC)  # an operator's own, if the run has one
    assert _environ(servers.influxdb.process.pid)["GOGC"] == expected
    monkeypatch.delenv("GOGC", raising=False)
    assert servers.influxdb.environment()["GOGC"] == "200"
    monkeypatch.setenv("GOGC", "150")
    assert servers.influxdb.environment()["GOGC"] == "150"
