"""citysense.servers: a port chosen for a server and taken by someone else before the server
binds it is chosen again on a first start; a port that was given is never changed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from citysense.servers import LocalServers

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
