"""Fuzz telemetry for ingest: valid messages mixed with malformed and adversarial ones, each
carrying exactly what ingest must store and what it must dead-letter, with which reason.

Expectations are written here from the contract (the profile files, the registry, the lumio
variant) and the reason codes of issue 3, never computed by ingest's own code. Every bad message
is bad in one way only, so its reason is certain; a bad reading inside an array of good ones is
dead-lettered alone (its payload is that reading, re-serialised), the others stored.

Timestamps: the simulator's readings end six hours ago; the readings made here take unique whole
seconds from three days ago on, so no two of them share a device timestamp unless a case wants
that (duplicate, timestamp_conflict).
"""

from __future__ import annotations

import csv
import random
import secrets
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from device_profiles import (
    DEFAULT_PROFILES,
    DEFAULT_REGISTRY,
    FieldType,
    Profile,
    Registry,
    load_profiles,
    load_registry,
    load_variants,
)
from simulators.faults import GARBAGE
from simulators.fleet import generate
from simulators.timestamps import TsForm, encode
from wire.topics import TopicLayout

Value = float | int | bool | str
Doc = dict[str, Any]

PROFILES = load_profiles()
MAX_PAYLOAD = 64 * 1024  # ingest's default limit (CITYSENSE_MAX_PAYLOAD_BYTES)
MAX_DEPTH = 8  # ingest's default (CITYSENSE_MAX_JSON_DEPTH)
MAX_READINGS = 1000  # ingest's default (CITYSENSE_MAX_READINGS_PER_MESSAGE)
UNKNOWN = "unknown"  # the profile tag of a dead letter of a device the registry does not know
DAY_MS = 86_400_000

# Vendor devices added to the sample city for this test: LUMIO LC-300 lamp controllers.
LUMIO = tuple(f"LUM-{n:06d}" for n in range(1, 41))
# The lumio variant's value maps, as its profile file states them.
LUMIO_STATE = {1: "on", 0: "off", 2: "low", 9: "bootingUp"}
LUMIO_HEALTH = {"OK": "ok", "LAMP_FAIL": "defectiveLamp", "POLE": "columnIssue"}
LUMIO_HEALTH["LANTERN"] = "brokenLantern"

# Line-protocol and InfluxQL metacharacters, and look-alikes, for ids, keys and values.
META = (",", "=", " ", '"', "'", "\\", "\n", "\r", "\t", "#", "$", ";", "*", "\u00a0", "\u200b")


@dataclass(frozen=True, slots=True)
class Stored:
    measurement: str
    device_id: str
    time_ns: int | None  # None: the reading had no timestamp; ingest stamps its receive time
    values: dict[str, Value]


@dataclass(frozen=True, slots=True)
class Letter:
    reason: str
    profile: str  # the dead letter's profile tag
    device_id: str
    payload: bytes  # the whole message, or the one bad reading of an array as orjson writes it


@dataclass(eq=False, slots=True)
class Message:
    kind: str
    topic: str
    payload: bytes
    stored: tuple[Stored, ...] = ()
    letters: tuple[Letter, ...] = ()
    follows: Message | None = None  # published only after this one (duplicates, conflicts)


@dataclass(slots=True)
class FuzzSet:
    messages: list[Message] = field(default_factory=list)

    @property
    def stored(self) -> list[Stored]:
        return [s for m in self.messages for s in m.stored]

    @property
    def letters(self) -> list[Letter]:
        return [letter for m in self.messages for letter in m.letters]

    @property
    def bad(self) -> list[Message]:
        return [m for m in self.messages if m.letters]


def write_registry(path: Path) -> None:
    """The sample city's registry plus the lumio lamp controllers, with a `variant` column."""
    with DEFAULT_REGISTRY.open(newline="", encoding="utf-8") as src:
        rows = list(csv.DictReader(src))
    districts = sorted({r["district"] for r in rows})
    with path.open("w", newline="", encoding="utf-8") as out:
        columns = [*rows[0].keys(), "variant"]
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows({**r, "variant": ""} for r in rows)
        for n, device_id in enumerate(LUMIO):
            writer.writerow(
                {
                    "device_id": device_id,
                    "profile": "streetlight",
                    "district": districts[n % len(districts)],
                    "latitude": "30.25",
                    "longitude": "120.15",
                    "address": f"{n} Lumio Rd",
                    "variant": "lumio",
                }
            )


def load_city(path: Path) -> Registry:
    return load_registry(path, PROFILES, load_variants(DEFAULT_PROFILES, PROFILES))


# --- the builder ---------------------------------------------------------------------------------


class Fuzz:
    def __init__(self, root: str, registry: Registry, seed: int, now_ms: int) -> None:
        self.rng = random.Random(seed)
        self.layout = TopicLayout(root)
        self.registry = registry
        self.now_ms = now_ms
        self.devices = {
            p: sorted(d.device_id for d in registry.of(p) if not d.variant) for p in PROFILES
        }
        self._next_ms = (now_ms - 3 * DAY_MS) // 1000 * 1000
        # Devices whose readings carry no timestamp: each used once, so receive-time stamps
        # can never collide on one device.
        self._unstamped = [d for p in PROFILES for d in self.devices[p][-60:]]
        self.out = FuzzSet()

    # -- small pieces -----------------------------------------------------------------------------

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[self.rng.randrange(len(seq))]

    def ts_ms(self) -> int:
        """A fresh whole-second instant, never used before in this set."""
        self._next_ms += 1000
        return self._next_ms

    def hex(self, n: int) -> str:
        return self.rng.randbytes(n).hex()

    def form(self) -> TsForm:
        return self.rng.choice(list(TsForm))

    def profile(self, *, stateful: bool = False) -> str:
        return "streetlight" if stateful else self.pick(sorted(PROFILES))

    def device(self, profile: str) -> str:
        return str(self.pick(self.devices[profile]))

    def topic(self, profile: str, device_id: str) -> str:
        return self.layout.telemetry(profile, device_id)

    def values(self, profile: str, *, full: bool = False) -> dict[str, Value]:
        """A valid reading's fields: the required ones and a random handful of the others."""
        out: dict[str, Value] = {}
        for name, spec in PROFILES[profile].fields.items():
            if not (spec.required or full or self.rng.random() < 0.4):
                continue
            if spec.type is FieldType.NUMBER:
                lo, hi = spec.range or (-1e6, 1e6)
                out[name] = round(self.rng.uniform(lo, hi), 3)
            elif spec.type is FieldType.INTEGER:
                lo, hi = spec.range or (-1000, 1000)
                out[name] = self.rng.randint(int(lo), int(hi))
            elif spec.type is FieldType.BOOLEAN:
                out[name] = self.rng.random() < 0.5
            elif spec.type is FieldType.STATE:
                out[name] = self.pick(spec.values or ())
            else:
                out[name] = "text"
        return out

    def reading(
        self, profile: str, device_id: str, *, form: TsForm | None = None
    ) -> tuple[Doc, Stored]:
        ms = self.ts_ms()
        values = self.values(profile)
        doc: Doc = {"ts": encode(form or self.form(), ms), **values}
        return doc, Stored(profile, device_id, ms * 1_000_000, values)

    def add(self, message: Message) -> Message:
        self.out.messages.append(message)
        return message

    def letter(
        self, reason: str, topic_profile: str, device_id: str, payload: bytes
    ) -> tuple[Letter]:
        # Filed under the registry's profile of the device, never the topic's (which the
        # publisher chooses); a device the registry does not know is the city's: unknown.
        del topic_profile
        device = self.registry.get(device_id)
        profile = device.profile if device is not None else UNKNOWN
        return (Letter(reason, profile, device_id, payload),)

    def rejected(
        self, kind: str, reason: str, profile: str, device_id: str, payload: bytes
    ) -> Message:
        """One message, one dead letter of `reason` carrying the whole payload."""
        topic = self.topic(profile, device_id)
        letters = self.letter(reason, profile, device_id, payload)
        return self.add(Message(kind, topic, payload, letters=letters))

    def bad_doc(self, kind: str, reason: str, profile: str, device_id: str, doc: object) -> None:
        self.rejected(kind, reason, profile, device_id, orjson.dumps(doc))

    # -- valid ------------------------------------------------------------------------------------

    def valid(self) -> Message:
        profile = self.profile()
        device_id = self.device(profile)
        doc, stored = self.reading(profile, device_id)
        payload = orjson.dumps(doc)
        return self.add(Message("valid", self.topic(profile, device_id), payload, (stored,)))

    def valid_array(self) -> None:
        profile = self.profile()
        device_id = self.device(profile)
        pairs = [self.reading(profile, device_id) for _ in range(self.rng.randint(2, 6))]
        payload = orjson.dumps([doc for doc, _ in pairs])
        stored = tuple(s for _, s in pairs)
        self.add(Message("valid_array", self.topic(profile, device_id), payload, stored))

    def valid_extra_keys(self) -> None:
        """Keys no profile knows, full of metacharacters: ignored, never a field or a tag."""
        profile = self.profile()
        device_id = self.device(profile)
        doc, stored = self.reading(profile, device_id)
        extras: Doc = {
            "district": "Evil,district=x",
            "a,b": 1,
            "a=b": 2,
            "a b": 3,
            'a"b': 4,
            "a\\": 5,
            "new\nline": 6,
            f"{self.pick(sorted(stored.values))} ": 7,  # a field name plus a space
            "pressure,device_id=forged": 8,
            "x=1 y=2": "z",
            "\u00e9t\u00e9 \U0001f600": "\U0001f600",
            "time": 1,
            "nested": {"powerState": "off", "pressure": 1, "deeper": [[1, 2], {"k": None}]},
            "": 9,
        }
        keys = self.rng.sample(sorted(extras), self.rng.randint(3, len(extras)))
        doc.update({k: extras[k] for k in keys})
        topic = self.topic(profile, device_id)
        self.add(Message("valid_extra_keys", topic, orjson.dumps(doc), (stored,)))

    def valid_own_device_id(self) -> None:
        profile = self.profile()
        device_id = self.device(profile)
        doc, stored = self.reading(profile, device_id)
        doc["device_id"] = device_id
        topic = self.topic(profile, device_id)
        self.add(Message("valid_own_device_id", topic, orjson.dumps(doc), (stored,)))

    def valid_without_ts(self) -> None:
        """The shipped profiles stamp a reading without a timestamp (or a null one) with the
        time ingest received it."""
        device_id = self._unstamped.pop()
        profile = self.registry.devices[device_id].profile
        values = self.values(profile)
        doc: Doc = {"ts": None, **values} if self.rng.random() < 0.3 else dict(values)
        stored = Stored(profile, device_id, None, values)
        topic = self.topic(profile, device_id)
        self.add(Message("valid_without_ts", topic, orjson.dumps(doc), (stored,)))

    def valid_integral_float(self) -> None:
        """An integer field sent as 42.0 by float-only firmware is the integer 42; a number sent
        as an integer is stored as a float (SHOW FIELD KEYS checks the types)."""
        device_id = self.device("water_pipe")
        ms = self.ts_ms()
        rssi = self.rng.randint(-140, 0)
        pressure = self.rng.randint(0, 2500)
        doc = {"ts": ms, "pressure": pressure, "rssi": float(rssi)}
        stored = Stored(
            "water_pipe", device_id, ms * 1_000_000, {"pressure": pressure, "rssi": rssi}
        )
        topic = self.topic("water_pipe", device_id)
        self.add(Message("valid_integral_float", topic, orjson.dumps(doc), (stored,)))

    def valid_depth_limit(self) -> None:
        """Nested exactly as deep as allowed (the reading object counts as one level)."""
        profile = self.profile()
        device_id = self.device(profile)
        doc, stored = self.reading(profile, device_id)
        payload = with_blob(doc, nested(MAX_DEPTH - 1, self.rng))
        topic = self.topic(profile, device_id)
        self.add(Message("valid_depth_limit", topic, payload, (stored,)))

    def valid_size_limit(self) -> None:
        """Exactly the size limit: still taken."""
        profile = self.profile()
        device_id = self.device(profile)
        doc, stored = self.reading(profile, device_id)
        payload = pad(doc, MAX_PAYLOAD)
        topic = self.topic(profile, device_id)
        self.add(Message("valid_size_limit", topic, payload, (stored,)))

    def valid_max_readings(self) -> None:
        """As many readings in one array as allowed."""
        device_id = self.device("water_pipe")
        docs, stored = [], []
        for _ in range(MAX_READINGS):
            ms = self.ts_ms()
            pressure = round(self.rng.uniform(0, 2500), 1)
            docs.append({"ts": ms // 1000, "pressure": pressure})
            stored.append(Stored("water_pipe", device_id, ms * 1_000_000, {"pressure": pressure}))
        payload = orjson.dumps(docs)
        assert len(payload) <= MAX_PAYLOAD
        topic = self.topic("water_pipe", device_id)
        self.add(Message("valid_max_readings", topic, payload, tuple(stored)))

    def lumio_reading(self, device_id: str) -> tuple[Doc, Stored]:
        """A LUMIO LC-300 payload and the canonical reading it must become."""
        ms = self.ts_ms()
        state = self.pick(sorted(LUMIO_STATE))
        doc: Doc = {"time": encode(self.form(), ms), "lamp": {"state": state}}
        values: dict[str, Value] = {"powerState": LUMIO_STATE[state]}
        rng = self.rng
        if rng.random() < 0.7:
            dim = rng.randint(0, 100)
            doc["lamp"]["dim_pct"] = dim
            values["illuminanceLevel"] = dim / 100
        meter: Doc = {}
        if rng.random() < 0.7:
            watts = round(rng.uniform(0, 1000), 1)
            meter["p_w"] = watts
            values["powerConsumption"] = watts
        if rng.random() < 0.7:
            milliamps = rng.randint(0, 20_000)
            meter["i_ma"] = milliamps
            values["current"] = milliamps / 1000
        if rng.random() < 0.5:
            volts = round(rng.uniform(0, 400), 1)
            meter["u_v"] = volts
            values["voltage"] = volts
        if rng.random() < 0.5:
            percent = rng.randint(0, 100)
            meter["pf_pct"] = percent
            values["powerFactor"] = percent / 100
        if rng.random() < 0.5:
            watt_hours = rng.randint(0, 10**9)
            meter["e_wh"] = watt_hours
            values["lifetimePowerConsumption"] = watt_hours / 1000
        if meter:
            doc["meter"] = meter
        if rng.random() < 0.5:
            celsius = round(rng.uniform(-40, 60), 1)
            doc["env"] = {"t_c": celsius}
            values["temperature"] = celsius
        if rng.random() < 0.5:
            door = self.pick(["open", "closed"])
            doc["cabinet"] = {"door": door}
            values["doorOpen"] = door == "open"
        if rng.random() < 0.5:
            health = self.pick(sorted(LUMIO_HEALTH))
            doc["health"] = health
            values["status"] = LUMIO_HEALTH[health]
        return doc, Stored("streetlight", device_id, ms * 1_000_000, values)

    def valid_lumio(self) -> None:
        device_id = self.pick(LUMIO)
        doc, stored = self.lumio_reading(device_id)
        topic = self.topic("streetlight", device_id)
        self.add(Message("valid_lumio", topic, orjson.dumps(doc), (stored,)))

    # -- the whole message is bad -----------------------------------------------------------------

    def good_payload(self) -> tuple[str, str, bytes]:
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        body = doc if self.rng.random() < 0.7 else [doc, self.reading(profile, device_id)[0]]
        return profile, device_id, orjson.dumps(body)

    def invalid_json(self) -> None:
        profile, device_id, good = self.good_payload()
        rng = self.rng
        variants: list[Callable[[], bytes]] = [
            lambda: good[: rng.randrange(1, len(good))],  # cut short
            lambda: good[:-1] + b"," + good[-1:],  # trailing comma
            lambda: repr(orjson.loads(good)).encode(),  # a Python repr
            lambda: self.pick(GARBAGE),
            lambda: b"",
            lambda: b"\xef\xbb\xbf" + good,  # a UTF-8 byte order mark
            lambda: good + good,  # two documents
            lambda: good + b"}",
            lambda: good + b"\x00",
            lambda: b"// reading\n" + good,
            lambda: good.replace(b'"ts"', b"ts", 1),  # unquoted key
            lambda: good.replace(b'"', b"'"),
            lambda: b'{"ts": 0x1F, "pressure": 1}',
            lambda: b'{"pressure": 0300}',
            lambda: b'{"pressure": +1}',
            lambda: b'{"pressure": .5}',
            lambda: b'{"pressure": 1.}',
            lambda: self.pick([b'{"pressure": nan}', b'{"pressure": -NaN}', b'{"p": inf}']),
            lambda: b'{"pressure": infinity}',
            lambda: b'{"powerState": "o\x01n"}',  # a raw control character in a string
            lambda: b'{"powerState": "on\n"}',  # a raw newline in a string
            lambda: b'{"powerState": "on}',
            lambda: self.pick([b"undefined", b"True", b"None", b"{", b"[", b"]", b"}", b","]),
            lambda: b"<reading><ts>1</ts></reading>",
            lambda: b"ts=1,pressure=300",
            lambda: b'{"pressure": 1 "flow": 2}',
            lambda: b'{"pressure" 1}',
            lambda: b'{"pressure": "\\x41"}',  # not a JSON escape
            lambda: b'{"pressure": "\\u12"}',
        ]
        payload = self.pick(variants)()
        self.rejected("invalid_json", "invalid_json", profile, device_id, payload)

    def invalid_utf8(self) -> None:
        profile, device_id, good = self.good_payload()
        at = self.rng.randrange(len(good) + 1)
        bad_bytes = [
            b"\xff",
            b"\xfe",
            b"\xb0",  # Latin-1 degree sign
            b"\xc0\xaf",  # overlong "/"
            b"\xed\xa0\x80",  # an encoded surrogate
            b"\xf4\x90\x80\x80",  # beyond U+10FFFF
            b"\xe2\x82",  # cut short
            b"\x80",
        ]
        variants: list[Callable[[], bytes]] = [
            lambda: good[:at] + self.pick(bad_bytes) + good[at:],
            lambda: good.decode().encode("utf-16"),
            lambda: b'{"unit": "\xb0C", "pressure": 3}',
            lambda: b"\xff" + self.rng.randbytes(self.rng.randrange(0, 300)),
            lambda: good + "\u00e9".encode()[:1],
        ]
        payload = self.pick(variants)()
        self.rejected("invalid_utf8", "invalid_utf8", profile, device_id, payload)

    def non_finite(self) -> None:
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        literal = self.pick([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
        numbers = [k for k, v in doc.items() if type(v) is float]
        where = self.rng.random()
        if where < 0.5 and numbers:
            doc[self.pick(numbers)] = "__NF__"
        elif where < 0.7:
            doc["ts"] = "__NF__"
        else:
            doc["vendor_extra"] = "__NF__"  # even in a key no profile knows
        body: object = doc
        if self.rng.random() < 0.3:
            body = [self.reading(profile, device_id)[0], doc]
        payload = orjson.dumps(body).replace(b'"__NF__"', literal)
        self.rejected("non_finite", "non_finite", profile, device_id, payload)

    def payload_too_large(self) -> None:
        profile, device_id, good = self.good_payload()
        size = self.pick([MAX_PAYLOAD + 1, MAX_PAYLOAD + 2, 70_000, 100_000, 300_000])
        variants: list[Callable[[], bytes]] = [
            lambda: pad({"batch": orjson.loads(good)}, size),
            lambda: b"x" * size,
            lambda: b"\xff" * size,
            lambda: b"[" * size,
            lambda: orjson.dumps([orjson.loads(good)] * 2000)[:size] + b"]",
        ]
        payload = self.pick(variants)()
        assert len(payload) > MAX_PAYLOAD
        self.rejected("payload_too_large", "payload_too_large", profile, device_id, payload)

    def too_deep(self) -> None:
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        rng = self.rng
        variant = rng.randrange(3)
        if variant == 0:  # one level too many inside the reading
            payload = with_blob(doc, nested(MAX_DEPTH, rng))
        elif variant == 1:  # allowed alone, one level too deep inside an array
            payload = b"[" + with_blob(doc, nested(MAX_DEPTH - 1, rng)) + b"]"
        else:
            payload = with_blob(doc, nested(rng.randint(MAX_DEPTH, 900), rng))
        self.rejected("too_deep", "too_deep", profile, device_id, payload)

    def too_deep_recursion(self) -> None:
        """About a thousand levels: still JSON for orjson (its limit is 1024), too deep for
        ingest's depth walk, which recurses to the bottom before it compares with the limit."""
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        payload = with_blob(doc, nested(self.rng.randint(1000, 1020), self.rng))
        self.rejected("too_deep_recursion", "too_deep", profile, device_id, payload)

    def too_deep_beyond_parser(self) -> None:
        """Deeper than orjson's own limit: still too deep, not invalid JSON."""
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        depth = self.rng.randint(1100, 30_000)
        payload = with_blob(doc, b"[" * depth + b"]" * depth)
        self.rejected("too_deep_beyond_parser", "too_deep", profile, device_id, payload)

    def bad_shape(self) -> None:
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        good = orjson.dumps(doc)
        rng = self.rng
        variants: list[Callable[[], bytes]] = [
            lambda: self.pick([b"1", b"-3.5", b"0", b"1e5", b' "on" ', b"true", b"false"]),
            lambda: b"null",
            lambda: b"[]",
            lambda: b" [ ] ",
            lambda: orjson.dumps([rng.random() for _ in range(rng.randint(1, 5))]),
            lambda: b"[" + good + b", 1]",
            lambda: b"[" + good + b", []]",
            lambda: b"[[" + good + b"]]",
            lambda: b"[null]",
            lambda: b'["on", "off"]',
            lambda: orjson.dumps(good.decode()),  # the JSON as a JSON string
            lambda: orjson.dumps([{"pressure": 300}] * (MAX_READINGS + 1)),
        ]
        payload = self.pick(variants)()
        self.rejected("bad_shape", "bad_shape", profile, device_id, payload)

    def bad_topic(self) -> None:
        """Empty topic levels: `+` matches them, ingest's topic layout does not."""
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        payload = orjson.dumps(doc)
        root = self.layout.root
        topic = self.pick(
            [
                f"{root}//{device_id}/telemetry",
                f"{root}/{profile}//telemetry",
                f"{root}///telemetry",
            ]
        )
        letters = (Letter("bad_topic", UNKNOWN, "", payload),)
        self.add(Message("bad_topic", topic, payload, letters=letters))

    def unknown_profile(self) -> None:
        device_id = self.device("streetlight")
        doc, _ = self.reading("streetlight", device_id)
        name = self.pick(
            [
                "nosuch",
                "Streetlight",
                "STREETLIGHT",
                "streetlight ",
                " streetlight",
                "streetlights",
                "street_light",
                "street,light",
                "street light",
                "street=light",
                'street"light',
                "street\\light",
                "streetl\u00edght",
                "dead_letters",
                "_ingested",
                "status",
                "telemetry",
                "$SYS",
                "*",
                "..",
                "x" * 500,
                self.rng.choice("abcdefgh") + self.hex(self.rng.randint(1, 20)),
            ]
        )
        self.bad_doc("unknown_profile", "unknown_profile", name, device_id, doc)

    def unknown_device(self) -> None:
        profile = self.profile()
        known = self.device(profile)
        doc, _ = self.reading(profile, known)
        rng = self.rng
        meta = self.pick(META[:6])  # the ones a topic level may hold
        device_id = self.pick(
            [
                "a,b",
                "a=b",
                "a b",
                'a"b',
                "a\\b",
                "ab\\",
                "\\",
                f"{known},district=evil",
                f'{known} powerState="on"',
                f"{known}\\",
                f"{known} ",
                f" {known}",
                known.lower(),
                known + "0",
                known.replace("0", "\uff10", 1),  # a full-width zero
                "\U0001f4a1",
                "x'y",
                "*",
                "$SYS",
                "device_id",
                "unassigned",
                "a" * 800,
                f"X{meta}Y",
                f"{rng.choice('SWP')}-{rng.randint(10**6, 10**7)}",
                self.hex(rng.randint(1, 30)),
            ]
        )
        assert device_id not in self.registry.devices
        self.bad_doc("unknown_device", "unknown_device", profile, device_id, doc)

    def profile_mismatch(self) -> None:
        registered, published = self.rng.sample(sorted(PROFILES), 2)
        device_id = self.device(registered)
        doc, _ = self.reading(published, device_id)
        self.bad_doc("profile_mismatch", "profile_mismatch", published, device_id, doc)

    def lumio_profile_mismatch(self) -> None:
        """A lumio lamp controller publishing on another profile's topic."""
        device_id = self.pick(LUMIO)
        published = self.pick(["water_pipe", "power_meter"])
        doc, _ = self.reading(published, device_id)
        self.rejected(
            "lumio_profile_mismatch",
            "profile_mismatch",
            published,
            device_id,
            orjson.dumps(doc),
        )

    # -- one reading is bad (alone, or inside an array of good ones) ------------------------------

    def mismatched_id(self, device_id: str) -> object:
        other = self.device(self.profile())
        return self.pick(
            [
                other if other != device_id else device_id + "x",
                device_id.lower(),
                device_id + " ",
                device_id + ",district=x",
                'a"b',
                "",
                123,
                None,
                [device_id],
                {"id": device_id},
                True,
            ]
        )

    def bad_reading(self, reason: str, profile: str, device_id: str) -> Doc:
        """A reading of `profile` that is wrong in exactly one way, the one `reason` names."""
        doc, stored = self.reading(profile, device_id)
        spec = PROFILES[profile]
        rng = self.rng
        ms = stored.time_ns // 1_000_000 if stored.time_ns else self.now_ms
        if reason == "bad_timestamp":
            doc["ts"] = self.bad_timestamp_value(ms)
        elif reason == "timestamp_in_future":
            ahead = self.pick([3_600_000, DAY_MS, 365 * DAY_MS, 3650 * DAY_MS])
            doc["ts"] = self.timestamp_forms(self.now_ms + ahead)
        elif reason == "timestamp_too_old":
            doc["ts"] = self.pick(
                [
                    self.timestamp_forms(self.now_ms - self.pick([31, 60, 365, 3650]) * DAY_MS),
                    0,
                    1,
                    -1,
                    946_684_800,
                    -(2**63),
                    "1970-01-01T00:00:00Z",
                    "0001-01-01T00:00:00+00:00",
                ]
            )
        elif reason == "wrong_type":
            name, value = self.wrong_type(spec)
            doc[name] = value
        elif reason == "out_of_range":
            name, number = self.out_of_range(spec)
            doc[name] = number
        elif reason == "invalid_value":
            doc["powerState"] = self.invalid_state()
        elif reason == "missing_field":
            required = next(n for n, s in spec.fields.items() if s.required)
            value = doc.pop(required)
            if rng.random() < 0.5:
                # the right value under a wrong spelling of the name
                variants = [required.lower(), required.upper(), required + " ", " " + required]
                doc[self.pick([v for v in variants if v != required])] = value
            if rng.random() < 0.1:
                doc = {} if rng.random() < 0.5 else {"ts": doc["ts"]}
        elif reason == "device_id_mismatch":
            doc["device_id"] = self.mismatched_id(device_id)
        else:
            raise AssertionError(reason)
        return doc

    def bad_timestamp_value(self, ms: int) -> object:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
        naive = moment.replace(tzinfo=None)
        return self.pick(
            [
                "yesterday",
                "",
                "now",
                naive.isoformat(),  # no time zone
                naive.isoformat(sep=" "),
                naive.strftime("%d/%m/%Y %H:%M:%S"),
                str(ms // 1000),  # epoch seconds as a string
                str(ms),
                "2026-13-01T00:00:00Z",
                "2026-11-19T25:00:00Z",
                "2026-02-30T10:00:00Z",
                moment.strftime("%Y-%m-%dT23:59:60Z"),  # a leap second
                moment.strftime("%Y-%m-%dT%H:%M:%S+25:00"),
                moment.strftime("%Y-%m-%dT%H:%M:%SZZ"),
                "NaN",
                "Infinity",
                [ms],
                [],
                {"s": ms // 1000},
                True,
                False,
                {"$date": ms},
            ]
        )

    def timestamp_forms(self, ms: int) -> object:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
        east = timezone(timedelta(hours=8))
        return self.pick(
            [
                ms,
                ms // 1000,
                ms / 1000 + 0.25,  # fractional epoch seconds
                moment.isoformat().replace("+00:00", "Z"),
                moment.astimezone(east).isoformat(),
            ]
        )

    def wrong_type(self, spec: Profile) -> tuple[str, object]:
        name = self.pick(sorted(spec.fields))
        kind = spec.fields[name].type
        wrong: dict[FieldType, list[object]] = {
            FieldType.NUMBER: ["12.5", "ERR", "", True, False, None, {}, [], [1.5], {"v": 1}],
            FieldType.INTEGER: [1.5, -70.5, "-70", True, None, [], {"v": -70}],
            FieldType.BOOLEAN: ["true", "false", "yes", 1, 0, 1.0, None, [], {}],
            FieldType.STATE: [1, 0.0, True, None, ["on"], {"v": "on"}],
        }
        return name, self.pick(wrong[kind])

    def out_of_range(self, spec: Profile) -> tuple[str, object]:
        ranged = sorted(n for n, s in spec.fields.items() if s.range is not None)
        name = self.pick(ranged)
        field_spec = spec.fields[name]
        assert field_spec.range is not None
        lo, hi = field_spec.range
        margin = max(1.0, (hi - lo) * self.rng.uniform(0.001, 2))
        if field_spec.type is FieldType.INTEGER:
            candidates: list[object] = [
                int(hi) + 1,
                int(lo) - 1,
                int(hi + margin),
                float(int(hi) + 5),  # an integral float is an integer, and out of range
                2**63,
                -(2**63),
            ]
        else:
            candidates = [
                round(hi + margin, 3),
                round(lo - margin, 3),
                1e308,
                -1e308,
                2**64 - 1,  # a big JSON integer
                -(2**63),
            ]
        return name, self.pick(candidates)

    def invalid_state(self) -> str:
        return str(
            self.pick(
                [
                    "ON",
                    "On",
                    "",
                    " on",
                    "on ",
                    "on,off",
                    'on"',
                    '"on"',
                    "on\n",
                    "on\r\nx=1",
                    "on\\",
                    'on\\"',
                    "on=1",
                    'on",district="evil',
                    "on off",
                    "\u00f6n",
                    "on\u0000",
                    "\u2028on",
                    "on\t",
                    "\U0001f4a1",
                    "on" * 2000,
                    "bootingup",
                    "defectiveLamp",  # a value of another state field
                ]
            )
        )

    READING_REASONS = (
        "bad_timestamp",
        "timestamp_in_future",
        "timestamp_too_old",
        "wrong_type",
        "out_of_range",
        "invalid_value",
        "missing_field",
        "device_id_mismatch",
    )

    def one_bad_reading(self, reason: str) -> None:
        profile = self.profile(stateful=reason == "invalid_value")
        device_id = self.device(profile)
        doc = self.bad_reading(reason, profile, device_id)
        self.bad_doc(reason, reason, profile, device_id, doc)

    def bad_in_array(self) -> None:
        """One bad reading among good ones: the good ones stored, the bad one dead-lettered."""
        reason = self.pick(self.READING_REASONS)
        profile = self.profile(stateful=reason == "invalid_value")
        device_id = self.device(profile)
        good = [self.reading(profile, device_id) for _ in range(self.rng.randint(1, 5))]
        bad = self.bad_reading(reason, profile, device_id)
        docs = [doc for doc, _ in good]
        docs.insert(self.rng.randrange(len(docs) + 1), bad)
        topic = self.topic(profile, device_id)
        letters = self.letter(reason, profile, device_id, orjson.dumps(bad))
        stored = tuple(s for _, s in good)
        self.add(Message(f"array_{reason}", topic, orjson.dumps(docs), stored, letters))

    def huge_float_timestamp(self) -> None:
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        value = self.pick([1e306, 1.7976931348623157e308, 5e305, -1e306, -1.7e308])
        doc["ts"] = value
        reason = "timestamp_in_future" if value > 0 else "timestamp_too_old"
        self.rejected("huge_float_ts", reason, profile, device_id, orjson.dumps(doc))

    def lone_surrogate(self) -> None:
        profile = self.profile()
        device_id = self.device(profile)
        doc, _ = self.reading(profile, device_id)
        doc["label"] = "__S__"
        escape = self.pick([b'"\\ud800"', b'"\\udfff"', b'"x\\ud83dy"'])
        payload = orjson.dumps(doc).replace(b'"__S__"', escape)
        self.rejected("lone_surrogate", "invalid_json", profile, device_id, payload)

    def lumio_bad(self) -> None:
        device_id = self.pick(LUMIO)
        doc, _ = self.lumio_reading(device_id)
        rng = self.rng
        reason, change = self.pick(
            [
                ("wrong_type", lambda: doc["lamp"].update(state=self.pick([7, 3, True, None]))),
                ("invalid_value", lambda: doc["lamp"].update(state=self.pick(["7", "ON", ""]))),
                ("invalid_value", lambda: doc.update(health=self.pick(["BROKEN", "ok "]))),
                (
                    "out_of_range",
                    lambda: doc.setdefault("meter", {}).update(i_ma=rng.randint(20_001, 10**6)),
                ),
                ("out_of_range", lambda: doc["lamp"].update(dim_pct=rng.randint(101, 1000))),
                ("wrong_type", lambda: doc.setdefault("meter", {}).update(i_ma="550")),
                ("wrong_type", lambda: doc.update(cabinet={"door": "ajar"})),
                ("missing_field", lambda: doc.pop("lamp")),
                ("missing_field", lambda: doc.update(lamp="on")),
                ("bad_timestamp", lambda: doc.update(time="yesterday")),
            ]
        )
        change()
        self.bad_doc(f"lumio_{reason}", reason, "streetlight", device_id, doc)

    # -- repeats ----------------------------------------------------------------------------------

    def original(self) -> tuple[Message, Doc, Stored, TsForm]:
        profile = self.profile()
        device_id = self.device(profile)
        form = self.form()
        doc, stored = self.reading(profile, device_id, form=form)
        topic = self.topic(profile, device_id)
        message = self.add(Message("valid_original", topic, orjson.dumps(doc), (stored,)))
        return message, doc, stored, form

    def same_instant(self, stored: Stored, form: TsForm) -> object:
        """The original's instant, maybe written in another form or time zone."""
        assert stored.time_ns is not None
        ms = stored.time_ns // 1_000_000
        moment = datetime.fromtimestamp(ms / 1000, UTC)
        return self.pick(
            [
                encode(form, ms),
                ms,
                ms // 1000,
                moment.isoformat(),
                moment.astimezone(timezone(timedelta(hours=-5))).isoformat(),
            ]
        )

    def duplicate(self) -> None:
        first, doc, stored, form = self.original()
        payload = first.payload
        if self.rng.random() < 0.5:
            # The same reading, written differently: other timestamp form, other key order,
            # keys no profile knows.
            again = {k: doc[k] for k in self.rng.sample(sorted(doc), len(doc))}
            again["ts"] = self.same_instant(stored, form)
            if self.rng.random() < 0.5:
                again["firmware"] = "4.2.1"
            payload = orjson.dumps(again)
        letters = self.letter("duplicate", stored.measurement, stored.device_id, payload)
        self.add(Message("duplicate", first.topic, payload, letters=letters, follows=first))

    def timestamp_conflict(self) -> None:
        first, doc, stored, form = self.original()
        again = dict(doc)
        again["ts"] = self.same_instant(stored, form)
        optional = [n for n, s in PROFILES[stored.measurement].fields.items() if not s.required]
        while True:
            fresh = self.values(stored.measurement, full=True)
            choice = self.rng.random()
            if choice < 0.6:
                name = self.pick(sorted(stored.values))  # another value for a field
                again[name] = fresh[name]
            elif choice < 0.8:
                name = self.pick(optional)  # one field more
                again[name] = fresh[name]
            else:
                extra = [n for n in stored.values if n in optional]  # one field less
                if extra:
                    again.pop(self.pick(extra))
            canonical = {k: v for k, v in again.items() if k != "ts"}
            if canonical != stored.values:
                break
            again = dict(doc)
        payload = orjson.dumps(again)
        letters = self.letter("timestamp_conflict", stored.measurement, stored.device_id, payload)
        self.add(
            Message("timestamp_conflict", first.topic, payload, letters=letters, follows=first)
        )

    def repeat_in_array(self) -> None:
        """A reading twice in one array (a duplicate), or twice with other values (a conflict)."""
        profile = self.profile(stateful=True)  # powerState can always be changed
        device_id = self.device(profile)
        pairs = [self.reading(profile, device_id) for _ in range(self.rng.randint(2, 4))]
        docs = [doc for doc, _ in pairs]
        repeated = dict(self.pick(docs))
        if self.rng.random() < 0.5:
            reason = "duplicate"
        else:
            reason = "timestamp_conflict"
            states = PROFILES[profile].fields["powerState"].values or ()
            repeated["powerState"] = self.pick([s for s in states if s != repeated["powerState"]])
        where = docs.index(next(d for d in docs if d["ts"] == repeated["ts"]))
        docs.insert(self.rng.randint(where + 1, len(docs)), repeated)
        topic = self.topic(profile, device_id)
        letters = self.letter(reason, profile, device_id, orjson.dumps(repeated))
        stored = tuple(s for _, s in pairs)
        self.add(Message(f"array_{reason}", topic, orjson.dumps(docs), stored, letters))

    # -- the simulator's city ---------------------------------------------------------------------

    def simulated_city(self, seed: int) -> None:
        devices = [d for d in self.registry.devices.values() if not d.variant]
        for sim in generate(
            devices,
            PROFILES,
            self.layout,
            readings_per_device=2,
            array_ratio=0.3,
            max_array=2,
            seed=seed,
            end_ms=self.now_ms - 6 * 3_600_000,
        ):
            stored = tuple(
                Stored(r.profile, r.device_id, r.time_ns, dict(r.values)) for r in sim.readings
            )
            assert not sim.rejections
            self.add(Message("simulated", sim.topic, sim.payload, stored))


def nested(depth: int, rng: random.Random) -> bytes:
    """JSON text `depth` levels deep (1 = one array or object around a scalar). Written as text:
    orjson itself refuses to write or read much deeper than a few hundred levels."""
    opening = [rng.random() < 0.5 for _ in range(depth)]
    head = b"".join(b"[" if array else b'{"k":' for array in opening)
    tail = b"".join(b"]" if array else b"}" for array in reversed(opening))
    return head + rng.choice([b"1", b'"x"', b"null", b"true"]) + tail


def with_blob(doc: Doc, blob: bytes) -> bytes:
    """`doc` with one more key no profile knows, holding the JSON text `blob`."""
    return orjson.dumps({**doc, "blob": "__BLOB__"}).replace(b'"__BLOB__"', blob)


def pad(doc: object, size: int) -> bytes:
    """`doc` (an object) with a padding key no profile knows, `size` bytes in all."""
    assert isinstance(doc, dict)
    bare = orjson.dumps({**doc, "padding": ""})
    payload = orjson.dumps({**doc, "padding": "p" * (size - len(bare))})
    assert len(payload) == size
    return payload


# Bad messages per kind; about 10,900 in all.
PLAN: tuple[tuple[str, int], ...] = (
    ("invalid_json", 700),
    ("invalid_utf8", 450),
    ("non_finite", 500),
    ("payload_too_large", 60),
    ("too_deep", 450),
    ("bad_shape", 500),
    ("bad_topic", 150),
    ("unknown_profile", 400),
    ("unknown_device", 800),
    ("profile_mismatch", 400),
    ("device_id_mismatch", 400),
    ("bad_timestamp", 600),
    ("timestamp_in_future", 450),
    ("timestamp_too_old", 450),
    ("wrong_type", 700),
    ("out_of_range", 700),
    ("invalid_value", 500),
    ("missing_field", 450),
    ("duplicate", 400),
    ("timestamp_conflict", 400),
    ("bad_in_array", 600),
    ("repeat_in_array", 200),
    ("lumio_bad", 250),
    ("huge_float_timestamp", 10),
    ("lone_surrogate", 10),
    ("too_deep_recursion", 10),
    ("too_deep_beyond_parser", 10),
    ("lumio_profile_mismatch", 10),
)
# Valid messages made here (the simulated city adds about 4,600 more).
VALID: tuple[tuple[str, int], ...] = (
    ("valid", 400),
    ("valid_array", 200),
    ("valid_extra_keys", 300),
    ("valid_own_device_id", 60),
    ("valid_without_ts", 120),
    ("valid_integral_float", 40),
    ("valid_depth_limit", 40),
    ("valid_size_limit", 3),
    ("valid_max_readings", 1),
    ("valid_lumio", 200),
)


def build(
    root: str,
    registry: Registry,
    *,
    seed: int,
    kinds: Sequence[tuple[str, int]] = (*VALID, *PLAN),
    simulated: bool = True,
    now_ms: int | None = None,
) -> FuzzSet:
    """Every message in publishing order: shuffled with `seed`, a repeat after its original.

    `kinds` says how many messages of each kind (a Fuzz method, or a reading-level reason code);
    `simulated` adds the simulated city's valid messages.
    """
    fuzz = Fuzz(root, registry, seed, time.time_ns() // 1_000_000 if now_ms is None else now_ms)
    if simulated:
        fuzz.simulated_city(seed)
    for name, n in kinds:
        for _ in range(n):
            if name in Fuzz.READING_REASONS:
                fuzz.one_bad_reading(name)
            else:
                getattr(fuzz, name)()
    messages = fuzz.out.messages
    fuzz.rng.shuffle(messages)
    position = {id(m): i for i, m in enumerate(messages)}
    for i, message in enumerate(messages):
        if message.follows is not None:
            j = position[id(message.follows)]
            if j > i:  # the original would come later: swap the two
                messages[i], messages[j] = messages[j], messages[i]
                position[id(messages[i])], position[id(messages[j])] = i, j
    for i, message in enumerate(messages):
        assert message.follows is None or position[id(message.follows)] < i
    return fuzz.out


# --- what the broker itself refuses --------------------------------------------------------------

# Topic levels MQTT forbids in a PUBLISH (wildcards) or that are not valid UTF-8 text: the broker
# drops the connection, so they can never reach ingest.
FORBIDDEN_LEVELS: tuple[bytes, ...] = (
    b"+",
    b"#",
    b"a+b",
    b"a#b",
    b"a\nb",
    b"a\x00b",
    b"a\x01b",
    b"\xff",
    b"\xed\xa0\x80",
)


def raw_publish(host: str, port: int, username: str, password: str, topic: bytes) -> str:
    """One MQTT 3.1.1 PUBLISH (QoS 1) written by hand, so that no client library can refuse the
    topic first. What the broker did: "puback", "closed" or "silent"."""

    def text(data: bytes) -> bytes:
        return struct.pack("!H", len(data)) + data

    def packet(kind: int, body: bytes) -> bytes:
        length, remaining = b"", len(body)
        while True:
            remaining, digit = divmod(remaining, 128)
            length += bytes([digit | (0x80 if remaining else 0)])
            if not remaining:
                return bytes([kind]) + length + body

    client_id = f"fuzz-raw-{secrets.token_hex(4)}".encode()
    connect = text(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    connect += text(client_id) + text(username.encode()) + text(password.encode())
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(packet(0x10, connect))
        connack = sock.recv(4)
        assert connack[:2] == b"\x20\x02" and connack[3] == 0, connack
        sock.sendall(packet(0x32, text(topic) + struct.pack("!H", 1) + b'{"powerState": "on"}'))
        try:
            answer = sock.recv(4)
        except TimeoutError:
            return "silent"
        except ConnectionResetError:
            return "closed"
    if not answer:
        return "closed"
    return "puback" if answer[0] == 0x40 else f"unexpected {answer!r}"


def summary(messages: Sequence[Message]) -> Iterator[str]:
    """Lines describing the set, for the test's log."""
    kinds = Counter(m.kind for m in messages)
    for kind, n in sorted(kinds.items()):
        yield f"{kind}: {n}"
