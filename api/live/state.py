"""The latest state of every registered device, in process: latest reading, reporting status
(judged against the profile's reporting interval) and connection status (from the retained
status topic), kept apart because they answer different questions: a device can be connected
and silent (firmware hung), or disconnected and on time (it reports through a gateway).

Fed by the state feed (api.feed, ≤ 1 s behind ingest), rebuilt from InfluxDB at start and
reconciled with it periodically (the feed is QoS 0). Readings merge by device timestamp: the
newest wins whatever order they arrive in, so the feed, the start-up load and a reconcile can
interleave freely. All methods run on the event loop thread.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any

from api.core.contract import Contract
from api.core.readings import Reading, Value, typed
from api.core.times import NS_PER_S, format_rfc3339
from api.live.columns import INT_MIN, ProfileColumns
from api.live.hub import Hub
from device_profiles import Device
from wire import statefeed


class Reporting(StrEnum):
    ON_TIME = "on_time"
    LATE = "late"
    SILENT = "silent"
    NEVER = "never"  # registered, no reading within the lookback


REPORTING = tuple(Reporting)
_CODE = {r: n for n, r in enumerate(REPORTING)}
NO_TIME = INT_MIN  # no reading yet
_CONNECTED: tuple[bool | None, ...] = (None, False, True)  # by code
INDEX_BITS = 32  # a queue entry is deadline << INDEX_BITS | device index
_INDEX_MASK = (1 << INDEX_BITS) - 1


class DeviceState:
    """One device as the cache holds it, read on demand from the columns (nothing is copied
    until asked for): the registry's `device`, its latest `reading`, its connection and its
    reporting status as last judged (read `LiveState.reporting` for now)."""

    __slots__ = ("_live", "device", "index")

    def __init__(self, live: LiveState, index: int) -> None:
        self._live = live
        self.index = index
        self.device = live.registered[index]

    @property
    def reading(self) -> Reading | None:
        return self._live.reading_of(self.index)

    @property
    def connected(self) -> bool | None:  # None: no status message seen
        return _CONNECTED[self._live.connection[self.index]]

    @property
    def connected_changed_ns(self) -> int | None:
        changed = self._live.connection_changed[self.index]
        return None if changed == NO_TIME else changed

    @property
    def reporting(self) -> Reporting:
        return REPORTING[self._live.judged[self.index]]


class _Devices(Mapping[str, DeviceState]):
    """Device id -> its state, as a view over the columns."""

    def __init__(self, live: LiveState) -> None:
        self._live = live

    def __getitem__(self, device_id: str) -> DeviceState:
        return DeviceState(self._live, self._live.index[device_id])

    def __len__(self) -> int:
        return len(self._live.index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._live.index)


class LiveState:
    """Why columns: a `DeviceState` object per device, with a `Reading` and a dict of Python
    values, cost about 1 KB a device on the heap (about 775 B the reading and its values, 110 B
    the state object, 146 B the deadline queue's tuple, int and set entry; measured with
    tracemalloc at 100,000 devices). Here a device is an index: its time, connection and status
    are array entries, its values columns of its profile (api.live.columns), its queue entry one
    int, and its id the registry's own string."""

    def __init__(
        self, contract: Contract, hub: Hub, *, late_after: float, silent_after: float
    ) -> None:
        self.contract = contract
        self.hub = hub
        self.loaded = False
        self._late = late_after
        self._silent = silent_after
        self.registered: list[Device] = list(contract.devices())
        size = len(self.registered)
        self.index: dict[str, int] = {d.device_id: n for n, d in enumerate(self.registered)}
        self._profiles = sorted(contract.profiles)
        self._thresholds = [self._limits(name) for name in self._profiles]
        profile_code = {name: n for n, name in enumerate(self._profiles)}
        self._profile_of = bytearray(profile_code[d.profile] for d in self.registered)
        self._slot = array("q", bytes(8 * size))
        sizes = [0] * len(self._profiles)
        for n, code in enumerate(self._profile_of):
            self._slot[n], sizes[code] = sizes[code], sizes[code] + 1
        self._values = [
            ProfileColumns(contract.profiles[name], sizes[code])
            for code, name in enumerate(self._profiles)
        ]
        self._time = array("q", [NO_TIME]) * size
        self.connection = bytearray(size)  # codes of _CONNECTED
        self.connection_changed = array("q", [NO_TIME]) * size
        self.judged = bytearray([_CODE[Reporting.NEVER]]) * size
        self.devices: Mapping[str, DeviceState] = _Devices(self)
        # At most one entry per device: when it fires, the device is re-judged and re-queued
        # for its next deadline. It may fire early (a newer reading arrived), never late.
        self._due: list[int] = []
        self._queued = bytearray(size)

    def times(self) -> array[int]:
        """Each device's latest reading time (NO_TIME: none), by index; for api.live.snapshot."""
        return self._time

    def columns(self) -> list[tuple[str, ProfileColumns]]:
        """Each profile's columns, by profile name; for api.live.snapshot."""
        return list(zip(self._profiles, self._values, strict=True))

    def reading_of(self, index: int) -> Reading | None:
        time_ns = self._time[index]
        if time_ns == NO_TIME:
            return None
        columns = self._values[self._profile_of[index]]
        return Reading(time_ns=time_ns, values=columns.values(self._slot[index]))

    # --- judging ---

    def _limits(self, profile: str) -> tuple[int, int]:
        interval = self.contract.profiles[profile].reporting_interval
        return int(interval * self._late * NS_PER_S), int(interval * self._silent * NS_PER_S)

    def _judge(self, index: int, now_ns: int) -> Reporting:
        time_ns = self._time[index]
        if time_ns == NO_TIME:
            return Reporting.NEVER
        late, silent = self._thresholds[self._profile_of[index]]
        age = now_ns - time_ns
        if age > silent:
            return Reporting.SILENT
        if age > late:
            return Reporting.LATE
        return Reporting.ON_TIME

    def reporting(self, state: DeviceState, now_ns: int) -> Reporting:
        return self._judge(state.index, now_ns)

    def _next_deadline(self, index: int, now_ns: int) -> int | None:
        time_ns = self._time[index]
        if time_ns == NO_TIME:
            return None
        late, silent = self._thresholds[self._profile_of[index]]
        for deadline in (time_ns + late, time_ns + silent):
            if deadline >= now_ns:
                return deadline + 1  # the status changes once the age exceeds the threshold
        return None

    def _schedule(self, index: int, now_ns: int) -> None:
        if self._queued[index]:
            return
        deadline = self._next_deadline(index, now_ns)
        if deadline is not None:
            heapq.heappush(self._due, deadline << INDEX_BITS | index)
            self._queued[index] = 1

    def _rejudge(self, index: int, now_ns: int) -> None:
        now = self._judge(index, now_ns)
        before = REPORTING[self.judged[index]]
        if now is not before:
            self.judged[index] = _CODE[now]
            device = self.registered[index]
            time_ns = self._time[index]
            self.hub.publish(
                "reporting",
                device.profile,
                device.district,
                device.device_id,
                {
                    "from": before.value,
                    "to": now.value,
                    "at": format_rfc3339(now_ns),
                    "last_seen": None if time_ns == NO_TIME else format_rfc3339(time_ns),
                },
            )

    def tick(self, now_ns: int, limit: int | None = None) -> bool:
        """Emit the reporting transitions that became due by `now_ns`, at most `limit` of
        them; whether some due are left for the next call."""
        due = self._due
        emitted = 0
        while due and due[0] >> INDEX_BITS <= now_ns:
            if limit is not None and emitted >= limit:
                return True
            index = heapq.heappop(due) & _INDEX_MASK
            self._queued[index] = 0
            self._rejudge(index, now_ns)
            self._schedule(index, now_ns)
            emitted += 1
        return False

    def baseline(self, now_ns: int) -> None:
        """After the start-up load: judge everyone without events (nothing *changed*)."""
        for index in range(len(self.registered)):
            self.judged[index] = _CODE[self._judge(index, now_ns)]
            self._schedule(index, now_ns)
        self.loaded = True

    def judged_silent(self, device_id: str) -> bool:
        index = self.index.get(device_id)
        return index is not None and self.judged[index] == _CODE[Reporting.SILENT]

    def silent(self) -> list[str]:
        """The devices judged silent."""
        code = _CODE[Reporting.SILENT]
        return [
            d.device_id
            for d, judged in zip(self.registered, self.judged, strict=True)
            if judged == code
        ]

    # --- input ---

    def _registered(self, device_id: str, profile: str) -> int | None:
        """The device's index, if registered under `profile`."""
        index = self.index.get(device_id)
        if index is None or self._profiles[self._profile_of[index]] != profile:
            return None
        return index

    def apply(
        self,
        device_id: str,
        profile: str,
        time_ns: int,
        values: Mapping[str, Any],
        now_ns: int,
        *,
        announce: bool = True,
    ) -> bool:
        """Merge one reading; True if it is now the device's latest. Readings of unregistered
        devices, or under another profile than the registry's, are not this API's devices."""
        index = self._registered(device_id, profile)
        if index is None:
            return False
        specs = self.contract.profiles[profile].fields
        clean: dict[str, Value] = {
            name: typed(specs[name], value)
            for name, value in values.items()
            if name in specs and isinstance(value, bool | int | float | str)
        }
        return self._merge(index, time_ns, clean, now_ns, announce=announce)

    def _merge(
        self,
        index: int,
        time_ns: int,
        clean: Mapping[str, Value],
        now_ns: int,
        *,
        announce: bool,
    ) -> bool:
        """Merge contract-typed values; True if they are now the device's latest and changed it."""
        current = self._time[index]
        columns, slot = self._values[self._profile_of[index]], self._slot[index]
        if current != NO_TIME and time_ns < current:
            return False  # an older (buffered) reading: history, not state
        if time_ns == current:
            # One InfluxDB point: fields written under the same timestamp merge. The same
            # reading again (a reconcile finding what the feed delivered) changes nothing
            # and is no event: at 100,000 devices a reconcile would otherwise flood every
            # live client with one event per device, overflowing their queues.
            if not columns.merge(slot, clean):
                return False
            clean = columns.values(slot)
        else:
            columns.replace(slot, clean)
            self._time[index] = time_ns
        if self.loaded:
            self._rejudge(index, now_ns)
            self._schedule(index, now_ns)
        if announce:
            device = self.registered[index]
            self.hub.publish(
                "reading",
                device.profile,
                device.district,
                device.device_id,
                {"time": format_rfc3339(time_ns), "values": dict(clean)},
            )
        return True

    def apply_feed(self, readings: Iterable[statefeed.Announced], now_ns: int) -> int:
        """The readings of a state-feed message; returns how many became latest."""
        return sum(
            self.apply(r.device_id, r.profile, r.time_ns, r.values, now_ns) for r in readings
        )

    def load(self, profile: str, latest: Iterable[tuple[str, Reading]], now_ns: int) -> int:
        """Readings from InfluxDB (start-up, reconcile), already typed by the contract
        (api.readings); announced only once serving, so a reading the feed lost still reaches
        live clients after a reconcile."""
        applied = 0
        for device_id, reading in latest:
            index = self._registered(device_id, profile)
            if index is not None:
                applied += self._merge(
                    index, reading.time_ns, reading.values, now_ns, announce=self.loaded
                )
        return applied

    def load_rows(
        self,
        profile: str,
        device_ids: Sequence[str],
        times: Sequence[int],
        rows: Sequence[Sequence[Value | None]],
        fields: Mapping[str, int],
        *,
        alone: Callable[[Sequence[Value | None]], bool] = lambda row: False,
    ) -> int:
        """Readings of a start's load from the latest rows (api.live.rows): per row a device,
        its reading's time, and the row, whose field `name` is at `fields[name]` (None:
        absent). Before the state serves: nothing is announced or judged (the first load's
        end judges every device). Newest wins, as in load(); a row at the time the device
        holds is the same InfluxDB point: the fields the device lacks are taken from it if
        `alone(row)` (its fields are its reading's alone: its `has` was checked, api.live.rows).
        Only the winners' values are taken, a column per field. How many became latest.

        Why: a device that sends its fields in two messages of one timestamp has them in one
        point of the readings, but, with two ingest workers (a shared subscription deals the
        messages out), in two writers' rows; taking the first row alone served half the point.
        Not from a row taken whole (written before `has`, or by another profile version),
        which may hold an older reading's fields; and a field the device holds keeps its value:
        where two rows of one time disagree, which InfluxDB kept (the later write) is not in
        the rows, and the first read is as good a guess as the last."""
        if self.loaded:
            raise RuntimeError("load_rows is for a start's load, before the state serves")
        code = self._profiles.index(profile)
        index_of, profile_of = self.index, self._profile_of
        time_of, slot_of = self._time, self._slot
        taken: list[Sequence[Value | None]] = []
        slots: list[int] = []
        same: list[tuple[int, int, Sequence[Value | None]]] = []  # index, time, row
        for row, device_id, time_ns in zip(rows, device_ids, times, strict=True):
            index = index_of.get(device_id)
            if index is None or profile_of[index] != code:
                continue
            held = time_of[index]
            if time_ns <= held:
                if time_ns == held and alone(row):
                    same.append((index, time_ns, row))
                continue
            time_of[index] = time_ns
            taken.append(row)
            slots.append(slot_of[index])
        columns = self._values[code]
        columns.load(slots, {name: [row[at] for row in taken] for name, at in fields.items()})
        columns.fill_absent(
            # Not since replaced by a newer row of this call.
            ((slot_of[index], row) for index, time_ns, row in same if time_of[index] == time_ns),
            fields,
        )
        return len(taken)

    def set_connected(self, profile: str, device_id: str, online: bool, now_ns: int) -> None:
        index = self._registered(device_id, profile)
        if index is None:
            return
        before = _CONNECTED[self.connection[index]]
        if before is online:
            return
        self.connection[index] = 2 if online else 1
        self.connection_changed[index] = now_ns
        device = self.registered[index]
        self.hub.publish(
            "connection",
            device.profile,
            device.district,
            device_id,
            {"from": before, "to": online, "at": format_rfc3339(now_ns)},
        )

    def select(
        self,
        now_ns: int,
        devices: Iterable[Device],
        *,
        reporting: Reporting | None = None,
        connected: bool | None = None,
        bbox: tuple[float, float, float, float] | None = None,
    ) -> list[DeviceState]:
        out = []
        for device in devices:
            index = self.index[device.device_id]
            if bbox is not None and not (
                bbox[0] <= device.longitude <= bbox[2] and bbox[1] <= device.latitude <= bbox[3]
            ):
                continue
            if connected is not None and _CONNECTED[self.connection[index]] is not connected:
                continue
            if reporting is not None and self._judge(index, now_ns) is not reporting:
                continue
            out.append(DeviceState(self, index))
        return out
