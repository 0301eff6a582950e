"""Servers of a run's own in a temporary folder, and the API (and, for pictures, ingest and a
simulated city) as child processes over them, with a city token for the browser."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from citysense.children import Child, Children, start_citysense
from citysense.servers import LocalServers, free_port
from common.influx import InfluxClient, InfluxConfig
from device_profiles import DEFAULT_REGISTRY

HOST = "127.0.0.1"
ROOT = "city"
DATABASE = "citysense"


@dataclass
class Stack:
    servers: LocalServers
    children: Children
    home: Path
    registry: Path
    token: str  # a city token, for the browser
    tokens: Path
    api_port: int = 0

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def env(self, user: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CITYSENSE_INFLUX_URL": self.servers.influxdb.url,
            "CITYSENSE_INFLUX_DB": DATABASE,
            "CITYSENSE_TOPIC_ROOT": ROOT,
            "CITYSENSE_REGISTRY": str(self.registry),
            "CITYSENSE_MQTT_URL": self.servers.mosquitto.url(user),
            "CITYSENSE_LOG_LEVEL": "WARNING",
            **extra,
        }

    def start(self, *args: str, user: str, **extra: str) -> Child:
        """`citysense ARGS...` as the MQTT `user`, stopped at the end of the run."""
        log = self.home / f"{args[0]}.log"
        return self.children.add(start_citysense(*args, env=self.env(user, **extra), log=log))

    def start_api(self, **extra: str) -> None:
        """`citysense api` with the run's tokens, awaited until it serves the screen's state."""
        config = InfluxConfig(url=self.servers.influxdb.url, database=DATABASE)
        with InfluxClient(config) as client:
            client.create_database()  # ingest would, when it runs
        self.api_port = free_port()
        api = self.start(
            "api", "--host", HOST, "--port", str(self.api_port),
            user="citysense-api", CITYSENSE_API_TOKENS=str(self.tokens), **extra,
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {self.token}"}

        def serving() -> bool:
            try:
                response = httpx.get(f"{self.base}/screen/state", headers=headers, timeout=30)
            except httpx.TransportError:
                return False
            return response.status_code == 200

        api.wait_until(serving, 600, "the API serving its state", interval=0.2)


def _tokens(home: Path, token: str) -> Path:
    path = home / "tokens.yaml"
    digest = hashlib.sha256(token.encode()).hexdigest()
    path.write_text(f"tokens:\n  - {{name: operations-centre, sha256: {digest}, scope: city}}\n")
    return path


@contextmanager
def stack(registry: Path | None = None) -> Iterator[Stack]:
    """Servers started in a temporary folder; everything stopped at the end, pass or fail."""
    with tempfile.TemporaryDirectory(prefix="citysense-screen-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root=ROOT)
        servers.start()
        children = Children()
        token = "cst_" + secrets.token_urlsafe(24)
        try:
            yield Stack(
                servers, children, home, registry or DEFAULT_REGISTRY, token, _tokens(home, token)
            )
        finally:
            children.stop_all()
            servers.stop()
