// One device: its registry data, latest values with units (kept current from the stream), a
// 24 h chart per numeric field (GET /devices/{id}/history) and its open alarms.

import { describe } from "./alarms.js";
import { api } from "./api.js";
import { chart } from "./charts.js";
import { h, unit } from "./dom.js";
import { number, t, time } from "./i18n.js";

export class DevicePanel {
  constructor(element, view, { alarmsOf, onClose }) {
    Object.assign(this, { element, view, alarmsOf, onClose });
    this.device = null;
    this.plots = [];
  }

  async show(deviceId) {
    this.close(false);
    const device = await api(`/devices/${encodeURIComponent(deviceId)}`);
    this.device = device;
    this.element.hidden = false;
    this.render();
    await this.charts();
  }

  close(notify = true) {
    for (const plot of this.plots.splice(0)) plot.destroy();
    this.device = null;
    this.element.hidden = true;
    this.element.replaceChildren();
    if (notify) this.onClose();
  }

  reading(data) {
    if (!this.device || data.device_id !== this.device.device_id) return;
    const values = { ...(this.device.reading?.values ?? {}), ...data.values };
    this.device.reading = { time: data.time, values };
    this.device.status.last_seen = data.time;
    this.renderValues();
  }

  alarmsChanged(deviceId) {
    if (this.device?.device_id === deviceId) this.renderAlarms();
  }

  render() {
    const d = this.device;
    const row = (key, value) => h("tr", {}, h("th", {}, t(key)), h("td", {}, value));
    this.element.replaceChildren(
      h("header", {}, h("h3", {}, d.device_id), h("button", { class: "close", onclick: () => this.close() }, t("close"))),
      h("table", { class: "registry" },
        row("profile", t(d.profile)), row("district", d.district), row("address", d.address),
        row("status", t(d.status.reporting)), row("last_seen", time(d.status.last_seen, true))),
      h("section", { class: "device-alarms" }),
      h("h4", {}, t("latest")),
      h("table", { class: "values" }),
      h("h4", {}, t("chart_24h")),
      h("div", { class: "charts" }),
    );
    this.renderValues();
    this.renderAlarms();
  }

  renderValues() {
    const fields = this.view.profiles[this.device.profile]?.fields ?? {};
    const values = this.device.reading?.values ?? {};
    const rows = Object.entries(values).map(([name, value]) => h("tr", { dataset: { field: name } },
      h("th", {}, t(name)), h("td", {}, `${number(value, 2)} ${unit(fields[name]?.unit)}`)));
    this.element.querySelector("table.values").replaceChildren(...rows);
  }

  renderAlarms() {
    const alarms = this.alarmsOf(this.device.device_id);
    this.element.querySelector(".device-alarms").replaceChildren(...alarms.map((a) =>
      h("div", { class: `alarm ${a.severity}` }, `${t(a.severity)}: ${describe(a)}`)));
  }

  async charts() {
    const d = this.device;
    const fields = Object.entries(this.view.profiles[d.profile]?.fields ?? {}).filter(([, f]) => f.type === "number");
    const start = new Date(Date.now() - 86400_000).toISOString();
    // A counter (an energy meter's index) is shown as its increase per window.
    const histories = await Promise.all(fields.map(([field, spec]) =>
      api(`/devices/${encodeURIComponent(d.device_id)}/history`,
        { params: { field, every: "15m", start, agg: spec.kind === "counter" ? "delta" : "mean" } })));
    if (this.device !== d) return; // another device was chosen meanwhile
    const box = this.element.querySelector(".charts");
    for (const history of histories) {
      if (!history.points.length) continue;
      const cell = h("figure", { dataset: { field: history.field } }, h("figcaption", {}, `${t(history.field)} ${unit(history.unit)}`));
      box.append(cell);
      this.plots.push(chart(cell, { label: t(history.field), unit: unit(history.unit), points: history.points }));
    }
  }
}
