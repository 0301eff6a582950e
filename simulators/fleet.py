"""A simulated fleet as a stream of MQTT messages, each with the readings ingest must store.

Every device reports on its profile's interval. A message carries one reading, or with
`array_ratio` probability a burst of consecutive readings a node buffered; faults are injected at
`fault_ratio`. Messages come out in the order a city would send them: by the time of their newest
reading, interleaved across devices.

- backfill: the readings end at `end_ms` (default now), each device slightly earlier than the
  next, reaching back `readings_per_device` intervals; for loading history and for benchmarks.
- live: readings start at `start_ms` (default now) and move forward; a message is due at its
  newest reading's time, and the publisher (pace=True) sends it then, so its timestamp is the
  wall clock at sending. `readings_per_device=0` never ends.

A device never sends two readings with the same timestamp, so ingest never sees a timestamp
conflict within one stream (two backfills over the same period with the same seed can collide).

One seeded random generator drives everything, so the stream is the same for the same
arguments. A message's expectations are exact: the instant in ns and each value as stored.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import orjson

from device_profiles import Device, Profile
from simulators import faults as fault_kinds
from simulators.models import DEFAULT_UTC_OFFSET_HOURS, DeviceModel, ProfileModel, Value
from simulators.timestamps import TsForm, encode, forms_of
from wire.topics import TopicLayout

ALL_FAULTS = fault_kinds.ALL_FAULTS
BACKFILL, LIVE = "backfill", "live"
TIME_MODES = (BACKFILL, LIVE)

BACKFILL_JITTER_MS = 30_000  # devices do not all report at the same instant
# Backfilled history may span at most this share of a profile's max_age, leaving the rest for
# the time between generating a message and ingest checking its age.
MAX_AGE_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class ExpectedReading:
    profile: str
    device_id: str
    time_ns: int  # the timestamp as ingest will store it, in ns
    values: dict[str, Value]  # canonical field names -> value as stored


@dataclass(frozen=True, slots=True)
class SimMessage:
    topic: str
    payload: bytes
    readings: tuple[ExpectedReading, ...]  # valid readings this message carries
    # Expected reason codes: one per bad reading, one for a malformed message, one per reading
    # of a duplicate message.
    rejections: tuple[str, ...]
    fault: str | None  # fault kind injected, if any
    due_ms: int = 0  # when the device sends it: its newest reading's time (epoch ms)


class _Plan:
    """What all devices of one profile share: value models, fault targets, timestamp forms."""

    __slots__ = ("drop_field", "forms", "models", "name", "profile", "targets", "ts_field")

    def __init__(self, profile: Profile, utc_offset_hours: float) -> None:
        self.profile = profile
        self.name = profile.profile
        self.ts_field = profile.timestamp.field
        self.forms = forms_of(profile.timestamp.forms)
        if not self.forms:
            raise ValueError(f"profile {profile.profile!r} accepts no timestamp form")
        self.drop_field = profile.on_invalid_field == "drop_field"
        self.targets = fault_kinds.fault_targets(profile)
        self.models = ProfileModel(profile, utc_offset_hours)


class _Device:
    """One device's place in the schedule and its value model."""

    __slots__ = (
        "chunk", "device_id", "first_ms", "form", "interval_ms", "left", "model", "next_k",
        "plan", "topic",
    )  # fmt: skip

    def __init__(
        self,
        *,
        device_id: str,
        plan: _Plan,
        topic: str,
        model: DeviceModel,
        form: TsForm,
        interval_ms: int,
        first_ms: int,
        left: int | None,
    ) -> None:
        self.device_id = device_id
        self.plan = plan
        self.topic = topic
        self.model = model
        self.form = form
        self.interval_ms = interval_ms
        self.first_ms = first_ms
        self.next_k = 0  # index of the next reading in the device's schedule
        self.left = left  # readings still to send; None: forever
        self.chunk = 1  # readings in the next message

    def due_ms(self) -> int:
        return self.first_ms + (self.next_k + self.chunk - 1) * self.interval_ms


def generate(
    devices: Sequence[Device],
    profiles: Mapping[str, Profile],
    layout: TopicLayout,
    *,
    readings_per_device: int,
    array_ratio: float = 0.1,
    max_array: int = 5,
    fault_ratio: float = 0.0,
    faults: Sequence[str] = ALL_FAULTS,
    seed: int = 1,
    end_ms: int | None = None,
    time_mode: str = BACKFILL,
    start_ms: int | None = None,
    interval_s: float | None = None,
    utc_offset_hours: float = DEFAULT_UTC_OFFSET_HOURS,
) -> Iterator[SimMessage]:
    """The fleet's messages in sending order. Arguments are checked here, before iteration.

    `interval_s` overrides every profile's reporting interval (e.g. 1 s for a live load test);
    `utc_offset_hours` is the city's time zone, which sets when lamps go on and demand peaks.
    Raises ValueError for a bad argument or a device whose profile is not in `profiles`.
    """
    options = _Options(array_ratio, max_array, fault_ratio, fault_kinds.check_faults(faults))
    _check(options, readings_per_device, time_mode, interval_s)
    rng = random.Random(seed)  # noqa: S311 - a simulation, not security
    anchor = end_ms if time_mode == BACKFILL else start_ms
    anchor_ms = time.time_ns() // 1_000_000 if anchor is None else anchor
    plans: dict[str, _Plan] = {}
    sims: list[_Device] = []
    for index, device in enumerate(devices):
        plan = plans.get(device.profile)
        if plan is None:
            profile = profiles.get(device.profile)
            if profile is None:
                raise ValueError(
                    f"device {device.device_id} has unknown profile {device.profile!r}"
                )
            plan = plans[device.profile] = _Plan(profile, utc_offset_hours)
        form = plan.forms[index % len(plan.forms)]
        interval_ms = _interval_ms(interval_s or plan.profile.reporting_interval, form)
        if time_mode == BACKFILL:
            _check_age(plan.profile, readings_per_device, interval_ms)
            first_ms = _backfill_first_ms(anchor_ms, readings_per_device, interval_ms, form, rng)
        else:
            first_ms = _live_first_ms(anchor_ms, interval_ms, form, rng)
        sims.append(
            _Device(
                device_id=device.device_id,
                plan=plan,
                topic=layout.telemetry(plan.name, device.device_id),
                model=plan.models.device(rng),
                form=form,
                interval_ms=interval_ms,
                first_ms=first_ms,
                left=readings_per_device or None,
            )
        )
    return _stream(sims, rng, options)


@dataclass(frozen=True, slots=True)
class _Options:
    array_ratio: float
    max_array: int
    fault_ratio: float
    kinds: tuple[str, ...]


def _check(
    options: _Options, readings_per_device: int, time_mode: str, interval_s: float | None
) -> None:
    if time_mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {list(TIME_MODES)}, not {time_mode!r}")
    if readings_per_device < 0 or (readings_per_device == 0 and time_mode == BACKFILL):
        raise ValueError("readings_per_device must be at least 1 (0 = endless, live mode only)")
    if not 0.0 <= options.array_ratio <= 1.0:
        raise ValueError(f"array_ratio must be within 0..1, not {options.array_ratio}")
    if options.array_ratio > 0.0 and options.max_array < 2:
        raise ValueError(
            f"max_array must be at least 2 for array messages, not {options.max_array}"
        )
    if not 0.0 <= options.fault_ratio <= 1.0:
        raise ValueError(f"fault_ratio must be within 0..1, not {options.fault_ratio}")
    if options.fault_ratio > 0.0 and not options.kinds:
        raise ValueError("fault_ratio above 0 needs at least one fault kind")
    if interval_s is not None and not (math.isfinite(interval_s) and interval_s >= 1.0):
        raise ValueError(f"interval_s must be at least 1 second, not {interval_s}")


def _interval_ms(seconds: float, form: TsForm) -> int:
    """The interval on the device's clock resolution: whole seconds for epoch-seconds devices."""
    step = form.resolution_ms
    return max(step, round(seconds * 1000 / step) * step)


def _check_age(profile: Profile, readings: int, interval_ms: int) -> None:
    span_s = ((readings - 1) * interval_ms + BACKFILL_JITTER_MS) / 1000
    if span_s > MAX_AGE_SHARE * profile.timestamp.max_age:
        raise ValueError(
            f"{readings} readings every {interval_ms / 1000:g}s reach back {span_s / 86400:.1f}"
            f" days, too close to profile {profile.profile!r}'s max_age of"
            f" {profile.timestamp.max_age / 86400:.1f} days: ingest would reject them as too old"
        )


def _backfill_first_ms(
    end_ms: int, readings: int, interval_ms: int, form: TsForm, rng: random.Random
) -> int:
    step = form.resolution_ms
    jitter = rng.randrange(min(interval_ms, BACKFILL_JITTER_MS) // step) * step
    last = end_ms // step * step - jitter
    return last - (readings - 1) * interval_ms


def _live_first_ms(start_ms: int, interval_ms: int, form: TsForm, rng: random.Random) -> int:
    # Phases spread over a whole interval so the fleet's rate is steady from the first minute.
    step = form.resolution_ms
    return -(-start_ms // step) * step + rng.randrange(interval_ms // step) * step


def _stream(sims: list[_Device], rng: random.Random, options: _Options) -> Iterator[SimMessage]:
    kinds, fault_ratio = options.kinds, options.fault_ratio
    # A heap of (due time, device number): the number breaks ties, so devices are never compared.
    heap: list[tuple[int, int]] = []
    for number, sim in enumerate(sims):
        sim.chunk = _chunk(sim, rng, options)
        heap.append((sim.due_ms(), number))
    heapq.heapify(heap)
    while heap:
        due, number = heap[0]
        sim = sims[number]
        fault = kinds[rng.randrange(len(kinds))] if rng.random() < fault_ratio else None
        if fault == fault_kinds.DUPLICATE:
            # The original, then its exact re-publish (a lost PUBACK, a firmware retry): the
            # readings are stored once, and each is dead-lettered once more as a duplicate.
            message = _message(sim, due, None, rng)
            yield message
            rejections = (fault_kinds.REASONS[fault],) * len(message.readings)
            yield SimMessage(message.topic, message.payload, (), rejections, fault, due)
        else:
            yield _message(sim, due, fault, rng)
        sim.next_k += sim.chunk
        if sim.left is not None:
            sim.left -= sim.chunk
            if sim.left == 0:
                heapq.heappop(heap)
                continue
        sim.chunk = _chunk(sim, rng, options)
        heapq.heapreplace(heap, (sim.due_ms(), number))


def _chunk(sim: _Device, rng: random.Random, options: _Options) -> int:
    """How many readings the device's next message carries."""
    if options.array_ratio == 0.0 or rng.random() >= options.array_ratio:
        return 1
    size = rng.randint(2, options.max_array)
    if sim.left is None or sim.left >= size:
        return size
    return sim.left if sim.left >= 2 else 1


def _message(sim: _Device, due_ms: int, fault: str | None, rng: random.Random) -> SimMessage:
    plan = sim.plan
    times = [sim.first_ms + (sim.next_k + j) * sim.interval_ms for j in range(sim.chunk)]
    values = [sim.model.reading(ts) for ts in times]
    documents: list[dict[str, object]] = [
        {plan.ts_field: encode(sim.form, ts), **v} for ts, v in zip(times, values, strict=True)
    ]
    document: object = documents[0] if sim.chunk == 1 else documents
    valid = [
        ExpectedReading(plan.name, sim.device_id, ts * 1_000_000, v)
        for ts, v in zip(times, values, strict=True)
    ]
    rejections: tuple[str, ...] = ()
    if fault == fault_kinds.MALFORMED_JSON:
        payload = fault_kinds.malformed(orjson.dumps(document), document, rng)
        return SimMessage(sim.topic, payload, (), (fault_kinds.REASONS[fault],), fault, due_ms)
    if fault in (fault_kinds.WRONG_TYPE, fault_kinds.OUT_OF_RANGE):
        hit = rng.randrange(sim.chunk)
        corrupt = (
            fault_kinds.wrong_type if fault == fault_kinds.WRONG_TYPE else fault_kinds.out_of_range
        )
        field = corrupt(documents[hit], plan.targets, rng)
        if field is None:
            fault = None  # nothing in this reading it could hit
        elif plan.drop_field:
            # The profile stores the rest of the reading; only the bad field is dead-lettered.
            kept = {k: v for k, v in values[hit].items() if k != field}
            valid[hit] = ExpectedReading(plan.name, sim.device_id, times[hit] * 1_000_000, kept)
            rejections = (fault_kinds.REASONS[fault],)
        else:
            del valid[hit]
            rejections = (fault_kinds.REASONS[fault],)
    return SimMessage(sim.topic, orjson.dumps(document), tuple(valid), rejections, fault, due_ms)
