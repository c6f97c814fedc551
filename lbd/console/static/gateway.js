// lbd console: the APIs and usage plans sections (from /v1/summary's `apis` and `usage_plans`), drawn
// as the load balancers and target groups are, with console.js's helpers (el, metricCell, sparkline...).
// Loaded after console.js; it registers its two sections in SECTION_RENDERERS.
"use strict";

const gateway = {
  previous: null, // the last summary these sections drew, for rates
  series: new Map(), // "api route" and "plan key" -> arrays of numbers or null
  apiCards: new Map(), // api name -> {signature, card, rows: Map(route -> cells)}
  planCards: new Map(), // plan name -> {signature, card, tbody}
  apiSection: null,
  planSection: null,
};

const ALL_ROUTES = "*"; // the API's own row: every route, and requests that matched none

function gatewaySeries(id, names) {
  let series = gateway.series.get(id);
  if (!series) {
    series = Object.fromEntries(names.map((n) => [n, []]));
    gateway.series.set(id, series);
  }
  return series;
}

function fmtRatio(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(value >= 0.995 || value === 0 ? 0 : 1)}%`;
}

function describeThrottle(throttle) {
  return throttle ? `${throttle.rate_limit}/s, burst ${throttle.burst_limit}` : null;
}

function describeIntegration(integration) {
  if (integration.type === "MOCK") return `MOCK ${integration.status_code}`;
  return `${integration.type} → ${integration.target_group}${integration.path ? " " + integration.path : ""}`;
}

function authorization(route) {
  const parts = [];
  if (route.authorizer) {
    const scopes = route.authorizer.scopes ? ` (${route.authorizer.scopes.join(", ")})` : "";
    parts.push(el("div", { text: `${route.authorizer.type || "?"} ${route.authorizer.name}${scopes}` }));
  }
  if (route.api_key_required) parts.push(el("div", { className: "key-required", text: "API key" }));
  if (route.throttle) parts.push(el("div", { className: "muted", text: `throttle ${describeThrottle(route.throttle)}` }));
  return parts.length ? parts : [el("span", { className: "muted", text: "open" })];
}

// -- APIs --------------------------------------------------------------------------------------------------

function apiRow(routeKey, cells, first) {
  return el("tr", { "data-route": routeKey, className: routeKey === ALL_ROUTES ? "total" : null },
    ...first, cells.rate.td, cells.errors.td, cells.cache.td, cells.latency.td, cells.total);
}

function routeCells() {
  return {
    rate: metricCell("rate"),
    errors: metricCell("errors"),
    cache: metricCell("cache"),
    latency: metricCell("latency"),
    total: el("td", { className: "num total-count" }),
  };
}

function apiCard(api) {
  const rows = new Map();
  const body = api.routes.map((route) => {
    const cells = routeCells();
    rows.set(route.route_key, cells);
    return apiRow(route.route_key, cells, [
      el("td", {}, el("code", { text: route.route_key })),
      el("td", { className: "act", text: describeIntegration(route.integration) }),
      el("td", { className: "auth" }, authorization(route)),
    ]);
  });
  const all = routeCells();
  rows.set(ALL_ROUTES, all);
  body.push(apiRow(ALL_ROUTES, all, [
    el("td", { colspan: 3 }, el("strong", { text: "All routes" }), el("span", { className: "muted", text: " (with requests that matched none)" })),
  ]));
  const listeners = api.listeners.map((l) => el("code", { text: `${l.name} ${l.address}:${l.port}` }));
  const facts = [el("span", {}, "Listeners ", ...listeners.flatMap((c, i) => (i ? [", ", c] : [c])))];
  if (api.throttle) facts.push(el("span", { text: `stage throttle ${describeThrottle(api.throttle)}` }));
  facts.push(el("span", { text: `API keys from ${api.api_key_source.toLowerCase()}` }));
  const connections = api.protocol === "WEBSOCKET" ? el("span", { className: "ws-connections" }) : null;
  if (connections) facts.push(connections);
  const card = el("article", { className: "card", "data-api": api.name },
    el("h3", {}, api.name,
      el("span", { className: "badge", text: api.protocol }),
      el("span", { className: "badge", text: `stage ${api.stage}` }),
      el("span", { className: "badge", text: api.endpoint_type }),
      api.cache.enabled ? el("span", { className: "badge", text: `cache ${api.cache.ttl_seconds} s` }) : null),
    el("div", { className: "muted facts" }, facts),
    el("table", { className: "routes" },
      el("thead", {}, el("tr", {},
        el("th", { text: "Route" }), el("th", { text: "Integration" }), el("th", { text: "Authorization" }),
        el("th", { text: "Requests/s" }), el("th", { text: "4xx/s · 5xx/s" }), el("th", { text: "Cache hits" }),
        el("th", { text: "Latency p50 · p99" }), el("th", { className: "num", text: "Requests" }))),
      el("tbody", {}, body)));
  return { card, rows, connections };
}

function drawRoute(id, now, before, dt, buckets, cells, cached) {
  const series = gatewaySeries(id, ["rps", "e4", "e5", "hit", "p50", "p99"]);
  push(series.rps, before ? perSecond(now.requests, before.requests, dt) : null);
  push(series.e4, before ? perSecond(now.http_4xx, before.http_4xx, dt) : null);
  push(series.e5, before ? perSecond(now.http_5xx, before.http_5xx, dt) : null);
  let hit = null;
  let p50 = null;
  let p99 = null;
  if (before) {
    const hits = Math.max(0, now.cache_hits - before.cache_hits);
    const misses = Math.max(0, now.cache_misses - before.cache_misses);
    hit = hits + misses ? hits / (hits + misses) : null;
    const then = before.latency.counts;
    const window = now.latency.counts.map((c, i) => Math.max(0, c - (then[i] || 0)));
    p50 = quantile(window, buckets, 0.5);
    p99 = quantile(window, buckets, 0.99);
  }
  push(series.hit, hit);
  push(series.p50, p50);
  push(series.p99, p99);
  cells.rate.value.textContent = `${fmtRate(last(series.rps))} /s`;
  cells.rate.holder.replaceChildren(sparkline([{ values: series.rps }], fmtRate, "requests per second (Count)"));
  showErrors(cells.errors, series.e4, series.e5, "4XXError and 5XXError per second");
  if (cached) {
    cells.cache.value.textContent = `${fmtRatio(last(series.hit))} · ${fmtRatio(now.cache_hit_ratio)} all`;
    cells.cache.holder.replaceChildren(sparkline([{ values: series.hit }], fmtRatio, "cache hit ratio"));
  } else {
    cells.cache.value.textContent = "not cached";
    cells.cache.holder.replaceChildren();
  }
  showLatency(cells.latency, series.p50, series.p99, "Latency, p50 and p99");
  cells.total.textContent = fmtCount(now.requests);
}

function drawApis(apis, summary) {
  if (!gateway.apiSection) {
    gateway.apiSection = el("section", { id: "apis" }, el("h2", { text: "APIs" }), el("div", { className: "cards" }));
  }
  const holder = gateway.apiSection.querySelector(".cards");
  const before = gateway.previous;
  const dt = before ? summary.time - before.time : 0;
  const old = new Map((before && Array.isArray(before.apis) ? before.apis : []).map((a) => [a.name, a]));
  const seen = new Set();
  const cards = apis.map((api) => {
    seen.add(api.name);
    // Redrawn only when the API's shape changes (a reload), so the charts' cells stay put.
    const signature = JSON.stringify([api.protocol, api.stage, api.endpoint_type, api.listeners, api.throttle, api.cache,
      api.api_key_source, api.routes.map((r) => [r.route_key, r.integration, r.authorizer, r.api_key_required, r.throttle, r.cached])]);
    let parts = gateway.apiCards.get(api.name);
    if (!parts || parts.signature !== signature) {
      parts = { signature, ...apiCard(api) };
      gateway.apiCards.set(api.name, parts);
    }
    const prev = old.get(api.name);
    const prevRoutes = new Map((prev ? prev.routes : []).map((r) => [r.route_key, r]));
    for (const route of api.routes) {
      const cells = parts.rows.get(route.route_key);
      drawRoute(key(api.name, route.route_key), route, prevRoutes.get(route.route_key), dt, summary.latency_buckets, cells, route.cached);
    }
    if (parts.connections) parts.connections.textContent = `${fmtCount(api.connections)} open connections`;
    drawRoute(key(api.name, ALL_ROUTES), api, prev, dt, summary.latency_buckets, parts.rows.get(ALL_ROUTES), api.cache.enabled);
    return parts.card;
  });
  for (const name of gateway.apiCards.keys()) if (!seen.has(name)) gateway.apiCards.delete(name);
  holder.replaceChildren(...(cards.length ? cards : [el("p", { className: "muted", text: "No APIs in this config." })]));
  return gateway.apiSection;
}

// -- usage plans -------------------------------------------------------------------------------------------

// How much of its quota a key used: a bar of used / limit.
function usageBar(used, limit) {
  const width = 150;
  const height = 10;
  const chart = svg("svg", { class: "usage", viewBox: `0 0 ${width} ${height}`, role: "img" });
  const title = svg("title");
  title.textContent = limit ? `${fmtCount(used)} of ${fmtCount(limit)} requests this period` : "no quota";
  chart.append(title, svg("rect", { class: "room", x: 0, y: 0, width, height }));
  if (limit) {
    const share = Math.min(1, (used || 0) / limit);
    chart.append(svg("rect", { class: share >= 1 ? "used full" : share >= 0.8 ? "used near" : "used", x: 0, y: 0, width: (share * width).toFixed(1), height }));
  }
  return chart;
}

function fmtWhen(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/:\d\d\.\d+Z$/, " UTC");
}

function planCard(plan) {
  const tbody = el("tbody");
  const stages = plan.apis.map((s) => {
    const routes = s.route_throttles.map((t) => `${t.route_key} ${describeThrottle(t)}`);
    return el("code", { text: `${s.api}/${s.stage}${routes.length ? " (" + routes.join("; ") + ")" : ""}` });
  });
  const quota = plan.quota ? `quota ${fmtCount(plan.quota.limit)} a ${plan.quota.period.toLowerCase()}` : "no quota";
  const card = el("article", { className: "card", "data-plan": plan.name },
    el("h3", {}, plan.name,
      el("span", { className: "badge", text: plan.throttle ? `throttle ${describeThrottle(plan.throttle)}` : "no throttle" }),
      el("span", { className: "badge", text: quota })),
    el("div", { className: "muted facts" }, el("span", {}, "Stages ", ...stages.flatMap((c, i) => (i ? [", ", c] : [c])))),
    el("table", { className: "keys" },
      el("thead", {}, el("tr", {},
        el("th", { text: "API key" }), el("th", { text: "Name" }), el("th", { text: "State" }),
        el("th", { text: "Requests/s" }), el("th", { text: "Used this period" }), el("th", { text: "Period ends" }))),
      tbody));
  return { card, tbody };
}

function keyRow(plan, member, before, dt) {
  const series = gatewaySeries(key(plan.name, member.id), ["rps"]);
  push(series.rps, before && member.used !== null && before.used !== null ? perSecond(member.used, before.used, dt) : null);
  const rate = metricCell("rate");
  rate.value.textContent = `${fmtRate(last(series.rps))} /s`;
  rate.holder.replaceChildren(sparkline([{ values: series.rps }], fmtRate, "requests per second against the quota"));
  const used = el("td", { className: "metric used" },
    el("div", { className: "value", text: member.used === null ? "–" : member.limit ? `${fmtCount(member.used)} / ${fmtCount(member.limit)}` : fmtCount(member.used) }),
    el("div", { className: "chart" }, usageBar(member.used, member.limit)));
  return el("tr", { "data-key": member.id },
    el("td", {}, el("code", { text: member.id })),
    el("td", { text: member.name }),
    stateCell(member.enabled ? "enabled" : "disabled"),
    rate.td, used,
    el("td", { text: fmtWhen(member.period_end) }));
}

function drawUsagePlans(plans, summary) {
  if (!gateway.planSection) {
    gateway.planSection = el("section", { id: "usage-plans" }, el("h2", { text: "Usage plans" }), el("div", { className: "cards" }));
  }
  const holder = gateway.planSection.querySelector(".cards");
  const before = gateway.previous;
  const dt = before ? summary.time - before.time : 0;
  const old = new Map((before && Array.isArray(before.usage_plans) ? before.usage_plans : []).map((p) => [p.name, p]));
  const seen = new Set();
  const cards = plans.map((plan) => {
    seen.add(plan.name);
    const signature = JSON.stringify([plan.apis, plan.throttle, plan.quota]);
    let parts = gateway.planCards.get(plan.name);
    if (!parts || parts.signature !== signature) {
      parts = { signature, ...planCard(plan) };
      gateway.planCards.set(plan.name, parts);
    }
    const prev = new Map((old.get(plan.name) || { keys: [] }).keys.map((k) => [k.id, k]));
    const rows = plan.keys.map((member) => keyRow(plan, member, prev.get(member.id), dt));
    parts.tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, className: "muted", text: "No API keys in this plan." }))]));
    return parts.card;
  });
  for (const name of gateway.planCards.keys()) if (!seen.has(name)) gateway.planCards.delete(name);
  holder.replaceChildren(...(cards.length ? cards : [el("p", { className: "muted", text: "No usage plans in this config." })]));
  return gateway.planSection;
}

// Both sections are drawn from one summary; the later of the two keeps it for the next rates.
SECTION_RENDERERS.apis = (items, summary) => {
  const section = drawApis(items, summary);
  if (!Array.isArray(summary.usage_plans)) gateway.previous = summary;
  return section;
};
SECTION_RENDERERS.usage_plans = (items, summary) => {
  const section = drawUsagePlans(items, summary);
  gateway.previous = summary;
  return section;
};
