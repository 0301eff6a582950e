// The city operations screen: sign in with a token (kept for this tab only), then draw what the
// token's scope allows and keep it current from the live stream.
//
// State at start comes from GET /screen/state, which says which event it reflects; the stream
// resumes right after that event, so nothing between the two is lost or applied twice.

import { Alarms } from "./alarms.js";
import { ApiError, api, headers, token } from "./api.js";
import { DevicePanel } from "./device.js";
import { Districts } from "./districts.js";
import { h } from "./dom.js";
import { Health } from "./health.js";
import { getLanguage, setLanguage, setZone, t, translate } from "./i18n.js";
import { COLOURS, DeviceMap, STATUSES, legendIcon } from "./map.js";
import { OpenData } from "./opendata.js";
import { Stream } from "./stream.js";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);

// What tests and the benchmark read: counts, never a token.
const screen = (window.citysense = { ready: false, events: 0, resumes: 0, resets: 0, ids: [] });

class Screen {
  constructor(view) {
    this.view = view;
    this.byId = new Map();
    this.stream = new Stream({
      headers,
      onEvent: (kind, data, id) => this.event(kind, data, id),
      onReset: () => {
        screen.resets += 1;
        this.reload();
      },
      onStatus: (status) => this.status(status),
    });
  }

  async start() {
    const view = this.view;
    this.map = new DeviceMap($("#map"), {
      outlines: await api("/screen/districts.geojson"),
      tiles: view.tiles,
      onSelect: (i) => this.select(this.devices.id[i]),
    });
    this.alarms = new Alarms($("#alarms .body"), view, {
      onChange: (alarm) => this.alarmChanged(alarm),
      onSelect: (id) => this.select(id),
    });
    this.panel = new DevicePanel($("#device"), view, {
      alarmsOf: (id) => this.alarms.ofDevice(id),
      onClose: () => {},
    });
    this.districts = new Districts($("#districts .body"), view);
    this.health = new Health($("#health .body"), view, { silentCount: () => this.silent() });
    await this.reload();
    this.map.fitAll();
    await Promise.all([this.districts.start(), this.health.start()]);
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  // The whole state again (at start, and when the stream cannot replay what was missed).
  async reload() {
    this.stream.stop();
    const state = await api("/screen/state");
    screen.timings.state = performance.now();
    this.devices = state.devices;
    this.reportingNames = state.reporting;
    this.reporting = Uint8Array.from(state.devices.reporting);
    this.inAlarm = new Uint16Array(state.devices.id.length);
    this.byId = new Map(state.devices.id.map((id, i) => [id, i]));
    this.alarms.load(state.alarms);
    for (const alarm of state.alarms) this.count(alarm, 1);
    this.map.setDevices(state.devices, (i) => this.statusOf(i));
    screen.timings.indexed = performance.now();
    this.stream.start(state.event_id);
    screen.devices = state.devices.id.length;
    // The API has not read its stored alarms back yet (InfluxDB away since it started): they
    // come with a later state, not over the stream.
    if (!state.alarms_replayed) setTimeout(() => this.reload(), 5000);
  }

  statusOf(i) {
    return this.inAlarm[i] ? "alarm" : this.reportingNames[this.reporting[i]];
  }

  silent() {
    const silent = this.reportingNames.indexOf("silent");
    return this.reporting.reduce((n, r) => n + (r === silent), 0);
  }

  count(alarm, delta) {
    const i = this.byId.get(alarm.device_id);
    if (i !== undefined) this.inAlarm[i] = Math.max(0, this.inAlarm[i] + delta);
  }

  event(kind, data, id) {
    screen.events += 1;
    screen.lastId = id;
    screen.ids.push(id);
    if (screen.ids.length > 20000) screen.ids.splice(0, 10000);
    if (kind === "reading") {
      this.health.reading(data.time);
      this.districts.readingIn(data.district);
      this.panel.reading(data);
    } else if (kind === "reporting") {
      const i = this.byId.get(data.device_id);
      if (i !== undefined) this.reporting[i] = this.reportingNames.indexOf(data.to);
      this.map.changed();
    } else if (kind === "alarm") {
      const known = this.alarms.active.has(data.alarm.id);
      if (!known && data.alarm.state === "active") this.count(data.alarm, 1);
      if (known && data.alarm.state === "cleared") this.count(data.alarm, -1);
      this.alarms.event(data);
    }
  }

  alarmChanged(alarm) {
    this.map.changed();
    this.panel.alarmsChanged(alarm.device_id);
  }

  async select(deviceId) {
    await this.panel.show(deviceId);
  }

  status(status) {
    if (status === "live" && this.stream.connections > 1) screen.resumes = this.stream.connections - 1;
    Object.assign($("#live").dataset, { status, t: status });
    $("#live").textContent = t(status);
  }

  tick() {
    this.health.render();
    this.alarms.render();
    if (document.body.classList.contains("wall")) this.cycle();
  }

  // Wall mode: one district after another, the map and the district panel on it.
  cycle() {
    const now = Date.now();
    if (this.nextCycle && now < this.nextCycle) return;
    this.nextCycle = now + (Number(params.get("cycle")) || this.view.wall_cycle) * 1000;
    const list = this.view.districts;
    this.focus = list[(list.indexOf(this.focus) + 1) % list.length];
    const bounds = this.map.districtBounds(this.focus);
    if (bounds) this.map.fit(bounds);
    this.districts.setFocus(this.focus);
    $("#focus").textContent = this.focus;
  }

  leaveWall() {
    this.nextCycle = 0;
    this.focus = null;
    this.districts.setFocus(null);
    $("#focus").textContent = "";
    this.map.fitAll();
  }
}

function legend() {
  $("#legend").replaceChildren(...STATUSES.map((s) => h("span", { class: "item", style: `color:${COLOURS[s]}` }, legendIcon(s), h("span", { "data-t": s }, t(s)))));
}

function setMode(mode, app) {
  const wall = mode === "wall";
  document.body.classList.toggle("wall", wall);
  $("#mode").textContent = t(wall ? "desk" : "wall");
  if (app?.map) {
    app.map.map.invalidateSize();
    if (wall) app.cycle();
    else app.leaveWall();
  }
}

function applyLanguage(lang, app) {
  setLanguage(lang);
  sessionStorage.setItem("citysense.lang", lang);
  translate();
  $("#lang").textContent = lang === "zh" ? "English" : "中文";
  setMode(document.body.classList.contains("wall") ? "wall" : "desk", null);
  app?.districts?.render();
  app?.alarms?.render();
  app?.health?.render();
  if (app?.panel?.device) app.panel.render();
}

async function open() {
  screen.timings = { signin: performance.now() };
  let view;
  try {
    view = await api("/screen/view");
  } catch (error) {
    token.clear();
    showSignIn(error instanceof ApiError && error.status === 401 ? t("sign_in_failed") : error.message);
    return;
  }
  setZone(view.timezone);
  $("#signin").hidden = true;
  $("#screen").hidden = false;
  $("#who").textContent = `${view.name} · ${view.scope}`;
  document.body.dataset.scope = view.scope;
  const app = view.devices ? new Screen(view) : new OpenData(view);
  $("#mode").onclick = () => setMode(document.body.classList.contains("wall") ? "desk" : "wall", app);
  $("#lang").onclick = () => applyLanguage(getLanguage() === "zh" ? "en" : "zh", app);
  setMode(params.get("mode") === "wall" ? "wall" : "desk", app);
  await app.start();
  screen.app = app;
  screen.ready = true;
}

function showSignIn(message = "") {
  $("#screen").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message;
}

function main() {
  applyLanguage(params.get("lang") ?? sessionStorage.getItem("citysense.lang") ?? "en", null);
  legend();
  $("#signin").addEventListener("submit", (e) => {
    e.preventDefault();
    token.set($("#token").value.trim());
    $("#token").value = "";
    open();
  });
  $("#signout").onclick = () => {
    token.clear();
    location.reload();
  };
  if (token.get()) open();
  else showSignIn();
}

main();
