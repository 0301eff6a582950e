"""Decode: topic and payload bytes → (profile, device id, raw reading objects), or a Rejected.

Nothing here trusts the device: the payload may be any bytes. The device id comes from the topic,
which the broker's ACL ties to the device's credentials, never from the payload alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from device_profiles import Profile
from ingest.stages import Received, Rejected
from wire.deadletters import UNKNOWN_PROFILE
from wire.reasons import Reason
from wire.topics import TopicLayout

UNKNOWN = UNKNOWN_PROFILE


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_payload_bytes: int = 64 * 1024
    max_depth: int = 8  # nesting of objects/arrays; flat readings need 2
    max_readings: int = 1000  # readings in one array message


@dataclass(frozen=True, slots=True)
class Decoded:
    profile: Profile
    device_id: str
    objects: list[dict[str, Any]]


def _reject(msg: Received, reason: Reason, detail: str, profile: str, device_id: str) -> Rejected:
    return Rejected(reason, detail, msg.topic, profile, device_id, msg.payload)


def _depth(value: object, limit: int) -> int:
    """Nesting depth of a JSON value, giving up as soon as it exceeds `limit`: it never descends
    more than `limit` + 1 levels, so a thousand-deep payload cannot exhaust Python's stack."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return 0
    if limit <= 0:
        return 1  # already past the limit; how much deeper does not matter
    deepest = 0
    for child in children:
        if isinstance(child, dict | list):
            deepest = max(deepest, _depth(child, limit - 1))
            if deepest >= limit:
                break
    return deepest + 1


def _json_failure(payload: bytes) -> tuple[Reason, str]:
    """Name what is wrong with a payload orjson refused (slow path: bad messages only)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reason.INVALID_UTF8, f"payload is not UTF-8 at byte {exc.start}"
    non_finite: list[str] = []

    def constant(name: str) -> float:  # NaN, Infinity, -Infinity
        non_finite.append(name)
        return 0.0

    def number(text: str) -> float:  # 1e400 overflows to infinity
        value = float(text)
        if not math.isfinite(value):
            non_finite.append(text)
        return value

    try:
        # The standard library accepts NaN, Infinity and overflowing numbers, which orjson
        # refuses, and reports each to us; it also parses deeper than orjson's limit.
        json.loads(text, parse_constant=constant, parse_float=number)
    except RecursionError:
        return Reason.TOO_DEEP, "payload nested deeper than any JSON parser here will go"
    except ValueError as exc:
        return Reason.INVALID_JSON, f"payload is not JSON: {exc}"[:200]
    if non_finite:
        return (
            Reason.NON_FINITE,
            f"payload holds {non_finite[0][:20]}, which is not a finite number",
        )
    # Something orjson refuses and the standard library accepts, such as a lone surrogate.
    return Reason.INVALID_JSON, "payload is not valid JSON (e.g. an unpaired surrogate escape)"


def decode(
    msg: Received,
    layout: TopicLayout,
    profiles: Mapping[str, Profile],
    limits: DecodeLimits,
) -> Decoded | Rejected:
    parsed = layout.parse(msg.topic)
    if parsed is None:
        return _reject(
            msg, Reason.BAD_TOPIC, "topic is not <root>/<profile>/<id>/telemetry", UNKNOWN, ""
        )
    profile_name, device_id = parsed
    profile = profiles.get(profile_name)
    if profile is None:
        return _reject(
            msg, Reason.UNKNOWN_PROFILE, f"no profile {profile_name!r}", UNKNOWN, device_id
        )
    objects = decode_payload(msg, profile_name, device_id, limits)
    if isinstance(objects, Rejected):
        return objects
    return Decoded(profile, device_id, objects)


def decode_payload(
    msg: Received, profile_name: str, device_id: str, limits: DecodeLimits
) -> list[dict[str, Any]] | Rejected:
    """The payload's reading objects, the topic already known to name `profile_name` and
    `device_id` (decode, or the pipeline's routes of known topics)."""
    payload = msg.payload
    if len(payload) > limits.max_payload_bytes:
        detail = f"{len(payload)} bytes, limit {limits.max_payload_bytes}"
        return _reject(msg, Reason.PAYLOAD_TOO_LARGE, detail, profile_name, device_id)
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        reason, detail = _json_failure(payload)
        return _reject(msg, reason, detail, profile_name, device_id)
    # Counting brackets is C-speed and settles almost every payload without walking it.
    brackets = payload.count(b"{") + payload.count(b"[")
    if brackets > limits.max_depth and _depth(value, limits.max_depth) > limits.max_depth:
        detail = f"nested deeper than {limits.max_depth}"
        return _reject(msg, Reason.TOO_DEEP, detail, profile_name, device_id)
    if type(value) is dict:  # the common case: one reading
        return [value]
    objects = _as_objects(value, limits)
    if isinstance(objects, str):
        return _reject(msg, Reason.BAD_SHAPE, objects, profile_name, device_id)
    return objects


def _as_objects(value: object, limits: DecodeLimits) -> list[dict[str, Any]] | str:
    """One object, or a non-empty array of objects; a string says what is wrong otherwise."""
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        return f"payload is a JSON {type(value).__name__}, not an object or array of objects"
    if not value:
        return "payload is an empty array"
    if len(value) > limits.max_readings:
        return f"{len(value)} readings in one message, limit {limits.max_readings}"
    if not all(isinstance(item, dict) for item in value):
        return "array holds something other than reading objects"
    return value
