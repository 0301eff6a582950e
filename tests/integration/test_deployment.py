"""The compose stack's own services, run with the real programs this machine has: `citysense
secrets`, then Mosquitto (`citysense broker`), InfluxDB with authentication, the one-shot
`citysense schema`, an ingest worker and the API, each with the command, environment and
secrets docker-compose.yml gives it. A device added with `citysense devices add` publishes over
TLS and the API answers with its reading; InfluxDB refuses anyone without an account."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from citysense.children import Child, start_citysense
from citysense.servers import free_port
from tests.support.compose import ROOT, compose, mount_secrets, service
from tests.support.mqtt import publish_v5
from tests.support.polling import wait_for
from wire import latest
from wire.retention import qualified
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

DEVICE = ["SL-990001", "--profile", "streetlight", "--district", "Xihu"]
DEVICE += ["--lat", "30.25", "--lon", "120.15"]


def run(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "citysense.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_docker_compose_validates_the_stack() -> None:
    """docker-compose (Debian's 1.29; no engine needed for `config`) parses the file and checks it
    against the compose schema: every service, reference, secret and volume. (1.29 lists
    profiled services whatever the profile; the `demo` profile is checked in the test below.)"""
    binary = shutil.which("docker-compose")
    assert binary, "scripts/setup.sh installs docker-compose for this check"
    checked = subprocess.run(
        [binary, "-f", "docker-compose.yml", "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    listed = subprocess.run(
        [binary, "config", "--services"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert set(listed) == set(compose()["services"])


def test_every_service_is_unprivileged_checked_and_keeps_its_secrets_out() -> None:
    stack = compose()
    for name, spec in stack["services"].items():
        assert spec.get("user") and not str(spec["user"]).startswith("0"), name
        # Exempt: the one-shot init (its exit status is its health) and the demo simulator,
        # which exits on any failure and is restarted; nothing waits on either being ready.
        if name not in ("influxdb-init", "simulator"):
            assert "healthcheck" in spec, name
        for key, value in (spec.get("environment") or {}).items():
            # Passwords only as the path of a mounted secret file, never as a value.
            assert "PASSWORD" not in key or str(value).startswith("/run/secrets"), (name, key)
            assert "://" not in str(value) or "@" not in str(value), (name, key)
    ports = [p for s in stack["services"].values() for p in s.get("ports", [])]
    assert {p.split(":")[-1] for p in ports} == {"8883", "8000", "3000"}  # MQTT TLS, API, Grafana
    # Only TLS reaches the network: the API and Grafana speak plain HTTP, on loopback for a proxy.
    assert sorted(p for p in ports if not p.startswith("127.0.0.1:")) == ["8883:8883"]
    assert stack["services"]["simulator"]["profiles"] == ["demo"]


def test_the_ingest_workers_share_one_subscription_and_are_all_scraped() -> None:
    """Each message to one worker of the group (without a group, every worker stored every
    message), each worker its own session, and Prometheus scraping every one of them."""
    workers = {n: s for n, s in compose()["services"].items() if n.startswith("ingest-")}
    assert len(workers) >= 2
    groups = {s["environment"].get("CITYSENSE_SHARE_GROUP") for s in workers.values()}
    ids = {s["environment"]["CITYSENSE_CLIENT_ID"] for s in workers.values()}
    assert len(groups) == 1 and all(groups) and len(ids) == len(workers)
    targets = orjson.loads((ROOT / "deploy/prometheus/targets/ingest.json").read_bytes())
    assert sorted(t for group in targets for t in group["targets"]) == [
        f"{name}:9101" for name in sorted(workers)
    ]
    for path in (ROOT / "deploy/prometheus/targets").glob("*.json"):
        for group in orjson.loads(path.read_bytes()):
            for target in group["targets"]:
                assert target.split(":")[0] in compose()["services"], (path.name, target)


def test_grafana_gets_every_value_its_provisioning_names_and_every_log_is_bounded() -> None:
    """An environment variable the container lacks is an empty password to Grafana: InfluxDB
    answered its panels 401 while its health said fine."""
    grafana = compose()["services"]["grafana"]
    mounted = {s if isinstance(s, str) else s["target"] for s in grafana["secrets"]}
    text = (ROOT / "deploy/grafana/provisioning/datasources/citysense.yaml").read_text()
    assert set(re.findall(r"\$([A-Z][A-Z_]*)", text)) <= set(grafana["environment"])
    assert set(re.findall(r"\$__file\{/run/secrets/([^}]+)\}", text)) == mounted - {
        "grafana_admin_password"
    }
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"].endswith(
        "/grafana_admin_password"
    )
    for name, spec in compose()["services"].items():
        assert spec["logging"]["options"]["max-size"], name


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, object]]:
    children: list[Child] = []
    yield {"tmp": tmp_path, "children": children}
    for child in reversed(children):
        child.stop()


def test_the_stack_from_its_compose_services(stack: dict[str, object]) -> None:
    tmp, children = Path(str(stack["tmp"])), stack["children"]
    assert isinstance(children, list)
    secrets_dir = tmp / "secrets"
    printed = run("secrets", "--out", str(secrets_dir), env={})
    token = printed.strip().splitlines()[-1]
    assert token.startswith("cst_") and oct(secrets_dir.stat().st_mode & 0o777) == "0o700"
    # The broker's container user reads its key as mounted; the CA's key is never mounted.
    modes = {f: oct(os.stat(secrets_dir / f).st_mode & 0o777) for f in ("server.key", "ca.key")}
    assert modes == {"server.key": "0o644", "ca.key": "0o600"}
    mqtt, tls, influx, api = free_port(), free_port(), free_port(), free_port()
    rewrite = {
        "mosquitto:1883": f"127.0.0.1:{mqtt}",
        "mosquitto:8883": f"localhost:{tls}",
        "influxdb:8086": f"127.0.0.1:{influx}",
        "/run/secrets/": f"{secrets_dir}/",
    }
    registry = tmp / "registry" / "registry.csv"  # a folder, as the stack mounts it
    registry.parent.mkdir()
    shutil.copy(ROOT / "device_profiles/registry/sample_city.csv", registry)
    paths = {
        "/run/secrets": secrets_dir,
        "/etc/citysense/registry": registry.parent,
        "/etc/citysense/tokens": secrets_dir / "tokens",
        "/var/lib/citysense": tmp,
    }
    # The broker: the compose service's command and environment; its ports here.
    broker = service("mosquitto")
    broker_env = broker.local_env(
        paths,
        CITYSENSE_BROKER_LISTEN="127.0.0.1",
        CITYSENSE_BROKER_PORT=str(mqtt),
        CITYSENSE_BROKER_TLS_PORT=str(tls),
    )
    children.append(
        Child.start(
            broker.argv(),
            name="mosquitto",
            log=tmp / "mosquitto.log",
            env={**os.environ, **broker_env},
        )
    )
    # InfluxDB: Debian's influxd configured by the compose service's environment alone.
    db = service("influxdb")
    db_env = db.local_env(
        paths,
        INFLUXDB_HTTP_BIND_ADDRESS=f"127.0.0.1:{influx}",
        INFLUXDB_BIND_ADDRESS=f"127.0.0.1:{free_port()}",
    )
    influxd = shutil.which("influxd", path="/usr/bin:/usr/sbin") or "influxd"
    children.append(
        Child.start(
            [influxd], name="influxd", log=tmp / "influxd.log", env={**os.environ, **db_env}
        )
    )
    wait_for(lambda: _ok(f"http://127.0.0.1:{influx}/ping", 204), 30, what="influxd")
    init = service("influxdb-init")
    init_env = init.local_env(paths, CITYSENSE_INFLUX_URL=f"http://127.0.0.1:{influx}")
    for _ in range(2):  # idempotent: a restart of the stack runs it again
        assert "database citysense" in run(*init.command[1:], env=init_env)
    anonymous = httpx.post(f"http://127.0.0.1:{influx}/query", data={"q": "SHOW DATABASES"})
    assert anonymous.status_code == 401
    # Ingest and the API, each with its own secrets, as compose mounts them.
    ingest = service("ingest-1")
    metrics = free_port()
    ingest_paths = {**paths, "/run/secrets": mount_secrets(ingest, secrets_dir, tmp / "i", rewrite)}
    ingest_env = ingest.local_env(
        ingest_paths, CITYSENSE_HTTP_HOST="127.0.0.1", CITYSENSE_HTTP_PORT=str(metrics)
    )
    worker = start_citysense("ingest", log=tmp / "ingest.log", env={**os.environ, **ingest_env})
    children.append(worker)
    worker.wait_http(f"http://127.0.0.1:{metrics}/ready", 30)
    api_svc = service("api")
    api_paths = {**paths, "/run/secrets": mount_secrets(api_svc, secrets_dir, tmp / "a", rewrite)}
    api_env = api_svc.local_env(
        api_paths, CITYSENSE_API_HOST="127.0.0.1", CITYSENSE_API_PORT=str(api)
    )
    server = start_citysense("api", log=tmp / "api.log", env={**os.environ, **api_env})
    children.append(server)
    server.wait_http(f"http://127.0.0.1:{api}/health", 60)
    # The rollup keeper, a service of its own with the API's InfluxDB account.
    keeper_svc = service("rollups")
    keeper_secrets = mount_secrets(keeper_svc, secrets_dir, tmp / "r", rewrite)
    keeper_port = free_port()
    keeper_env = keeper_svc.local_env(
        {**paths, "/run/secrets": keeper_secrets},
        CITYSENSE_API_ROLLUPS_HOST="127.0.0.1",
        CITYSENSE_API_ROLLUPS_PORT=str(keeper_port),
        CITYSENSE_API_ROLLUPS_EVERY="0.5",
    )
    keeper = start_citysense("rollups", log=tmp / "rollups.log", env={**os.environ, **keeper_env})
    children.append(keeper)
    keeper.wait_http(f"http://127.0.0.1:{keeper_port}/ready", 60)
    # A device added by the operator on the host, with what `citysense secrets` wrote for it
    # (operator.env: the admin account over TLS, this folder's CA, the registry beside it); the
    # broker's port here instead of 8883.
    operator = _operator_env(secrets_dir / "operator.env", {"localhost:8883": f"localhost:{tls}"})
    assert operator["CITYSENSE_REGISTRY"] == str(registry)
    added = run("devices", "add", *DEVICE, env=operator)
    secret = added.splitlines()[1].split(",")[1]
    device_url = f"mqtts://SL-990001:{secret}@localhost:{tls}?ca={secrets_dir / 'ca.crt'}"
    topic = TopicLayout("city").telemetry("streetlight", "SL-990001")
    worker.wait_for_line("registry", 20)  # the running worker picked the new device up
    assert not publish_v5(device_url, topic, lamp(33.0)).is_failure
    # Stored by ingest's account; read back with Grafana's (READ only), which cannot write.
    grafana = ("grafana", (secrets_dir / "influx_grafana_password").read_text().strip())
    query = {"db": "citysense", "q": "SELECT powerConsumption FROM streetlight"}
    url = f"http://127.0.0.1:{influx}"
    wait_for(
        lambda: "33" in httpx.post(f"{url}/query", data=query, auth=grafana).text,
        30,
        what="the device's reading, stored",
    )
    refused = httpx.post(f"{url}/write", params={"db": "citysense"}, content=b"x v=1", auth=grafana)
    assert refused.status_code == 403
    # Ingest's account reads its own latest rows back, so the worker keeps them: refused that
    # read (a WRITE grant), no worker of the stack kept rows and every API start loaded every
    # device from the readings.
    rows = {"db": "citysense", "q": f"SELECT * FROM {qualified(latest.MEASUREMENT)}"}
    wait_for(
        lambda: "SL-990001" in httpx.post(f"{url}/query", data=rows, auth=grafana).text,
        30,
        what="the device's latest row, kept by ingest",
    )
    assert "not read back" not in (tmp / "ingest.log").read_text()
    # The keeper kept the reading's windows, writing with the API's account.
    keeper_metrics = f"http://127.0.0.1:{keeper_port}/metrics"
    wait_for(
        lambda: re.search(
            r"^citysense_rollups_windows_computed_total [1-9]", httpx.get(keeper_metrics).text, re.M
        ),
        30,
        what="the reading's rollups, kept",
    )
    # And the API, with its own account, answers with the operator's token.
    answer = httpx.get(
        f"http://127.0.0.1:{api}/districts", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200 and "Xihu" in answer.text
    # The operator revokes it on the host: the file is replaced, readable by the API's user as
    # before, and the running API refuses the token within seconds.
    tokens_file = secrets_dir / "tokens" / "api_tokens.yaml"
    run("tokens", "revoke", "--name", "operator", "--file", str(tokens_file), env={})
    assert oct(tokens_file.stat().st_mode & 0o777) == "0o644"
    wait_for(
        lambda: (
            httpx.get(
                f"http://127.0.0.1:{api}/districts", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 401
        ),
        15,
        what="the revoked token refused",
    )


def test_the_api_mounts_the_folder_of_its_tokens_file() -> None:
    """`citysense tokens` replaces the file (a new one renamed over it): a file mounted alone
    stays the old one in the container, and a revoked token went on working. A folder shows
    each new version."""
    api = compose()["services"]["api"]
    folder = str(Path(api["environment"]["CITYSENSE_API_TOKENS"]).parent)
    assert any(v.split(":")[1] == folder for v in api["volumes"]), api["volumes"]
    assert not any("token" in str(s) for s in api.get("secrets", []))


def lamp(power: float) -> bytes:
    return orjson.dumps(
        {"ts": int(time.time() * 1000), "powerState": "on", "powerConsumption": power}
    )


def _ok(url: str, status: int) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == status
    except httpx.HTTPError:
        return False


def _operator_env(path: Path, rewrite: dict[str, str]) -> dict[str, str]:
    """The variables of an operator.env (KEY='value' lines), with `rewrite` applied."""
    found = {}
    for line in _rewritten(path, rewrite).splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found[key] = value.strip("'")
    return found


def _rewritten(path: Path, rewrite: dict[str, str]) -> str:
    text = path.read_text().strip()
    for old, new in rewrite.items():
        text = text.replace(old, new)
    return text
