"""The shipped Prometheus configuration, run by the real Prometheus (Debian's package): it
scrapes an ingest worker, the API and the rollup keeper (`citysense rollups`), each exposition
passes `promtool check metrics`, and every
Prometheus query of the shipped Grafana dashboards is valid there (issue 11). Only the target
files are the test's own; the configuration is the shipped one."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import yaml

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
    assert b"1 rule files found" in done.stdout  # alerts.yml, checked with the config


@dataclass(frozen=True)
class Case:
    """Input series (each its values, promtool's notation, one a minute), when the alert must
    not fire yet, when it must, and the labels and summary it must fire with."""

    alert: str
    series: dict[str, str]
    quiet_at: str
    fires_at: str
    labels: dict[str, str]
    summary: str


W1 = 'job="citysense-ingest", instance="w1"'
W2 = 'job="citysense-ingest", instance="w2"'
A1 = 'job="citysense-api", instance="a1"'
A2 = 'job="citysense-api", instance="a2"'
K1 = 'job="citysense-rollups", instance="k1"'
INGEST = {"job": "citysense-ingest", "instance": "w1"}
API = {"job": "citysense-api", "instance": "a1"}
KEEPER = {"job": "citysense-rollups", "instance": "k1"}
CASES = [
    Case(
        "CitySenseTargetDown",
        # An API starting takes longer to answer: its own alert (next).
        {f"up{{{W1}}}": "1 1 0 0 0 0", f"up{{{W2}}}": "1x5", f"up{{{A1}}}": "0x5"},
        "3m",
        "5m",
        INGEST,
        "citysense-ingest at w1 does not answer its scrape",
    ),
    Case(
        "CitySenseApiDown",
        {f"up{{{A1}}}": "1 0x15", f"up{{{W1}}}": "0x15"},
        "8m",
        "12m",
        API,
        "API a1 does not answer its scrape",
    ),
    Case(
        "CitySenseIngestNotReady",
        {f"citysense_ingest_ready{{{W1}}}": "1 1 0 0 0", f"citysense_ingest_ready{{{W2}}}": "1x4"},
        "1m",
        "2m",
        INGEST,
        "ingest w1: a thread died",
    ),
    Case(
        "CitySenseIngestRestarting",
        {
            f"process_start_time_seconds{{{W1}}}": "100 100 200 300 400 400",
            f"process_start_time_seconds{{{W2}}}": "100 200 200 200 200 300",
        },
        "3m",
        "5m",
        INGEST,
        "ingest w1 restarted 3 times in 30 minutes",
    ),
    Case(
        "CitySenseIngestSpoolFull",
        {
            f"citysense_ingest_spool_bytes{{{W1}}}": "100 950 950",
            f"citysense_ingest_spool_bytes_limit{{{W1}}}": "1000x2",
            f"citysense_ingest_spool_bytes{{{W2}}}": "100 800 800",
            f"citysense_ingest_spool_bytes_limit{{{W2}}}": "1000x2",
        },
        "0m",
        "1m",
        INGEST,
        "ingest w1's spool is at its bound",
    ),
    Case(
        "CitySenseIngestCannotWrite",
        {
            f"citysense_ingest_write_retries_total{{{W1}}}": "0+1x20",
            f"citysense_ingest_batches_written_total{{{W1}}}": "5x20",
            # w2 retries too, and stores: a slow InfluxDB, not a down one.
            f"citysense_ingest_write_retries_total{{{W2}}}": "0+1x20",
            f"citysense_ingest_batches_written_total{{{W2}}}": "5+1x20",
        },
        "1m",
        "6m",
        INGEST,
        "ingest w1 has stored nothing for 5 minutes while retrying",
    ),
    Case(
        "CitySenseIngestSpooling",
        {f"citysense_ingest_spool_bytes{{{W1}}}": "0 2048x30"},
        "10m",
        "20m",
        INGEST,
        "ingest w1 holds 2kiB in its spool",
    ),
    Case(
        "CitySenseIngestSpoolRefused",
        {f"citysense_ingest_spool_refused_appends{{{W1}}}": "0 0 0 1 1 1"},
        "2m",
        "4m",
        INGEST,
        "ingest w1: the spool's disk refused batches",
    ),
    Case(
        "CitySenseIngestSpoolCorrupt",
        {f"citysense_ingest_spool_corrupt_segments{{{W1}}}": "0 0 1 1"},
        "1m",
        "3m",
        INGEST,
        "ingest w1: 1 damaged spool segments",
    ),
    Case(
        "CitySenseIngestHeldBack",
        {
            f"citysense_ingest_held_bytes{{{W1}}}": "950x10",
            f"citysense_ingest_held_bytes_limit{{{W1}}}": "1000x10",
            f"citysense_ingest_held_bytes{{{W2}}}": "800x10",
            f"citysense_ingest_held_bytes_limit{{{W2}}}": "1000x10",
        },
        "4m",
        "6m",
        INGEST,
        "ingest w1 is at its byte budget",
    ),
    Case(
        "CitySenseIngestStalled",
        {f"citysense_ingest_oldest_unacked_seconds{{{W1}}}": "0+60x30"},
        "12m",
        "17m",
        INGEST,
        "ingest w1 has held a message for over 10 minutes",
    ),
    Case(
        "CitySenseIngestDeadLettersLost",
        {f"citysense_ingest_dead_letters_lost_total{{{W1}}}": "0 0 0 1 1"},
        "2m",
        "4m",
        INGEST,
        "ingest w1: InfluxDB refused dead letters too",
    ),
    Case(
        "CitySenseBrokerForgotDeliveries",
        {f"citysense_ingest_acks_voided{{{W1}}}": "0 0 0 3 3"},
        "2m",
        "4m",
        INGEST,
        "ingest w1: the broker reused held ids or lost the session",
    ),
    Case(
        "CitySenseApiFeedNotSubscribed",
        {
            f"citysense_api_feed_subscribed{{{A1}}}": "1 0x14",
            'citysense_api_feed_subscribed{job="citysense-api", instance="a2"}': "1 0x5 1x9",
        },
        "10m",
        "12m",
        API,
        "API a1 has no state feed",
    ),
    Case(
        "CitySenseRegistryBroken",
        {
            f"citysense_ingest_registry_broken{{{W1}}}": "0 0 1 1 1 1 1",
            f"citysense_ingest_registry_broken{{{W2}}}": "0 1 0 0 0 1 0",  # fixed in time
        },
        "3m",
        "5m",
        INGEST,
        "ingest w1 cannot read its changed device registry",
    ),
    Case(
        "CitySenseIngestNotSubscribed",
        {
            f"citysense_ingest_subscribed{{{W1}}}": "1 0x10",
            f"citysense_ingest_subscribed{{{W2}}}": "1 0 0 1 1 0 0 1 1 1 1",  # reconnections
        },
        "5m",
        "7m",
        INGEST,
        "ingest w1 takes no messages: not subscribed",
    ),
    Case(
        "CitySenseIngestReconnecting",
        {
            f"citysense_ingest_connections_total{{{W1}}}": "1 1 1 1 2 3 4 5 6",
            f"citysense_ingest_connections_total{{{W2}}}": "1 1 1 1 1 1 1 1 2",
        },
        "4m",
        "8m",
        INGEST,
        "ingest w1 keeps reconnecting to the broker",
    ),
    Case(
        "CitySenseIngestClockOff",
        {
            f"citysense_ingest_clock_offset_seconds{{{W1}}}": "0.2 -86400x10",
            f"citysense_ingest_clock_offset_seconds{{{W2}}}": "0.4x10",
        },
        "4m",
        "7m",
        INGEST,
        "ingest w1's clock minus InfluxDB's: -1d 0h 0m 0s",
    ),
    Case(
        "CitySenseIngestRejectingMuch",
        {
            f'citysense_ingest_rejected_total{{{W1}, profile="lamp", reason="range"}}': "0+10x40",
            f"citysense_ingest_readings_accepted_total{{{W1}}}": "0+100x40",
            # w2: 1 % bad, and many duplicates (a device sending again), which are not bad data.
            f'citysense_ingest_rejected_total{{{W2}, profile="lamp", reason="range"}}': "0+1x40",
            f'citysense_ingest_rejected_total{{{W2}, profile="lamp", reason="duplicate"}}': (
                "0+50x40"
            ),
            f"citysense_ingest_readings_accepted_total{{{W2}}}": "0+100x40",
        },
        "10m",
        "20m",
        INGEST,
        "ingest w1 dead-letters over 5 % of the readings it takes",
    ),
    Case(
        "CitySenseLatestRowsOff",
        {
            f"citysense_ingest_latest_rows_owed_total{{{W1}}}": "0 0 1+1x20",
            f"citysense_ingest_latest_rows_owed_total{{{W2}}}": "0 0 1 1x20",  # one, then none
        },
        "16m",
        "18m",
        INGEST,
        "ingest w1 stores readings without latest rows",
    ),
    Case(
        "CitySenseLatestRowsRefused",
        {f"citysense_ingest_latest_rows_refused_total{{{W1}}}": "0 0 0 1 1"},
        "2m",
        "4m",
        INGEST,
        "ingest w1: InfluxDB refused latest rows",
    ),
    Case(
        "CitySenseLatestOwedLost",
        {f"citysense_ingest_latest_owed_lost_total{{{W1}}}": "0 0 0 1 1"},
        "2m",
        "4m",
        INGEST,
        "ingest w1: InfluxDB refused an owed mark",
    ),
    Case(
        "CitySenseApiBackgroundCrash",
        {f"citysense_api_background_crashes{{{A1}}}": "0 0 1 1"},
        "1m",
        "3m",
        API,
        "API a1: a background task died",
    ),
    Case(
        "CitySenseApiStateNotLoaded",
        {f"citysense_api_state_loaded{{{A1}}}": "0x10"},
        "4m",
        "6m",
        API,
        "API a1 has not loaded its latest state",
    ),
    Case(
        "CitySenseApiAlarmsNotReplayed",
        {f"citysense_api_alarms_replayed{{{A1}}}": "0x10"},
        "4m",
        "6m",
        API,
        "API a1 has not read back its stored alarms",
    ),
    Case(
        "CitySenseApiFeedUntrusted",
        {f"citysense_api_feed_trusted{{{A1}}}": "1 1 0x20"},
        "10m",
        "13m",
        API,
        "API a1 does not trust its state feed",
    ),
    Case(
        "CitySenseApiAlarmEventsDropped",
        {f"citysense_api_alarm_events_dropped{{{A1}}}": "0 0 0 2 2"},
        "2m",
        "4m",
        API,
        "API a1 dropped alarm events",
    ),
    Case(
        "CitySenseApiTokensFileBroken",
        {
            f"citysense_api_tokens_file_broken{{{A1}}}": "0 0 1 1 1 1 1",
            f"citysense_api_tokens_file_broken{{{A2}}}": "0 1 0 0 0 1 0",  # fixed in time
        },
        "3m",
        "5m",
        API,
        "API a1 cannot read its changed tokens file",
    ),
    Case(
        "CitySenseApiAlarmEventsRefused",
        {
            # A restart (back to 0), then a refusal: delta() would see a fall and miss it.
            f"citysense_api_alarm_events_refused{{{A1}}}": "2 2 2 0 1",
            f"citysense_api_alarm_events_refused{{{A2}}}": "3 3 3 0 0",  # restarted: a reset
        },
        "2m",
        "4m",
        API,
        "API a1 had alarm events refused by InfluxDB",
    ),
    Case(
        "CitySenseApiErrors",
        {
            f'citysense_api_requests_total{{{A1}, route="/x", method="GET", status="503"}}': (
                "0+10x20"
            ),
            f'citysense_api_requests_total{{{A1}, route="/x", method="GET", status="200"}}': (
                "0+90x20"
            ),
        },
        "4m",
        "8m",
        API,
        "API a1 answers over 5 % of requests with a 5xx",
    ),
    Case(
        "CitySenseRollupsFailing",
        {f"citysense_rollups_failing{{{K1}}}": "0 1x20"},
        "10m",
        "17m",
        KEEPER,
        "the rollup keeper's rounds fail",
    ),
    Case(
        "CitySenseRollupsBehind",
        {
            f"citysense_rollups_ready{{{K1}}}": "1x40",
            f"citysense_rollups_last_round_end_timestamp_seconds{{{K1}}}": "0x40",
            # k2 has not ended its first round (the backfill: its own alert).
            'citysense_rollups_ready{job="citysense-rollups", instance="k2"}': "0x40",
            'citysense_rollups_last_round_end_timestamp_seconds{job="citysense-rollups", '
            'instance="k2"}': "0x40",
        },
        "29m",
        "31m",
        KEEPER,
        "no rollup round ended for over 30 minutes",
    ),
    Case(
        "CitySenseRollupsBackfillSlow",
        {f"citysense_rollups_ready{{{K1}}}": "0x130"},
        "100m",
        "121m",
        KEEPER,
        "the rollup keeper's first round has run for over two hours",
    ),
]


def _rules() -> dict[str, dict[str, Any]]:
    shipped = yaml.safe_load((SHIPPED / "alerts.yml").read_text())
    return {rule["alert"]: rule for group in shipped["groups"] for rule in group["rules"]}


def test_every_shipped_alert_has_a_case() -> None:
    assert sorted(_rules()) == sorted(case.alert for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.alert)
def test_each_alert_fires_when_it_should_and_not_before(case: Case, tmp_path: Path) -> None:
    """promtool's rule unit tests, on the shipped rules: quiet at `quiet_at`, firing at
    `fires_at` with exactly the expected labels and summary (its template rendered), for the
    series named and for no other (each case has a healthy neighbour where it makes sense)."""
    rule = _rules()[case.alert]
    test = {
        "rule_files": [str(SHIPPED / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {"eval_time": case.quiet_at, "alertname": case.alert, "exp_alerts": []},
                    {
                        "eval_time": case.fires_at,
                        "alertname": case.alert,
                        "exp_alerts": [
                            {
                                "exp_labels": {**case.labels, **rule["labels"]},
                                "exp_annotations": {
                                    "summary": case.summary,
                                    "description": rule["annotations"]["description"],
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "alerts.test.yml"
    path.write_text(yaml.safe_dump(test))
    done = promtool("test", "rules", str(path))
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


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
    families: dict[str, str] = {}  # metric family: its type
    with running_worker(settings):
        for port in (ingest_port, api_port, keeper_port):
            exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).content
            checked = promtool("check", "metrics", stdin=exposition)
            assert checked.returncode == 0, (port, checked.stdout + checked.stderr)
            families.update(re.findall(r"^# TYPE (\S+) (\S+)", exposition.decode(), re.M))
            if port == ingest_port:
                # Read from the real InfluxDB's Date header; this host and InfluxDB's share a clock.
                [offset] = re.findall(
                    r"^citysense_ingest_clock_offset_seconds (\S+)$", exposition.decode(), re.M
                )
                assert abs(float(offset)) < 2, offset
        # Every metric an alert reads is one the services expose (a misspelt name would
        # never fire, and nothing else would say so), a counter's by its `_total` sample.
        for name, rule in _rules().items():
            for metric in re.findall(r"(?:citysense|process)_[a-z0-9_]+", rule["expr"]):
                if metric.endswith("_total"):  # the text format types the sample or family
                    kinds = {families.get(metric), families.get(metric.removesuffix("_total"))}
                    assert "counter" in kinds, (name, metric)
                else:
                    assert families.get(metric) == "gauge", (name, metric)
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

            def rules_evaluated() -> dict[str, str]:
                body = httpx.get(f"http://127.0.0.1:{web}/api/v1/rules", timeout=2).json()
                return {
                    rule["name"]: rule["health"]
                    for group in body["data"]["groups"]
                    for rule in group["rules"]
                }

            wait_for(
                lambda: set(rules_evaluated().values()) == {"ok"}, 60, 0.5, "the rules evaluated"
            )
            assert sorted(rules_evaluated()) == sorted(_rules())
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
