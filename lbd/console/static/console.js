// lbd console: polls the admin API (README "Admin API") and draws what it says. Plain ES2020, no
// framework, no build step. Every name and description from the server is set as text, never as markup.
"use strict";

// How often /v1/summary is asked for: every 2 s, or ?interval=SECONDS (1 to 60) in the page's address.
const POLL_MS = pollInterval(new URLSearchParams(window.location.search).get("interval"));
const HISTORY = 90; // samples kept per chart: three minutes at the default interval
const SVG = "http://www.w3.org/2000/svg";

function pollInterval(asked) {
  const seconds = Number(asked);
  return asked !== null && Number.isFinite(seconds) && seconds >= 1 && seconds <= 60 ? seconds * 1000 : 2000;
}

// Hooks for what the admin API will grow. A section renders once /v1/summary carries its key: a list of
// objects, each shown as a row of its `columns` (missing ones blank). Nothing is fetched for a section
// that does not exist. APIs and usage plans started here and keep their place on the page.
const EXTENSIONS = [
  { key: "apis", title: "APIs", columns: ["name", "protocol", "stages", "routes", "requests", "http_4xx", "http_5xx"] },
  { key: "usage_plans", title: "Usage plans", columns: ["name", "throttle", "quota", "keys", "used"] },
];

// Sections drawn by their own script (gateway.js: apis, usage_plans; edge.js: distributions, web_acls)
// instead of the plain table above: key -> function(items, summary) returning the section's element
// (kept between refreshes by its owner). Those not in EXTENSIONS follow in the order they registered.
const SECTION_RENDERERS = {};

const state = {
  generation: null, // of the layout drawn from /v1/load-balancers
  previous: null, // the last summary, for rates
  series: new Map(), // "lb listener" -> {rps, e4, e5, active, p50, p99}: arrays of numbers or null
  targetCards: new Map(), // target group name -> its card's parts
  listenerRows: new Map(), // "lb listener" -> row cells
  pending: new Map(), // "group target" -> state shown until the server agrees (after a button)
  timer: null,
  polling: null, // the poll in flight (a promise), or null
  stopped: false, // signing out: no more polls
};

// -- small DOM helpers -----------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "className") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function key(...parts) {
  return parts.join(" ");
}

// -- the admin API -----------------------------------------------------------------------------------------

async function api(method, path, body) {
  // X-Lbd-Console: a change authenticated by the console's cookie must carry it (lbd/admin/server.py).
  const init = { method, headers: { Accept: "application/json", "X-Lbd-Console": "1" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.status === 401) {
    notice("error", "The admin API wants the token again (it changed, or the session ended).", [], true);
  }
  return { status: response.status, ok: response.ok, data };
}

function errorsOf(data) {
  if (!data) return [];
  if (Array.isArray(data.errors) && data.errors.length) return data.errors.map(String);
  return data.error ? [String(data.error)] : [];
}

// -- numbers -----------------------------------------------------------------------------------------------

// Quantile of a histogram (counts per bucket, last +Inf), linear within the bucket as Prometheus's
// histogram_quantile() does; lbd/observe/summary.py's quantile() is the same for lbd status.
function quantile(counts, bounds, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const count = counts[i];
    if (count > 0 && seen + count >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1];
      const lower = i ? bounds[i - 1] : 0;
      return lower + (bounds[i] - lower) * (rank - seen) / count;
    }
    seen += count;
  }
  return bounds[bounds.length - 1];
}

function perSecond(now, before, dt) {
  if (before === undefined || dt <= 0) return null;
  return Math.max(0, now - before) / dt; // a restarted counter (new listener, new worker) is no negative rate
}

function fmtRate(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function fmtSeconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 0.001) return (value * 1e6).toFixed(0) + " µs";
  if (value < 1) return (value * 1000).toFixed(value < 0.01 ? 2 : 1) + " ms";
  return value.toFixed(2) + " s";
}

function fmtCount(value) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en-US");
}

// -- charts ------------------------------------------------------------------------------------------------

// A sparkline of one or more series (each {values, cls}) on a shared scale from 0 to the highest value.
// Time runs left to right; until the history is full the points spread over the whole width.
function sparkline(series, format, label) {
  const width = 150;
  const height = 36;
  const top = 10; // room for the scale's label
  const chart = svg("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, role: "img" });
  let max = 0;
  for (const { values } of series) for (const v of values) if (v !== null && v > max) max = v;
  const scale = max > 0 ? max : 1;
  const points = Math.max(2, ...series.map(({ values }) => values.length));
  const x = (i) => ((i * width) / (points - 1)).toFixed(1);
  const y = (v) => (height - 1 - (v / scale) * (height - top - 2)).toFixed(1);
  const title = svg("title");
  title.textContent = `${label}; highest in view: ${format(max)}`;
  chart.append(title);
  series.forEach(({ values, cls }, index) => {
    let d = "";
    let pen = false;
    let first = null; // where the unbroken run that ends the series starts, for the area under it
    values.forEach((v, i) => {
      if (v === null) {
        pen = false;
        first = null;
        return;
      }
      if (first === null) first = i;
      d += `${pen ? "L" : "M"}${x(i)} ${y(v)} `;
      pen = true;
    });
    if (index === 0 && first !== null && values.length - first > 1) {
      let area = `M${x(first)} ${height} `;
      for (let i = first; i < values.length; i++) area += `L${x(i)} ${y(values[i])} `;
      area += `L${x(values.length - 1)} ${height} Z`;
      chart.append(svg("path", { class: "area", d: area }));
    }
    if (d) chart.append(svg("path", { class: `line ${cls || ""}`, d }));
  });
  const text = svg("text", { x: 3, y: 9 });
  text.textContent = max > 0 ? format(max) : "";
  chart.append(text);
  return chart;
}

function metricCell(className) {
  const value = el("div", { className: "value" });
  const holder = el("div", { className: "chart" });
  return { td: el("td", { className: `metric ${className}` }, value, holder), value, holder };
}

// The "4xx/s · 5xx/s" and "p50 · p99" cells, as every section draws them: the last values and a chart.
function showErrors(cell, e4, e5, label) {
  cell.value.replaceChildren(
    el("span", { className: "k4", text: fmtRate(last(e4)) }), " · ",
    el("span", { className: "k5", text: fmtRate(last(e5)) }));
  cell.holder.replaceChildren(sparkline([{ values: e4, cls: "k4" }, { values: e5, cls: "k5" }], fmtRate, label));
}

function showLatency(cell, p50, p99, label) {
  cell.value.replaceChildren(
    el("span", { text: fmtSeconds(last(p50)) }), " · ",
    el("span", { className: "q99", text: fmtSeconds(last(p99)) }));
  cell.holder.replaceChildren(sparkline([{ values: p50 }, { values: p99, cls: "q99" }], fmtSeconds, label));
}

// -- load balancers, listeners and rules (from /v1/load-balancers) -----------------------------------------

function describeCondition(condition) {
  const values = (condition.values || []).map((v) => (typeof v === "object" ? `${v.key ?? ""}=${v.value}` : String(v)));
  const field = condition.field === "http-header" ? `http-header ${condition.http_header_name}` : condition.field;
  return `${field}: ${values.join(" | ")}`;
}

function describeAction(action) {
  switch (action.type) {
    case "forward": {
      if (action.target_group) return `forward → ${action.target_group}`;
      const groups = (action.target_groups || []).map((g) => `${g.name} (${g.weight ?? 1})`);
      return `forward → ${groups.join(", ")}${action.stickiness && action.stickiness.enabled ? " · sticky" : ""}`;
    }
    case "redirect": {
      const parts = ["protocol", "host", "port", "path", "query"].filter((p) => action[p] !== undefined).map((p) => `${p}=${action[p]}`);
      return `redirect ${action.status_code}${parts.length ? " " + parts.join(" ") : ""}`;
    }
    case "fixed-response":
      return `fixed-response ${action.status_code}${action.content_type ? " " + action.content_type : ""}`;
    default:
      return action.type;
  }
}

function rulesTable(lb, listener) {
  const rows = listener.rules.map((rule) =>
    el("tr", {},
      el("td", { className: "num", text: rule.priority }),
      el("td", { className: "cond" }, rule.conditions.map((c) => el("div", { text: describeCondition(c) }))),
      el("td", { className: "act" }, rule.actions.map((a) => el("div", { text: describeAction(a) })))));
  rows.push(el("tr", {},
    el("td", { className: "num", text: "default" }),
    el("td", { className: "cond muted", text: "(every other request)" }),
    el("td", { className: "act" }, listener.default_actions.map((a) => el("div", { text: describeAction(a) })))));
  return el("details", { className: "rules", open: listener.rules.length > 0, "data-rules": key(lb.name, listener.name) },
    el("summary", { text: `${listener.name}: ${listener.rules.length} rule${listener.rules.length === 1 ? "" : "s"} and the default action` }),
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", { className: "num", text: "Priority" }), el("th", { text: "Conditions (all must match)" }), el("th", { text: "Actions" }))),
      el("tbody", {}, rows)));
}

function drawLayout(layout) {
  const cards = document.getElementById("lb-cards");
  // A redraw (every change of generation: a reload, a registration) keeps the rule tables folded or
  // unfolded as the operator left them.
  const folded = new Map([...cards.querySelectorAll("details.rules")].map((d) => [d.dataset.rules, d.open]));
  state.listenerRows.clear();
  const drawn = layout.load_balancers.map((lb) => {
    const network = lb.type === "network";
    const rows = lb.listeners.map((listener) => {
      const cells = {
        rate: metricCell("rate"),
        errors: metricCell("errors"),
        active: metricCell("active"),
        latency: metricCell("latency"),
      };
      state.listenerRows.set(key(lb.name, listener.name), cells);
      return el("tr", { "data-listener": listener.name },
        el("td", {}, el("strong", { text: listener.name })),
        el("td", {}, el("code", { text: `${listener.address}:${listener.port}` })),
        cells.rate.td, cells.errors.td, cells.active.td, cells.latency.td);
    });
    const head = el("tr", {},
      el("th", { text: "Listener" }), el("th", { text: "Address" }),
      el("th", { text: network ? "New flows/s" : "Requests/s" }),
      el("th", { text: "4xx/s · 5xx/s" }),
      el("th", { text: network ? "Active flows" : "Active connections" }),
      el("th", { text: "Latency p50 · p99" }));
    const rules = lb.type === "application" ? lb.listeners.map((listener) => rulesTable(lb, listener)) : [];
    return el("article", { className: "card", "data-load-balancer": lb.name },
      el("h3", {}, lb.name, el("span", { className: "badge", text: lb.type }), el("span", { className: "badge", text: lb.scheme }),
        lb.cross_zone ? el("span", { className: "badge", text: "cross-zone" }) : null),
      el("table", { className: "listeners" }, el("thead", {}, head), el("tbody", {}, rows)),
      rules);
  });
  cards.replaceChildren(...(drawn.length ? drawn : [el("p", { className: "muted", text: "No load balancers in this config." })]));
  for (const details of cards.querySelectorAll("details.rules")) {
    if (folded.has(details.dataset.rules)) details.open = folded.get(details.dataset.rules);
  }
  // Charts of listeners the new config no longer has are dropped.
  for (const id of state.series.keys()) if (!state.listenerRows.has(id)) state.series.delete(id);
}

// -- live numbers (from /v1/summary) -----------------------------------------------------------------------

function push(list, value) {
  list.push(value);
  if (list.length > HISTORY) list.shift();
}

function record(summary) {
  const before = state.previous;
  const dt = before ? summary.time - before.time : 0;
  const old = new Map((before ? before.listeners : []).map((l) => [key(l.load_balancer, l.listener), l]));
  for (const listener of summary.listeners) {
    const id = key(listener.load_balancer, listener.listener);
    let series = state.series.get(id);
    if (!series) {
      series = { rps: [], e4: [], e5: [], active: [], p50: [], p99: [] };
      state.series.set(id, series);
    }
    const prev = old.get(id);
    const network = listener.type === "network";
    const count = network ? "new_connections" : "requests";
    push(series.rps, prev ? perSecond(listener[count], prev[count], dt) : null);
    push(series.e4, prev && !network ? perSecond(listener.http_4xx, prev.http_4xx, dt) : null);
    push(series.e5, prev && !network ? perSecond(listener.http_5xx, prev.http_5xx, dt) : null);
    push(series.active, listener.active_connections);
    let p50 = null;
    let p99 = null;
    if (prev && !network) {
      const now = listener.request_duration.counts;
      const then = prev.request_duration.counts;
      const window = now.map((c, i) => Math.max(0, c - (then[i] || 0)));
      p50 = quantile(window, summary.latency_buckets, 0.5);
      p99 = quantile(window, summary.latency_buckets, 0.99);
    }
    push(series.p50, p50);
    push(series.p99, p99);
  }
  state.previous = summary;
}

function last(list) {
  return list.length ? list[list.length - 1] : null;
}

function drawStats(summary) {
  for (const listener of summary.listeners) {
    const id = key(listener.load_balancer, listener.listener);
    const cells = state.listenerRows.get(id);
    const series = state.series.get(id);
    if (!cells || !series) continue;
    const network = listener.type === "network";
    cells.rate.value.textContent = `${fmtRate(last(series.rps))} /s`;
    cells.rate.holder.replaceChildren(sparkline([{ values: series.rps }], fmtRate, network ? "new flows per second" : "requests per second"));
    if (network) {
      cells.errors.value.textContent = "–";
      cells.latency.value.textContent = "–";
    } else {
      showErrors(cells.errors, series.e4, series.e5, "4xx and 5xx responses per second");
      showLatency(cells.latency, series.p50, series.p99, "request duration, p50 and p99");
    }
    cells.active.value.textContent = fmtCount(listener.active_connections);
    cells.active.holder.replaceChildren(sparkline([{ values: series.active }], fmtCount, "open connections"));
  }
}

// -- target groups -----------------------------------------------------------------------------------------

function targetCard(group) {
  const tbody = el("tbody");
  const states = el("span", { className: "states" });
  const message = el("span", { className: "message", role: "status" });
  const form = el("form", { className: "register", "data-register": group.name },
    el("label", {}, "Target id", el("input", { name: "id", required: true, placeholder: "10.0.0.7", autocomplete: "off" })),
    el("label", {}, "Port", el("input", { name: "port", type: "number", min: 1, max: 65535, placeholder: "80" })),
    el("label", {}, "Zone", el("input", { name: "zone", placeholder: "node's zone", autocomplete: "off" })),
    el("label", {}, "Weight", el("input", { name: "weight", type: "number", min: 0, max: 999, placeholder: "1" })),
    el("button", { type: "submit", text: "Register target" }),
    message);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    register(group.name, form, message);
  });
  const classic = group.protocol === null; // a classic load balancer's instances: the config owns them
  const card = el("article", { className: "card", "data-group": group.name },
    el("h3", {}, group.name,
      group.protocol ? el("span", { className: "badge", text: group.protocol }) : el("span", { className: "badge", text: "classic" }),
      group.algorithm ? el("span", { className: "badge", text: group.algorithm }) : null),
    el("div", { className: "muted" }, states),
    el("table", { className: "targets" },
      el("thead", {}, el("tr", {},
        el("th", { text: "Target" }), el("th", { text: "Zone" }), el("th", { className: "num", text: "Weight" }),
        el("th", { text: "State" }), el("th", { text: "Reason" }), el("th", { text: "Description" }),
        el("th", { className: "num", text: "Requests" }), el("th", { text: "" }))),
      tbody),
    classic ? null : form);
  return { card, tbody, states, message };
}

function stateCell(value) {
  return el("td", { className: `state ${value}`, text: value });
}

function targetRow(group, target, message) {
  const id = key(group.name, target.target);
  const pending = state.pending.get(id);
  let shown = target.state;
  if (pending !== undefined) {
    if (target.state === pending) state.pending.delete(id); // the server agrees now
    else shown = pending;
  }
  const button = el("button", { type: "button", className: "danger", text: "Deregister" });
  button.addEventListener("click", () => deregister(group.name, target.target, button, message));
  const removable = group.protocol !== null && shown !== "draining";
  return el("tr", { "data-target": target.target },
    el("td", {}, el("code", { text: target.target })),
    el("td", { text: target.zone }),
    el("td", { className: "num", text: target.weight }),
    stateCell(shown),
    el("td", { className: "reason", text: target.reason || "" }),
    el("td", { className: "description", text: target.description || "" }),
    el("td", { className: "num", text: fmtCount(target.requests) }),
    el("td", {}, removable ? button : null));
}

function drawTargetGroups(summary) {
  const cards = document.getElementById("tg-cards");
  const seen = new Set();
  for (const group of summary.target_groups) {
    seen.add(group.name);
    let parts = state.targetCards.get(group.name);
    if (!parts) {
      parts = targetCard(group);
      state.targetCards.set(group.name, parts);
      cards.append(parts.card);
    }
    // Keep a button that is waiting for its second click, so a refresh does not disarm it.
    const armed = parts.tbody.querySelector("button.armed");
    const armedTarget = armed ? armed.closest("tr").dataset.target : null;
    const rows = group.targets.map((t) => targetRow(group, t, parts.message));
    if (armedTarget) {
      const row = rows.find((r) => r.dataset.target === armedTarget);
      const button = row && row.querySelector("button.danger");
      if (button) arm(button);
    }
    const present = new Set(group.targets.map((t) => key(group.name, t.target)));
    for (const id of state.pending.keys()) {
      if (id.startsWith(group.name + " ") && !present.has(id)) state.pending.delete(id); // gone: removed
    }
    parts.tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, className: "muted", text: "No targets registered." }))]));
    const counts = Object.entries(group.states).map(([name, n]) => el("span", { className: `state ${name}`, text: `${n} ${name}` }));
    const flags = [];
    if (group.fail_open) flags.push(el("span", { className: "state unhealthy", text: "fail open: every target takes traffic" }));
    if (group.zonal_failover) flags.push(el("span", { className: "state initial", text: "zonal failover" }));
    parts.states.replaceChildren(...counts, ...flags);
  }
  for (const [name, parts] of state.targetCards) {
    if (!seen.has(name)) {
      parts.card.remove();
      state.targetCards.delete(name);
    }
  }
}

function arm(button) {
  button.classList.add("armed");
  button.textContent = "Confirm";
}

async function deregister(group, target, button, message) {
  // Two clicks: the first arms the button for five seconds, the second deregisters.
  if (!button.classList.contains("armed")) {
    arm(button);
    setTimeout(() => {
      if (button.isConnected) {
        button.classList.remove("armed");
        button.textContent = "Deregister";
      }
    }, 5000);
    return;
  }
  button.disabled = true;
  const path = `/v1/target-groups/${encodeURIComponent(group)}/targets/${encodeURIComponent(target)}`;
  const { ok, data } = await api("DELETE", path);
  if (ok) {
    state.pending.set(key(group, target), data.state);
    say(message, "ok", `${target}: ${data.state === "draining" ? "draining, then removed" : "removed"}`);
  } else {
    say(message, "error", `${target}: ${errorsOf(data).join("; ") || "deregistration failed"}`);
  }
  pollSoon();
}

async function register(group, form, message) {
  const fields = new FormData(form);
  const target = { id: String(fields.get("id") || "").trim() };
  for (const name of ["port", "weight"]) {
    const value = String(fields.get(name) || "").trim();
    if (value) target[name] = Number(value);
  }
  const zone = String(fields.get("zone") || "").trim();
  if (zone) target.zone = zone;
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const { ok, data } = await api("POST", `/v1/target-groups/${encodeURIComponent(group)}/targets`, { targets: [target] });
    if (ok) {
      say(message, "ok", `registered ${target.id}${target.port ? ":" + target.port : ""}`);
      form.reset();
    } else {
      say(message, "error", errorsOf(data).join("; ") || "registration failed");
    }
  } finally {
    button.disabled = false;
  }
  pollSoon();
}

function say(node, kind, text) {
  node.className = `message ${kind}`;
  node.textContent = text;
}

// -- reload ------------------------------------------------------------------------------------------------

async function reload() {
  const button = document.getElementById("reload");
  button.disabled = true;
  try {
    const { status, data } = await api("POST", "/v1/reload");
    if (status === 200) {
      notice("ok", `Config reloaded: generation ${data.generation} in service.`, []);
    } else if (status === 422) {
      notice("error", `The config was not reloaded; generation ${data.generation} keeps serving. Errors:`, errorsOf(data));
    } else {
      notice("error", `Reload failed (HTTP ${status}).`, errorsOf(data));
    }
  } catch (error) {
    notice("error", `Reload failed: ${error.message}`, []);
  } finally {
    button.disabled = false;
  }
  pollSoon();
}

function notice(kind, text, items, signIn) {
  const box = document.getElementById("notice");
  const close = el("button", { type: "button", className: "quiet close", text: "Dismiss" });
  close.addEventListener("click", () => {
    box.hidden = true;
  });
  const list = items.length ? el("ul", {}, items.map((item) => el("li", { text: item }))) : null;
  const link = signIn ? el("a", { href: "/", text: " Sign in again." }) : null;
  box.className = `notice ${kind}`;
  box.replaceChildren(...[close, el("strong", { text }), link, list].filter((node) => node !== null));
  box.hidden = false;
}

// -- extensions (hooks) ------------------------------------------------------------------------------------

function drawExtensions(summary) {
  const holder = document.getElementById("extensions");
  const sections = [];
  const listed = new Set(EXTENSIONS.map((ext) => ext.key));
  const own = Object.keys(SECTION_RENDERERS).filter((name) => !listed.has(name)).map((name) => ({ key: name }));
  for (const ext of [...EXTENSIONS, ...own]) {
    const items = summary[ext.key];
    if (!Array.isArray(items)) continue; // not served by this lbd yet
    if (SECTION_RENDERERS[ext.key]) {
      sections.push(SECTION_RENDERERS[ext.key](items, summary)); // a section of its own (gateway.js)
      continue;
    }
    const head = el("tr", {}, ext.columns.map((c) => el("th", { text: c.replace(/_/g, " ") })));
    const rows = items.map((item) => el("tr", {}, ext.columns.map((c) => {
      const value = item[c];
      return el("td", { text: value === undefined || value === null ? "" : typeof value === "object" ? JSON.stringify(value) : value });
    })));
    sections.push(el("section", { id: ext.key.replace(/_/g, "-") },
      el("h2", { text: ext.title }),
      el("div", { className: "card" }, el("table", {}, el("thead", {}, head), el("tbody", {}, rows)))));
  }
  holder.replaceChildren(...sections);
}

// -- the loop ----------------------------------------------------------------------------------------------

function showNode(summary, live, problem) {
  const node = document.getElementById("node");
  const when = new Date((summary ? summary.time : Date.now() / 1000) * 1000).toLocaleTimeString();
  const parts = [el("span", { className: live ? "live" : "stale", text: live ? "live" : "not answering" })];
  if (summary) {
    parts.push(` · generation ${summary.generation} · workers ${summary.workers.answering}/${summary.workers.configured} · updated ${when}`);
  }
  if (problem) parts.push(` · ${problem}`);
  node.replaceChildren(...parts);
}

function poll() {
  if (state.polling || state.stopped) return state.polling;
  clearTimeout(state.timer);
  state.polling = refresh().finally(() => {
    state.polling = null;
    if (!document.hidden && !state.stopped) state.timer = setTimeout(poll, POLL_MS);
  });
  return state.polling;
}

async function refresh() {
  try {
    const { status, data } = await api("GET", "/v1/summary");
    if (status !== 200 || !data) throw new Error(`/v1/summary answered ${status}`);
    if (data.generation !== state.generation) {
      const layout = await api("GET", "/v1/load-balancers");
      if (layout.status !== 200) throw new Error(`/v1/load-balancers answered ${layout.status}`);
      drawLayout(layout.data);
      state.generation = data.generation;
    }
    record(data);
    drawStats(data);
    drawTargetGroups(data);
    drawExtensions(data);
    showNode(data, true, "");
  } catch (error) {
    showNode(state.previous, false, error.message);
  }
}

// Signing out ends the cookie: a poll that went out after it would be a 401 (and a console error), so the
// loop stops and the poll in flight finishes before the form is sent.
async function signOut(event) {
  event.preventDefault();
  state.stopped = true;
  clearTimeout(state.timer);
  await state.polling;
  event.target.submit();
}

function pollSoon() {
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, 100);
}

// A fault in this script shows on the page too (not only in the browser's console), so that an operator
// sees the page is not refreshing and why.
function reportFaults() {
  window.addEventListener("error", (event) => {
    notice("error", `The console hit an error: ${event.message}`, []);
  });
  window.addEventListener("unhandledrejection", (event) => {
    notice("error", `The console hit an error: ${event.reason}`, []);
  });
}

function start() {
  reportFaults();
  document.getElementById("interval").textContent = String(POLL_MS / 1000);
  document.getElementById("reload").addEventListener("click", reload);
  const logout = document.getElementById("logout");
  logout.addEventListener("submit", signOut);
  if (document.body.dataset.session === "cookie") logout.hidden = false;
  // No polling while the tab is hidden: the page costs nothing when nobody looks at it.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(state.timer);
    else if (!state.stopped) pollSoon();
  });
  poll();
}

document.addEventListener("DOMContentLoaded", start);
