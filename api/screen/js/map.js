// The map: district outlines as the base layer (no internet assumed; a tile layer only when the
// deployment has a tile server), and every device drawn on one canvas, clustered by supercluster
// when zoomed out. Each status has a colour and a shape, so it reads without colour too.

const L = window.L;

export const STATUSES = ["on_time", "late", "silent", "never", "alarm"];
export const COLOURS = {
  on_time: "#2e9d5b",
  late: "#e0a100",
  silent: "#7d8794",
  never: "#3b7dd8",
  alarm: "#d7263d",
};
// Clusters take the colour of the worst status among their devices.
const WORST = ["alarm", "silent", "late", "never", "on_time"];

// A shape per status, centred on (x, y) with radius r.
function shape(ctx, status, x, y, r) {
  ctx.beginPath();
  if (status === "on_time") ctx.arc(x, y, r, 0, 2 * Math.PI);
  else if (status === "late") {
    ctx.moveTo(x, y - r);
    ctx.lineTo(x + r, y + r * 0.8);
    ctx.lineTo(x - r, y + r * 0.8);
  } else if (status === "silent") ctx.rect(x - r * 0.85, y - r * 0.85, r * 1.7, r * 1.7);
  else if (status === "never") ctx.arc(x, y, r * 0.8, 0, 2 * Math.PI);
  else {
    ctx.moveTo(x, y - r * 1.3);
    ctx.lineTo(x + r * 1.1, y);
    ctx.lineTo(x, y + r * 1.3);
    ctx.lineTo(x - r * 1.1, y);
  }
  ctx.closePath();
  if (status === "never") {
    ctx.lineWidth = 2;
    ctx.strokeStyle = COLOURS.never;
    ctx.stroke();
  } else {
    ctx.fillStyle = COLOURS[status];
    ctx.fill();
  }
  if (status === "alarm") {
    ctx.fillStyle = "#fff";
    ctx.fillText("!", x, y + 0.5);
  }
}

export function legendIcon(status) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 16;
  const ctx = canvas.getContext("2d");
  ctx.font = "bold 9px sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  shape(ctx, status, 8, 8, 5);
  return canvas;
}

export class DeviceMap {
  constructor(element, { outlines, tiles, onSelect }) {
    this.onSelect = onSelect;
    this.map = L.map(element, { zoomAnimation: false, zoomSnap: 0.25, preferCanvas: true, attributionControl: false });
    this.map.setView([0, 0], 2);
    if (tiles) L.tileLayer(tiles, { maxZoom: 19 }).addTo(this.map);
    this.outlines = L.geoJSON(outlines, {
      style: { color: "#5b8def", weight: 2, fillColor: "#5b8def", fillOpacity: 0.06 },
      onEachFeature: (feature, layer) => {
        const name = feature.properties.district ?? feature.properties.name;
        layer.bindTooltip(name, { permanent: true, direction: "center", className: "district-label" });
      },
    }).addTo(this.map);
    this.canvas = L.DomUtil.create("canvas", "device-layer", this.map.getContainer());
    this.drawn = []; // what the last frame drew: [x, y, radius, cluster or device index]
    this.visible = 0; // devices in the last frame, clusters counted by their size
    this.map.on("move zoom resize", () => this.request());
    this.map.on("click", (e) => this.click(e.containerPoint));
  }

  // devices: { lon, lat } arrays; status(i) says what to draw for device i.
  setDevices(devices, status) {
    this.devices = devices;
    this.status = status;
    this.reindex();
  }

  reindex() {
    this.build();
    this.request();
  }

  build() {
    const { lon, lat } = this.devices;
    const points = new Array(lon.length);
    for (let i = 0; i < lon.length; i += 1) {
      points[i] = { type: "Feature", geometry: { type: "Point", coordinates: [lon[i], lat[i]] }, properties: { i } };
    }
    const status = this.status;
    this.index = new window.Supercluster({
      radius: 46, // screen pixels: the extent is Leaflet's 256-pixel tile
      extent: 256,
      maxZoom: 16,
      map: (p) => ({ worst: WORST.indexOf(status(p.i)) }),
      reduce: (into, p) => { into.worst = Math.min(into.worst, p.worst); },
    }).load(points);
    this.indexed = performance.now();
    this.stale = false;
  }

  // A device's status changed: points redraw at once; clusters are re-indexed at most every 2 s.
  changed() {
    this.stale = true;
    this.request();
    clearTimeout(this.restale);
    this.restale = setTimeout(() => this.request(), 2100); // the last change is drawn too
  }

  fit(bounds) {
    this.map.fitBounds(bounds, { padding: [20, 20], animate: false });
  }

  fitAll() {
    if (this.devices?.lon.length) {
      const { lon, lat } = this.devices;
      let [w, s, e, n] = [180, 90, -180, -90];
      for (let i = 0; i < lon.length; i += 1) {
        w = Math.min(w, lon[i]); e = Math.max(e, lon[i]);
        s = Math.min(s, lat[i]); n = Math.max(n, lat[i]);
      }
      this.fit([[s, w], [n, e]]);
    } else if (this.outlines.getLayers().length) {
      this.fit(this.outlines.getBounds());
    } else {
      this.map.setView([0, 0], 2);
    }
  }

  districtBounds(name) {
    const layer = this.outlines.getLayers().find((l) => (l.feature.properties.district ?? l.feature.properties.name) === name);
    return layer?.getBounds();
  }

  request() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.draw();
    });
  }

  draw() {
    const size = this.map.getSize();
    const ratio = window.devicePixelRatio || 1;
    const canvas = this.canvas;
    if (canvas.width !== size.x * ratio || canvas.height !== size.y * ratio) {
      canvas.width = size.x * ratio;
      canvas.height = size.y * ratio;
      canvas.style.width = `${size.x}px`;
      canvas.style.height = `${size.y}px`;
    }
    if (this.index && this.stale && performance.now() - this.indexed > 2000) this.build();
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, size.x, size.y);
    if (!this.index) return;
    const b = this.map.getBounds();
    const items = this.index.getClusters([b.getWest(), b.getSouth(), b.getEast(), b.getNorth()], Math.round(this.map.getZoom()));
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    this.drawn = [];
    this.visible = 0;
    for (const item of items) {
      const [lon, lat] = item.geometry.coordinates;
      const p = this.map.latLngToContainerPoint([lat, lon]);
      const props = item.properties;
      if (props.cluster) {
        const r = 9 + Math.min(13, Math.log2(props.point_count) * 1.6);
        this.cluster(ctx, p, r, WORST[props.worst], props.point_count_abbreviated);
        this.drawn.push([p.x, p.y, r, { cluster: props.cluster_id, at: [lat, lon] }]);
        this.visible += props.point_count;
      } else {
        ctx.font = "bold 9px sans-serif";
        shape(ctx, this.status(props.i), p.x, p.y, 5);
        this.drawn.push([p.x, p.y, 7, { device: props.i }]);
        this.visible += 1;
      }
    }
    // When every device was first on the map (what the benchmark times).
    if (!this.complete && this.visible === this.devices.lon.length) this.complete = performance.now();
  }

  cluster(ctx, p, r, worst, label) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = "rgba(30, 40, 60, 0.85)";
    ctx.fill();
    ctx.lineWidth = 3;
    ctx.strokeStyle = COLOURS[worst];
    ctx.stroke();
    ctx.fillStyle = "#fff";
    ctx.font = "bold 11px sans-serif";
    ctx.fillText(String(label), p.x, p.y);
  }

  click(point) {
    let best = null;
    let bestDistance = Infinity;
    for (const [x, y, r, what] of this.drawn) {
      const d = Math.hypot(point.x - x, point.y - y);
      if (d <= r + 3 && d < bestDistance) [best, bestDistance] = [what, d];
    }
    if (best?.device !== undefined) this.onSelect(best.device);
    else if (best) {
      const zoom = this.index.getClusterExpansionZoom(best.cluster);
      this.map.setView(best.at, Math.min(zoom, 18), { animate: false });
    }
  }
}
