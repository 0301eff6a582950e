"""CPU per reading, stage by stage: the ingest hot path's parts timed one at a time in this
process on the benchmark's load (no broker, no InfluxDB), each the best of three passes.

bench.throughput prints this table before its end-to-end figures. The parts add up to less
than the worker's CPU per reading measured there: that one also holds the system calls of
reading from the broker and writing to InfluxDB, and the threads' contention for the GIL.
"""

from __future__ import annotations

import gc
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.publisher import read_messages
from common.influx import InfluxClient, InfluxConfig
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from ingest.acks import Acks
from ingest.changes import change_lines, changes_of
from ingest.cli import GC_FIRST_GENERATION
from ingest.compiled import compile_profile
from ingest.consume import _Client, decode_publish
from ingest.decode import Decoded, decode
from ingest.dedupe import Seen
from ingest.encode import ReadingEncoder
from ingest.settings import IngestSettings
from ingest.stages import Enriched, Received
from ingest.worker import Worker
from wire import statefeed
from wire.retention import by_policy

# A stage: its name, and what makes one pass of it (set-up is not timed, the pass is).
Stage = tuple[str, Callable[[], Callable[[], object]]]


def _best(make: Callable[[], Callable[[], object]], passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        run = make()
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def _packets(messages: list[tuple[str, bytes]]) -> list[bytearray]:
    """Each message as the body of the MQTT 5 PUBLISH the broker sends (QoS 1, no properties)."""
    return [
        bytearray(
            struct.pack("!H", len(t.encode())) + t.encode() + struct.pack("!H", n % 65535 + 1)
        )
        + b"\x00"
        + p
        for n, (t, p) in enumerate(messages)
    ]


def _stream(packets: list[bytearray]) -> bytes:
    """The packets as they cross the socket: fixed header (PUBLISH, QoS 1) and all."""
    out = bytearray()
    for body in packets:
        out.append(0x32)
        size = len(body)
        while True:
            size, digit = divmod(size, 128)
            out.append(digit | (0x80 if size else 0))
            if not size:
                break
        out += body
    return bytes(out)


class _Drained:
    """A socket with nothing more to read: the client's buffer holds the whole stream."""

    def recv(self, _size: int) -> bytes:
        raise BlockingIOError

    def close(self) -> None:
        """paho closes it when the client is collected."""


class _PahoReads(_Client):
    def _take_buffered(self, fast: Any) -> bool:
        return False  # every packet through paho's _packet_read (then ingest's decode)


def _read_all(client_class: type[_Client], stream: bytes) -> Callable[[], object]:
    """One pass: the client's loop_read over the whole stream, already received."""
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id="b",
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
    )
    client.on_publish_fast = lambda *_: None
    client._sock = _Drained()  # type: ignore[assignment]
    client._buffer, client._read_at = stream, 0
    return client.loop_read


def _worker(root: str) -> Worker:
    settings = IngestSettings(topic_root=root, spool_dir=None, http_port=0, registry_check=0)
    profiles = load_profiles()
    return Worker(settings, profiles, load_registry(DEFAULT_REGISTRY, profiles))


def _parts(worker: Worker, received: list[Received]) -> tuple[list[Decoded], list[Enriched]]:
    pipeline = worker.pipeline
    decoded = [decode(r, pipeline._layout, pipeline._profiles, pipeline._limits) for r in received]
    readings = [r for o in (worker.pipeline.process(m) for m in received) for r in o.accepted]
    return [d for d in decoded if isinstance(d, Decoded)], readings


def mqtt_thread_stages(root: str, messages: list[tuple[str, bytes]]) -> list[Stage]:
    """The MQTT thread's work for each message, part by part and whole."""
    now = time.time_ns()
    received = [Received(t, p, n % 65535 + 1, 1, now) for n, (t, p) in enumerate(messages)]
    worker = _worker(root)
    decoded, readings = _parts(worker, received)
    fast = {name: compile_profile(p) for name, p in worker.pipeline._profiles.items()}
    objects = [(fast[d.profile.profile], d.device_id, o) for d in decoded for o in d.objects]
    packets = _packets(messages)
    stream = _stream(packets)
    encoder = ReadingEncoder()
    profiles = worker.pipeline._profiles
    keys = [
        (
            r.measurement,
            r.device_id,
            r.time_ns,
            encoder.fields_in_order(r.fields, profiles[r.measurement].fields),
        )
        for r in readings
    ]

    def each(step: Callable[[Received], Any]) -> Callable[[], None]:
        return lambda: _each(step, received)

    return [
        ("MQTT 5 PUBLISH decode, paho's own", lambda: lambda: _paho_decode(packets)),
        ("MQTT 5 PUBLISH decode, ingest's", lambda: lambda: list(map(_ours, packets))),
        ("packet read + decode: paho's _packet_read", lambda: _read_all(_PahoReads, stream)),
        ("packet read + decode: ingest's, from the buffer", lambda: _read_all(_Client, stream)),
        ("decode: topic, size, JSON, shape", lambda: lambda: _decode_all(worker, received)),
        ("validate + encode fields (compiled)", lambda: lambda: _compiled(objects, now)),
        ("dedupe (Seen.check)", lambda: lambda: _dedupe(keys)),
        ("line (series per device + fields)", lambda: lambda: _lines(encoder, readings)),
        ("acks.take", lambda: lambda: _take_tickets(received)),
        ("pipeline.process, whole", lambda: each(_worker(root).pipeline.process)),
        ("worker: take, whole (acks, pipeline, budget, batch)", lambda: each(_worker(root)._take)),
    ]  # fmt: skip


def _ours(packet: bytearray) -> object:
    return decode_publish(50, packet)


def _compiled(objects: list[tuple[Any, str, dict[str, Any]]], now: int) -> None:
    for fast, device_id, obj in objects:
        fast(obj, device_id, now)


def _lines(encoder: ReadingEncoder, readings: list[Enriched]) -> None:
    for reading in readings:
        encoder.line(reading, "x=1.0")


def _paho_decode(packets: list[bytearray]) -> None:
    for packet in packets:
        _packet.decode_publish(50, packet, MQTTProtocolVersion.MQTTv5)


def _decode_all(worker: Worker, received: list[Received]) -> None:
    p = worker.pipeline
    for r in received:
        decode(r, p._layout, p._profiles, p._limits)


def _dedupe(keys: list[tuple[str, str, int, str]]) -> None:
    seen = Seen()
    for key in keys:
        seen.check(*key)


def _take_tickets(received: list[Received]) -> None:
    acks = Acks()
    for r in received:
        acks.take(r.mid, r.qos, r.topic, r.payload, r.dup, ack=_no_ack)


def _no_ack(_mid: int, _qos: int) -> None:
    """Never called: each delivery is new here."""


def _each(step: Callable[[Received], Any], items: Iterable[Received]) -> None:
    for item in items:
        step(item)


def _empty_influx() -> InfluxClient:
    """InfluxDB answering every query with no rows: the stages are CPU alone."""
    empty = httpx.Response(200, json={"results": [{"statement_id": 0}]})
    transport = httpx.MockTransport(lambda request: empty)
    return InfluxClient(InfluxConfig(url="http://influx.invalid"), transport=transport)


def writer_stages(root: str, messages: list[tuple[str, bytes]], batch: int) -> list[Stage]:
    """The writer thread's own work for the same readings, in batches of `batch`."""
    now = time.time_ns()
    worker = _worker(root)
    worker.latest.resume(_empty_influx())  # as at the writer's start, its tag holding no rows
    outcomes = [worker.pipeline.process(Received(t, p, 1, 1, now)) for t, p in messages]
    batches = [outcomes[n : n + batch] for n in range(0, len(outcomes), batch)]
    lines = [[line for o in b for line in o.lines] for b in batches]
    feeds = [[r for o in b for r in o.accepted] for b in batches]
    return [
        ("change marks", lambda: lambda: [change_lines(changes_of(f)) for f in feeds]),
        # Nothing remembered as stored between passes: every reading's device gets its row.
        ("latest rows (wire.latest)", lambda: lambda: [worker.latest.rows(f) for f in feeds]),
        ("group by policy (wire.retention)", lambda: lambda: [by_policy(ls) for ls in lines]),
        ("request body (join, encode)", lambda: lambda: ["\n".join(ls).encode() for ls in lines]),
        ("state feed (wire.statefeed)", lambda: lambda: [list(statefeed.encode(f)) for f in feeds]),
        ("count stored", lambda: lambda: _count(worker, lines)),
    ]


def _count(worker: Worker, batches: list[list[str]]) -> None:
    for lines in batches:
        worker._count_stored(lines, [])


STAGE_MESSAGES = 100_000


def report(root: str, load: Path, readings: int, batch: int = 5000) -> list[str]:
    """The table's lines: µs of CPU per reading for each stage, over at most STAGE_MESSAGES of
    the load's messages (the in-process worker holds them all: past its max_held_bytes it would
    wait for a writer that this does not run)."""
    messages = read_messages(load)
    if len(messages) > STAGE_MESSAGES:
        readings = round(readings * STAGE_MESSAGES / len(messages))
        messages = messages[:STAGE_MESSAGES]
    gc.collect()
    gc.freeze()  # as the worker runs (ingest.cli)
    previous = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION, 20, 10)
    try:
        rows = [("MQTT thread", mqtt_thread_stages(root, messages))]
        rows.append(("writer thread", writer_stages(root, messages, batch)))
        return [
            f"  {thread:14} {name:52} {_best(run) * 1e6 / readings:6.2f} µs/reading"
            for thread, stages in rows
            for name, run in stages
        ]
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
