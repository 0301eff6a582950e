"""The loopback Mosquitto and InfluxDB a test run starts (citysense.servers), and the topic roots
their broker allows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from citysense.dynsec import DeviceAccount
from citysense.servers import LocalServers

TEST_ROOT = "citytest"
# Each test publishes under its own root `citytest/<hex>`; the broker ACL covers them all.
ACL_ROOT = f"{TEST_ROOT}/+"


@contextmanager
def local_servers(
    folder: Path, devices: list[DeviceAccount] | None = None
) -> Iterator[LocalServers]:
    """Servers in `folder`, running until the block ends; `devices` get broker accounts of
    their own (a device by its own credentials) before the broker starts."""
    stack = LocalServers.create(folder, root=ACL_ROOT)
    stack.mosquitto.devices.extend(devices or [])
    stack.start()
    yield stack
    stack.stop()
