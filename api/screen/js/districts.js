// The district panel: per district the live summary figures of each profile the token reads
// (GET /districts/{d}/summary), refreshed when readings of that district arrive, and a trend of
// the day per profile (GET /aggregates, one question per profile for every district at once).

import { api } from "./api.js";
import { sparkline } from "./charts.js";
import { h, unit } from "./dom.js";
import { number, t } from "./i18n.js";

const REFRESH_MS = 10_000; // a district's summary is asked at most this often
const TREND_MS = 300_000;

// The trend of a profile: its first summary figure, per hour over the day.
function trendQuestion(name, profile, zone) {
  const figure = profile.summary[0];
  if (!figure) return null;
  const params = { profile: name, field: figure.field, every: "1h", tz: zone, group_by: "district" };
  if (figure.op === "count") Object.assign(params, { agg: "count", equals: String(figure.equals) });
  else params.agg = "mean";
  return params;
}

export class Districts {
  constructor(element, view) {
    this.element = element;
    this.view = view;
    this.summaries = new Map();
    this.trends = new Map(); // profile → district → points
    this.dirty = new Set(view.districts);
    this.asked = new Map();
    this.focus = null; // the district wall mode shows
    this.plots = [];
  }

  // The trends are computed by InfluxDB over a day of readings (seconds, the first time): they
  // are drawn when they come, without holding up the rest.
  async start() {
    this.trendsLoaded = this.refreshTrends().catch((error) => console.warn("trends:", error.message));
    await this.refreshAll();
    this.timer = setInterval(() => this.refreshDirty(), 1000);
    this.trendTimer = setInterval(() => this.refreshTrends(), TREND_MS);
  }

  stop() {
    clearInterval(this.timer);
    clearInterval(this.trendTimer);
  }

  readingIn(district) {
    this.dirty.add(district);
  }

  async refreshAll() {
    await Promise.all(this.view.districts.map((d) => this.refresh(d)));
    this.render();
  }

  async refreshDirty() {
    const now = Date.now();
    const due = [...this.dirty].filter((d) => now - (this.asked.get(d) ?? 0) >= REFRESH_MS);
    if (!due.length) return;
    await Promise.all(due.map((d) => this.refresh(d)));
    this.render();
  }

  async refresh(district) {
    this.dirty.delete(district);
    this.asked.set(district, Date.now());
    this.summaries.set(district, await api(`/districts/${encodeURIComponent(district)}/summary`));
  }

  async refreshTrends() {
    for (const [name, profile] of Object.entries(this.view.profiles)) {
      const params = trendQuestion(name, profile, this.view.timezone);
      if (!params) continue;
      const body = await api("/aggregates", { params });
      const byDistrict = new Map();
      for (const row of body.rows) {
        if (!byDistrict.has(row.district)) byDistrict.set(row.district, []);
        byDistrict.get(row.district).push({ time: row.time, value: row.value });
      }
      this.trends.set(name, byDistrict);
    }
    this.render();
  }

  setFocus(district) {
    this.focus = district;
    this.render();
  }

  render() {
    for (const plot of this.plots.splice(0)) plot.destroy();
    const cards = this.view.districts
      .filter((d) => this.focus === null || d === this.focus)
      .map((d) => this.card(d, this.summaries.get(d)));
    this.element.replaceChildren(...cards);
  }

  card(district, summary) {
    const rows = (summary?.profiles ?? []).map((p) => {
      const figures = p.figures.map((f) => {
        const shown = f.op === "count"
          ? `${number(f.value, 0)} / ${number(p.devices_registered, 0)}`
          : `${number(f.value, 1)} ${unit(f.unit)}`;
        return h("div", { class: "figure", dataset: { figure: f.name } }, h("span", {}, t(f.name)), h("b", {}, shown));
      });
      const trend = h("div", { class: "trend", title: t("trend") });
      const points = this.trends.get(p.profile)?.get(district);
      const line = h("div", { class: "profile" },
        h("div", { class: "profile-name" }, t(p.profile),
          h("small", {}, ` ${number(p.devices_reporting, 0)} ${t("reporting")} / ${number(p.devices_registered, 0)} ${t("registered")}`)),
        ...figures, trend);
      if (points?.length) this.plots.push(sparkline(trend, points));
      return line;
    });
    return h("article", { class: "district", dataset: { district } }, h("h3", {}, district), ...rows);
  }
}
