"""The fault suite's accounting: streams of readings whose every value is unique, and the check
that InfluxDB holds exactly them, each once, each window with its change mark."""

from __future__ import annotations

import time

import orjson

from common.influx import InfluxConfig
from common.schema import IMPORT
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from tests.support.influx import count, rows
from tests.support.polling import wait_for
from wire import latest as layout
from wire.changes import MEASUREMENT as CHANGES
from wire.changes import window_of
from wire.retention import qualified
from wire.topics import TopicLayout

ROWS_FOLLOW_S = 10.0  # how long a batch's rows may trail its readings here
PIPES = sorted(
    d.device_id for d in load_registry(DEFAULT_REGISTRY, load_profiles()).of("water_pipe")
)


def stream_of(
    root: str, readings: int, per_message: int = 5
) -> tuple[list[tuple[str, bytes]], dict[tuple[str, int], float]]:
    """Messages of `per_message` readings each from the registry's pipes; every value unique."""
    layout = TopicLayout(root)
    start_ms = time.time_ns() // 1_000_000 - 7 * 86_400_000
    expected: dict[tuple[str, int], float] = {}
    messages = []
    for m in range(readings // per_message):
        device = PIPES[m % len(PIPES)]
        batch = []
        for k in range(per_message):
            n = m * per_message + k
            ts = start_ms + n * 1000
            value = round(100 + n * 0.001, 3)
            expected[(device, ts * 1_000_000)] = value
            batch.append({"ts": ts, "pressure": value})
        messages.append((layout.telemetry("water_pipe", device), orjson.dumps(batch)))
    return messages, expected


def unstamped_of(root: str, readings: int) -> tuple[list[tuple[str, bytes]], list[float]]:
    """Messages of one reading each from the registry's pipes, without a timestamp (stored under
    their receive time, so a second delivery is a second point); their values, each unique."""
    layout = TopicLayout(root)
    values = [round(100 + n * 0.001, 3) for n in range(readings)]
    messages = [
        (layout.telemetry("water_pipe", PIPES[n % len(PIPES)]), orjson.dumps({"pressure": v}))
        for n, v in enumerate(values)
    ]
    return messages, values


def stored_pressures(influx: InfluxConfig) -> list[float]:
    """Every pressure stored, sorted: a value delivered twice is there twice."""
    return sorted(
        float(str(r["pressure"])) for r in rows(influx, 'SELECT pressure FROM "water_pipe"')
    )


def stored(influx: InfluxConfig) -> dict[tuple[str, int], float]:
    got = rows(influx, 'SELECT pressure, device_id FROM "water_pipe"')
    return {(str(r["device_id"]), int(str(r["time"]))): float(str(r["pressure"])) for r in got}


def assert_exactly(influx: InfluxConfig, expected: dict[tuple[str, int], float]) -> None:
    """Every reading stored once, nothing else; each window's change mark; each device's
    latest row (wire.latest) its newest reading, and no writer saying it stored readings
    without their rows (an owed mark): no fault of the suite may cost a row."""
    got = stored(influx)
    missing = expected.keys() - got.keys()
    extra = got.keys() - expected.keys()
    assert not missing, f"{len(missing)} readings lost"
    assert not extra, f"{len(extra)} points that were never published"
    assert got == expected
    # A publisher resending after a broker restart, or a redelivery whose ack was lost, is
    # recognised and recorded as a duplicate; nothing else may be rejected.
    reasons = {
        str(r["reason"])
        for r in rows(influx, "SELECT reason, detail FROM dead_letters.dead_letters")
    }
    assert reasons <= {"duplicate"}
    # Every window written into carries its change mark, whatever path the write took (retried,
    # bisected, spooled and written after the outage): kept aggregates rely on it (api.cells).
    marks = rows(influx, f"SELECT stamp FROM {qualified(CHANGES)} WHERE profile = 'water_pipe'")
    assert {int(str(r["time"])) for r in marks} == {window_of(t) for _, t in expected}
    # The fixture's own mark (readings seeded without rows: tests.support.influx) aside.
    owed = rows(influx, f"SELECT * FROM {qualified(layout.OWED)} WHERE writer != '{IMPORT}'")
    assert not owed, f"rows owed by {sorted({str(r['writer']) for r in owed})}"
    # A batch's rows are written right after its readings (wire.latest's order): the last
    # batch's may still be on their way when every reading is counted (seen once in CI).
    newest, deadline = newest_of(expected), time.monotonic() + ROWS_FOLLOW_S
    while (held := newest_rows(influx)) != newest and time.monotonic() < deadline:
        time.sleep(0.1)
    wrong = {d: (held.get(d), newest[d]) for d in newest if held.get(d) != newest[d]}
    assert not wrong, f"latest rows (time, value) held / newest stored: {wrong}"


def newest_of(expected: dict[tuple[str, int], float]) -> dict[str, tuple[int, float]]:
    newest: dict[str, tuple[int, float]] = {}
    for (device, time_ns), value in expected.items():
        if time_ns > newest.get(device, (-1, 0.0))[0]:
            newest[device] = (time_ns, value)
    return newest


def newest_rows(influx: InfluxConfig) -> dict[str, tuple[int, float]]:
    """Each pipe's (reading time, pressure) in its newest latest row, over every writer's."""
    kind = load_profiles()["water_pipe"].field_types()["pressure"]
    key = layout.key_of("water_pipe", "pressure", kind)
    query = f"SELECT * FROM {qualified(layout.MEASUREMENT)} WHERE profile = 'water_pipe'"
    newest: dict[str, tuple[int, float]] = {}
    for row in rows(influx, query):
        device, at = str(row[layout.DEVICE]), int(str(row[layout.AT]))
        if at > newest.get(device, (-1, 0.0))[0]:
            newest[device] = (at, float(str(row[key])))
    return newest


def wait_stored(
    influx: InfluxConfig,
    n: int,
    timeout: float,
    *,
    measurement: str = "water_pipe",
    interval: float = 0.5,
) -> None:
    """Until `measurement` holds at least `n` points."""
    wait_for(
        lambda: count(influx, measurement) >= n,
        timeout,
        interval,
        f"{n} {measurement} readings stored",
    )
