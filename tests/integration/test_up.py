"""`citysense up`, the README's first command, as a newcomer runs it: servers, ingest, API and a
simulated city come up; the printed token reads live devices and a kept aggregate; Ctrl-C stops
every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.live.broker import check_broker
from citysense.servers import free_port
from citysense.up import ENERGY_PER_DAY
from common.mqtturl import MqttUrl
from common.process import die_with_parent
from tests.support.polling import wait_for
from tests.support.processes import children

pytestmark = pytest.mark.integration


def test_up_runs_the_whole_city_and_stops_it(tmp_path: Path) -> None:
    api_port, metrics_port, rollups_port = free_port(), free_port(), free_port()
    up, output, reader, env = _start_up(
        tmp_path / "home", api_port, metrics_port, rollups_port, "--devices", "60", "--rate", "30"
    )
    try:
        token = wait_for(lambda: _token("".join(output)), 120, 0.2, "the banner's API token")
        started = children(up.pid)
        assert len(started) >= 6  # broker, InfluxDB, ingest, API, rollup keeper, simulator
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert httpx.get(f"http://127.0.0.1:{api_port}/devices").status_code == 401

        def reporting() -> int:
            body: dict[str, Any] = api.get("/devices", params={"status": "on_time"}).json()
            return int(body["total"])

        wait_for(lambda: reporting() >= 30, 60, 0.5, "simulated devices reporting")
        # One of the questions `up` keeps warm ...
        energy = api.get(f"/aggregates?{ENERGY_PER_DAY}")
        assert energy.status_code == 200, energy.text
        # ... and a question nobody asked yet, computed now from the readings stored so far.
        pressure = api.get("/aggregates?profile=water_pipe&field=pressure&every=15m")
        assert pressure.status_code == 200, pressure.text
        assert any(row["value"] is not None for row in pressure.json()["rows"])
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert re.search(r"^citysense_ingest_readings_stored_total [1-9]", metrics, re.M)
        # The rollup keeper, its own process, keeps the stored readings' windows.
        rollups = f"http://127.0.0.1:{rollups_port}/metrics"
        wait_for(
            lambda: re.search(
                r"^citysense_rollups_windows_computed_total [1-9]", httpx.get(rollups).text, re.M
            ),
            60,
            0.5,
            "the keeper's rollups",
        )
        # The banner's way to add a device works against the running stack, over TLS.
        _add_a_device(tmp_path / "home" / "operator.env", env)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        reader.join(10)
    assert code == 0, "".join(output)[-3000:]
    for pid in started:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} outlived up"


def test_up_stops_everything_and_fails_when_a_service_dies(tmp_path: Path) -> None:
    """A city whose ingest died is not running: `up` says so, stops the rest, and exits 1
    (a supervisor restarting it, a script waiting on it, see a failure)."""
    ports = (free_port(), free_port(), free_port())
    up, output, reader, _ = _start_up(tmp_path / "home", *ports, "--devices", "10", "--rate", "5")
    try:
        wait_for(lambda: _token("".join(output)), 120, 0.2, "the banner's API token")
        started = children(up.pid)
        [ingest] = [pid for pid in started if " ingest " in _command(pid)]
        os.kill(ingest, signal.SIGKILL)
        code = up.wait(60)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.wait(60)
        reader.join(10)
    said = "".join(output)
    assert code == 1, said[-3000:]
    assert "a service exited unexpectedly" in said
    for pid in started:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} outlived up"


def _start_up(
    home: Path, api_port: int, metrics_port: int, rollups_port: int, *more: str
) -> tuple[subprocess.Popen[str], list[str], threading.Thread, dict[str, str]]:
    """`citysense up` as a newcomer runs it (no CITYSENSE_* setting), on free ports; the
    process, what it prints (read as it comes), the reader, and its environment."""
    args = [
        "--home", str(home), "--mqtt-port", str(free_port()), "--mqtts-port", str(free_port()),
        "--influx-port", str(free_port()), "--api-port", str(api_port),
        "--metrics-port", str(metrics_port), "--rollups-port", str(rollups_port), *more,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    up = subprocess.Popen(
        [sys.executable, "-m", "citysense.cli", "up", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(up.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    return up, output, reader, env


def _command(pid: int) -> str:
    try:
        return " " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() + " "
    except OSError:
        return ""


def _add_a_device(operator: Path, env: dict[str, str]) -> None:
    settings = dict(line.split("=", 1) for line in operator.read_text().splitlines() if "=" in line)
    settings = {k: v.strip("'") for k, v in settings.items()}
    add = ["devices", "add", "SL-990001", "--profile", "streetlight", "--district", "Xihu"]
    done = subprocess.run(
        [sys.executable, "-m", "citysense.cli", *add, "--lat", "30.2", "--lon", "120.1"],
        env={**env, **settings}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    secret = done.stdout.splitlines()[1].split(",")[1]
    admin = MqttUrl.parse(settings["CITYSENSE_MQTT_ADMIN_URL"])
    device = replace(admin, username="SL-990001", password=secret)
    assert check_broker(device, 5) is None


def _token(text: str) -> str | None:
    match = re.search(r"API token\s+(cst_\S+)", text)
    return match.group(1) if match else None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
