// The node's dashboard: every number comes from the public REST API (/api/v1/...).
// Views: #/fleet (all GPUs with their newest values), #/gpu/<uuid> (charts and the GPU's
// workload timeline), #/workloads (namespaces and pods over time), #/workload/<ns>/<pod>,
// #/cluster.
"use strict";

const REFRESH_MS = 5000;
const RANGES = { "5m": 5 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3 };
const COLUMNS = [
  { key: "hostname", label: "Host" },
  { key: "gpu_index", label: "GPU", num: true },
  { key: "model", label: "Model" },
  { key: "DCGM_FI_DEV_GPU_UTIL", label: "Util %", num: true, metric: true },
  { key: "DCGM_FI_DEV_GPU_TEMP", label: "Temp °C", num: true, metric: true },
  { key: "DCGM_FI_DEV_POWER_USAGE", label: "Power W", num: true, metric: true },
  { key: "DCGM_FI_DEV_FB_USED", label: "Memory used MiB", num: true, metric: true },
  { key: "uuid", label: "UUID" },
];

const state = { sort: "hostname", asc: true, filter: "", range: "1h", timer: null, charts: [] };

function token() { return localStorage.getItem("telemetry.token") || ""; }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  const resp = await fetch(path, { headers });
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : resp.statusText;
    throw new ApiError(resp.status, msg);
  }
  return body;
}

function showError(e) {
  const box = document.getElementById("error");
  if (!e) { box.hidden = true; box.textContent = ""; return; }
  let text = e.message;
  if (e.status === 401) {
    text = token()
      ? "The API token was refused (401). Enter the token this node was started with (--api-token)."
      : "This node requires an API token (401). Enter it above.";
  } else if (e.status === 403) {
    text = "This token may not do that (403).";
  }
  box.textContent = text;
  box.hidden = false;
}

function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return n;
}

function fmt(v) {
  if (v === undefined || v === null) return "–";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function schedule(fn) {
  clearTimeout(state.timer);
  state.timer = setTimeout(fn, REFRESH_MS);
}

// ---- fleet ----

function fleetRows(items) {
  return items.map((g) => {
    const row = { uuid: g.uuid, hostname: g.hostname, gpu_index: g.gpu_index, model: g.model };
    for (const c of COLUMNS) if (c.metric) row[c.key] = g.latest[c.key] ? g.latest[c.key].value : undefined;
    return row;
  });
}

async function fleet(view) {
  const page = await api("/api/v1/latest?limit=10000");
  showError(null);
  let rows = fleetRows(page.items);
  const f = state.filter.toLowerCase();
  if (f) rows = rows.filter((r) => [r.hostname, r.uuid, r.model].some((s) => s.toLowerCase().includes(f)));
  const col = COLUMNS.find((c) => c.key === state.sort) || COLUMNS[0];
  rows.sort((a, b) => {
    const x = a[col.key], y = b[col.key];
    const d = x === undefined ? 1 : y === undefined ? -1 : col.num ? x - y : String(x).localeCompare(String(y));
    return state.asc ? d : -d;
  });
  const search = el("input", { type: "search", id: "fleet-filter", placeholder: "Filter by host, UUID or model" });
  search.value = state.filter;
  search.addEventListener("input", () => { state.filter = search.value; render(); });
  const head = el("tr", {}, ...COLUMNS.map((c) => {
    const th = el("th", { class: (c.num ? "num " : "") + (state.sort === c.key ? "sorted" + (state.asc ? " asc" : "") : ""), "data-key": c.key }, c.label);
    th.addEventListener("click", () => {
      state.asc = state.sort === c.key ? !state.asc : true;
      state.sort = c.key;
      render();
    });
    return th;
  }));
  const body = el("tbody", {}, ...rows.map((r) => {
    const tr = el("tr", { "data-uuid": r.uuid }, ...COLUMNS.map((c) => el("td", { class: c.num ? "num" : "" }, c.metric ? fmt(r[c.key]) : r[c.key])));
    tr.addEventListener("click", () => { location.hash = "#/gpu/" + encodeURIComponent(r.uuid); });
    return tr;
  }));
  const focused = document.activeElement && document.activeElement.id === "fleet-filter";
  view.replaceChildren(
    el("div", { class: "toolbar" }, search, el("span", { class: "count", id: "fleet-count" },
      `${rows.length} of ${page.total} GPUs` + (page.partial ? ` (partial: ${page.unavailable_nodes.join(", ")} did not answer)` : ""))),
    el("table", { id: "fleet" }, el("thead", {}, head), body));
  if (focused) { const s = document.getElementById("fleet-filter"); s.focus(); s.setSelectionRange(s.value.length, s.value.length); }
}

// ---- one GPU ----

async function gpu(view, uuid) {
  const detail = await api("/api/v1/gpus/" + encodeURIComponent(uuid));
  showError(null);
  // Windows end at the GPU's newest sample (now, for a live stream; the file's end for a replay).
  const end = detail.last_timestamp ? Date.parse(detail.last_timestamp) : Date.now();
  const span = RANGES[state.range];
  const step = Math.max(1000, Math.floor(span / 300 / 1000) * 1000);
  const q = new URLSearchParams({ start_time: new Date(end - span).toISOString(), end_time: new Date(end).toISOString(), step: step / 1000 + "s" });
  const steps = await api(`/api/v1/gpus/${encodeURIComponent(uuid)}/steps?${q}`);
  const ranges = el("span", { class: "ranges" }, ...Object.keys(RANGES).map((r) =>
    el("button", { class: r === state.range ? "active" : "", "data-range": r, onclick: () => { state.range = r; render(); } }, "last " + r)));
  const charts = el("div", { class: "charts", id: "charts" });
  const when = await timeline(uuid, end - span, end);
  view.replaceChildren(
    el("div", { class: "toolbar" }, el("a", { href: "#/fleet" }, "← fleet"), ranges),
    el("h2", {}, `${detail.hostname} · GPU ${detail.gpu_index} · ${detail.model}`),
    el("div", { class: "meta" }, `${uuid} · step ${step / 1000}s · samples ${detail.first_timestamp || "–"} … ${detail.last_timestamp || "–"}` + (steps.partial ? " · partial" : "")
      + (detail.pod ? ` · now running ${detail.namespace}/${detail.pod}` : "")),
    when, charts);
  state.charts.forEach((c) => c.destroy());
  state.charts = [];
  for (const s of steps.series) {
    const box = el("div", { class: "chart", "data-metric": s.metric, "data-points": s.timestamps.length }, el("h3", {}, s.metric));
    charts.append(box);
    const data = [s.timestamps.map((t) => t / 1000), s.avg];
    const opts = {
      width: Math.max(300, box.clientWidth - 16), height: 180, legend: { show: false },
      series: [{}, { label: s.metric, stroke: "#2b6cb0", width: 1.5 }],
      axes: [{}, { size: 70, values: (u, ticks) => ticks.map((v) => v.toLocaleString()) }],
    };
    state.charts.push(new uPlot(opts, data, box));
  }
}

// ---- workloads ----

const PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];

function kwh(j) { return (j / 3.6e6).toFixed(2); }
function hours(s) { return (s / 3600).toFixed(2); }

// A PromQL range query over the window, as uPlot data: one series per result, by `label`.
async function promRange(query, start, end, label) {
  const step = Math.max(1, Math.floor((end - start) / 300 / 1000));
  const q = new URLSearchParams({ query, start: start / 1000, end: end / 1000, step });
  const r = await api("/prometheus/api/v1/query_range?" + q);
  const times = [];
  for (let t = Math.ceil(start / 1000 / step) * step; t <= end / 1000; t += step) times.push(t);
  const index = new Map(times.map((t, i) => [t, i]));
  const series = r.data.result.map((s) => {
    const ys = new Array(times.length).fill(null);
    for (const [t, v] of s.values) { const i = index.get(Math.round(t)); if (i !== undefined) ys[i] = Number(v); }
    return { name: s.metric[label] || "(none)", ys };
  });
  return { times, series };
}

function lineChart(box, title, data) {
  box.append(el("h3", {}, title));
  const opts = {
    width: Math.max(300, box.clientWidth - 16), height: 200, legend: { show: true },
    series: [{}, ...data.series.map((s, i) => ({ label: s.name, stroke: PALETTE[i % PALETTE.length], width: 1.5 }))],
    axes: [{}, { size: 70, values: (u, ticks) => ticks.map((v) => v.toLocaleString()) }],
  };
  state.charts.push(new uPlot(opts, [data.times, ...data.series.map((s) => s.ys)], box));
  box.dataset.series = data.series.length;
}

function rangeButtons() {
  return el("span", { class: "ranges" }, ...Object.keys(RANGES).map((r) =>
    el("button", { class: r === state.range ? "active" : "", "data-range": r, onclick: () => { state.range = r; render(); } }, "last " + r)));
}

function useRow(u, link) {
  const name = u.pod ? `${u.namespace}/${u.pod}` : u.namespace || u.hpc_job;
  const tr = el("tr", { "data-workload": name },
    el("td", {}, name), el("td", { class: "num" }, u.gpus), el("td", { class: "num" }, hours(u.gpu_seconds)),
    el("td", { class: "num" }, fmt(u.mean_utilization)), el("td", { class: "num" }, kwh(u.energy_joules)),
    el("td", {}, u.first_seen), el("td", {}, u.last_seen));
  if (link) tr.addEventListener("click", () => { location.hash = link; });
  return tr;
}

function useTable(id, what, rows) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, ...[what, "GPUs", "GPU hours", "Mean util %", "Energy kWh", "First seen", "Last seen"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

async function workloads(view) {
  const end = Date.now(), start = end - RANGES[state.range];
  const q = new URLSearchParams({ start_time: new Date(start).toISOString(), end_time: new Date(end).toISOString() });
  const list = await api("/api/v1/workloads?" + q);
  showError(null);
  const util = await promRange("avg by (namespace) (DCGM_FI_DEV_GPU_UTIL{namespace!=\"\"})", start, end, "namespace");
  const power = await promRange("sum by (namespace) (DCGM_FI_DEV_POWER_USAGE{namespace!=\"\"})", start, end, "namespace");
  const charts = el("div", { class: "charts" });
  view.replaceChildren(
    el("div", { class: "toolbar" }, rangeButtons(), el("span", { class: "count", id: "workload-count" },
      `${list.namespaces.length} namespaces, ${list.pods.length} pods` + (list.partial ? ` (partial: ${list.unavailable_nodes.join(", ")} did not answer)` : ""))),
    charts,
    el("h2", {}, "Namespaces"), useTable("namespaces", "Namespace", list.namespaces.map((u) => useRow(u))),
    el("h2", {}, "Pods"), useTable("pods", "Pod", list.pods.map((u) => useRow(u, `#/workload/${encodeURIComponent(u.namespace)}/${encodeURIComponent(u.pod)}`))));
  state.charts.forEach((c) => c.destroy());
  state.charts = [];
  for (const [id, title, data] of [["chart-util", "Utilisation % by namespace", util], ["chart-power", "Power W by namespace", power]]) {
    const box = el("div", { class: "chart", id });
    charts.append(box);
    lineChart(box, title, data);
  }
}

async function workload(view, ns, pod) {
  const one = await api(`/api/v1/workloads/${encodeURIComponent(ns)}/${encodeURIComponent(pod)}`);
  showError(null);
  const first = Date.parse(one.first_seen), last = Date.parse(one.last_seen);
  const pad = Math.max(60e3, (last - first) / 10);
  const sel = `{namespace=${JSON.stringify(ns)}, pod=${JSON.stringify(pod)}}`;
  const util = await promRange(`DCGM_FI_DEV_GPU_UTIL${sel}`, first - pad, last + pad, "UUID");
  const power = await promRange(`DCGM_FI_DEV_POWER_USAGE${sel}`, first - pad, last + pad, "UUID");
  const charts = el("div", { class: "charts" });
  const gpus = one.items.map((g) => el("tr", { "data-uuid": g.gpu, onclick: () => { location.hash = "#/gpu/" + encodeURIComponent(g.gpu); } },
    el("td", {}, g.gpu), el("td", { class: "num" }, g.spans.length),
    el("td", {}, g.spans.map((s) => `${s.start} … ${s.end}`).join(", "))));
  view.replaceChildren(
    el("div", { class: "toolbar" }, el("a", { href: "#/workloads" }, "← workloads")),
    el("h2", {}, `${ns}/${pod}`),
    el("div", { class: "meta", id: "workload-summary" },
      `${one.gpus} GPUs · ${hours(one.gpu_seconds)} GPU hours · mean utilisation ${fmt(one.mean_utilization)} % · ${kwh(one.energy_joules)} kWh · ${one.first_seen} … ${one.last_seen}`),
    charts,
    el("table", { id: "workload-gpus" }, el("thead", {}, el("tr", {}, ...["GPU", "Spans", "When"].map((h) => el("th", {}, h)))), el("tbody", {}, ...gpus)));
  state.charts.forEach((c) => c.destroy());
  state.charts = [];
  for (const [id, title, data] of [["chart-util", "Utilisation % per GPU", util], ["chart-power", "Power W per GPU", power]]) {
    const box = el("div", { class: "chart", id });
    charts.append(box);
    lineChart(box, title, data);
  }
}

// The GPU's workloads over the window, as coloured bars; idle time stays blank.
async function timeline(uuid, start, end) {
  const q = new URLSearchParams({ start_time: new Date(start).toISOString(), end_time: new Date(end).toISOString() });
  const a = await api(`/api/v1/gpus/${encodeURIComponent(uuid)}/attribution?${q}`);
  const bar = el("div", { class: "timeline", id: "timeline" });
  const names = [...new Set(a.spans.map((s) => `${s.namespace || ""}/${s.pod || s.hpc_job || ""}`))];
  for (const s of a.spans) {
    const from = Math.max(start, Date.parse(s.start)), to = Math.min(end, Date.parse(s.end) + 1000);
    const name = `${s.namespace || ""}/${s.pod || s.hpc_job || ""}`;
    const seg = el("div", { class: "span", "data-pod": s.pod || "", title: `${name} · ${s.start} … ${s.end} · util ${fmt(s.mean_utilization)} %` });
    seg.style.left = ((from - start) / (end - start) * 100) + "%";
    seg.style.width = Math.max(0.3, (to - from) / (end - start) * 100) + "%";
    seg.style.background = PALETTE[names.indexOf(name) % PALETTE.length];
    bar.append(seg);
  }
  return el("div", { class: "chart" }, el("h3", {}, `Workloads (${a.spans.length} spans)`), bar,
    el("div", { class: "legend" }, ...names.map((n, i) => el("span", {}, el("i", { style: `background:${PALETTE[i % PALETTE.length]}` }), n))));
}

// ---- cluster ----

async function cluster(view) {
  const c = await api("/api/v1/cluster");
  showError(null);
  const rows = c.members.map((m) => el("tr", { "data-member": m.name },
    el("td", {}, m.name), el("td", { class: m.status }, m.status), el("td", {}, m.address),
    el("td", { class: "num" }, m.partitions_owned), el("td", { class: "num" }, m.samples_stored.toLocaleString()),
    el("td", { class: "num" }, m.broker_lag_records), el("td", { class: "num" }, m.rows_rejected)));
  view.replaceChildren(
    el("div", { class: "meta", id: "cluster-summary" },
      `${c.members.length} members, ${c.live.length} live · ${c.partitions} partitions · ${c.samples_stored.toLocaleString()} samples stored` + (c.partial ? ` · partial: ${c.unavailable_nodes.join(", ")}` : "")),
    el("table", { id: "cluster-members" },
      el("thead", {}, el("tr", {}, ...["Member", "Status", "API", "Partitions", "Samples stored", "Broker lag", "Rows rejected"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)));
}

// ---- routing ----

async function render() {
  const view = document.getElementById("view");
  const hash = location.hash || "#/fleet";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", hash.startsWith(a.getAttribute("href"))));
  try {
    if (hash.startsWith("#/gpu/")) await gpu(view, decodeURIComponent(hash.slice(6)));
    else if (hash.startsWith("#/workloads")) await workloads(view);
    else if (hash.startsWith("#/workload/")) {
      const [ns, pod] = hash.slice(11).split("/").map(decodeURIComponent);
      await workload(view, ns, pod);
    }
    else if (hash.startsWith("#/cluster")) await cluster(view);
    else await fleet(view);
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    showError(e);
  }
  schedule(render);
}

document.getElementById("token").value = token();
document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem("telemetry.token", document.getElementById("token").value.trim());
  render();
});
window.addEventListener("hashchange", render);
render();
