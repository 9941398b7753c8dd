// The engineers' page: plain JS and SVG, no external library, no network beyond this service.
"use strict";

const state = { token: sessionStorage.getItem("recovery-token") || "", batch: null, view: null,
                supersedes: null };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = Object.assign({ "Authorization": "Bearer " + state.token }, options.headers || {});
  const res = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : res.statusText;
    const err = new Error(res.status + ": " + detail);
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
}

function fmt(x, digits = 4) {
  if (x === null || x === undefined) return "";
  const t = Number(x).toPrecision(digits);
  // drop trailing zeros of a decimal fraction only (1210 stays 1210, 0.50 becomes 0.5)
  return t.includes(".") && !t.includes("e") ? t.replace(/\.?0+$/, "") : t;
}

async function loadModel() {
  const m = await api("/api/model");
  $("model").textContent = `${m.process} (${m.n_steps} steps), model ${m.model_version}`;
}

async function loadList() {
  $("list-message").textContent = "loading...";
  const filter = $("filter").value;
  try {
    const rows = await api("/api/batches" + (filter ? "?status=" + encodeURIComponent(filter) : ""));
    const tbody = $("batches").querySelector("tbody");
    tbody.innerHTML = "";
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.dataset.batch = r.batch_id;
      tr.className = "status-" + r.status.replace(/ /g, "-");
      for (const v of [r.batch_id, r.status, r.step ?? "", r.p_accept === null ? "" : fmt(r.p_accept, 2)]) {
        const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      }
      tr.addEventListener("click", () => loadBatch(r.batch_id));
      tbody.appendChild(tr);
    }
    $("list-message").textContent = rows.length ? "" : "no batches";
  } catch (e) { $("list-message").textContent = e.message; }
}

async function loadBatch(id) {
  state.batch = id;
  state.supersedes = null;
  $("decision-message").textContent = "";
  $("batch").hidden = false;
  $("batch-title").textContent = "Batch " + id + " (loading...)";
  try {
    const v = await api("/api/batches/" + encodeURIComponent(id));
    state.view = v;
    renderBatch(v);
    loadMeasure(id);
  } catch (e) { $("batch-title").textContent = "Batch " + id + ": " + e.message; }
}

// The top 3 extra measurements (recovery measure), beside the recommendation; it runs
// its own analysis, so it comes after the page is drawn.
async function loadMeasure(id) {
  const tbody = $("measure").querySelector("tbody");
  tbody.innerHTML = "";
  $("measure-message").textContent = "weighing extra measurements...";
  try {
    const m = await api("/api/batches/" + encodeURIComponent(id) + "/measure?top=3");
    if (state.batch !== id) return;
    if (!m.measure) { $("measure-message").textContent = m.message || ""; return; }
    const a = m.measure;
    for (const c of a.candidates) {
      const tr = document.createElement("tr");
      const cells = [c.step, c.characteristic, c.sample,
        `${Math.round(c.evsi)} ${a.currency} (${Math.round(c.low)} to ${Math.round(c.high)})`,
        `${Math.round(c.cost)} ${a.currency}`, c.changes_decision || "nothing"];
      for (const v of cells) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
      tbody.appendChild(tr);
    }
    const best = a.candidates[0];
    $("measure-message").textContent = best && best.evsi > best.cost
      ? `Worth measuring ${best.characteristic} on ${best.sample} bars before deciding.`
      : `No extra measurement pays for itself: decide now (${a.decision_now}).`;
  } catch (e) { if (state.batch === id) $("measure-message").textContent = e.message; }
}

// Every figure shown here comes formatted by the service (recovery/service/readable.py):
// percentages, plan values at the lever's resolution, the root-cause sentence.
function renderBatch(v) {
  const rec = v.recommendation;
  $("batch-title").textContent = `Batch ${v.batch_id}: ${v.status}`;
  for (const id of ["decision-headline", "probability", "root-cause-sentence", "summary", "root-cause"]) $(id).innerHTML = "";
  $("plan").querySelector("tbody").innerHTML = "";
  if (!rec) {
    $("summary").textContent = v.message || "no recommendation";
  } else {
    renderVerdict(rec);
    renderRootCause(rec);
    renderPlan(rec, v.levers);
  }
  renderCharts(v);
}

function renderVerdict(rec) {
  $("decision-headline").textContent = `${rec.decision.toUpperCase()} after step ${rec.step}`;
  const pa = rec.p_accept_text, pn = rec.p_accept_do_nothing_text;
  const p1 = document.createElement("p");
  p1.id = "p-accept";
  p1.textContent = `P(accept) with the plan: ${pa.mean} (94% interval ${pa.low} to ${pa.high})`;
  const p2 = document.createElement("p");
  p2.id = "p-accept-nothing";
  p2.textContent = `Doing nothing: ${pn.mean} (${pn.low} to ${pn.high})`;
  $("probability").append(p1, p2);
  $("summary").textContent = "Expected cost: " +
    Object.entries(rec.expected_cost).map(([k, c]) => `${k} ${Math.round(c)} ${rec.currency}`).join(", ") +
    (rec.out_of_range ? ". OUT OF THE DATA'S RANGE: " + rec.reasons.join("; ") : "");
}

function renderRootCause(rec) {
  $("root-cause-sentence").textContent = rec.root_cause_sentence;
  for (const c of rec.root_cause.slice(0, 3)) {
    const li = document.createElement("li");
    li.textContent = `${c.probability_text}: ${c.path}`;
    $("root-cause").appendChild(li);
  }
}

function renderPlan(rec, leverList) {
  const tbody = $("plan").querySelector("tbody");
  const levers = Object.fromEntries(leverList.map((l) => [l.name, l]));
  for (const r of rec.plan) {
    const tr = document.createElement("tr");
    const l = levers[r.lever];
    const input = document.createElement("input");
    input.className = "plan-value"; input.type = "number"; input.step = String(l.resolution);
    input.value = Number(r.display_value).toFixed(r.decimals); input.dataset.lever = r.lever;
    const cells = [r.step, r.lever, input, r.unit,
                   `${Number(l.low).toFixed(l.decimals)} to ${Number(l.high).toFixed(l.decimals)}`];
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof HTMLElement) td.appendChild(c); else td.textContent = c;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs, parent, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, val] of Object.entries(attrs)) e.setAttribute(k, val);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function renderCharts(v) {
  const box = $("charts");
  box.innerHTML = "";
  const W = 380, H = 190, L = 58, R = 12, T = 22, B = 34;
  const pred = v.predicted || {};
  for (const ch of v.characteristics) {
    const ys = ch.readings.map((r) => r.value);
    for (const x of [ch.lower, ch.upper]) if (x !== null) ys.push(x);
    for (const g of ch.gates) for (const x of [g.lower, g.upper]) if (x !== null) ys.push(x);
    for (const k of ["nothing", "plan"]) {
      const e = pred[k] && pred[k][ch.name];
      if (e) ys.push(e.hdi_low, e.hdi_high);
    }
    if (!ys.length) continue;
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (hi - lo < 1e-12) { lo -= 1; hi += 1; }
    const pad = 0.08 * (hi - lo); lo -= pad; hi += pad;
    const x = (s) => L + (W - L - R) * s / v.n_steps;
    const y = (val) => T + (H - T - B) * (1 - (val - lo) / (hi - lo));
    const svg = el("svg", { class: "chart", width: W, height: H, "data-characteristic": ch.name }, box);
    el("text", { x: L, y: 15, "font-size": 12, "font-weight": "bold" }, svg, `${ch.name} (${ch.unit})`);
    if (ch.lower !== null || ch.upper !== null) {
      const top = y(ch.upper !== null ? ch.upper : hi), bot = y(ch.lower !== null ? ch.lower : lo);
      el("rect", { class: "band", x: L, y: top, width: W - L - R, height: Math.max(bot - top, 1), fill: "#cfe8d5" }, svg);
    }
    for (const s of v.inspections) {
      el("line", { x1: x(s), x2: x(s), y1: T, y2: H - B, stroke: "#999", "stroke-dasharray": "3,3" }, svg);
    }
    for (const g of ch.gates) {
      if (g.lower === null || g.upper === null) continue;
      el("line", { x1: x(g.step) - 5, x2: x(g.step) + 5, y1: y(g.lower), y2: y(g.lower), stroke: "#e0a400", "stroke-width": 2 }, svg);
      el("line", { x1: x(g.step) - 5, x2: x(g.step) + 5, y1: y(g.upper), y2: y(g.upper), stroke: "#e0a400", "stroke-width": 2 }, svg);
    }
    el("line", { x1: x(v.last_step), x2: x(v.last_step), y1: T, y2: H - B, stroke: "#24466b" }, svg);
    for (const r of ch.readings) {
      el("circle", { class: "reading", cx: x(r.step), cy: y(r.value), r: 2, fill: "#24466b" }, svg);
    }
    [["nothing", "#999", -6], ["plan", "#1b7a2c", 6]].forEach(([k, color, dx]) => {
      const e = pred[k] && pred[k][ch.name];
      if (!e) return;
      const cx = x(v.n_steps) + dx - 8;
      el("line", { class: "predicted-" + k, x1: cx, x2: cx, y1: y(e.hdi_low), y2: y(e.hdi_high), stroke: color, "stroke-width": 4 }, svg);
      el("circle", { cx: cx, cy: y(e.mean), r: 3, fill: color }, svg);
    });
    // axes
    el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#333" }, svg);
    el("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#333" }, svg);
    for (const s of [0, ...v.inspections]) {
      el("text", { x: x(s), y: H - B + 13, "font-size": 9, "text-anchor": "middle" }, svg, s);
    }
    el("text", { x: (L + W - R) / 2, y: H - 4, "font-size": 10, "text-anchor": "middle" }, svg, "step");
    for (const val of [lo + pad, (lo + hi) / 2, hi - pad]) {
      el("text", { class: "tick-y", x: L - 4, y: y(val) + 3, "font-size": 9, "text-anchor": "end" }, svg, fmt(val, 4));
    }
    el("text", { x: 12, y: (T + H - B) / 2, "font-size": 10, "text-anchor": "middle",
                 transform: `rotate(-90 12 ${(T + H - B) / 2})` }, svg, ch.unit);
  }
}

async function decide(kind) {
  const body = { decision: kind, comment: $("comment").value };
  if (kind === "modify") {
    body.plan = {};
    for (const inp of document.querySelectorAll("input.plan-value")) body.plan[inp.dataset.lever] = Number(inp.value);
  }
  // Replacing a final decision is explicit: only after the service said which one is final.
  if (state.supersedes !== null) body.supersedes = state.supersedes;
  const msg = $("decision-message");
  // One key per click: a retried or duplicated request is stored once.
  const key = (window.crypto && crypto.randomUUID) ? crypto.randomUUID()
    : Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  try {
    const r = await api("/api/batches/" + encodeURIComponent(state.batch) + "/decision", {
      method: "POST", headers: { "Content-Type": "application/json", "Idempotency-Key": key },
      body: JSON.stringify(body) });
    state.supersedes = null;
    msg.className = "message ok";
    msg.textContent = `Decision recorded: ${r.decision} (decision ${r.decision_id}, audit entry ${r.audit_id})` +
      (r.supersedes !== null && r.supersedes !== undefined ? `, replacing decision ${r.supersedes}` : "");
  } catch (e) {
    msg.className = "message";
    msg.textContent = e.message;
    if (e.status === 409 && e.body && e.body.current_decision_id >= 0) {
      state.supersedes = e.body.current_decision_id;
      msg.textContent = `409: batch ${state.batch} already has a final decision ` +
        `(decision ${state.supersedes}). Decide again to replace it.`;
    }
  }
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("recovery-token", state.token);
  start();
});
$("filter").addEventListener("change", loadList);
$("accept").addEventListener("click", () => decide("accept"));
$("reject").addEventListener("click", () => decide("reject"));
$("modify").addEventListener("click", () => decide("modify"));

function start() {
  if (!state.token) return;
  loadModel().catch((e) => { $("model").textContent = e.message; });
  loadList();
}
start();
