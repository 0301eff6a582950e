"""The rollup keeper's ledger of an open day: per (profile, district), each device's readings of
each field from the day's start to an hour boundary (`until`), summed, counted, min'd, max'd
and their last value kept (api.core.spans: in columns), so that the open day's rollup is
computed from a read of the day after `until` only (about an hour of readings) instead of the
whole day so far.

Why: with live readings every district's open day moves all day, and re-reading it (a read per
field of every series of the district, which InfluxDB 1.x pays per series whatever the time
span) every few minutes saturated InfluxDB at 100,000 devices: the keeper's rounds took 41-72 s,
the open windows' rollups fell past max-staleness, and the API's answers waited on InfluxDB
(README, issue 15). With a ledger the open day costs what its open hour costs, so it is kept as
fresh as the hour (`api_rollups_open_every`).

Exact, or not used: a ledger records the change-mark signatures of [day start, until) (and of
the counters' lookback before it) from marks read before the readings it holds were read; a
reading stored into that span since moves a mark after it (ingest writes marks after readings),
the signatures no longer match, the ledger is dropped, and the keeper reads the whole day when
it is next due (`api_rollups_open_day_every`), building a new one. Readings the ledger's read saw
but whose marks came later only cause such a rebuild.

Bounded: one ledger per (profile, district), a DeviceSpan per device and field that reported
that day (api.core.spans: about 150 bytes each); a closed day's ledger is replaced by the next
day's the first time that one is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.core.spans import DeviceSpan, SpanColumns, columns_of
from api.core.times import NS_PER_S
from api.core.windows import Window
from device_profiles import FieldSpec

HOUR_NS = 3600 * NS_PER_S
# An hour is folded into the ledger once it ended this long before the keeper computed: its
# last batches and their marks are in by then (ingest writes a batch within a second), so a
# ledger is not rebuilt for readings that were merely in flight.
SETTLE_NS = 60 * NS_PER_S

Signatures = tuple[tuple[int, int], tuple[int, int]]
Spans = dict[str, DeviceSpan]  # device -> its DeviceSpan of one field


@dataclass(frozen=True, slots=True)
class DayLedger:
    day: Window
    until: int  # an hour boundary: the ledger holds the day's readings before it
    signatures: Signatures  # of [day start, until), and with the lookback, when it was read
    fields: dict[str, SpanColumns]  # field -> each device's DeviceSpan over [day start, until)


def folded_until(day: Window, start: int, at: int) -> int:
    """Up to where a ledger computed at `at`, holding the day from its start to `start`,
    folds: the last hour boundary SETTLE_NS before `at`, within the day, never before
    `start`."""
    settled = (at - SETTLE_NS) // HOUR_NS * HOUR_NS
    return max(start, min(settled, day[1]))


def previous_of(ledger: DayLedger, counters: list[str]) -> dict[str, dict[str, float]]:
    """Each counter field's newest reading per device before the ledger's `until`: where the
    increases of the readings after it start."""
    out: dict[str, dict[str, float]] = {}
    for name in counters:
        held = ledger.fields.get(name)
        spans = held.items() if held is not None else ()
        out[name] = {d: s.last for d, s in spans if s.last is not None}
    return out


def base(
    ledger: DayLedger | None, name: str, spec: FieldSpec, previous: dict[str, dict[str, float]]
) -> SpanColumns:
    """What the readings after a ledger's `until` (or after the day's start, without a ledger:
    just the counters' readings before the day) are added to."""
    if ledger is not None and name in ledger.fields:
        return ledger.fields[name]
    return columns_of(spec, {d: DeviceSpan(last=v) for d, v in previous.get(name, {}).items()})
