"""Delivery guarantees of ingest that need InfluxDB to fail at a chosen moment: a transport in
front of the real InfluxDB refuses what the test says, when it says (issue 10: 2, 5, 6)."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from citysense.servers import LocalServers, free_port
from common.influx import InfluxClient, InfluxConfig
from common.schema import ensure_schema
from device_profiles import load_profiles
from ingest import cli as ingest_cli
from ingest import consume
from ingest import latest as latest_module
from ingest.settings import IngestSettings
from ingest.spool import Spool
from ingest.worker import Worker
from tests.support.influx import count, rows
from tests.support.ingest import ingest_settings, running_worker
from tests.support.mqtt import listen, publish
from tests.support.polling import wait_for
from wire import statefeed
from wire.changes import MEASUREMENT as CHANGES_MEASUREMENT
from wire.deadletters import MEASUREMENT as DEAD_LETTERS
from wire.latest import MEASUREMENT as LATEST_MEASUREMENT
from wire.latest import absent, fields_digest, key_of
from wire.retention import CHANGES, LATEST
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

PIPE = "WP-000001"


class Gate(httpx.BaseTransport):
    """The real InfluxDB behind a gate: writes that `refuse` picks get a 503 until opened."""

    def __init__(self, refuse: Callable[[bytes], bool]) -> None:
        self._real = httpx.HTTPTransport()
        self._refuse = refuse
        self.open = threading.Event()
        self.refused = 0
        self.writes = 0
        self.by_thread: Counter[str] = Counter()  # writes per thread: writer, drainer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/write":
            self.writes += 1
            self.by_thread[threading.current_thread().name] += 1
            if not self.open.is_set() and self._refuse(request.read()):
                self.refused += 1
                return httpx.Response(503, json={"error": "gate closed"})
        return self._real.handle_request(request)


LATEST_ROWS = f'SELECT * FROM "{LATEST}"."{LATEST_MEASUREMENT}"'


def the_one_row(influx: InfluxConfig) -> tuple[object, object, object]:
    """The one latest row there is once it is stored: (writer, device, reading time)."""
    wait_for(lambda: len(rows(influx, LATEST_ROWS)) == 1, 30, what="the row")
    [row] = rows(influx, LATEST_ROWS)
    return row["writer"], row["device"], row["at"]


def reading(ts_ms: int, pressure: float) -> bytes:
    return orjson.dumps({"ts": ts_ms, "pressure": pressure})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_dead_letter_is_stored_before_its_message_is_acknowledged(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    # A string already stored under `pressure` in the same shard makes InfluxDB refuse our
    # float: write_rejected.
    with InfluxClient(influx) as client:
        old = f'water_pipe,device_id=OLD,district=North pressure="text" {time.time_ns()}'
        client.write(old.encode())
    gate = Gate(lambda body: b"dead_letters" in body)  # InfluxDB fails right after the refusal
    settings = ingest_settings(servers, influx, topic_root)
    with running_worker(settings, gate) as worker:
        topic = TopicLayout(topic_root).telemetry("water_pipe", PIPE)
        publish(servers.mosquitto.url("citysense-simulator"), [(topic, reading(now_ms(), 1.5))])
        wait_for(lambda: gate.refused >= 2, 30, what="the dead letter's write failing")
        # The message produced a dead letter that is not stored yet: it must not be acked.
        assert worker.stats.messages_acked == 0
        assert len(worker.acks) == 1
        gate.open.set()
        wait_for(lambda: worker.stats.messages_acked == 1, 30, what="the ack, once stored")
    [letter] = rows(influx, "SELECT reason, payload, worker FROM dead_letters.dead_letters")
    assert (letter["reason"], letter["worker"]) == ("write_rejected", settings.client_id)


def test_a_reading_influxdb_refuses_is_neither_announced_nor_its_device_s_latest_row(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    """A value InfluxDB refused exists only as a dead letter: announced, the API would serve it
    as the device's latest (live, to its alarms and screens); as a row, every start from the
    rows would, until the device's next reading. A stored reading beside it is both."""
    with InfluxClient(influx) as client:  # a string under `pressure`: our float is refused
        old = f'water_pipe,device_id=OLD,district=North pressure="text" {time.time_ns()}'
        client.write(old.encode())
    settings = ingest_settings(servers, influx, topic_root)
    layout = TopicLayout(topic_root)
    heard, listener = listen(
        servers.mosquitto.url("citysense-api"), [layout.state_feed(settings.client_id)]
    )
    try:
        with running_worker(settings) as worker:
            t = now_ms()
            lamp = orjson.dumps({"ts": t, "powerState": "on"})
            publish(
                servers.mosquitto.url("citysense-simulator"),
                [
                    (layout.telemetry("water_pipe", PIPE), reading(t, 1.5)),
                    (layout.telemetry("streetlight", "SL-000001"), lamp),
                ],
            )
            wait_for(lambda: worker.stats.messages_acked == 2, 30, what="both stored and acked")
            wait_for(lambda: heard, 10, what="the announcement")
    finally:
        listener.disconnect()
        listener.loop_stop()
    announced = [r.device_id for _, payload in heard for r in statefeed.decode(payload).readings]
    assert announced == ["SL-000001"]
    assert [r["device"] for r in rows(influx, LATEST_ROWS)] == ["SL-000001"]
    [letter] = rows(influx, "SELECT reason, payload FROM dead_letters.dead_letters")
    assert letter["reason"] == "write_rejected"


def test_straight_to_the_spool_once_the_outage_is_known(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    """After one batch waited spill_after and went to the spool, the next ones go there at once:
    the spool absorbs the full rate, not one batch per spill_after."""
    gate = Gate(lambda _body: True)  # InfluxDB down for this worker's writer
    settings = ingest_settings(
        servers, influx, topic_root, spool_dir=tmp_path / "spool", spill_after=0.5, batch_size=5
    )
    topic = TopicLayout(topic_root).telemetry("water_pipe", PIPE)
    start = now_ms() - 60_000
    url = servers.mosquitto.url("citysense-simulator")
    with running_worker(settings, gate) as worker:
        publish(url, [(topic, reading(start, 1.0))])
        wait_for(lambda: worker.stats.spilled_batches == 1, 30, what="the first batch spilled")
        attempts = gate.by_thread["citysense-writer"]
        publish(url, [(topic, reading(start + n, 1.0 + n)) for n in range(1, 200)])
        wait_for(lambda: worker.stats.messages_acked == 200, 30, what="every message spooled")
        # No batch waited for InfluxDB again (the drainer keeps trying its segments meanwhile).
        assert gate.by_thread["citysense-writer"] == attempts
        gate.open.set()
        # The drainer writes with its own client, straight to the real InfluxDB.
        wait_for(lambda: count(influx, "water_pipe") == 200, 30, what="the spool drained")
        # With the pipe's newest reading as its row (wire.latest), kept by the drainer: the
        # writer stored none (its writes failed), and the spool holds no rows. A group's rows
        # are written just after its readings: an earlier group's row may be the one there.
        newest = (start + 199) * 1_000_000
        wait_for(lambda: the_one_row(influx)[2] == newest, 30, what="the newest reading's row")
        row = the_one_row(influx)
    assert row == (f"{settings.client_id}/spool", PIPE, newest)


def test_the_drainer_without_the_latest_policy_stores_readings_and_keeps_rows_once_back(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spool drained while the `latest` policy is missing: the readings are stored and the
    segment deleted without rows (not retried for ever, not left on disk); once the policy is
    back the drainer looks again and keeps the rows of the next segment."""
    monkeypatch.setattr(latest_module, "RECHECK_S", 0.2)
    gate = Gate(lambda _body: True)
    settings = ingest_settings(
        servers, influx, topic_root, spool_dir=tmp_path / "spool", spill_after=0.5, batch_size=5
    )
    topic = TopicLayout(topic_root).telemetry("water_pipe", PIPE)
    start = now_ms() - 60_000
    url = servers.mosquitto.url("citysense-simulator")
    with InfluxClient(influx) as client, running_worker(settings, gate) as worker:
        client.query(f'DROP RETENTION POLICY "{LATEST}" ON "{influx.database}"')
        publish(url, [(topic, reading(start, 1.0))])
        wait_for(lambda: worker.stats.spilled_batches == 1, 30, what="the first batch spilled")
        gate.open.set()
        wait_for(lambda: worker.stats.unspooled_batches == 1, 30, what="the segment drained")
        assert count(influx, "water_pipe") == 1
        assert not worker.latest_unspooled.enabled
        assert worker.spool is not None and not worker.spool.segments()
        ensure_schema(client, settings.retention, load_profiles())  # `citysense schema`
        time.sleep(0.3)  # past RECHECK_S
        gate.open.clear()
        publish(url, [(topic, reading(start + 1, 2.0))])
        wait_for(lambda: worker.stats.spilled_batches == 2, 30, what="the second batch spilled")
        gate.open.set()
        wait_for(lambda: worker.stats.unspooled_batches == 2, 30, what="the second drained")
        assert worker.latest_unspooled.enabled
        row = the_one_row(influx)
    assert count(influx, "water_pipe") == 2
    assert row == (f"{settings.client_id}/spool", PIPE, (start + 1) * 1_000_000)


def test_a_worker_stopped_while_the_drainer_stores_dead_letters_stops_cleanly(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    """A segment with a line InfluxDB refuses (a field's type changed): its dead letter is
    retried while InfluxDB refuses it, and the worker stopped meanwhile keeps the segment and
    exits as stopped, not as crashed; the next start stores the dead letter."""
    settings = ingest_settings(servers, influx, topic_root, spool_dir=tmp_path / "spool")
    at = now_ms() * 1_000_000
    series = f"water_pipe,device_id={PIPE},district=North"
    Spool(tmp_path / "spool" / settings.client_id, 1 << 20).append(
        [f"{series} pressure=2.0 {at}", f'{series} pressure="two" {at + 1}']
    )
    gate = Gate(lambda body: body.startswith(DEAD_LETTERS.encode()))
    with running_worker(settings, gate) as worker:
        wait_for(lambda: gate.refused >= 1, 30, what="the dead letter refused")
    assert not worker.crashed.is_set()
    assert worker.stats.thread_crashes == 0
    assert worker.spool is not None and worker.spool.segments()  # kept, written again later
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.unspooled_batches == 1, 30, what="the segment drained")
    assert count(influx, "water_pipe") == 1
    assert count(influx, DEAD_LETTERS) == 1


def test_a_worker_stopped_between_a_batch_s_rows_and_its_marks_leaves_it_whole_next_time(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    """A batch's readings and rows stored, its marks not (InfluxDB failing just then), and the
    worker stopped: nothing was acknowledged, so the next start is given the message again and
    writes it whole — the same reading once, one row, and the marks that vouch for it."""
    gate = Gate(lambda body: body.startswith(CHANGES_MEASUREMENT.encode() + b","))
    settings = ingest_settings(servers, influx, topic_root)
    topic = TopicLayout(topic_root).telemetry("water_pipe", PIPE)
    start = now_ms() - 60_000
    marks = f'SELECT * FROM "{CHANGES}"."{CHANGES_MEASUREMENT}"'
    with running_worker(settings, gate) as worker:
        publish(servers.mosquitto.url("citysense-simulator"), [(topic, reading(start, 1.5))])
        wait_for(lambda: gate.refused >= 2, 30, what="the marks' write failing")
        assert count(influx, "water_pipe") == 1
        assert len(rows(influx, LATEST_ROWS)) == 1
        assert rows(influx, marks) == []
        assert worker.stats.messages_acked == 0
    with running_worker(settings) as again:
        wait_for(lambda: again.stats.messages_acked == 1, 30, what="the message given again")
    assert count(influx, "water_pipe") == 1
    [row] = rows(influx, LATEST_ROWS)
    assert (row["device"], row["at"]) == (PIPE, start * 1_000_000)
    assert len(rows(influx, marks)) == 1


LAMP = "SL-000001"


def test_a_row_influxdb_took_for_a_spooled_batch_is_not_written_over_with_an_older_mask(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    """A lamp's reading stored (its row at T0), a newer one whose readings and row InfluxDB
    took but whose marks it refused until the batch went to the spool (the row now at T1,
    holding T1's temperature), then a message of T0 again: its row must not claim T1's
    temperature as T0's (the mask remembered for T0 no longer describes the row)."""
    gate = Gate(lambda body: body.startswith(CHANGES_MEASUREMENT.encode() + b","))
    gate.open.set()
    # Dedupe's memory off, as once the first message fell out of it (or the second went to
    # another worker): the worker would otherwise take the third for a timestamp conflict.
    settings = ingest_settings(
        servers,
        influx,
        topic_root,
        spool_dir=tmp_path / "spool",
        spill_after=0.5,
        dedupe_window=0,
    )
    topic = TopicLayout(topic_root).telemetry("streetlight", LAMP)
    t0, t1 = now_ms() - 60_000, now_ms() - 30_000
    url = servers.mosquitto.url("citysense-simulator")

    def lamp(ts_ms: int, **values: object) -> list[tuple[str, bytes]]:
        return [(topic, orjson.dumps({"ts": ts_ms, **values}))]

    with running_worker(settings, gate) as worker:
        publish(url, lamp(t0, powerState="on", temperature=21.5))
        wait_for(lambda: worker.stats.messages_acked == 1, 30, what="the first reading")
        gate.open.clear()
        publish(url, lamp(t1, powerState="off", temperature=30.0))
        wait_for(lambda: worker.stats.spilled_batches == 1, 30, what="the batch spooled")
        gate.open.set()
        # Counted once the drainer stored it, after it cleared the outage.
        wait_for(lambda: worker.stats.readings_stored == 2, 30, what="the spool drained")
        publish(url, lamp(t0, powerState="on", powerConsumption=4.0))
        wait_for(lambda: worker.stats.messages_acked == 3, 30, what="the third message")
        assert worker.stats.spilled_batches == 1  # the third was written, not spooled
    readings = {
        point["time"]: point
        for point in rows(influx, f"SELECT * FROM streetlight WHERE device_id = '{LAMP}'")
    }
    profile = load_profiles()["streetlight"]
    digest = fields_digest(profile.field_types())
    for row in rows(influx, LATEST_ROWS):
        if row["writer"] != settings.client_id:
            continue  # the drainer's row, of T1
        lacks = set(absent(row["has"], digest, len(profile.fields)))
        said = {
            name: row[key_of("streetlight", name, kind)]
            for n, (name, kind) in enumerate(profile.field_types().items())
            if n not in lacks
        }
        reading = readings[row["at"]]
        assert said == {name: reading[name] for name in said}, (row, reading)


@pytest.fixture
def crash_on_first_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = Worker._store
    crashed = threading.Event()

    def store(self: Worker, batch: object) -> None:
        if not crashed.is_set():
            crashed.set()
            raise RuntimeError("injected: the writer thread dies")
        real(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Worker, "_store", store)
    yield


def _as_environment(
    servers: LocalServers, settings: IngestSettings, monkeypatch: pytest.MonkeyPatch
) -> IngestSettings:
    """`settings` as `citysense ingest` reads them: from the environment."""
    for name, value in settings.model_dump(mode="json").items():
        if value is not None and not isinstance(value, dict | list):
            monkeypatch.setenv(f"CITYSENSE_{name.upper()}", str(value))
    monkeypatch.setenv("CITYSENSE_MQTT_URL", servers.mosquitto.url("citysense-ingest"))
    return settings


def _cli_main() -> int:
    """`citysense ingest` in this process, its signal handlers restored after. A process that
    would run on (a thread died unnoticed) is stopped by SIGTERM after 30 s: a clean stop."""
    args = argparse.Namespace(
        client_id=None, share_group=None, http_port=None, workers=1, retire=False, retire_idle=5.0
    )
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    guard = threading.Timer(30, signal.raise_signal, (signal.SIGTERM,))
    guard.start()
    try:
        return ingest_cli.main(args)
    finally:
        guard.cancel()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_a_thread_that_dies_ends_the_process_non_zero_and_a_restart_loses_nothing(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    monkeypatch: pytest.MonkeyPatch,
    crash_on_first_store: None,
) -> None:
    settings = _as_environment(servers, ingest_settings(servers, influx, topic_root), monkeypatch)
    topic = TopicLayout(topic_root).telemetry("water_pipe", PIPE)
    messages = [(topic, reading(now_ms() - 1000 + n, 2.0 + n)) for n in range(10)]
    # The worker's session must exist before the messages are published: start it once.
    with running_worker(settings):
        pass
    publish(servers.mosquitto.url("citysense-simulator"), messages)
    assert _cli_main() == 1  # the writer died: not ready, drained, exit 1
    assert count(influx, "water_pipe") == 0
    monkeypatch.undo()
    with running_worker(settings):  # its supervisor restarts it: the broker redelivers
        wait_for(lambda: count(influx, "water_pipe") == 10, 30, what="all ten stored")


def test_paho_s_network_thread_dying_ends_the_process_non_zero_and_loses_nothing(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """paho's network thread ends on any exception but OSError (a race of its packet queue
    with its reconnection raises RuntimeError), and nothing of ours runs in it to say so: the
    main loop finds it gone and exits 1 rather than live on, consuming nothing."""
    settings = _as_environment(servers, ingest_settings(servers, influx, topic_root), monkeypatch)
    topic = TopicLayout(topic_root).telemetry("water_pipe", PIPE)
    with running_worker(settings):  # its session, before the messages are published
        pass
    publish(servers.mosquitto.url("citysense-simulator"), [(topic, reading(now_ms(), 1.0))])
    real = consume._Client._sock_recv
    reads = [0]

    def sock_recv(self: consume._Client, bufsize: int) -> bytes:
        reads[0] += 1
        if reads[0] == 2:  # after the CONNACK
            raise RuntimeError("injected: deque mutated during iteration")
        return real(self, bufsize)

    monkeypatch.setattr(consume._Client, "_sock_recv", sock_recv)
    assert _cli_main() == 1
    assert reads[0] >= 2
    monkeypatch.undo()
    with running_worker(settings):  # its supervisor restarts it: the broker redelivers
        wait_for(lambda: count(influx, "water_pipe") == 1, 30, what="the reading stored")


def test_a_thread_that_dies_is_counted_and_ready_turns_false(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, crash_on_first_store: None
) -> None:
    """What an operator sees of a dead thread: `thread_crashes` counts it, /ready is 503, and
    nothing it held was acknowledged."""
    port = free_port()
    settings = ingest_settings(servers, influx, topic_root, http_port=port)
    topic = TopicLayout(topic_root).telemetry("water_pipe", PIPE)
    with running_worker(settings) as worker:
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200
        publish(servers.mosquitto.url("citysense-simulator"), [(topic, reading(now_ms(), 1.0))])
        wait_for(worker.crashed.is_set, 30, what="the writer thread to die")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines()
        assert "citysense_ingest_thread_crashes_total 1.0" in metrics
        assert "citysense_ingest_ready 0.0" in metrics
        assert "citysense_ingest_messages_acked_total 0.0" in metrics
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 503
