"""Which retention policy (InfluxDB 1.x) each measurement is stored in: the contract between every
writer (ingest, replay, the API's alarm events) and every reader (the API, replay, dashboards).

Each class of data keeps for its own time (set from configuration, created at start by
common.schema): readings in `readings`, the database's default, so questions on readings name
no policy; dead letters, change marks and alarm events in policies of their own, which a query
must name (`qualified`); hourly roll-ups of every reading in `long_term`; aggregates across
devices kept as data (wire.rollups) in `aggregates`, for as long as the readings (common.schema
gives it the readings' duration, so no rollup outlives or dies before the data it sums up);
each device's newest reading as a row (wire.latest) in `latest`, kept for ever: a row's time is
its device's slot in 1970, not the reading's.
On InfluxDB 2.x the same names reach buckets called `<database>/<policy>` through its automatic
DBRP mapping.
"""

from __future__ import annotations

from collections.abc import Iterable

READINGS = "readings"
DEAD_LETTERS = "dead_letters"
CHANGES = "changes"
ALARMS = "alarms"
LONG_TERM = "long_term"
AGGREGATES = "aggregates"
LATEST = "latest"
POLICIES = (READINGS, DEAD_LETTERS, CHANGES, ALARMS, LONG_TERM, AGGREGATES, LATEST)

# Measurements outside the readings policy; every other measurement is a profile's readings.
_POLICY_OF = {
    "dead_letters": DEAD_LETTERS,
    "citysense_changes": CHANGES,
    "alarm_events": ALARMS,
    "citysense_rollups": AGGREGATES,
    "citysense_latest": LATEST,
    "citysense_latest_complete": LATEST,
    # Rows owed (wire.latest): beside the marks, since the `latest` policy may be the one missing.
    "citysense_latest_owed": CHANGES,
}


def policy_of(measurement: str) -> str:
    return _POLICY_OF.get(measurement, READINGS)


def qualified(measurement: str) -> str:
    """`"policy"."measurement"` for a FROM clause (the database comes with the request)."""
    return f'"{policy_of(measurement)}"."{measurement}"'


def measurement_of(line: str) -> str:
    """The measurement of one line of line protocol (ours never escape a comma or space in it)."""
    end = len(line)
    for sep in (",", " "):
        at = line.find(sep)
        if at != -1:
            end = min(end, at)
    return line[:end]


# The lines of measurements with a policy of their own start with one of these: their names have
# nothing to escape, so a line is theirs exactly when it starts with the name and a separator.
_OWN_PREFIXES = tuple(f"{m}{sep}" for m in _POLICY_OF for sep in ", ")


def by_policy(lines: Iterable[str]) -> list[tuple[str, list[str]]]:
    """`lines` grouped by policy, each group in its original order; readings first."""
    groups: dict[str, list[str]] = {READINGS: []}
    readings = groups[READINGS]
    for line in lines:
        # One C-level prefix test per line; parsing the measurement only for the few that match
        # (a batch of 5,000 readings spent 3 ms in measurement_of here).
        if line.startswith(_OWN_PREFIXES):
            groups.setdefault(policy_of(measurement_of(line)), []).append(line)
        else:
            readings.append(line)
    return [(policy, group) for policy, group in groups.items() if group]
