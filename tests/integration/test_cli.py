"""The `citysense` command as an operator meets it: --version, expected failures as one clear
line (never a traceback, never a password), machine-readable profile checks, and API tokens
created, listed and revoked — a revoked token refused by a running API within seconds (issue 11)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from citysense.servers import LocalServers, free_port
from citysense.up import local_token
from common import __version__
from common.influx import InfluxConfig
from tests.support.disks import fill, tmpfs
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration


def citysense(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citysense.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    done = citysense("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"citysense {__version__}"


def test_api_without_a_tokens_file_says_so_in_one_line() -> None:
    done = citysense("api", env={"CITYSENSE_API_TOKENS": "", "CITYSENSE_API_AUTH": "on"})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("citysense api: no tokens file")


def test_replay_with_influxdb_unreachable_is_one_line_without_the_password() -> None:
    secret = "s3cret-pw"
    url = f"http://reader:{secret}@127.0.0.1:{free_port()}"
    done = citysense("replay", "--no-progress", env={"CITYSENSE_INFLUX_URL": url})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [x for x in done.stderr.strip().splitlines() if x.startswith("citysense replay:")]
    assert "unreachable" in line or "refused" in line.lower()
    assert secret not in done.stderr + done.stdout


def test_profiles_check_json(tmp_path: Path) -> None:
    good = citysense("profiles", "check", "--json")
    assert good.returncode == 0
    body = orjson.loads(good.stdout)
    assert body["ok"] is True and body["registry"]["devices"] > 0
    broken = tmp_path / "profiles"
    broken.mkdir()
    (broken / "bad.yaml").write_text("profile: bad\nreporting_interval: 1m\nfields: {}\n")
    bad = citysense("profiles", "check", "--json", "--profiles", str(broken))
    assert bad.returncode == 1
    problems = orjson.loads(bad.stdout)["problems"]
    assert problems and problems[0]["file"].endswith("bad.yaml")


def test_a_revoked_token_is_refused_by_a_running_api(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.yaml"
    created = citysense("tokens", "new", "--file", str(tokens), "--name", "ops", "--scope", "city")
    assert created.returncode == 0, created.stderr
    token = created.stdout.split("token: ")[1].split()[0]
    assert token not in tokens.read_text()  # only its hash is kept
    listed = citysense("tokens", "list", "--file", str(tokens))
    assert listed.stdout.split() == ["ops", "city"]
    api, base = _api(servers, influx, tmp_path, tokens, CITYSENSE_API_TOKENS_RELOAD_EVERY="0.2")
    try:
        headers = {"Authorization": f"Bearer {token}"}

        def status() -> int:
            try:
                return httpx.get(f"{base}/districts", headers=headers, timeout=2).status_code
            except httpx.HTTPError:
                return 0

        wait_for(lambda: status() == 200, 30, what="the API answering the new token")
        revoked = citysense("tokens", "revoke", "--file", str(tokens), "--name", "ops")
        assert revoked.returncode == 0
        wait_for(lambda: status() == 401, 10, what="the revoked token refused")
        assert token not in (tmp_path / "api.log").read_text()
    finally:
        api.terminate()
        api.wait(15)


def _api(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, tokens: Path, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`citysense api` as a process of its own, its log in tmp_path/api.log; its base URL."""
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "citysense.cli", "api"],
        env={
            **os.environ,
            "CITYSENSE_API_TOKENS": str(tokens),
            "CITYSENSE_API_PORT": str(port),
            "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-api"),
            "CITYSENSE_INFLUX_URL": influx.url,
            "CITYSENSE_INFLUX_DB": influx.database,
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "api.log").open("wb"),
    )
    return api, f"http://127.0.0.1:{port}"


def test_sigterm_with_a_stream_open_ends_the_api_cleanly_and_soon(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path
) -> None:
    """An operations screen keeps /stream open, which never ends by itself: uvicorn waited for
    it for ever, the app's shutdown (its last alarm events, its snapshot) never ran, and the
    supervisor killed the process. Now the stream gets CITYSENSE_API_SHUTDOWN_GRACE seconds."""
    tokens = tmp_path / "tokens.yaml"
    created = citysense("tokens", "new", "--file", str(tokens), "--name", "ops", "--scope", "city")
    token = created.stdout.split("token: ")[1].split()[0]
    data = tmp_path / "api-data"
    api, base = _api(servers, influx, tmp_path, tokens, CITYSENSE_API_DATA_DIR=str(data))
    headers = {"Authorization": f"Bearer {token}"}
    opened = threading.Event()

    def screen() -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("GET", f"{base}/stream", headers=headers, timeout=None) as answer,
        ):
            opened.set()
            for _ in answer.iter_bytes():
                pass

    try:
        wait_for(lambda: _answers(f"{base}/health"), 30, what="the API serving")
        threading.Thread(target=screen, daemon=True).start()
        assert opened.wait(10)
        began = time.monotonic()
        api.terminate()
        # uvicorn raises the signal again once its shutdown is done: ended by SIGTERM, not
        # killed (before, it waited for the stream until the supervisor's kill: a timeout here).
        assert api.wait(15) == -signal.SIGTERM
        assert time.monotonic() - began < 10
    finally:
        if api.poll() is None:
            api.kill()
            api.wait(5)
    assert (data / "latest-state.snapshot").is_file()  # the app's own shutdown ran


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_second_revoke_says_there_is_no_such_token(tmp_path: Path) -> None:
    done = citysense("tokens", "revoke", "--file", str(tmp_path / "t.yaml"), "--name", "x")
    assert done.returncode == 2
    assert done.stderr.strip() == f"citysense tokens: no token named 'x' in {tmp_path / 't.yaml'}"


def test_a_full_disk_is_one_line_naming_the_file_which_stays_whole(tmp_path: Path) -> None:
    """The tokens file's disk full (a real one, tmpfs): `tokens new` says which file and why in
    one line, exits 1, shows no token (the file would not know it), and the file keeps every
    token it had; no temporary is left behind."""
    with tmpfs(tmp_path / "disk", "64k") as disk:
        tokens = disk / "tokens.yaml"
        new = ("tokens", "new", "--file", str(tokens), "--scope", "city", "--name")
        assert citysense(*new, "ops").returncode == 0
        before = tokens.read_bytes()
        fill(disk)
        done = citysense(*new, "app")
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.splitlines() == [
            f"citysense tokens: {tokens} not written (No space left on device); it is as it "
            "was before"
        ]
        assert tokens.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "tokens.yaml"]


def test_up_refuses_ports_in_use_and_says_which(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = citysense(
            "up", "--home", str(tmp_path / "home"), "--api-port", str(port),
            "--mqtt-port", str(free_port()), "--influx-port", str(free_port()),
            "--metrics-port", str(free_port()),
        )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("citysense up: already in use on 127.0.0.1:") and f"{port} (api)" in line
    assert not (tmp_path / "home").exists()  # nothing was started


def test_up_keeps_its_operator_token_across_starts(tmp_path: Path) -> None:
    first = local_token(tmp_path)
    assert local_token(tmp_path) == first
    assert (tmp_path / "local-operator.token").stat().st_mode & 0o077 == 0
