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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from api.core.contract import Contract
from api.core.readings import Reading, Value, typed
from api.core.times import NS_PER_S, format_rfc3339
from api.live.hub import Hub
from device_profiles import Device
from wire import statefeed


class Reporting(StrEnum):
    ON_TIME = "on_time"
    LATE = "late"
    SILENT = "silent"
    NEVER = "never"  # registered, no reading within the lookback


@dataclass(slots=True)
class DeviceState:
    device: Device
    reading: Reading | None = None
    connected: bool | None = None  # None: no status message seen
    connected_changed_ns: int | None = None
    reporting: Reporting = Reporting.NEVER  # as last judged; read `LiveState.reporting` for now


class LiveState:
    def __init__(
        self, contract: Contract, hub: Hub, *, late_after: float, silent_after: float
    ) -> None:
        self.contract = contract
        self.hub = hub
        self.loaded = False
        self._late = late_after
        self._silent = silent_after
        self.devices: dict[str, DeviceState] = {
            d.device_id: DeviceState(d) for d in contract.devices()
        }
        # At most one entry per device: when it fires, the device is re-judged and re-queued
        # for its next deadline. It may fire early (a newer reading arrived), never late.
        self._due: list[tuple[int, str]] = []
        self._queued: set[str] = set()

    # --- judging ---

    def _thresholds(self, device: Device) -> tuple[int, int]:
        interval = self.contract.profiles[device.profile].reporting_interval
        return int(interval * self._late * NS_PER_S), int(interval * self._silent * NS_PER_S)

    def reporting(self, state: DeviceState, now_ns: int) -> Reporting:
        if state.reading is None:
            return Reporting.NEVER
        late, silent = self._thresholds(state.device)
        age = now_ns - state.reading.time_ns
        if age > silent:
            return Reporting.SILENT
        if age > late:
            return Reporting.LATE
        return Reporting.ON_TIME

    def _next_deadline(self, state: DeviceState, now_ns: int) -> int | None:
        if state.reading is None:
            return None
        late, silent = self._thresholds(state.device)
        for deadline in (state.reading.time_ns + late, state.reading.time_ns + silent):
            if deadline >= now_ns:
                return deadline + 1  # the status changes once the age exceeds the threshold
        return None

    def _schedule(self, state: DeviceState, now_ns: int) -> None:
        device_id = state.device.device_id
        if device_id in self._queued:
            return
        deadline = self._next_deadline(state, now_ns)
        if deadline is not None:
            heapq.heappush(self._due, (deadline, device_id))
            self._queued.add(device_id)

    def _rejudge(self, state: DeviceState, now_ns: int) -> None:
        now = self.reporting(state, now_ns)
        if now is not state.reporting:
            before, state.reporting = state.reporting, now
            device = state.device
            self.hub.publish(
                "reporting",
                device.profile,
                device.district,
                device.device_id,
                {
                    "from": before.value,
                    "to": now.value,
                    "at": format_rfc3339(now_ns),
                    "last_seen": format_rfc3339(state.reading.time_ns) if state.reading else None,
                },
            )

    def tick(self, now_ns: int) -> None:
        """Emit the reporting transitions that became due by `now_ns`."""
        while self._due and self._due[0][0] <= now_ns:
            _, device_id = heapq.heappop(self._due)
            self._queued.discard(device_id)
            state = self.devices.get(device_id)
            if state is not None:
                self._rejudge(state, now_ns)
                self._schedule(state, now_ns)

    def baseline(self, now_ns: int) -> None:
        """After the start-up load: judge everyone without events (nothing *changed*)."""
        for state in self.devices.values():
            state.reporting = self.reporting(state, now_ns)
            self._schedule(state, now_ns)
        self.loaded = True

    # --- input ---

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
        state = self.devices.get(device_id)
        if state is None or state.device.profile != profile:
            return False
        specs = self.contract.profiles[profile].fields
        clean: dict[str, Value] = {
            name: typed(specs[name], value)
            for name, value in values.items()
            if name in specs and isinstance(value, bool | int | float | str)
        }
        return self._merge(state, time_ns, clean, now_ns, announce=announce)

    def _merge(
        self,
        state: DeviceState,
        time_ns: int,
        clean: dict[str, Value],
        now_ns: int,
        *,
        announce: bool,
    ) -> bool:
        """Merge contract-typed values; True if they are now the device's latest and changed it."""
        current = state.reading
        if current is not None:
            if time_ns < current.time_ns:
                return False  # an older (buffered) reading: history, not state
            if time_ns == current.time_ns:
                # One InfluxDB point: fields written under the same timestamp merge. The same
                # reading again (a reconcile finding what the feed delivered) changes nothing
                # and is no event: at 100,000 devices a reconcile would otherwise flood every
                # live client with one event per device, overflowing their queues.
                merged = {**current.values, **clean}
                if merged == current.values:
                    return False
                clean = merged
        state.reading = Reading(time_ns=time_ns, values=clean)
        if self.loaded:
            self._rejudge(state, now_ns)
            self._schedule(state, now_ns)
        if announce:
            device = state.device
            self.hub.publish(
                "reading",
                device.profile,
                device.district,
                device.device_id,
                {"time": format_rfc3339(time_ns), "values": clean},
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
        devices = self.devices
        for device_id, reading in latest:
            state = devices.get(device_id)
            if state is None or state.device.profile != profile:
                continue
            applied += self._merge(
                state, reading.time_ns, reading.values, now_ns, announce=self.loaded
            )
        return applied

    def set_connected(self, profile: str, device_id: str, online: bool, now_ns: int) -> None:
        state = self.devices.get(device_id)
        if state is None or state.device.profile != profile or state.connected is online:
            return
        before, state.connected = state.connected, online
        state.connected_changed_ns = now_ns
        device = state.device
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
            state = self.devices[device.device_id]
            if bbox is not None and not (
                bbox[0] <= device.longitude <= bbox[2] and bbox[1] <= device.latitude <= bbox[3]
            ):
                continue
            if connected is not None and state.connected is not connected:
                continue
            if reporting is not None and self.reporting(state, now_ns) is not reporting:
                continue
            out.append(state)
        return out
