// What an open-data token's screen shows: registered devices per district (GET /districts) and
// each profile's first summary figure per district and whole past day (GET /aggregates, which
// publishes no figure over fewer than k devices). No device, no map points, no stream.

import { api } from "./api.js";
import { h, unit } from "./dom.js";
import { number, t } from "./i18n.js";

const DAYS = 7;

export class OpenData {
  constructor(view) {
    this.view = view;
  }

  async start() {
    document.querySelector("#map").replaceChildren(h("p", { class: "empty", "data-t": "open_data" }, t("open_data")));
    const districts = await api("/districts");
    const start = new Date(Date.now() - (DAYS + 1) * 86400_000).toISOString();
    const tables = [];
    for (const [name, profile] of Object.entries(this.view.profiles)) {
      const figure = profile.summary[0];
      if (!figure) continue;
      const params = { profile: name, field: figure.field, every: "day", tz: this.view.open_data_timezone, group_by: "district", start };
      Object.assign(params, figure.op === "count" ? { agg: "count", equals: String(figure.equals) } : { agg: "mean" });
      tables.push(this.table(name, figure, await api("/aggregates", { params })));
    }
    const counts = districts.items.map((d) => h("div", { class: "figure", dataset: { district: d.district } },
      h("span", {}, d.district), h("b", {}, number(d.devices, 0))));
    document.querySelector("#districts .body").replaceChildren(h("h4", { "data-t": "registered" }, t("registered")), ...counts);
    document.querySelector("#alarms").hidden = true;
    document.querySelector("#health").hidden = true;
    document.querySelector("#map").append(...tables);
  }

  table(profile, figure, body) {
    const days = [...new Set(body.rows.map((r) => r.time))];
    const cell = (district, day) => {
      const row = body.rows.find((r) => r.district === district && r.time === day);
      return h("td", {}, row?.suppressed ? "·" : number(row?.value ?? null, 1));
    };
    const districts = [...new Set(body.rows.map((r) => r.district))];
    return h("table", { class: "open-data", dataset: { profile } },
      h("caption", {}, `${t(profile)}: ${t(figure.name)} ${unit(body.unit)}`),
      h("tr", {}, h("th", {}), ...days.map((d) => h("th", {}, d.slice(5, 10)))),
      ...districts.map((d) => h("tr", {}, h("th", {}, d), ...days.map((day) => cell(d, day)))));
  }
}
