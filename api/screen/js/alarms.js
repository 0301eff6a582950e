// Open alarms by severity and age, raised live from the stream; acknowledged from the page when
// the token may; a cleared alarm fades out.

import { api } from "./api.js";
import { h } from "./dom.js";
import { age, getLanguage, number, t, time } from "./i18n.js";

const SEVERITY = { critical: 0, warning: 1, info: 2 };
const SYMBOL = { critical: "▲", warning: "◆", info: "●" };
const FADE_MS = 4000;

// What broke: the rule and the value that broke it (a silent device has no value to show).
export function describe(alarm) {
  if (alarm.rule === "silent") return t("silent");
  return `${t(alarm.rule)} ${t(alarm.field)} = ${number(alarm.value, 2)}`;
}

export class Alarms {
  // onChange(alarm) when an alarm of a device is raised, cleared or changed (the map redraws it).
  constructor(element, view, { onChange, onSelect }) {
    Object.assign(this, { element, view, onChange, onSelect });
    this.active = new Map(); // id → alarm
    this.fading = new Map(); // id → alarm, cleared and fading out
    this.fresh = new Map(); // id → when the page saw it raised
    this.rows = new Map(); // id → its row
    this.counts = h("div", { class: "counts" });
    this.list = h("ul", { class: "alarm-list" });
    this.empty = h("p", { class: "empty" });
    element.replaceChildren(this.counts, this.list, this.empty);
  }

  load(alarms) {
    this.active = new Map(alarms.map((a) => [a.id, a]));
    this.render();
  }

  event({ event, alarm }) {
    if (alarm.state === "cleared") {
      this.active.delete(alarm.id);
      this.fading.set(alarm.id, alarm);
      setTimeout(() => { this.fading.delete(alarm.id); this.render(); }, FADE_MS);
    } else {
      if (event === "raised") this.fresh.set(alarm.id, Date.now());
      this.active.set(alarm.id, alarm);
    }
    this.onChange(alarm);
    this.render();
  }

  ofDevice(deviceId) {
    return [...this.active.values()].filter((a) => a.device_id === deviceId);
  }

  async acknowledge(alarm, button) {
    button.disabled = true;
    try {
      this.active.set(alarm.id, await api(`/alarms/${alarm.id}/acknowledge`, { method: "POST", body: {} }));
    } catch (error) {
      button.disabled = false;
      button.title = error.message;
      return;
    }
    this.render();
  }

  // Rows are kept per alarm and updated in place, so that a raised alarm's highlight and a
  // cleared one's fading play once rather than restarting with every refresh.
  render() {
    const now = Date.now();
    const sorted = [...this.active.values()].sort(
      (a, b) => SEVERITY[a.severity] - SEVERITY[b.severity] || Date.parse(a.start) - Date.parse(b.start),
    );
    this.counts.replaceChildren(...Object.keys(SEVERITY).map((s) => h("span", { class: `count ${s}` },
      `${SYMBOL[s]} ${t(s)} ${number(sorted.filter((a) => a.severity === s).length, 0)}`)));
    const shown = [...sorted, ...this.fading.values()];
    const rows = new Map(shown.map((alarm) => [alarm.id, this.row(alarm, now)]));
    this.rows = rows;
    const order = [...rows.values()];
    const list = this.list;
    if (list.children.length !== order.length || order.some((row, n) => list.children[n] !== row)) {
      list.replaceChildren(...order);
    }
    this.empty.textContent = shown.length ? "" : t("no_alarms");
  }

  row(alarm, now) {
    const cleared = alarm.state === "cleared";
    const row = this.rows.get(alarm.id) ?? h("li", { class: `alarm ${alarm.severity}`, dataset: { alarm: alarm.id, device: alarm.device_id } });
    row.dataset.state = alarm.state;
    row.classList.toggle("fading", cleared);
    row.classList.toggle("new", !cleared && now - (this.fresh.get(alarm.id) ?? 0) < 5000);
    const may = this.view.acknowledge && !cleared && !alarm.acknowledged_by;
    const ack = may ? h("button", { class: "ack", onclick: (e) => this.acknowledge(alarm, e.target) }, t("acknowledge")) : null;
    const state = cleared ? t("cleared") : alarm.acknowledged_by ? `${t("acknowledged")} (${alarm.acknowledged_by})` : "";
    const parts = [
      h("span", { class: "sev", title: t(alarm.severity) }, SYMBOL[alarm.severity]),
      h("a", { href: "#", class: "dev", onclick: (e) => { e.preventDefault(); this.onSelect(alarm.device_id); } }, alarm.device_id),
      h("span", { class: "rule" }, describe(alarm)),
      h("span", { class: "age", title: time(alarm.start, true) }, age(now - Date.parse(alarm.start))),
      h("span", { class: "ack-state" }, state),
      ack,
    ];
    // Rebuilt only when something shown changed (a button being clicked must stay).
    const key = JSON.stringify([alarm.value, state, may, getLanguage(), parts[3].textContent]);
    if (row.dataset.key !== key) {
      row.dataset.key = key;
      row.replaceChildren(...parts.filter(Boolean));
    }
    return row;
  }
}
