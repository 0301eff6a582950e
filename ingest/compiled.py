"""Compiled: each profile's validation and field encoding as one generated function, for the
readings that pass every check — nearly all of them.

`validate` (ingest.validate) walks a reading key by key through a table of checker closures and
builds a Reading, then `ReadingEncoder` walks the fields again to format them: 25 dict look-ups,
eight closure calls and three objects per reading — 15.4 µs for validate, enrich and encode on the
benchmark's load, against 5.9 µs for the function generated here, which does the same checks for one
profile in straight-line code — one `obj.get` per declared field, the exact type test, the range as
one chained comparison, the field already encoded as line protocol — and returns the fields and
their encoded text together.

It only ever accepts: any reading it is not sure of (a missing required field, a wrong type, a
value out of range, a sentinel, a key the profile does not declare, a timestamp out of bounds,
a `device_id` in the payload) makes it return None, and the reading goes through `validate` as
before, which says precisely why. So a reading it accepts is one `validate` accepts whole, with
the same time and values (tests/unit/test_compiled.py checks this on generated readings of every
profile). Why generated code rather than msgspec or pydantic: those decode into typed objects
but know nothing of the contract's sentinels, timestamp forms and bounds, so the closures would
still run after them; straight-line code written from the profile does it all in one pass.
Profile text never becomes code: names and values reach the function as constants of its
namespace, and the source only refers to them by position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from device_profiles import FieldSpec, FieldType, Profile
from ingest.validate import ALL_FORMS, Invalid, parse_timestamp
from wire.lineproto import EncodeError, FieldValue, string_value, tag

_NS_PER_S = 1_000_000_000
# time_ns, the fields as validate would keep them, and those fields as line protocol.
Accepted = tuple[int, dict[str, FieldValue], str]
Compiled = Callable[[dict[str, Any], str, int], Accepted | None]


def compile_profile(profile: Profile) -> Compiled | None:
    """The profile's generated fast path; None where the profile cannot have one (its names
    cannot be encoded). No field is named like the timestamp or `device_id`: the profile's own
    checks refuse both (device_profiles.model)."""
    env: dict[str, Any] = {"parse_timestamp": parse_timestamp, "Invalid": Invalid}
    policy = profile.timestamp
    env["FORMS"] = frozenset(policy.forms) if policy.forms else ALL_FORMS
    env["FUTURE"] = int(policy.max_future_skew * _NS_PER_S)
    env["AGE"] = int(policy.max_age * _NS_PER_S)
    env["TS"] = policy.field
    code = [
        "def fast(obj, device_id, received_ns):",
        "    found = 0",
        "    raw = obj.get(TS)",
        "    if raw is None:",
        "        "
        + ("time_ns = received_ns" if policy.missing == "receive_time" else "return None"),
        "    else:",
        "        found = 1",
        "        try:",
        "            time_ns = parse_timestamp(raw, FORMS)",
        "        except Invalid:",
        "            return None",
        "        if not received_ns - AGE <= time_ns <= received_ns + FUTURE:",
        "            return None",
        "    if 'device_id' in obj:",
        "        return None",
        "    fields = {}",
        "    parts = []",
    ]
    try:
        for n, (name, spec) in enumerate(profile.fields.items()):
            code += _field(n, name, spec, env)
    except EncodeError:
        return None
    code += [
        "    if found != len(obj) or not fields:",
        "        return None",
        "    return time_ns, fields, ','.join(parts)",
    ]
    exec(compile("\n".join(code), f"<compiled profile {profile.profile}>", "exec"), env)  # noqa: S102
    fast: Compiled = env["fast"]
    return fast


def _field(n: int, name: str, spec: FieldSpec, env: dict[str, Any]) -> list[str]:
    """The lines checking and encoding field number `n` (its constants put in `env`)."""
    env[f"N{n}"] = name
    env[f"K{n}"] = tag(name) + "="
    code = [f"    v = obj.get(N{n}, obj)", "    if v is obj:"]
    code.append("        return None" if spec.required else "        pass")
    code.append("    else:")
    if spec.sentinels:
        env[f"S{n}"] = frozenset(spec.sentinels)
        code.append(f"        if type(v) in (int, float, str) and v in S{n}:")
        code.append("            return None")
    code += [f"        {line}" for line in _check(n, spec, env)]
    code += [f"        fields[N{n}] = v", "        found += 1"]
    return code


def _check(n: int, spec: FieldSpec, env: dict[str, Any]) -> list[str]:
    """Lines leaving the checked value in `v` and its encoded `name=value` appended to parts."""
    if spec.type is FieldType.NUMBER:
        env[f"LO{n}"], env[f"HI{n}"] = spec.range if spec.range else (-math.inf, math.inf)
        return [
            "t = type(v)",
            "if t is int:",
            "    v = float(v)",
            "elif t is not float:",
            "    return None",
            # The chained comparison refuses NaN; infinity fails the range or the isfinite test.
            f"if not LO{n} <= v <= HI{n} or v - v != 0.0:",
            "    return None",
            f"parts.append(K{n} + repr(v))",
        ]
    if spec.type is FieldType.INTEGER:
        env[f"LO{n}"], env[f"HI{n}"] = spec.range if spec.range else (-math.inf, math.inf)
        return [
            "if type(v) is float and v.is_integer():",
            "    v = int(v)",
            f"if type(v) is not int or not LO{n} <= v <= HI{n}:",
            "    return None",
            f"parts.append(K{n} + str(v) + 'i')",
        ]
    if spec.type is FieldType.BOOLEAN:
        return [
            "if v is True:",
            f"    parts.append(K{n} + 'true')",
            "elif v is False:",
            f"    parts.append(K{n} + 'false')",
            "else:",
            "    return None",
        ]
    if spec.type is FieldType.STATE:
        env[f"E{n}"] = {value: string_value(value) for value in spec.values or ()}
        return [
            f"e = E{n}.get(v) if type(v) is str else None",
            "if e is None:",
            "    return None",
            f"parts.append(K{n} + e)",
        ]
    env[f"M{n}"] = spec.max_length
    env["string_value"] = string_value
    return [  # text: printable is stricter than validate's "no control characters"
        f"if type(v) is not str or len(v) > M{n} or not v.isprintable():",
        "    return None",
        f"parts.append(K{n} + string_value(v))",
    ]
