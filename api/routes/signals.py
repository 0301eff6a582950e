"""GET /signals, /forecasts, /quality: what foresight computed in the background
(api.foresight), from its stored measurements, within the token's scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ContractDep, InfluxDep, PrincipalDep, SettingsDep
from api.errors import documented
from api.foresight import serve
from api.foresight.public import StoredListPublic
from device_profiles import SignalName

router = APIRouter(tags=["foresight"])

Start = Annotated[str | None, Query(description="RFC 3339; default: 7 days before end")]
End = Annotated[str | None, Query(description="RFC 3339, exclusive; default: 2 days from now")]
District = Annotated[str | None, Query(max_length=64)]
Profile = Annotated[str | None, Query(max_length=64)]
Device = Annotated[str | None, Query(max_length=128)]
Limit = Annotated[int, Query(ge=1, le=serve.LIMIT_MAX)]


@router.get(
    "/signals",
    summary="Computed signals per device and night or day",
    description="Night flow and leaks of water nodes (`night_flow_rise`: rise over the node's "
    "last week as a share of the district's night flow; `minimum`, `baseline`, `leak`; a point "
    "without device_id is the district's own minimum night flow), lamps judged against sunrise "
    "and sunset at the pole (`lit_by_day`, `dark_by_night`, `power_while_off`, `power_drift`), "
    "newest first. Not for open-data tokens.",
    responses=documented(401, 403, 502, 503),
)
async def signals(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    influx: InfluxDep,
    signal: SignalName | None = None,
    district: District = None,
    profile: Profile = None,
    device_id: Device = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 1000,
) -> StoredListPublic:
    ask = serve.Ask(start, end, limit, district, profile, device_id,
                    None if signal is None else signal.value)  # fmt: skip
    return await serve.signals(ask, principal=principal, contract=contract, influx=influx)


@router.get(
    "/forecasts",
    summary="Day-ahead energy per district and hour, and the forecasts' error",
    description="Points of `forecasts` (tags district and model: `daytype_ols`, the model; "
    "`seasonal_naive`, the same hour a week before; field kwh per hour) and of "
    "`forecast_errors` (per past day: mape_model, mape_naive, peak_kwh, peak_hour); each with "
    "meters, the fewest meters any hour it was built from was summed from. Open-data tokens get "
    "only the points of at least the open-data minimum of meters.",
    responses=documented(401, 403, 502, 503),
)
async def forecasts(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    influx: InfluxDep,
    settings: SettingsDep,
    district: District = None,
    model: Annotated[str | None, Query(max_length=64)] = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 1000,
) -> StoredListPublic:
    ask = serve.Ask(start, end, limit, district, name=model)
    return await serve.forecasts(ask, principal=principal, contract=contract, influx=influx,
                                 min_devices=settings.api_open_data_min_devices)  # fmt: skip


@router.get(
    "/quality",
    summary="Data-quality score per device and per district, with its parts",
    description="score = completeness x validity x stuck x clock x lag (each 0-1), with readings, "
    "expected readings and dead letters; a point without device_id is a district's (mean score, "
    "parts, `worst`: its worst devices). Not for open-data tokens.",
    responses=documented(401, 403, 502, 503),
)
async def quality(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    influx: InfluxDep,
    district: District = None,
    profile: Profile = None,
    device_id: Device = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 1000,
) -> StoredListPublic:
    ask = serve.Ask(start, end, limit, district, profile, device_id)
    return await serve.quality(ask, principal=principal, contract=contract, influx=influx)
