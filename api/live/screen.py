"""What the operations screen (api.core.screen) draws at start: every device the token sees, as
columns (100,000 devices as objects would be several times the bytes and the parsing), its
active alarms, and the id of the last live event this reflects, so the page's stream resumes
exactly there (`Last-Event-ID`): nothing between the two is lost or applied twice."""

from __future__ import annotations

from typing import Any

from api.core.contract import Contract
from api.core.tokens import Principal
from api.live.alarm_queries import AlarmFilter
from api.live.alarm_queries import select as select_alarms
from api.live.devices import DeviceFilter, select
from api.live.service import Live
from api.live.state import Reporting

REPORTING = [r.value for r in Reporting]


def snapshot(principal: Principal, contract: Contract, live: Live, now: int) -> dict[str, Any]:
    """Computed without awaiting anything, so it and `event_id` describe one moment."""
    states = select(principal, contract, live, now, DeviceFilter())
    profiles = sorted(contract.profiles)
    districts = list(contract.districts)
    profile_index = {p: n for n, p in enumerate(profiles)}
    district_index = {d: n for n, d in enumerate(districts)}
    reporting_index = {r: n for n, r in enumerate(Reporting)}
    ids, lon, lat, prof, dist, rep = [], [], [], [], [], []
    judge = live.state.reporting
    for state in states:
        device = state.device
        ids.append(device.device_id)
        lon.append(device.longitude)
        lat.append(device.latitude)
        prof.append(profile_index[device.profile])
        dist.append(district_index[device.district])
        rep.append(reporting_index[judge(state, now)])
    # The stored alarms not read back yet (InfluxDB away since the start): the map and its
    # devices still shown, the alarms with the stream once they are (`alarms_replayed`).
    replayed = live.alarms.replayed
    alarms = select_alarms(live.alarms, principal, contract, AlarmFilter()) if replayed else []
    return {
        "event_id": live.hub.last_id,
        "profiles": profiles,
        "districts": districts,
        "reporting": REPORTING,
        "devices": {
            "id": ids,
            "lon": lon,
            "lat": lat,
            "profile": prof,
            "district": dist,
            "reporting": rep,
        },
        "alarms": [a.public() for a in alarms],
        "alarms_replayed": replayed,
    }
