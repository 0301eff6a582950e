"""Aggregations across devices over the last 24 h: each question asked first once (every
(window, district) cell computed in InfluxDB, unless the API kept it warm), then again (the cells
the API kept, api.cells), and once more after live ingest wrote into the current windows."""

from __future__ import annotations

import statistics
from typing import Any
from urllib.parse import urlencode

import httpx

from bench.api.figures import Report, ms
from bench.api.timing import Failed, run_requests, timed_get

CELLS_HEADER = "CitySense-Cells-Computed"
ROLLUPS_HEADER = "CitySense-Cells-Rollups"  # cells served from the rollups kept in InfluxDB


def cells_note(response: httpx.Response) -> str:
    return (
        f"cells computed {response.headers.get(CELLS_HEADER, '?')}, "
        f"from rollups {response.headers.get(ROLLUPS_HEADER, '?')}"
    )


def aggregate_cases(district: str) -> list[tuple[str, dict[str, Any]]]:
    pipe = {"profile": "water_pipe", "field": "pressure"}
    light = {"profile": "streetlight"}
    energy = {"profile": "power_meter", "field": "totalActiveEnergyImport", "agg": "delta"}
    return [
        ("water_pipe pressure mean per district per 1h", {**pipe, "every": "1h"}),
        (
            "water_pipe pressure min, one district, per 15m",
            {**pipe, "agg": "min", "every": "15m", "district": district},
        ),
        (
            "streetlight lamps on (powerState=on) per district per 1h",
            {**light, "field": "powerState", "agg": "count", "equals": "on", "every": "1h"},
        ),
        (
            "streetlight powerConsumption sum per district per 1h",
            {**light, "field": "powerConsumption", "agg": "sum", "every": "1h"},
        ),
        ("power_meter energy (counter delta) per district per day", {**energy, "every": "day"}),
        (
            "power_meter energy per day, one district",
            {**energy, "every": "day", "district": district},
        ),
        (
            "power_meter energy per district per hour (Asia/Shanghai)",
            {**energy, "every": "hour", "tz": "Asia/Shanghai"},
        ),
    ]


def warm_setting(district: str) -> str:
    """CITYSENSE_API_AGGREGATE_WARM for the questions asked here."""
    return "; ".join(urlencode(params) for _, params in aggregate_cases(district))


def bench_aggregates(report: Report, client: httpx.Client, district: str, repeat: int) -> None:
    report.section("Aggregation across devices, last 24 h (InfluxDB at query time, then kept)")
    for label, params in aggregate_cases(district):
        bench_aggregate(report, client, label, params, repeat)


def bench_aggregate(
    report: Report, client: httpx.Client, label: str, params: dict[str, Any], repeat: int
) -> None:
    """The first ask computes every (window, district) cell in InfluxDB; the same question asked
    again is answered from the cells the API kept (api.cells)."""
    try:
        seconds, response = timed_get(client, "/aggregates", params)
    except (Failed, httpx.TimeoutException) as exc:
        report.add(f"{label}: first ask", "FAILED", str(exc)[:160])
        return
    report.add(
        f"{label}: first ask", ms(seconds), f"{cells_note(response)}; {phases_note([response])}"
    )
    computed = set()
    responses: list[httpx.Response] = []

    def kept(response: httpx.Response) -> None:
        computed.add(cells_note(response))
        responses.append(response)

    t = run_requests(client, "/aggregates", [params] * repeat, warmup=0, check=kept)
    note = "; ".join([*sorted(computed), phases_note(responses)])
    report.timings(f"{label}: asked again", t, note)


def phases_note(responses: list[httpx.Response]) -> str:
    """The API's Server-Timing phases (api.core.phases), p50 of each over the responses that
    have it (a phase some answers skip says in how many), in ms: where an answer's time went,
    in the API (app: the whole request) and waiting on InfluxDB."""
    phases: dict[str, list[float]] = {}
    for response in responses:
        for item in response.headers.get("server-timing", "").split(","):
            name, _, duration = item.strip().partition(";dur=")
            if duration:
                phases.setdefault(name, []).append(float(duration))
    return "server p50 ms: " + " ".join(
        f"{name} {statistics.median(values):.1f}"
        + ("" if len(values) == len(responses) else f" (in {len(values)})")
        for name, values in phases.items()
    )


def bench_aggregates_after_ingest(report: Report, base: str, district: str) -> None:
    """Asked again after live ingest wrote into the current windows: those cells are computed
    again (once the API's max staleness has passed), the rest stay kept."""
    report.section(
        "Aggregation across devices again, after live ingest touched the current windows"
    )
    with httpx.Client(base_url=base, timeout=120) as client:
        for label, params in aggregate_cases(district):
            try:
                seconds, response = timed_get(client, "/aggregates", params)
            except (Failed, httpx.TimeoutException) as exc:
                report.add(label, "FAILED", str(exc)[:160])
                continue
            report.add(label, ms(seconds), cells_note(response))


def bench_aggregates_after_restart(report: Report, base: str, district: str, repeat: int) -> None:
    """A new API process (a restart, or another replica): nothing kept in its memory; each
    question's first ask is answered from what InfluxDB holds (the rollups, if kept)."""
    with httpx.Client(base_url=base, timeout=120) as client:
        for label, params in aggregate_cases(district):
            bench_aggregate(report, client, label, params, repeat)
