"""`citysense up`: the whole stack on this machine, so a newcomer sees data flowing.

Starts Mosquitto and InfluxDB (data under ./.citysense), an ingest worker, the API, the rollup
keeper (aggregates across devices kept as data, which the API serves) and a simulated city
publishing live, each as a child process with its own MQTT credentials; prints
where to look; stops everything, in order, on Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import signal
import socket
import threading
from pathlib import Path
from types import FrameType

from citysense.children import (
    Child,
    Exited,
    NotReady,
    http_ok,
    start_citysense,
    stop_each,
    wait_until,
)
from citysense.servers import LocalServers
from common.errors import ConfigError
from common.files import replace_whole
from device_profiles import DEFAULT_REGISTRY

# Aggregates the local API keeps computed (CITYSENSE_API_AGGREGATE_WARM), so the banner's example
# answers at once: energy per district per day, pressure and lamps on per district per hour.
ENERGY_PER_DAY = "profile=power_meter&field=totalActiveEnergyImport&agg=delta&every=day"
WARM = "; ".join(
    (
        ENERGY_PER_DAY,
        "profile=water_pipe&field=pressure&agg=mean&every=1h",
        "profile=streetlight&field=powerState&agg=count&equals=on&every=1h",
    )
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(".citysense"),
        help="folder for server data and logs (default ./.citysense)",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1",
        help="address the broker, API and metrics listen on (default loopback); InfluxDB, "
        "which runs here without accounts, stays on loopback whatever this says",
    )
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--mqtts-port", type=int, default=8883, help="MQTT over TLS, for devices")
    parser.add_argument("--influx-port", type=int, default=8086)
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=9101, help="ingest /metrics port")
    parser.add_argument(
        "--rollups-port", type=int, default=9102, help="the rollup keeper's /metrics port"
    )
    parser.add_argument("--devices", type=int, default=600, help="simulated devices")
    parser.add_argument("--rate", type=float, default=50.0, help="simulated messages per second")


LOOPBACK = "127.0.0.1"


def local_servers(args: argparse.Namespace, home: Path) -> LocalServers:
    """The broker on `--listen`; InfluxDB, which runs here without accounts, on loopback only:
    with `--listen 0.0.0.0` anyone on the network could have read, dropped or restored the
    database (found by a review)."""
    return LocalServers.create(
        home,
        host=args.listen,
        mqtt_port=args.mqtt_port,
        influx_port=args.influx_port,
        influx_host=LOOPBACK,
    )


def _taken(host: str, ports: dict[str, int]) -> list[str]:
    """The ports another program listens on already (`what port` each)."""
    busy = []
    for what, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(f"{port} ({what})")
    return busy


def local_token(home: Path) -> str:
    """This deployment's operator token, the same on every start: kept in a file only its owner
    reads, next to the tokens file that holds its hash."""
    kept = home / "local-operator.token"
    if kept.exists():
        return kept.read_text().strip()
    token = "cst_" + secrets.token_urlsafe(24)  # never starts with "-", safe in a shell
    replace_whole(kept, (token + "\n").encode())  # owner-only, whole: never an empty token
    return token


def main(args: argparse.Namespace) -> int:
    home: Path = args.home.resolve()
    ports = {
        "mqtt": args.mqtt_port,
        "mqtts": args.mqtts_port,
        "influxdb": args.influx_port,
        "api": args.api_port,
        "ingest metrics": args.metrics_port,
        "rollups metrics": args.rollups_port,
    }
    influx_port = ports.pop("influxdb")
    busy = _taken(args.listen, ports) + _taken(LOOPBACK, {"influxdb": influx_port})
    if busy:
        raise ConfigError(
            f"already in use on {args.listen}: {', '.join(busy)} — is another `citysense up` "
            "running? Choose others with --mqtt-port, --influx-port, --api-port, --metrics-port, "
            "--rollups-port"
        )
    servers = local_servers(args, home)
    servers.mosquitto.tls_port = args.mqtts_port
    print(
        f"starting Mosquitto on :{args.mqtt_port} and InfluxDB on :{args.influx_port} "
        f"(data and logs in {home})"
    )
    try:
        servers.start()
    except (RuntimeError, OSError) as exc:
        print(
            f"could not start the servers: {exc}\n(is another broker or InfluxDB using these "
            "ports? choose others with --mqtt-port / --influx-port)"
        )
        servers.stop()
        return 1
    token = local_token(home)
    tokens_file = home / "tokens.yaml"
    replace_whole(
        tokens_file,
        (
            "# Written by `citysense up`: one city-wide token for this local deployment.\n"
            "tokens:\n"
            f"  - {{name: local-operator, sha256: {hashlib.sha256(token.encode()).hexdigest()}, "
            "scope: city}\n"
        ).encode(),
    )
    registry = _registry(home)
    base = {
        **os.environ,
        "CITYSENSE_REGISTRY": str(registry),
        "CITYSENSE_INFLUX_URL": servers.influxdb.url,
        "CITYSENSE_INFLUX_DB": "citysense",
        "CITYSENSE_TOPIC_ROOT": "city",
        "CITYSENSE_API_TOKENS": str(tokens_file),
        "CITYSENSE_SPOOL_DIR": str(home / "spool"),
        "CITYSENSE_API_DATA_DIR": str(home / "api"),  # the API's latest-state snapshot
        "CITYSENSE_API_HOST": args.listen,
        "CITYSENSE_HTTP_HOST": args.listen,
        # The dashboard questions of the README, kept computed (api.warm), unless set already.
        "CITYSENSE_API_AGGREGATE_WARM": os.environ.get("CITYSENSE_API_AGGREGATE_WARM", WARM),
    }

    def env(user: str, **extra: str) -> dict[str, str]:
        return {**base, "CITYSENSE_MQTT_URL": servers.mosquitto.url(user), **extra}

    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Each child in a session of its own: Ctrl-C in the terminal reaches only `up`, which then
    # stops the children in order (publishers, ingest draining into a live broker, API, servers).
    ingest = start_citysense(
        "ingest",
        "--http-port",
        str(args.metrics_port),
        env=env("citysense-ingest"),
        log=logs / "ingest.log",
    )
    api = start_citysense(
        "api", "--port", str(args.api_port), env=env("citysense-api"), log=logs / "api.log"
    )
    # The rollup keeper in a process of its own, as a deployment runs it (api/keeper_cli.py).
    keeper = start_citysense(
        "rollups",
        "--host",
        args.listen,
        "--port",
        str(args.rollups_port),
        env=env("citysense-api"),
        log=logs / "rollups.log",
    )
    children = [ingest, api, keeper]
    api_url = f"http://127.0.0.1:{args.api_port}"
    try:  # while ingest and the API both run
        wait_until(
            lambda: http_ok(f"{api_url}/health"), 60, "healthy API", watch=children, interval=0.3
        )
    except (Exited, NotReady):
        print(f"the API did not become healthy; see {logs}")
        _stop(children, servers)
        return 1
    simulate = start_citysense(
        "simulate",
        "--mode",
        "live",
        "--devices",
        str(args.devices),
        "--rate",
        str(args.rate),
        "--duration",
        "0",
        "--no-progress",
        env=env("citysense-simulator"),
        log=logs / "simulate.log",
    )
    children.insert(0, simulate)
    operator = _operator_env(home, servers, registry)
    _banner(api_url, args.metrics_port, args.rollups_port, logs, token=token, operator=operator)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    failed = False
    while not stop.wait(1.0):
        if not ingest.running or not api.running or not keeper.running:
            print(f"a service exited unexpectedly; see {logs}")
            failed = True
            break
    _stop(children, servers)
    return 1 if failed else 0


def _registry(home: Path) -> Path:
    """This deployment's registry: the sample city's, copied on the first start, so that
    `citysense devices add` edits a file of its own and not the installed package."""
    kept = home / "registry.csv"
    if not kept.exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEFAULT_REGISTRY, kept)
    return kept


def _operator_env(home: Path, servers: LocalServers, registry: Path) -> Path:
    """Settings for `citysense devices` and `citysense simulate` against this stack, in a file
    only its owner reads (the passwords change at every start)."""
    path = home / "operator.env"
    lines = {
        "CITYSENSE_MQTT_ADMIN_URL": servers.mosquitto.tls_url("citysense-admin"),
        "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-simulator"),
        "CITYSENSE_REGISTRY": str(registry),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(f"{k}='{v}'\n" for k, v in lines.items()))
    return path


def _banner(
    api_url: str, metrics_port: int, rollups_port: int, logs: Path, *, token: str, operator: Path
) -> None:
    auth = f'-H "Authorization: Bearer {token}"'
    print(f"""
CitySense is running. A simulated city is publishing live telemetry.

  operations       {api_url}/screen   (sign in with the token below)
  API docs         {api_url}/docs
  API token        {token}
                   (city-wide, kept for the next start in {logs.parent / "local-operator.token"})
  health           curl -s {api_url}/health
  one lamppost     curl -s {auth} {api_url}/devices/SL-000001
  a district       curl -s {auth} '{api_url}/districts/Xihu/summary?window=1h'
  pipe pressure    curl -s {auth} \\
                     '{api_url}/devices/WP-000001/history?field=pressure&agg=mean&every=5m'
  energy per day   curl -s {auth} \\
                     '{api_url}/aggregates?{ENERGY_PER_DAY}'
  dead letters     curl -s {auth} '{api_url}/dead-letters/counts'
  ingest metrics   curl -s http://127.0.0.1:{metrics_port}/metrics
  rollups metrics  curl -s http://127.0.0.1:{rollups_port}/metrics
  add a device     (set -a; . {operator}; citysense devices add SL-990001 --profile streetlight \\
                     --district Xihu --lat 30.25 --lon 120.15)   # prints its secret, once
  logs             {logs}

Press Ctrl-C to stop everything.
""")


def _stop(children: list[Child], servers: LocalServers) -> None:
    """Publishers first, then ingest (it drains and acks), then the API and the rollup keeper,
    then the servers."""
    stop_each(children, timeout=20)
    servers.stop()
    print("stopped.")
