// Data quality and pipeline health: dead letters of the last hour by reason and by profile
// (GET /dead-letters/counts), devices silent, and the rate and lag of readings as they reach
// this page (measured from the stream itself: what the operator sees is what arrives).

import { api } from "./api.js";
import { h } from "./dom.js";
import { number, t } from "./i18n.js";

const WINDOW_MS = 10_000; // rate and lag over the last 10 s
const DEAD_LETTERS_MS = 30_000;

export class Health {
  constructor(element, view, { silentCount }) {
    Object.assign(this, { element, view, silentCount });
    this.arrivals = []; // [arrived at, lag in ms] of recent readings
    this.deadLetters = null;
  }

  async start() {
    await this.refreshDeadLetters();
    this.timer = setInterval(() => this.refreshDeadLetters(), DEAD_LETTERS_MS);
  }

  stop() {
    clearInterval(this.timer);
  }

  reading(time) {
    const now = Date.now();
    this.arrivals.push([now, now - Date.parse(time)]);
  }

  async refreshDeadLetters() {
    if (!this.view.dead_letters) return;
    const start = new Date(Date.now() - 3600_000).toISOString();
    const [byReason, byProfile] = await Promise.all(
      ["reason", "profile"].map((by) => api("/dead-letters/counts", { params: { by, start } })),
    );
    this.deadLetters = { byReason, byProfile };
    this.render();
  }

  figures() {
    const since = Date.now() - WINDOW_MS;
    let old = 0;
    while (old < this.arrivals.length && this.arrivals[old][0] < since) old += 1;
    this.arrivals.splice(0, old);
    const lags = this.arrivals.map((a) => a[1]).sort((a, b) => a - b);
    return {
      rate: this.arrivals.length / (WINDOW_MS / 1000),
      lag: lags.length ? lags[Math.floor(lags.length / 2)] / 1000 : null,
    };
  }

  counts(body) {
    const entries = Object.entries(body.counts);
    if (!entries.length) return h("span", { class: "none" }, t("none"));
    return h("ul", {}, ...entries.map(([k, n]) => h("li", {}, h("span", {}, t(k)), h("b", {}, number(n, 0)))));
  }

  render() {
    const { rate, lag } = this.figures();
    const stat = (key, value) => h("div", { class: "stat", dataset: { stat: key } }, h("span", {}, t(key)), h("b", {}, value));
    const dead = this.deadLetters
      ? h("div", { class: "dead-letters" },
        h("h4", {}, `${t("dead_letters")}: ${number(this.deadLetters.byReason.total, 0)}`),
        h("div", { class: "split" },
          h("div", {}, h("h5", {}, t("by_reason")), this.counts(this.deadLetters.byReason)),
          h("div", {}, h("h5", {}, t("by_profile")), this.counts(this.deadLetters.byProfile))))
      : null;
    this.element.replaceChildren(
      stat("devices_silent", number(this.silentCount(), 0)),
      stat("ingest_rate", number(rate, 1)),
      stat("ingest_lag", lag === null ? "–" : `${number(lag, 2)} s`),
      dead,
    );
  }
}
