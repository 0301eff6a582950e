"""The shipped Prometheus configuration, run by the real Prometheus (Debian's package): it
scrapes an ingest worker, the API and the rollup keeper (`citysense rollups`), each exposition
passes `promtool check metrics`, and every
Prometheus query of the shipped Grafana dashboards is valid there (issue 11). Only the target
files are the test's own; the configuration is the shipped one."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

from api.main import create_app
from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from tests.support.api import api_settings
from tests.support.ingest import ingest_settings, running_worker
from tests.support.polling import wait_for
from tests.support.processes import RollupsProcess, rollups_env

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
if PROMTOOL is None or PROMETHEUS is None:  # scripts/setup.sh installs Debian's prometheus
    pytest.fail("promtool and prometheus are needed: run scripts/setup.sh", pytrace=False)


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, check=False)


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) of the shipped Grafana dashboards."""
    found = []
    for path in sorted((SHIPPED.parent / "grafana" / "dashboards").glob("*.json")):
        for panel in orjson.loads(path.read_bytes())["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == "prometheus":
                    found.append((path.stem, panel["title"], target["expr"]))
    return found


def test_the_shipped_config_is_valid() -> None:
    done = promtool("check", "config", str(SHIPPED / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def api_port(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    app = create_app(api_settings(servers, influx, tmp_path))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, what="the API listening")
    yield port
    server.should_exit = True
    thread.join(15)


def test_prometheus_scrapes_ingest_the_api_and_the_keeper_with_clean_metrics(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path, api_port: int
) -> None:
    ingest_port = free_port()
    settings = ingest_settings(
        servers, influx, topic_root, http_port=ingest_port, spool_dir=tmp_path / "spool"
    )
    api = api_settings(servers, influx, tmp_path)
    assert api.registry is not None
    keeper = RollupsProcess(rollups_env(influx, api.registry), tmp_path / "rollups.log")
    keeper.start()
    keeper.wait_ready()
    keeper_port = int(keeper.env["CITYSENSE_API_ROLLUPS_PORT"])
    with running_worker(settings):
        for port in (ingest_port, api_port, keeper_port):
            exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).content
            checked = promtool("check", "metrics", stdin=exposition)
            assert checked.returncode == 0, (port, checked.stdout + checked.stderr)
        config = tmp_path / "prometheus"
        shutil.copytree(SHIPPED, config)
        for job, port in (("ingest", ingest_port), ("api", api_port), ("rollups", keeper_port)):
            target = [{"targets": [f"127.0.0.1:{port}"], "labels": {"service": job}}]
            (config / "targets" / f"{job}.json").write_bytes(orjson.dumps(target))
        web = free_port()
        assert PROMETHEUS is not None
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        try:

            def up() -> dict[str, float]:
                try:
                    body = httpx.get(
                        f"http://127.0.0.1:{web}/api/v1/query", params={"query": "up"}, timeout=2
                    ).json()
                except (httpx.HTTPError, ValueError):
                    return {}
                return {r["metric"]["job"]: float(r["value"][1]) for r in body["data"]["result"]}

            wait_for(lambda: len(up()) == 3, 60, 0.5, "every job scraped")
            assert up() == {"citysense-ingest": 1.0, "citysense-api": 1.0, "citysense-rollups": 1.0}
            for board, panel, expr in dashboard_queries():
                body = httpx.get(
                    f"http://127.0.0.1:{web}/api/v1/query", params={"query": expr}, timeout=5
                ).json()
                assert body["status"] == "success", (board, panel, expr, body)
                # A rate needs two scrapes, and no device sent an unknown field: those may be
                # empty; every other series exists from the first scrape.
                if "rate(" not in expr and "unknown_fields" not in expr:
                    assert body["data"]["result"], (board, panel, expr)
        finally:
            prometheus.terminate()
            prometheus.wait(15)
