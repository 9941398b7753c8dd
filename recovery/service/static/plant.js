// The plant page: drift and fault-rate charts and the track record, drawn here in SVG
// from the service's two report endpoints (no external library, no CDN).
"use strict";

const token = { value: sessionStorage.getItem("recovery-token") || "" };
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";

async function api(path) {
  const res = await fetch(path, { headers: { "Authorization": "Bearer " + token.value } });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(res.status + ": " + (body && body.detail ? body.detail : res.statusText));
  return body;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined) return "-";
  const t = Number(x).toPrecision(digits);
  return t.includes(".") && !t.includes("e") ? t.replace(/\.?0+$/, "") : t;
}

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// One row per item: a label, an interval [low, high] with its point, on the row's own scale.
function intervalChart(rows, { symmetric }) {
  const W = 980, H = 26, L = 320, R = 260;
  const svg = el("svg", { class: "plant-chart", width: W, height: H * rows.length + 10 });
  rows.forEach((r, i) => {
    const y = 5 + i * H + H / 2;
    const span = symmetric ? Math.max(Math.abs(r.low), Math.abs(r.high), 1e-12) : Math.max(r.high, 1e-12);
    const lo = symmetric ? -span : 0;
    const x = (v) => L + (W - L - R) * (v - lo) / (span - lo);
    const g = el("g", { class: "row", "data-key": r.key });
    g.appendChild(el("text", { x: 4, y: y + 4, class: "label" }, r.label));
    g.appendChild(el("line", { class: "zero", x1: x(0), x2: x(0), y1: y - H / 2 + 3, y2: y + H / 2 - 3 }));
    if (!symmetric) g.appendChild(el("rect", { class: "bar", x: x(0), y: y - 5, width: x(r.value) - x(0), height: 10 }));
    g.appendChild(el("line", { class: "interval" + (r.changed ? " changed" : ""), x1: x(r.low), x2: x(r.high), y1: y, y2: y }));
    g.appendChild(el("circle", { class: "point", cx: x(r.value), cy: y, r: 3.5 }));
    g.appendChild(el("text", { x: W - R + 8, y: y + 4 }, r.text));
    svg.appendChild(g);
  });
  return svg;
}

function renderHealth(h) {
  const drift = h.factories.map((f) => ({
    key: f.factory + "/" + f.characteristic, label: `${f.factory} (${f.partner}) ${f.characteristic}`,
    value: f.drift_per_100d, low: f.drift_low, high: f.drift_high, changed: f.changed,
    text: `${fmt(f.drift_per_100d)} ${f.unit}` + (f.gate_day !== null ? `, gate day ${Math.round(f.gate_day)}` : ""),
  }));
  $("drift").replaceChildren(drift.length ? intervalChart(drift, { symmetric: true }) : "no factory to show");
  const faults = h.faults.map((f) => ({
    key: f.fault, label: `${f.fault} (step ${f.step})`, value: f.rate, low: f.low, high: f.high,
    changed: f.changed, text: `${fmt(100 * f.rate, 2)}%` + (f.changed ? " (more frequent)" : ""),
  }));
  $("faults").replaceChildren(faults.length ? intervalChart(faults, { symmetric: false }) : "no fault to show");
  return h.notes;
}

function renderTrack(t) {
  const pct = (x) => (x === null || x === undefined ? "-" : `${fmt(100 * x, 3)}%`);
  const share = (s) => `${pct(s.recovered)} of ${s.n} [${pct(s.low)}, ${pct(s.high)}]`;
  const rows = [
    ["recommendations", t.n_recommendations], ["decisions", t.n_decisions], ["outcomes", t.n_outcomes],
    ["agreement", pct(t.agreement)], ["recovered when followed", share(t.followed)],
    ["recovered when not followed", share(t.not_followed)],
  ];
  for (const m of t.by_month) rows.push([`net value ${m.month}`, `${fmt(m.net_value, 6)} (doing nothing ${fmt(m.baseline_net_value, 6)})`]);
  $("track").tBodies[0].replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.dataset.key = k;
    for (const x of [k, v]) { const td = document.createElement("td"); td.textContent = x; tr.appendChild(td); }
    return tr;
  }));
  return t.notes;
}

async function load() {
  $("message").textContent = "";
  try {
    const [h, t] = await Promise.all([api("/api/reports/health"), api("/api/reports/track-record")]);
    $("notes").textContent = [...renderHealth(h), ...renderTrack(t)].join(" ");
  } catch (e) {
    $("message").textContent = e.message;
  }
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token.value = $("token").value.trim();
  sessionStorage.setItem("recovery-token", token.value);
  load();
});
if (token.value) load();
