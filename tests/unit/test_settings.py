"""Checks across settings: refused at start, with a message naming the settings involved."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from api.core.settings import ApiSettings
from citysense import up
from citysense.broker import BrokerSettings
from citysense.servers import FREE_PORTS, free_port, port_range
from common.settings import settings_problems
from ingest.supervise import exit_status, slot_env


@pytest.mark.parametrize(("kept", "refused"), [("6h", True), ("7h", False), ("INF", False)])
def test_change_marks_outlive_the_api_s_full_reload(kept: str, refused: bool) -> None:
    # The default full reload is every 6 hours: an owed mark expiring before it would make a
    # stale "rows whole" point look valid again (api.live.rows).
    if not refused:
        assert ApiSettings(retention_changes=kept).retention_changes == kept
        return
    with pytest.raises(ValidationError) as info:
        ApiSettings(retention_changes=kept)
    assert settings_problems(info.value) == (
        "  CITYSENSE_RETENTION_CHANGES (6h) must be longer than "
        "CITYSENSE_API_STATE_FULL_RELOAD_INTERVAL (21600 s)"
    )


@pytest.mark.parametrize(
    ("name", "text", "seconds"),
    [
        ("CITYSENSE_API_STATE_RECONCILE_INTERVAL", "300", 300.0),  # as the README writes it
        ("CITYSENSE_API_STATE_RECONCILE_INTERVAL", "5m", 300.0),
        ("CITYSENSE_API_STATE_FULL_RELOAD_INTERVAL", "21600", 21600.0),
        ("CITYSENSE_API_STATE_FULL_RELOAD_INTERVAL", "6h", 21600.0),  # was refused: seconds only
        ("CITYSENSE_API_SNAPSHOT_MAX_AGE", "86400", 86400.0),
        ("CITYSENSE_API_LATEST_LOOKBACK", "30d", 30 * 86400.0),
        ("CITYSENSE_API_LATEST_LOOKBACK", "2592000", 30 * 86400.0),
    ],
)
def test_durations_from_the_environment_take_seconds_or_a_unit(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, seconds: float
) -> None:
    monkeypatch.setenv(name, text)
    field = name.removeprefix("CITYSENSE_").lower()
    assert getattr(ApiSettings(_env_file=None), field) == seconds  # type: ignore[call-arg]


def test_a_single_setting_s_problem_names_its_variable() -> None:
    with pytest.raises(ValidationError) as info:
        ApiSettings(api_port=-1)
    assert settings_problems(info.value).startswith("  CITYSENSE_API_PORT: ")


SECRET = "s3cr/et9?x#y"  # a password holding the characters a URL parser ends a host at


@pytest.mark.parametrize(
    ("field", "name", "url"),
    [
        ("influx_url", "INFLUX_URL", f"http://ingest:{SECRET}@influxdb:8086"),
        ("api_state_peer", "API_STATE_PEER", f"https://api:{SECRET}@replica-2:8000"),
        ("mqtt_url", "MQTT_URL", f"mqtt://citysense-api:{SECRET}@broker:1883"),
    ],
)
def test_a_url_whose_password_is_not_percent_encoded_is_refused_without_quoting_it(
    field: str, name: str, url: str
) -> None:
    """Parsed as it is, the host would end inside the password: redaction then found no password
    to mask (the URL was logged whole at start) and a bad-port error quoted a piece of it."""
    with pytest.raises(ValidationError) as info:
        ApiSettings(**{field: url})
    problem = settings_problems(info.value)
    assert problem.startswith(f"  CITYSENSE_{name}: ")
    assert "percent-encode" in problem
    for piece in ("s3cr", "et9", "x#y"):
        assert piece not in problem
    encoded = url.replace(SECRET, quote(SECRET, safe=""))
    ApiSettings(**{field: encoded})  # percent-encoded, the same password is taken


def test_ingest_s_slots_take_the_ports_from_its_own_on() -> None:
    """`citysense ingest --workers 3`: slot 1 on CITYSENSE_HTTP_PORT itself, as a single worker
    (before, slots began one port higher, on the rollup keeper's default, 9102)."""
    ports = [slot_env({}, "ingest", "citysense", 9101, n)["CITYSENSE_HTTP_PORT"] for n in (1, 2, 3)]
    assert ports == ["9101", "9102", "9103"]
    assert slot_env({}, "ingest", "citysense", 0, 2)["CITYSENSE_HTTP_PORT"] == "0"  # off: off


def test_the_broker_s_accounts_follow_the_services_topic_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CITYSENSE_BROKER_TOPIC_ROOT", raising=False)
    monkeypatch.setenv("CITYSENSE_TOPIC_ROOT", "hangzhou")
    assert BrokerSettings().topic_root == "hangzhou"
    monkeypatch.setenv("CITYSENSE_BROKER_TOPIC_ROOT", "broker-own")  # its own, if given
    assert BrokerSettings().topic_root == "broker-own"


def test_free_ports_come_from_the_part_named_and_are_handed_out_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The suite's processes draw from parts of their own (tests/conftest.py), and a process
    never hands a port out twice (its server may be stopped, the port free to a bind check)."""
    monkeypatch.setenv("CITYSENSE_FREE_PORTS", "29000-29009")
    assert port_range() == range(29000, 29010)
    drawn = [free_port() for _ in range(5)]
    assert len(set(drawn)) == 5 and all(29000 <= p <= 29009 for p in drawn)
    monkeypatch.setenv("CITYSENSE_FREE_PORTS", "nonsense")
    assert port_range() == FREE_PORTS


def test_a_worker_killed_by_a_signal_is_a_failure_in_the_supervisor_s_status() -> None:
    assert max(exit_status(0), exit_status(-9)) == 137  # SIGKILL: not ranked below a clean 0
    assert (exit_status(0), exit_status(1), exit_status(-15)) == (0, 1, 143)


def test_citysense_up_keeps_influxdb_on_loopback_whatever_it_listens_on(tmp_path: Path) -> None:
    """InfluxDB runs without accounts under `citysense up`: `--listen 0.0.0.0` opens the broker
    (which has them) to the network, never the database."""
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    servers = up.local_servers(parser.parse_args(["--listen", "0.0.0.0"]), tmp_path)
    assert (servers.mosquitto.host, servers.influxdb.host) == ("0.0.0.0", "127.0.0.1")
    assert servers.influxdb.url.startswith("http://127.0.0.1:")
