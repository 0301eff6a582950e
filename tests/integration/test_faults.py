"""The fault suite: each scenario counts what was published against what is stored, exactly.

Real Mosquitto and InfluxDB, ingest as real processes. Every reading carries a unique value, so
"nothing lost, nothing twice" is checked point by point, not just by count. Faults 2 and 9, the
two 60-second outages, are in test_faults_outages.py: a file runs whole in one process of a
test run, and the suite's longest waits are better shared by both.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from citysense.servers import LocalServers, free_port
from common.influx import InfluxClient, InfluxConfig
from device_profiles import load_profiles, load_registry
from ingest.spool import frame
from simulators.city import write_city
from tests.support.disks import tmpfs
from tests.support.faults import (
    PIPES,
    assert_exactly,
    stored_pressures,
    stream_of,
    unstamped_of,
    wait_stored,
)
from tests.support.influx import count, make_database, rows
from tests.support.mqtt import Stream, publish
from tests.support.polling import wait_for
from tests.support.processes import (
    IngestProcess,
    children,
    free_port_block,
    holding_ingest,
    ingest_env,
    started_ingest,
)
from tests.support.servers import ACL_ROOT
from wire.lineproto import line
from wire.topics import TopicLayout

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_1_sigkill_five_times_in_100k_readings(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    messages, expected = stream_of(topic_root, 100_000)
    ingest = started_ingest(servers, influx, topic_root, tmp_path)
    kills = 0
    # Kill k comes in the k-th fifth of the stream, which waits for it: however slow the
    # machine, the kills land mid-stream.
    fifth = len(messages) // 5
    stream = Stream(
        servers.mosquitto.url("citysense-simulator"),
        messages,
        rate=1500,
        gate=lambda n: kills >= 5 or n < kills * fifth + fifth // 2 + 500,
    )
    while kills < 5:
        # Killed while the stream flows, once this worker has taken a few hundred messages.
        wait_for(
            lambda k=kills: (
                stream.sent >= k * fifth + fifth // 4 and ingest.metric("received_total") >= 300
            ),
            30,
            0.05,
            "the stream to flow into the worker",
        )
        sent_at_kill = stream.sent
        ingest.kill()
        kills += 1
        ingest.start()
    assert sent_at_kill < len(messages), "the stream ended before the kills: nothing tested"
    stream.wait_acked()
    wait_stored(influx, len(expected), 90)
    wait_for(ingest.holds_nothing, 30, what="ingest to have written all it took")
    assert ingest.terminate() == 0
    assert_exactly(influx, expected)


def test_3_mosquitto_restart_mid_stream(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    influx = make_database(private_servers)
    messages, expected = stream_of(topic_root, 20_000)
    ingest = started_ingest(private_servers, influx, topic_root, tmp_path)
    restarts = 0
    # The stream waits for each restart at its own quarter: both come mid-stream.
    stream = Stream(
        private_servers.mosquitto.url("citysense-simulator"),
        messages,
        rate=1000,
        gate=lambda n: restarts >= 2 or n < 1500 + 1000 * restarts,
    )
    wait_for(
        lambda: stream.sent >= 1000 and ingest.metric("received_total") > 0,
        30,
        0.05,
        "the stream to flow into the worker",
    )
    private_servers.mosquitto.restart()  # graceful: sessions and queued messages persist
    restarts = 1
    wait_for(
        lambda: ingest.ready() and stream.sent >= 2000,
        30,
        0.05,
        "the worker back on the restarted broker, the stream flowing",
    )
    sent_at_restart = stream.sent
    private_servers.mosquitto.restart()
    restarts = 2
    assert sent_at_restart < len(messages), "the stream ended before the restarts"
    stream.wait_acked()
    wait_stored(influx, len(expected), 60)
    assert ingest.terminate() == 0
    assert_exactly(influx, expected)


def test_4_three_workers_one_sigkilled(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    messages, expected = stream_of(topic_root, 30_000)
    base_port = free_port_block(3)  # the supervisor gives worker n base + n - 1
    ports = {n: str(base_port + n - 1) for n in (1, 2, 3)}
    env = ingest_env(servers, influx, topic_root, tmp_path, CITYSENSE_HTTP_PORT=str(base_port))
    supervisor = IngestProcess(env, tmp_path / "i.log", "--workers", "3")
    supervisor.start(wait_ready=False)
    for n in (1, 2, 3):
        wait_for(lambda n=n: supervisor.ready(ports[n]), 60, what=f"worker {n}")
    killed = threading.Event()  # the stream waits for the kill two-thirds in
    stream = Stream(
        servers.mosquitto.url("citysense-simulator"),
        messages,
        rate=1000,
        gate=lambda n: killed.is_set() or n < 4000,
    )
    wait_for(
        lambda: all(supervisor.metric("received_total", port) > 0 for port in ports.values()),
        30,
        0.05,
        "the stream flowing into every worker",
    )
    assert supervisor.proc is not None
    victim = sorted(children(supervisor.proc.pid))[1]
    os.kill(victim, 9)
    assert stream.sent < len(messages), "the stream ended before the kill"
    killed.set()
    stream.wait_acked()
    wait_stored(influx, len(expected), 90)
    wait_for(
        lambda: (
            victim not in children(supervisor.proc.pid) and len(children(supervisor.proc.pid)) == 3
        ),  # the slot was refilled
        30,
        what="the dead worker's slot refilled",
    )
    assert supervisor.terminate() == 0
    assert_exactly(influx, expected)


def test_5_one_poisoned_line_in_a_batch(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    layout = TopicLayout(topic_root)
    t = time.time_ns() // 1_000_000 - 3_600_000
    # Someone wrote `turbidity` as a string into this shard: any float turbidity now conflicts.
    with InfluxClient(influx) as client:
        client.write(f'water_pipe,device_id=X,district=Y turbidity="cloudy" {t * 10**6}'.encode())
    good = [
        (
            layout.telemetry("water_pipe", PIPES[n % 50]),
            orjson.dumps({"ts": t + n, "pressure": 300.0 + n}),
        )
        for n in range(99)
    ]
    poisoned = (
        layout.telemetry("water_pipe", PIPES[0]),
        orjson.dumps({"ts": t + 500, "pressure": 1.0, "turbidity": 3.5}),
    )
    ingest = started_ingest(servers, influx, topic_root, tmp_path, CITYSENSE_FLUSH_INTERVAL="1")
    publish(servers.mosquitto.url("citysense-simulator"), [*good[:50], poisoned, *good[50:]])
    wait_for(lambda: ingest.metric("messages_acked_total") == 100, 20, what="all acked")
    assert ingest.metric("batches_written_total") == 1  # really one batch
    assert ingest.terminate() == 0
    pressures = sorted(
        float(str(r["pressure"]))
        for r in rows(influx, "SELECT pressure FROM \"water_pipe\" WHERE device_id != 'X'")
    )
    assert pressures == [300.0 + n for n in range(99)]
    (letter,) = rows(influx, "SELECT * FROM dead_letters.dead_letters")
    assert letter["reason"] == "write_rejected"
    assert "turbidity" in str(letter["payload"])
    assert "conflict" in str(letter["detail"])


def test_6_sigterm_under_load(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    messages, expected = stream_of(topic_root, 30_000)
    env = ingest_env(
        servers,
        influx,
        topic_root,
        tmp_path,
        CITYSENSE_LOG_LEVEL="INFO",
        CITYSENSE_DRAIN_TIMEOUT="10",
    )
    ingest = IngestProcess(env, tmp_path / "i.log")
    ingest.start()
    terminated = threading.Event()  # the stream waits for SIGTERM two-thirds in
    stream = Stream(
        servers.mosquitto.url("citysense-simulator"),
        messages,
        rate=1500,
        gate=lambda n: terminated.is_set() or n < 4000,
    )
    wait_for(
        lambda: stream.sent >= 2000 and ingest.metric("messages_acked_total") > 0,
        30,
        0.05,
        "the stream flowing through the worker",
    )
    sent_before = stream.sent
    # The drain bound, functional: a process still running at DRAIN_TIMEOUT + 5 s fails here.
    # (How long a drain under load takes is a figure, not a test.)
    assert ingest.terminate(timeout=10 + 5) == 0
    terminated.set()  # the rest waits at the broker for the restarted worker
    last = [line for line in ingest.log.read_text().splitlines() if "stopped cleanly" in line]
    report = orjson.loads(orjson.loads(last[-1])["msg"].split(": ", 1)[1])
    # Everything it acknowledged is stored: count before anything else can write.
    assert count(influx, "water_pipe") >= report["readings_stored"] > 0
    assert sent_before < len(messages), "the stream ended before SIGTERM"
    ingest.start()
    stream.wait_acked()
    wait_stored(influx, len(expected), 60)
    assert ingest.terminate() == 0
    assert_exactly(influx, expected)


def test_7_burst_after_mass_reconnect(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    """10,000 devices come back at once and upload their buffered readings together."""
    registry = tmp_path / "city.csv"
    with registry.open("w") as out:
        write_city(out, 10_000)
    devices = load_registry(registry, load_profiles()).devices.values()
    required = {"streetlight": "powerState", "water_pipe": "pressure", "power_meter": "activePower"}
    values = {"streetlight": "on", "water_pipe": 250.0, "power_meter": 1.5}
    layout = TopicLayout(topic_root)
    t = time.time_ns() // 1_000_000 - 3_600_000
    messages = [
        (
            layout.telemetry(d.profile, d.device_id),
            orjson.dumps(
                [{"ts": t + k * 60_000, required[d.profile]: values[d.profile]} for k in range(6)]
            ),
        )
        for d in devices
    ]
    ingest = started_ingest(servers, influx, topic_root, tmp_path, CITYSENSE_REGISTRY=str(registry))
    streams = [
        Stream(servers.mosquitto.url("citysense-simulator"), messages[k::4]) for k in range(4)
    ]
    for stream in streams:
        stream.wait_acked()
    expected = {p: 6 * sum(1 for d in devices if d.profile == p) for p in required}
    for profile, n in expected.items():
        wait_for(lambda p=profile, n=n: count(influx, p) >= n, 60, 0.5, f"{n} {profile}")
    assert ingest.terminate() == 0
    assert {p: count(influx, p) for p in expected} == expected
    assert count(influx, "dead_letters") == 0


def test_8_broker_killed_with_a_stale_save_while_ingest_holds_messages(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """Mosquitto SIGKILLed and restarted from a save older than what ingest holds keeps our
    session but hands the held packet ids to new messages (issue 10, 1): every message ingest
    held is still stored, and so is every message published after the restart."""
    stack = private_servers
    influx = make_database(stack)
    messages, expected = stream_of(topic_root, 1_200, per_message=10)
    voided = _stale_save_while_holding(
        stack, influx, topic_root, tmp_path, held=messages[:60], after=messages[60:]
    )
    assert_exactly(influx, expected)
    assert voided >= 1, "the broker never reused a held id: the scenario did not happen"


def test_8b_a_new_message_identical_to_a_held_one_after_a_stale_save_is_stored_too(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """As fault 8, but each new message is the very message ingest holds under its id: a
    device saying the same again (readings without a timestamp, stored under their receive
    time). Only the broker's DUP flag, unset on a first send, tells it from a redelivery of the
    held one: both are stored, nothing is taken for the other."""
    stack = private_servers
    influx = make_database(stack)
    held, values = unstamped_of(topic_root, 60)
    voided = _stale_save_while_holding(stack, influx, topic_root, tmp_path, held=held, after=held)
    assert stored_pressures(influx) == sorted(values * 2)
    assert voided == len(held), "the broker gave the held ids to other messages"


def _stale_save_while_holding(
    stack: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    tmp_path: Path,
    *,
    held: list[tuple[str, bytes]],
    after: list[tuple[str, bytes]],
) -> float:
    """Ingest holds `held` (InfluxDB away, no spool), Mosquitto is killed and restarted from a
    save made before them, `after` is published (the broker handing the held ids out again),
    InfluxDB comes back; ingest is stopped cleanly once it took every message and stored what
    it took. The held acknowledgements it voided."""
    stack.mosquitto.autosave_interval = 3600  # saves only when told: the save is made stale
    stack.mosquitto.restart()
    # No spool: ingest must hold what it receives while InfluxDB is away.
    ingest = holding_ingest(stack, influx, topic_root, tmp_path)
    stack.mosquitto.save()  # the save has ingest's session and nothing in flight
    stack.influxdb.stop()
    publisher = stack.mosquitto.url("citysense-simulator")
    publish(publisher, held)
    wait_for(lambda: ingest.metric("unacked_messages") == len(held), 30, what="ingest holding")
    stack.mosquitto.kill()
    stack.mosquitto.start()  # from the stale save: our session, without what we hold
    publish(publisher, after)

    def taken() -> bool:
        seen = ingest.metric("received_total") + ingest.metric("redelivered_skipped_total")
        return seen >= len(held) + len(after)

    wait_for(taken, 30, what="ingest to take every message")
    voided = ingest.metric("acks_voided")
    stack.influxdb.start()
    wait_for(ingest.holds_nothing, 60, what="ingest to store what it took")
    assert ingest.terminate() == 0
    return voided


RECEIVE_MAXIMUM = 50


def test_10_receive_maximum_reached_holds_exactly_that_many(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """InfluxDB down, no spool, messages of one reading (the byte budget far away): the worker
    holds exactly CITYSENSE_RECEIVE_MAXIMUM unacknowledged messages and takes no more; the rest
    waits at the broker, and everything is stored exactly once once InfluxDB is back."""
    stack = private_servers
    influx = make_database(stack)
    messages, expected = stream_of(topic_root, 4 * RECEIVE_MAXIMUM, per_message=1)
    ingest = holding_ingest(
        stack, influx, topic_root, tmp_path, CITYSENSE_RECEIVE_MAXIMUM=str(RECEIVE_MAXIMUM)
    )
    stack.influxdb.stop()
    publish(stack.mosquitto.url("citysense-simulator"), messages)  # the broker has them all
    wait_for(
        lambda: ingest.metric("unacked_messages") == RECEIVE_MAXIMUM,
        30,
        what=f"ingest holding {RECEIVE_MAXIMUM} messages",
    )
    # The broker had every chance to send more: the worker tried InfluxDB three more times.
    retries = ingest.metric("write_retries_total")
    wait_for(
        lambda: ingest.metric("write_retries_total") >= retries + 3, 30, what="three more tries"
    )
    held = ingest.metrics()
    assert held["unacked_messages"] == RECEIVE_MAXIMUM
    assert held["received_total"] == RECEIVE_MAXIMUM  # no more than that was ever delivered
    assert held["redelivered_skipped_total"] == 0
    assert held["messages_acked_total"] == 0
    assert held["readings_stored_total"] == 0
    assert held["budget_waits"] == 0  # Receive Maximum bound it, not the byte budget
    assert 0 < held["held_bytes"] < held["held_bytes_limit"]
    assert ingest.status("/ready") == 503  # InfluxDB unreachable
    stack.influxdb.start()
    wait_stored(influx, len(expected), 60)
    wait_for(lambda: ingest.metric("messages_acked_total") == len(messages), 30, what="every ack")
    after = ingest.metrics()
    assert after["received_total"] == len(messages)
    assert after["unacked_messages"] == 0
    assert after["held_bytes"] == 0
    assert ingest.terminate() == 0
    assert_exactly(influx, expected)


DRAIN_TIMEOUT = 3


def test_11_sigterm_with_influxdb_down_exits_1_within_the_drain_bound(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """SIGTERM while the worker holds messages it cannot store: it exits within
    CITYSENSE_DRAIN_TIMEOUT + 5 s with status 1, having acknowledged nothing; a restarted worker
    gets everything again from the broker and stores it exactly once."""
    stack = private_servers
    influx = make_database(stack)
    messages, expected = stream_of(topic_root, 1000, per_message=5)
    ingest = holding_ingest(  # nothing relieves the worker of what it holds
        stack,
        influx,
        topic_root,
        tmp_path,
        CITYSENSE_DRAIN_TIMEOUT=str(DRAIN_TIMEOUT),
        CITYSENSE_LOG_LEVEL="INFO",
    )
    stack.influxdb.stop()
    publish(stack.mosquitto.url("citysense-simulator"), messages)
    wait_for(lambda: ingest.metric("unacked_messages") == len(messages), 30, what="ingest holding")
    wait_for(lambda: ingest.metric("write_retries_total") >= 1, 30, what="the writer retrying")
    # A functional bound, not a measurement: still running at the bound fails here.
    assert ingest.terminate(timeout=DRAIN_TIMEOUT + 5) == 1
    log = ingest.log.read_text()
    assert "drain did not finish" in log
    [last] = [line for line in log.splitlines() if "stopped with messages left" in line]
    report = orjson.loads(orjson.loads(last)["msg"].split(": ", 1)[1])
    assert report["messages_acked"] == 0 and report["readings_stored"] == 0
    assert report["unacked_messages"] == len(messages)
    stack.influxdb.start()
    ingest.start()  # the same client id: the broker delivers what was never acknowledged
    wait_stored(influx, len(expected), 60)
    wait_for(lambda: ingest.metric("messages_acked_total") == len(messages), 30, what="every ack")
    assert ingest.terminate() == 0
    assert_exactly(influx, expected)


def test_12_sigkill_with_spooled_segments_and_a_stale_tmp(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """SIGKILL while the spool holds acknowledged batches and InfluxDB is down, a half-written
    segment (`.tmp`) left behind: the restarted worker writes every spooled reading once,
    never the `.tmp` (its batch was never acknowledged), and deletes it."""
    stack = private_servers
    influx = make_database(stack)
    messages, expected = stream_of(topic_root, 3000, per_message=5)
    spooled, later = messages[:400], messages[400:]
    env = ingest_env(
        stack,
        influx,
        topic_root,
        tmp_path,
        CITYSENSE_SPILL_AFTER="0.5",
        CITYSENSE_BATCH_SIZE="200",
    )
    folder = tmp_path / "spool" / env["CITYSENSE_CLIENT_ID"]
    ingest = IngestProcess(env, tmp_path / "i.log")
    ingest.start()
    stack.influxdb.stop()
    url = stack.mosquitto.url("citysense-simulator")
    publish(url, spooled)
    wait_for(
        lambda: ingest.metric("messages_acked_total") == len(spooled),
        60,
        what="every message spooled and acknowledged",
    )
    held = ingest.metrics()
    segments = sorted(folder.glob("*.seg"))
    assert segments, "nothing reached the disk spool"
    assert held["spilled_batches_total"] == len(segments)
    assert held["spool_bytes"] == sum(s.stat().st_size for s in segments)
    assert held["readings_stored_total"] == 0 and held["unacked_messages"] == 0
    ingest.kill()
    # What a crash inside Spool.append leaves: a whole, readable batch under a .tmp name. Its
    # reading was never published; were it ever written, assert_exactly would find it.
    ghost = line(
        "water_pipe", {"device_id": PIPES[0], "district": "Nowhere"}, {"pressure": -1.0}, 10**18
    )
    stale = folder / f"{time.time_ns():020d}-999999.tmp"
    stale.write_bytes(frame([ghost]))
    publish(url, later)  # waits at the broker while ingest is down
    stack.influxdb.start()
    ingest.start()
    assert not stale.exists(), "the stale .tmp survived the restart"
    wait_stored(influx, len(expected), 60)
    # Counted once the drained group's files are all removed (their bytes taken off first).
    wait_for(
        lambda: ingest.metrics()["unspooled_batches_total"] == len(segments),
        30,
        what="the spool drained",
    )
    assert not list(folder.glob("*.seg"))
    assert ingest.metrics()["spool_bytes"] == 0
    assert ingest.terminate() == 0
    assert_exactly(influx, expected)
    assert not list(folder.glob("*.tmp"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A disk of 256 KiB (`tmpfs`)."""
    with tmpfs(tmp_path / "small-disk", "256k") as folder:
        yield folder


def test_13_a_full_disk_under_the_spool_is_back_pressure_not_loss(
    private_servers: LocalServers, topic_root: str, tmp_path: Path, small_disk: Path
) -> None:
    """InfluxDB down and the spool's disk full long before the spool's own bound: appends fail
    with ENOSPC, the worker holds the batch instead (nothing acknowledged, no thread dies), and
    once InfluxDB is back every reading is stored exactly once."""
    stack = private_servers
    influx = make_database(stack)
    messages, expected = stream_of(topic_root, 10_000, per_message=10)
    env = ingest_env(
        stack,
        influx,
        topic_root,
        tmp_path,
        CITYSENSE_SPOOL_DIR=str(small_disk),
        CITYSENSE_SPOOL_MAX_BYTES=str(1024**3),  # the disk, not this bound, is what runs out
        CITYSENSE_SPILL_AFTER="0.3",
        CITYSENSE_BATCH_SIZE="500",
    )
    ingest = IngestProcess(env, tmp_path / "i.log")
    ingest.start()
    stack.influxdb.stop()
    publish(stack.mosquitto.url("citysense-simulator"), messages)
    wait_for(lambda: ingest.metric("spool_refused_appends") >= 1, 60, what="the disk full")
    held = ingest.metrics()
    assert held["thread_crashes_total"] == 0
    assert held["messages_acked_total"] < len(messages)  # the rest is held, unacknowledged
    stack.influxdb.start()
    wait_stored(influx, len(expected), 120)
    assert ingest.metric("thread_crashes_total") == 0
    assert ingest.terminate() == 0
    assert_exactly(influx, expected)


@pytest.fixture
def influxdb_on_a_small_disk(tmp_path: Path) -> Iterator[tuple[LocalServers, Path]]:
    """Servers of this test whose InfluxDB keeps its data, WAL and meta on a disk of 400 KiB
    (`tmpfs`, mounted before InfluxDB first starts)."""
    stack = LocalServers.create(tmp_path / "servers", root=ACL_ROOT)
    with tmpfs(stack.influxdb.home / "data", "400k") as disk:
        stack.start()
        try:
            yield stack, disk
        finally:
            stack.stop()


def test_14_influxdb_s_disk_full_mid_stream_loses_nothing(
    influxdb_on_a_small_disk: tuple[LocalServers, Path], topic_root: str, tmp_path: Path
) -> None:
    """InfluxDB's own disk fills while ingest writes into it (60,000 readings take ~900 KiB):
    its writes fail with a 500 (`error writing WAL entry: … no space left on device`), which is
    InfluxDB unavailable, not a reading refused: nothing is dead-lettered for it, ingest holds
    or spools and retries, no thread dies; once the operator frees room and restarts InfluxDB
    every reading is stored exactly once: the points a failed write left in InfluxDB's cache
    (queryable, not in its WAL) are gone with the restart and written again."""
    stack, disk = influxdb_on_a_small_disk
    influx = make_database(stack)
    messages, expected = stream_of(topic_root, 60_000, per_message=10)
    env = ingest_env(stack, influx, topic_root, tmp_path, CITYSENSE_BATCH_SIZE="500")
    ingest = IngestProcess(env, tmp_path / "i.log")
    ingest.start()
    publish(stack.mosquitto.url("citysense-simulator"), messages)
    wait_for(
        lambda: ingest.metric("write_retries_total") >= 3, 90, what="InfluxDB's disk to be full"
    )
    assert ingest.metric("thread_crashes_total") == 0
    assert ingest.metric("readings_stored_total") < len(expected)  # it filled mid-stream
    # What the worker could not store it holds, or spools to its own disk (then acknowledges).
    # Room is freed, and InfluxDB restarted: without the restart, InfluxDB 1.6 went on refusing
    # every write with the same ENOSPC for as long as it was watched (45 s, room freed).
    subprocess.run(["mount", "-o", "remount,size=512m", str(disk)], check=True)
    stack.influxdb.restart()
    wait_stored(influx, len(expected), 180)
    assert ingest.metric("thread_crashes_total") == 0
    assert ingest.terminate() == 0
    assert_exactly(influx, expected)


KEEPALIVE = 2  # the broker drops a connection silent for 1.5 times this


def test_15_the_byte_budget_full_longer_than_the_keepalive_keeps_the_connection(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """The byte budget full (InfluxDB away, no spool) holds paho's network thread for longer
    than the broker's keepalive allows: the thread still pings and writes, so the connection
    stays, the acknowledgements of what is stored once InfluxDB is back reach the broker, and
    nothing is delivered and stored again. Readings without a timestamp take their receive
    time, so a second delivery would be a second point: counted here, value by value."""
    stack = private_servers
    influx = make_database(stack)
    # About 900 bytes held a reading (ingest.budget.weight_of): 3,000 are over 2.5 MiB.
    messages, values = unstamped_of(topic_root, 3000)
    ingest = holding_ingest(  # nothing relieves the worker of what it holds
        stack,
        influx,
        topic_root,
        tmp_path,
        CITYSENSE_MAX_HELD_BYTES=str(1024**2),
        CITYSENSE_MQTT_KEEPALIVE=str(KEEPALIVE),
    )
    stack.influxdb.stop()
    publish(stack.mosquitto.url("citysense-simulator"), messages)
    wait_for(lambda: ingest.metric("budget_waits") >= 1, 30, what="the budget reached")
    time.sleep(4 * KEEPALIVE)  # the broker would have dropped a silent connection by now
    stack.influxdb.start()
    wait_stored(influx, len(messages), 60)
    wait_for(ingest.holds_nothing, 30, what="every message acknowledged")
    # A connection the broker dropped is found by paho once the thread reads again, and made
    # anew within its reconnect delay (1 s): the broker would then deliver again whatever
    # acknowledgement the reconnection discarded, and ingest store it.
    time.sleep(2 * KEEPALIVE)
    assert ingest.metric("connections_total") == 1
    wait_for(ingest.holds_nothing, 30, what="every message acknowledged")
    assert ingest.terminate() == 0
    assert stored_pressures(influx) == values


def test_16_a_second_worker_under_the_same_client_id_is_refused_and_the_first_loses_nothing(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    """A copied configuration: a second `citysense ingest` with the first's client id and spool
    folder. Started, it would delete the first's half-written segments as stale, drain its
    segments with it, and take its broker session over and over. It exits 2 at start, saying
    why, and every reading published to the first is stored once."""
    messages, expected = stream_of(topic_root, 2000)
    first = started_ingest(servers, influx, topic_root, tmp_path)
    env = {**first.env, "CITYSENSE_HTTP_PORT": str(free_port())}
    second = IngestProcess(env, tmp_path / "2.log")
    second.start(wait_ready=False)
    assert second.proc is not None and second.proc.wait(60) == 2
    said = second.log.read_text()
    assert f"is in use by another process (pid {first.proc.pid})" in said, said[-2000:]
    assert "CITYSENSE_CLIENT_ID" in said
    publish(servers.mosquitto.url("citysense-simulator"), messages)
    wait_stored(influx, len(expected), 60)
    wait_for(first.holds_nothing, 30, what="ingest to have written all it took")
    assert first.terminate() == 0
    assert_exactly(influx, expected)


def test_17_a_worker_elsewhere_under_the_same_client_id_loses_nothing(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    """The same client id on another host (a spool folder of its own): the broker closes the
    first's connection for the second's, and back, at every reconnection (alert
    CitySenseIngestReconnecting counts them). Every reading published meanwhile, taken by one
    or the other, is stored once."""
    messages, expected = stream_of(topic_root, 2000)
    first = started_ingest(servers, influx, topic_root, tmp_path)
    env = {
        **first.env,
        "CITYSENSE_HTTP_PORT": str(free_port()),
        "CITYSENSE_SPOOL_DIR": str(tmp_path / "elsewhere"),
    }
    second = IngestProcess(env, tmp_path / "2.log")
    second.start(wait_ready=False)
    wait_for(lambda: first.metric("connections_total") >= 3, 30, what="the session taken back")
    publish(servers.mosquitto.url("citysense-simulator"), messages)
    second.terminate()  # what it held: stored, or left to the broker for the first
    wait_stored(influx, len(expected), 90)
    wait_for(first.holds_nothing, 30, what="ingest to have written all it took")
    assert first.terminate() == 0
    assert_exactly(influx, expected)
