"""One MQTT message through the stages: decode → normalize → validate → enrich → encode → dedupe.

`Pipeline.process` never raises: whatever a device sends ends as data lines, dead-letter lines,
or both, and every rejection is counted. Even a bug of ours becomes an `internal_error` dead
letter rather than a lost message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from device_profiles import Device, Profile, Registry, Variant
from ingest.compiled import Compiled, compile_profile
from ingest.deadletter import DeadLetterEncoder
from ingest.decode import UNKNOWN, DecodeLimits, decode, decode_payload
from ingest.dedupe import Seen
from ingest.encode import ReadingEncoder
from ingest.enrich import enrich
from ingest.normalize import Normalizer
from ingest.stages import Enriched, Outcome, Received, Rejected
from ingest.stats import Stats
from ingest.unknown import UnknownFields
from ingest.validate import CompiledProfile, Invalid, validate
from wire.lineproto import EncodeError
from wire.reasons import Reason
from wire.topics import TopicLayout

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Route:
    """What every message on one topic shares, when the topic is a registered device's own
    profile's: looked up once per topic, not for every message (parsing the topic, the profile,
    the registry, the variant, the compiled function, the device's series were 3-4 µs a message
    of lookups and calls; py-spy of a worker draining a backlog)."""

    measurement: str  # the profile's name
    device_id: str
    device: Device
    normalize: Normalizer | None
    fast: Compiled | None
    series: str  # measurement and tags as line protocol


class Pipeline:
    def __init__(
        self,
        profiles: Mapping[str, Profile],
        registry: Registry,
        layout: TopicLayout,
        stats: Stats,
        *,
        limits: DecodeLimits | None = None,
        dead_letters: DeadLetterEncoder | None = None,
        variants: Mapping[tuple[str, str], Variant] | None = None,
        accept_unknown_devices: bool = False,
        seen: Seen | None = None,
        unknown: UnknownFields | None = None,
    ) -> None:
        self.unknown = UnknownFields() if unknown is None else unknown
        self._profiles = profiles
        self._normalizers = {
            key: Normalizer(variant, profiles[variant.profile])
            for key, variant in (variants or {}).items()
        }
        self._accept_unknown = accept_unknown_devices
        # `is None`, not `or`: an empty Seen is falsy (it has a length), and a worker's own, given
        # here empty, was once replaced by a default one: its window setting and its forget()
        # of refused readings then went to a Seen nothing read.
        self.seen = Seen() if seen is None else seen
        self._compiled = {name: CompiledProfile.compile(p) for name, p in profiles.items()}
        # Generated per profile (ingest.compiled): accepts what validate accepts whole, at a
        # fraction of its cost; anything else goes the full way, for the precise reason.
        self._fast: dict[str, Compiled | None] = {
            name: compile_profile(p) for name, p in profiles.items()
        }
        self._registry = registry
        # Per topic, what its messages share (_Route), made from this registry.
        self._routing: tuple[Registry, dict[str, _Route]] = (registry, {})
        self._layout = layout
        self._stats = stats
        self._limits = limits or DecodeLimits()
        self._dead = dead_letters or DeadLetterEncoder()
        self._encoder = ReadingEncoder()

    def use_registry(self, registry: Registry) -> None:
        """A newer registry (ingest.registry_watch); each message reads it once, whole, with
        the routes made from it (one assignment: the MQTT thread sees both or neither)."""
        self._routing = (registry, {})
        self._registry = registry

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def measurements(self) -> list[str]:
        """The measurements readings are stored in, one per profile."""
        return [p.measurement for p in self._profiles.values()]

    def process(self, msg: Received) -> Outcome:
        outcome = self._processed(msg)
        # Dead letters last, each with when the message was received (wire.deadletters).
        outcome.lines.extend(self._dead.encode(r, msg.received_ns) for r in outcome.rejected)
        return outcome

    def _processed(self, msg: Received) -> Outcome:
        try:
            return self._process(msg)
        except Exception as exc:  # a bug of ours: keep the message as a dead letter, say why
            log.exception("internal error processing a message on %r", msg.topic)
            rejected = Rejected(
                Reason.INTERNAL_ERROR,
                f"{type(exc).__name__}: {exc}"[:300],
                msg.topic,
                UNKNOWN,
                "",
                msg.payload,
            )
            return self._outcome([], [rejected])

    def _owner(self, device_id: str) -> str:
        """The profile a dead letter of `device_id` is filed under: the registry's, never the
        topic's, which the publisher chooses — else a device could put its payload in another
        department's view. A device the registry does not know: `unknown` (the city's)."""
        device = self._registry.get(device_id)
        return device.profile if device is not None else UNKNOWN

    def _process(self, msg: Received) -> Outcome:
        registry, routes = self._routing  # one registry for the whole message
        route = routes.get(msg.topic)
        if route is not None:
            objects = decode_payload(msg, route.measurement, route.device_id, self._limits)
            if isinstance(objects, Rejected):
                return self._outcome([], [replace(objects, profile=route.device.profile)])
            return self._readings(
                msg, objects, route.measurement, route.device_id, route.device, route=route
            )
        decoded = decode(msg, self._layout, self._profiles, self._limits)
        if isinstance(decoded, Rejected):
            return self._outcome([], [replace(decoded, profile=self._owner(decoded.device_id))])
        device = registry.get(decoded.device_id)  # once per message, not per reading
        if device is not None and device.profile == decoded.profile.profile:
            # A registered device on its own profile's topic: its route is kept for its next
            # messages. At most one per device of this registry (a topic names one profile
            # and one device), and forgotten with the registry (use_registry).
            route = routes[msg.topic] = self._route(decoded.profile, decoded.device_id, device)
        name = decoded.profile.profile
        return self._readings(msg, decoded.objects, name, decoded.device_id, device, route=route)

    def _route(self, profile: Profile, device_id: str, device: Device) -> _Route:
        name = profile.profile
        normalize = None
        if device.variant:
            normalize = self._normalizers[(device.profile, device.variant)]
        series = self._encoder.series_for(device.profile, device_id, device.district)
        fast = self._fast[name]
        return _Route(name, device_id, device, normalize, fast, series)

    def _readings(
        self,
        msg: Received,
        objects: list[dict[str, Any]],
        profile: str,
        device_id: str,
        device: Device | None,
        *,
        route: _Route | None,
    ) -> Outcome:
        """The message's readings, through the compiled path where they can take it (a route:
        a registered device on its own profile's topic), else the full way."""
        compiled = self._compiled[profile]
        normalize = fast = None
        if route is not None:
            # A vendor device on another profile's topic has no route: it is left as it is, so
            # enrich can say profile_mismatch instead of the mapping stripping every field first.
            normalize, fast = route.normalize, route.fast
        lines: list[str] = []
        accepted: list[Enriched] = []
        rejected: list[Rejected] = []
        for obj in objects:
            reading = obj if normalize is None else normalize(obj)
            if msg.retain and reading.get(compiled.ts_field) is None:
                # The broker's kept copy, sent because our subscription is new (the broker lost
                # our session: a stale save, an expiry): stamped with its receive time, a
                # week-old "on" would be stored as the lamp's newest reading.
                result: Invalid | tuple[str, Enriched, list[Invalid]] = Invalid(
                    Reason.RETAINED_WITHOUT_TIMESTAMP,
                    f"a retained message without {compiled.ts_field!r}: published at any time "
                    "before, its receive time is not when it was measured",
                )
            elif (
                fast is not None
                and (accepted_fast := fast(reading, device_id, msg.received_ns)) is not None
                and route is not None
            ):
                result = self._compiled_reading(route, accepted_fast)
            else:
                result = self._reading(compiled, device_id, device, reading, msg.received_ns)
            if isinstance(result, Invalid):
                problems: tuple[Invalid, ...] | list[Invalid] = (result,)
            else:
                line, enriched, problems = result
                lines.append(line)
                accepted.append(enriched)
            if problems:
                # A bad reading inside an array is kept on its own, the rest of the array stored.
                payload = msg.payload if len(objects) == 1 else orjson.dumps(obj)
                owner = self._owner(device_id)
                rejected.extend(
                    Rejected(p.reason, p.detail, msg.topic, owner, device_id, payload)
                    for p in problems
                )
        return self._outcome(lines, rejected, accepted)

    def _compiled_reading(
        self, route: _Route, accepted: tuple[int, dict[str, Any], str]
    ) -> tuple[str, Enriched, list[Invalid]] | Invalid:
        """dedupe → line for a reading the profile's compiled function accepted and encoded."""
        time_ns, fields, encoded = accepted
        device = route.device
        repeat = self._repeat(device.profile, route.device_id, time_ns, encoded)
        if repeat is not None:
            return repeat
        enriched = Enriched(device.profile, route.device_id, device.district, time_ns, fields)
        return f"{route.series} {encoded} {time_ns}", enriched, []

    def _repeat(
        self, measurement: str, device_id: str, time_ns: int, fields: str
    ) -> Invalid | None:
        repeat = self.seen.check(measurement, device_id, time_ns, fields)
        if repeat == "duplicate":
            return Invalid(Reason.DUPLICATE, "this reading was already accepted")
        if repeat == "conflict":
            detail = "another reading was already accepted with this device timestamp"
            return Invalid(Reason.TIMESTAMP_CONFLICT, detail)
        return None

    def _reading(
        self,
        compiled: CompiledProfile,
        device_id: str,
        device: Device | None,
        obj: dict[str, Any],
        received_ns: int,
    ) -> tuple[str, Enriched, list[Invalid]] | Invalid:
        """validate → enrich → encode → dedupe for one reading: its line, or why not."""
        reading = validate(compiled, device_id, obj, received_ns)
        if isinstance(reading, Invalid):
            return reading
        if reading.sentinels:
            self._stats.add(sentinel_values=reading.sentinels)
        if reading.unknown:
            self.unknown.note(reading.profile, device_id, reading.unknown)
        enriched = enrich(reading, device, accept_unknown=self._accept_unknown)
        if isinstance(enriched, Invalid):
            return enriched
        try:
            line = self._encoder.encode(enriched, keep=device is not None)
        except EncodeError as exc:
            return Invalid(Reason.INVALID_VALUE, str(exc))
        # Encoded in the profile's order for dedupe's digest; the line encoded, this cannot fail.
        order = self._profiles[enriched.measurement].fields
        digest_text = self._encoder.fields_in_order(enriched.fields, order)
        repeat = self._repeat(
            enriched.measurement, enriched.device_id, enriched.time_ns, digest_text
        )
        if repeat is not None:
            return repeat
        return line, enriched, [Invalid(reason, detail) for reason, detail in reading.dropped]

    def _outcome(
        self, lines: list[str], rejected: list[Rejected], accepted: list[Enriched] | None = None
    ) -> Outcome:
        readings = len(lines)
        for item in rejected:
            self._stats.rejected(item.profile, item.reason)
        return Outcome(lines, readings, rejected, accepted or [])
