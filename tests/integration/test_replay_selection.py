"""`citysense replay` reads every selected dead letter once, and fails when its mark is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest

from common.influx import InfluxClient, InfluxConfig
from ingest.replay import Selection, select
from tests.support.influx import rows
from wire.deadletters import DeadLetter, dead_letter_line
from wire.reasons import Reason
from wire.retention import DEAD_LETTERS
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration


def _letter(worker: str, time_ns: int, payload: bytes = b"{}") -> str:
    letter = DeadLetter(
        Reason.UNKNOWN_DEVICE, "water_pipe", "t", "WP-X", "not registered", payload, worker
    )
    return dead_letter_line(letter, time_ns)


@pytest.mark.parametrize("page", [2, 3, 4])
def test_letters_of_one_timestamp_across_a_page_s_end_are_all_read(
    influx: InfluxConfig, page: int
) -> None:
    # Five workers' letters of one nanosecond (time.time_ns() of two processes can agree),
    # between others: a page ends inside the group whatever its size here.
    at = time.time_ns() - 60 * 10**9
    letters = [("early", at - 2), ("early2", at - 1)]
    letters += [(f"w{n}", at) for n in range(5)]
    letters += [("late", at + 1)]
    with InfluxClient(influx) as client:
        body = "\n".join(_letter(w, t) for w, t in letters).encode()
        client.write(body, policy=DEAD_LETTERS)
        every = Selection((), None, None, at - 10, at + 10, again=False, limit=None)
        got = [(row["worker"], int(row["time"])) for row in select(client, every, page)]
        assert sorted(got) == sorted(letters)
        assert [t for _, t in got] == sorted(t for _, t in got)  # still in time order
        some = Selection((), None, None, at - 10, at + 10, again=False, limit=4)
        assert len(list(select(client, some, page))) == 4


def test_a_refused_replay_mark_fails_the_run_and_the_letter_stays_to_replay(
    influx: InfluxConfig, topic_root: str
) -> None:
    topic = TopicLayout(topic_root).telemetry("water_pipe", "WP-000003")
    ts = time.time_ns() // 1_000_000
    refused = dead_letter_line(
        DeadLetter(
            Reason.WRITE_REJECTED,
            "water_pipe",
            topic,
            "WP-000003",
            "field type conflict",
            f"water_pipe,device_id=WP-000003 pressure=321.0 {ts * 1_000_000}".encode(),
            "w1",
        ),
        time.time_ns(),
    )
    # Another letter of the shard wrote `replayed_at` as a string: InfluxDB refuses the
    # replay mark's integer (a field's type is fixed per shard).
    poison = 'dead_letters,reason=bad_shape,profile=water_pipe,worker=w2 replayed_at="x" '
    poison += str(time.time_ns())
    with InfluxClient(influx) as client:
        client.write(f"{refused}\n{poison}".encode(), policy=DEAD_LETTERS)
    env = {
        **os.environ,
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_TOPIC_ROOT": topic_root,
    }
    argv = [sys.executable, "-m", "citysense.cli", "replay", "--no-progress"]
    argv += ["--reason", "write_rejected"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["results"], summary["marks_refused"]) == ({"stored": 1}, 1)
    assert "refused 1 replay mark" in done.stderr
    [reading] = rows(influx, 'SELECT pressure FROM "water_pipe"')
    assert reading["pressure"] == 321.0
    [letter] = rows(influx, "SELECT * FROM dead_letters.dead_letters WHERE worker = 'w1'")
    assert letter.get("replayed_at") is None  # read as not replayed: the next run takes it
