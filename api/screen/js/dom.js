// A small element builder: h("div", { class: "x", onclick: f }, "text", child). Text is always
// set as text, never as HTML, so nothing a device sends can become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

// Units as the contract spells them (UCUM-like), as a person reads them.
const UNITS = { Cel: "°C", "1": "", "ug/m3": "µg/m³", m3: "m³", "m3/h": "m³/h", deg: "°" };
export const unit = (u) => (u === null || u === undefined ? "" : UNITS[u] ?? u);
