"""What the benchmark measures inside the browser: the first full render of the map (the page's
own marks: sign-in, state fetched, indexed, every device drawn) and, under a live load, how far
behind the page falls (each reading's age when the page handled it), its frame rate and its
long tasks (main-thread work over 50 ms, which the browser reports itself)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from playwright.sync_api import Page

# Installed in the page: wraps its event handler to time each reading, counts frames drawn and
# long tasks. Nothing of the page changes but what it records.
INSTRUMENT = """() => {
  const m = { lags: [], readings: 0, frames: 0, longTasks: 0, longMs: 0 };
  window.citysense.measure = m;
  const app = window.citysense.app;
  const handle = app.event.bind(app);
  app.event = (kind, data, id) => {
    handle(kind, data, id);
    if (kind === "reading") {
      m.readings += 1;
      m.lags.push(Date.now() - Date.parse(data.time));
    }
  };
  const frame = () => { m.frames += 1; requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { m.longTasks += 1; m.longMs += e.duration; }
  }).observe({ type: "longtask" });
}"""


@dataclass(frozen=True)
class FirstRender:
    devices: int
    state_ms: float  # sign-in → the state of every device fetched
    indexed_ms: float  # → clustered
    drawn_ms: float  # → every device on the map
    state_bytes: int


def first_render(page: Page, devices: int) -> FirstRender:
    page.wait_for_function(
        f"() => citysense.app?.map?.visible === {devices} && citysense.app.map.complete",
        timeout=120_000,
    )
    t: dict[str, float] = page.evaluate("citysense.timings")
    complete: float = page.evaluate("citysense.app.map.complete")
    size: int = page.evaluate(
        "performance.getEntriesByType('resource')"
        ".filter(e => e.name.endsWith('/screen/state'))[0]?.encodedBodySize ?? 0"
    )
    return FirstRender(
        devices,
        t["state"] - t["signin"],
        t["indexed"] - t["signin"],
        complete - t["signin"],
        size,
    )


# Redraws the map at each zoom from the whole city down to single devices, timing each frame.
REDRAW = """() => {
  const map = citysense.app.map;
  const centre = [map.devices.lat[0], map.devices.lon[0]]; // on a device, down to its street
  const times = [];
  for (let zoom = 10; zoom <= 17; zoom += 1) {
    map.map.setView(centre, zoom, { animate: false });
    const t0 = performance.now();
    map.draw();
    times.push([zoom, performance.now() - t0, map.drawn.length]);
  }
  map.fitAll();
  return times;
}"""


def redraws(page: Page) -> list[tuple[int, float, int]]:
    """(zoom, ms to draw a frame, points and clusters drawn) from the city to a street."""
    return [(int(z), float(ms), int(n)) for z, ms, n in page.evaluate(REDRAW)]


@dataclass(frozen=True)
class LiveFigures:
    rate: float
    seconds: float
    published: int
    received: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    lag_last_second_p99_ms: float  # at the end of the run: a page falling behind shows it here
    fps: float
    long_tasks: int
    long_task_ms: float
    resumes: int


def start_live(page: Page) -> float:
    page.evaluate(INSTRUMENT)
    return time.monotonic()


def live_figures(page: Page, rate: float, published: int, started: float) -> LiveFigures:
    """Once the page handled every reading published (or 30 s after the load ended)."""
    page.wait_for_function(
        f"() => citysense.measure.readings >= {published}", timeout=30_000, polling=100
    )
    seconds = time.monotonic() - started
    m: dict[str, Any] = page.evaluate(
        "({...citysense.measure, lags: citysense.measure.lags, resumes: citysense.resumes})"
    )
    lags = sorted(m["lags"])
    tail = sorted(m["lags"][-max(1, round(rate)) :])
    return LiveFigures(
        rate=rate,
        seconds=seconds,
        published=published,
        received=m["readings"],
        lag_p50_ms=statistics.median(lags),
        lag_p99_ms=lags[int(len(lags) * 0.99)],
        lag_max_ms=lags[-1],
        lag_last_second_p99_ms=tail[int(len(tail) * 0.99)],
        fps=m["frames"] / seconds,
        long_tasks=m["longTasks"],
        long_task_ms=m["longMs"],
        resumes=m["resumes"],
    )
