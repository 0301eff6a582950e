// Time-series charts (uPlot): a 24 h chart per field of a device, a day's trend per district.

import { clock, getZone, number } from "./i18n.js";

const uPlot = window.uPlot;

// Times on the axes in the city's zone, whatever the browser's.
const inZone = (ts) => uPlot.tzDate(new Date(ts * 1000), getZone());

export function chart(element, { label, unit, points, width = 320, height = 110, colour = "#5b8def" }) {
  const xs = points.map((p) => Date.parse(p.time) / 1000);
  const ys = points.map((p) => (typeof p.value === "number" ? p.value : null));
  return new uPlot(
    {
      width,
      height,
      tzDate: inZone,
      legend: { show: false },
      cursor: { show: true, y: false },
      scales: { x: { time: true } },
      axes: [
        { stroke: "currentColor", grid: { stroke: "rgba(128,128,128,0.15)" }, size: 28, values: (u, v) => v.map(clock) },
        { stroke: "currentColor", grid: { stroke: "rgba(128,128,128,0.15)" }, size: 46, values: (u, v) => v.map((n) => number(n, 1)) },
      ],
      series: [{}, { label: unit ? `${label} (${unit})` : label, stroke: colour, width: 1.5, fill: `${colour}22`, spanGaps: true }],
    },
    [xs, ys],
    element,
  );
}

// A small line without axes, for a district's trend of the day.
export function sparkline(element, points, colour = "#5b8def") {
  const xs = points.map((p) => Date.parse(p.time) / 1000);
  const ys = points.map((p) => (typeof p.value === "number" ? p.value : null));
  return new uPlot(
    {
      width: 140,
      height: 30,
      tzDate: inZone,
      legend: { show: false },
      cursor: { show: false },
      scales: { x: { time: true } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: colour, width: 1.5, fill: `${colour}33`, spanGaps: true }],
    },
    [xs, ys],
    element,
  );
}
