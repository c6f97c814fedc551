// lbd console: the distributions and web ACLs sections (from /v1/summary's `distributions` and
// `web_acls`), drawn as the APIs are, with console.js's helpers (el, metricCell, sparkline...) and
// gateway.js's fmtRatio. Loaded after both; it registers its two sections in SECTION_RENDERERS.
"use strict";

const edge = {
  previous: { distributions: null, web_acls: null }, // each section's last {time, items}, for rates
  series: new Map(), // "distribution" and "acl" -> arrays of numbers or null
  cards: new Map(), // "kind name" -> {signature, card, ...its live cells}
  sections: new Map(), // section key -> its <section>
};

function fmtBytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = value;
  let unit = 0;
  while (n >= 1000 && unit < units.length - 1) {
    n /= 1000;
    unit += 1;
  }
  return `${n >= 100 || unit === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[unit]}`;
}

function edgeSeries(id, names) {
  let series = edge.series.get(id);
  if (!series) {
    series = Object.fromEntries(names.map((n) => [n, []]));
    edge.series.set(id, series);
  }
  return series;
}

function joined(nodes) {
  return nodes.flatMap((node, i) => (i ? [", ", node] : [node]));
}

// A card kept between refreshes while its shape (the config's part of it) stays the same.
function keptCard(kind, item, shape, make) {
  const signature = JSON.stringify(shape);
  let parts = edge.cards.get(key(kind, item.name));
  if (!parts || parts.signature !== signature) {
    parts = { signature, ...make(item) };
    edge.cards.set(key(kind, item.name), parts);
  }
  return parts;
}

// Cards and charts of names the config no longer has are dropped.
function forget(kind, items) {
  const names = new Set(items.map((item) => key(kind, item.name)));
  for (const id of edge.cards.keys()) if (id.startsWith(kind + " ") && !names.has(id)) edge.cards.delete(id);
  for (const id of edge.series.keys()) if (id.startsWith(kind + " ") && !names.has(id)) edge.series.delete(id);
}

function edgeSection(id, title, cards, empty) {
  let section = edge.sections.get(id);
  if (!section) {
    section = el("section", { id }, el("h2", { text: title }), el("div", { className: "cards" }));
    edge.sections.set(id, section);
  }
  section.querySelector(".cards").replaceChildren(...(cards.length ? cards : [el("p", { className: "muted", text: empty })]));
  return section;
}

function windowOf(name, summary) {
  const before = edge.previous[name];
  edge.previous[name] = { time: summary.time, items: summary[name] };
  if (!before) return { dt: 0, old: new Map() };
  return { dt: summary.time - before.time, old: new Map(before.items.map((item) => [item.name, item])) };
}

// -- distributions -----------------------------------------------------------------------------------------

function describePolicy(policy) {
  const ttl = policy.caching ? `TTL ${policy.min_ttl} / ${policy.default_ttl} / ${policy.max_ttl} s` : "not cached";
  return `${policy.kind === "inline" ? "inline policy" : policy.name} (${ttl})`;
}

function originFacts(dist) {
  const origins = dist.origins.map((o) => el("code", { text: `${o.id} → ${o.target_group || "API " + o.api}${o.origin_path}` }));
  const facts = [
    el("span", {}, "Listeners ", ...joined(dist.listeners.map((l) => el("code", { text: `${l.name} ${l.address}:${l.port}` })))),
    el("span", {}, "Origins ", ...joined(origins)),
  ];
  for (const group of dist.origin_groups) {
    facts.push(el("span", { text: `Origin group ${group.id}: ${group.members.join(", then ")} on ${group.failover_status_codes.join(", ")} or no answer` }));
  }
  return facts;
}

function distributionCard(dist) {
  const cells = { rate: metricCell("rate"), hit: metricCell("hit"), errors: metricCell("errors"), latency: metricCell("latency"), out: metricCell("out") };
  const total = el("td", { className: "num total-count" });
  const results = el("div", { className: "muted results" });
  const invalidations = el("span", { className: "invalidations" });
  const behaviors = dist.behaviors.map((b) =>
    el("tr", { "data-behavior": b.path_pattern },
      el("td", {}, el("code", { text: b.path_pattern })),
      el("td", { className: "act", text: b.origins.length > 1 ? `${b.origin}: ${b.origins.join(" → ")}` : b.origin }),
      el("td", { className: "policy", text: describePolicy(b.cache_policy) }),
      el("td", { text: b.allowed_methods.replace(/_/g, " ") }),
      el("td", { text: b.compress ? "gzip, br" : "–" })));
  const card = el("article", { className: "card", "data-distribution": dist.name },
    el("h3", {}, dist.name,
      el("span", { className: "badge", text: dist.enabled ? "enabled" : "disabled" }),
      el("span", { className: "badge", text: `edge ${dist.edge_name}` }),
      dist.web_acl ? el("span", { className: "badge", text: `web ACL ${dist.web_acl}` }) : null),
    dist.comment ? el("div", { className: "muted", text: dist.comment }) : null,
    el("div", { className: "muted facts" }, originFacts(dist), invalidations),
    el("table", { className: "edge-stats" },
      el("thead", {}, el("tr", {},
        el("th", { text: "Requests/s" }), el("th", { text: "Cache hit ratio" }), el("th", { text: "4xx/s · 5xx/s" }),
        el("th", { text: "Origin latency p50 · p99" }), el("th", { text: "Bytes out/s" }), el("th", { className: "num", text: "Requests" }))),
      el("tbody", {}, el("tr", {}, cells.rate.td, cells.hit.td, cells.errors.td, cells.latency.td, cells.out.td, total))),
    results,
    el("table", { className: "behaviors" },
      el("thead", {}, el("tr", {},
        el("th", { text: "Path pattern (first match wins)" }), el("th", { text: "Origin" }), el("th", { text: "Cache policy" }),
        el("th", { text: "Methods" }), el("th", { text: "Compress" }))),
      el("tbody", {}, behaviors)));
  return { card, cells, total, results, invalidations };
}

function drawDistribution(parts, dist, before, dt, buckets) {
  const series = edgeSeries(key("distribution", dist.name), ["rps", "hit", "e4", "e5", "p50", "p99", "out"]);
  push(series.rps, before ? perSecond(dist.requests, before.requests, dt) : null);
  push(series.e4, before ? perSecond(dist.http_4xx, before.http_4xx, dt) : null);
  push(series.e5, before ? perSecond(dist.http_5xx, before.http_5xx, dt) : null);
  push(series.out, before ? perSecond(dist.bytes_sent, before.bytes_sent, dt) : null);
  let hit = null;
  let p50 = null;
  let p99 = null;
  if (before) {
    const hits = Math.max(0, dist.cache_hits - before.cache_hits);
    const misses = Math.max(0, dist.cache_misses - before.cache_misses);
    hit = hits + misses ? hits / (hits + misses) : null;
    const then = before.origin_latency.counts;
    const window = dist.origin_latency.counts.map((c, i) => Math.max(0, c - (then[i] || 0)));
    p50 = quantile(window, buckets, 0.5);
    p99 = quantile(window, buckets, 0.99);
  }
  push(series.hit, hit);
  push(series.p50, p50);
  push(series.p99, p99);
  const { cells } = parts;
  cells.rate.value.textContent = `${fmtRate(last(series.rps))} /s`;
  cells.rate.holder.replaceChildren(sparkline([{ values: series.rps }], fmtRate, "viewer requests per second (Requests)"));
  cells.hit.value.textContent = `${fmtRatio(last(series.hit))} · ${fmtRatio(dist.cache_hit_ratio)} all`;
  cells.hit.holder.replaceChildren(sparkline([{ values: series.hit }], fmtRatio, "cache hit ratio (CacheHitRate)"));
  showErrors(cells.errors, series.e4, series.e5, "4xx and 5xx responses per second");
  showLatency(cells.latency, series.p50, series.p99, "OriginLatency, p50 and p99");
  cells.out.value.textContent = `${fmtBytes(last(series.out))}/s`;
  cells.out.holder.replaceChildren(sparkline([{ values: series.out }], fmtBytes, "body bytes sent to viewers per second (BytesDownloaded)"));
  parts.total.textContent = fmtCount(dist.requests);
  const r = dist.results;
  parts.results.textContent = `Since start: ${fmtCount(r.hit)} Hit · ${fmtCount(r.refresh_hit)} RefreshHit · ${fmtCount(r.stale)} stale · ` +
    `${fmtCount(r.miss)} Miss · ${fmtCount(r.error)} Error · ${fmtCount(dist.origin_requests)} origin requests · ` +
    `${fmtCount(dist.origin_failovers)} failovers · ${fmtCount(dist.collapsed)} collapsed · ` +
    `cache ${fmtCount(dist.cache_entries)} objects, ${fmtBytes(dist.cache_bytes)}`;
  const inv = dist.invalidations;
  parts.invalidations.textContent = inv.latest
    ? `Invalidations ${inv.count}${inv.in_progress ? `, ${inv.in_progress} in progress` : ""}; latest ${inv.latest.id} ${inv.latest.status} (${inv.latest.paths} path${inv.latest.paths === 1 ? "" : "s"})`
    : "No invalidations";
}

SECTION_RENDERERS.distributions = (items, summary) => {
  const { dt, old } = windowOf("distributions", summary);
  const cards = items.map((dist) => {
    const shape = [dist.enabled, dist.comment, dist.edge_name, dist.web_acl, dist.listeners, dist.origins, dist.origin_groups, dist.behaviors];
    const parts = keptCard("distribution", dist, shape, distributionCard);
    drawDistribution(parts, dist, old.get(dist.name), dt, summary.latency_buckets);
    return parts.card;
  });
  forget("distribution", items);
  return edgeSection("distributions", "Distributions", cards, "No distributions in this config.");
};

// -- web ACLs ----------------------------------------------------------------------------------------------

function ruleCells(name) {
  return { name, rates: el("td", { className: "metric-text rates" }), counted: el("td", { className: "num rate-counted" }),
    allowed: el("td", { className: "num allowed" }), blocked: el("td", { className: "num blocked" }), counts: el("td", { className: "num counted" }) };
}

function aclCard(acl) {
  const rows = new Map();
  const body = acl.rules.map((rule) => {
    const cells = ruleCells(rule.name);
    rows.set(rule.name, cells);
    return el("tr", { "data-rule": rule.name },
      el("td", { className: "num", text: rule.priority }),
      el("td", {}, el("strong", { text: rule.name })),
      el("td", { className: "cond", text: rule.statement.replace(/_/g, " ") }),
      el("td", { className: `verdict ${rule.action}`, text: rule.action }),
      cells.rates, cells.counted, cells.allowed, cells.blocked, cells.counts);
  });
  const fallback = ruleCells("Default_Action");
  rows.set("Default_Action", fallback);
  body.push(el("tr", { "data-rule": "Default_Action", className: "total" },
    el("td", { className: "num", text: "default" }),
    el("td", { colspan: 2, className: "muted", text: "(no rule ended the evaluation)" }),
    el("td", { className: `verdict ${acl.default_action}`, text: acl.default_action }),
    fallback.rates, fallback.counted, fallback.allowed, fallback.blocked, fallback.counts));
  const cells = { requests: metricCell("rate"), verdicts: metricCell("verdicts"), counted: metricCell("counted") };
  const totals = el("td", { className: "num total-count" });
  const protects = acl.associations.map((a) => {
    const [kind, name] = Object.entries(a)[0];
    return el("code", { text: `${kind.replace(/_/g, " ")} ${name}` });
  });
  const card = el("article", { className: "card", "data-web-acl": acl.name },
    el("h3", {}, acl.name,
      el("span", { className: "badge", text: `default ${acl.default_action}` }),
      acl.changed_through_api ? el("span", { className: "badge", text: "changed through the API" }) : null),
    el("div", { className: "muted facts" }, protects.length ? el("span", {}, "Protects ", ...joined(protects)) : el("span", { text: "Protects nothing yet (no associations)" })),
    el("table", { className: "acl-stats" },
      el("thead", {}, el("tr", {},
        el("th", { text: "Requests/s" }), el("th", { text: "Allowed/s · Blocked/s" }), el("th", { text: "Counted/s" }),
        el("th", { className: "num", text: "Allowed · Blocked · Counted" }))),
      el("tbody", {}, el("tr", {}, cells.requests.td, cells.verdicts.td, cells.counted.td, totals))),
    el("table", { className: "acl-rules" },
      el("thead", {}, el("tr", {},
        el("th", { className: "num", text: "Priority" }), el("th", { text: "Rule" }), el("th", { text: "Statement" }), el("th", { text: "Action" }),
        el("th", { text: "Allowed/s · Blocked/s" }), el("th", { className: "num", text: "Counted/s" }),
        el("th", { className: "num", text: "Allowed" }), el("th", { className: "num", text: "Blocked" }), el("th", { className: "num", text: "Counted" }))),
      el("tbody", {}, body)));
  return { card, rows, cells, totals };
}

function drawRule(cells, now, before, dt) {
  const rate = (name) => (before ? fmtRate(perSecond(now[name] || 0, before[name] || 0, dt)) : "–");
  cells.rates.replaceChildren(el("span", { text: rate("allowed") }), " · ", el("span", { className: "k5", text: rate("blocked") }));
  cells.counted.textContent = now.counted === undefined ? "–" : rate("counted");
  cells.allowed.textContent = fmtCount(now.allowed);
  cells.blocked.textContent = fmtCount(now.blocked);
  cells.blocked.classList.toggle("some", now.blocked > 0);
  cells.counts.textContent = now.counted === undefined ? "–" : fmtCount(now.counted);
}

function drawAcl(parts, acl, before, dt) {
  const series = edgeSeries(key("acl", acl.name), ["rps", "allowed", "blocked", "counted"]);
  for (const name of ["allowed", "blocked", "counted"]) push(series[name], before ? perSecond(acl[name], before[name], dt) : null);
  push(series.rps, before ? perSecond(acl.requests, before.requests, dt) : null);
  const { cells } = parts;
  cells.requests.value.textContent = `${fmtRate(last(series.rps))} /s`;
  cells.requests.holder.replaceChildren(sparkline([{ values: series.rps }], fmtRate, "requests evaluated per second"));
  cells.verdicts.value.replaceChildren(
    el("span", { text: fmtRate(last(series.allowed)) }), " · ",
    el("span", { className: "k5", text: fmtRate(last(series.blocked)) }));
  cells.verdicts.holder.replaceChildren(sparkline([{ values: series.allowed }, { values: series.blocked, cls: "k5" }], fmtRate, "AllowedRequests and BlockedRequests per second"));
  cells.counted.value.textContent = `${fmtRate(last(series.counted))} /s`;
  cells.counted.holder.replaceChildren(sparkline([{ values: series.counted, cls: "k4" }], fmtRate, "CountedRequests per second"));
  parts.totals.textContent = `${fmtCount(acl.allowed)} · ${fmtCount(acl.blocked)} · ${fmtCount(acl.counted)}`;
  const oldRules = new Map((before ? before.rules : []).map((r) => [r.name, r]));
  for (const rule of acl.rules) drawRule(parts.rows.get(rule.name), rule, oldRules.get(rule.name), dt);
  drawRule(parts.rows.get("Default_Action"), acl.default, before ? before.default : undefined, dt);
}

SECTION_RENDERERS.web_acls = (items, summary) => {
  const { dt, old } = windowOf("web_acls", summary);
  const cards = items.map((acl) => {
    const shape = [acl.default_action, acl.associations, acl.changed_through_api, acl.rules.map((r) => [r.name, r.priority, r.action, r.statement])];
    const parts = keptCard("acl", acl, shape, aclCard);
    drawAcl(parts, acl, old.get(acl.name), dt);
    return parts.card;
  });
  forget("acl", items);
  return edgeSection("web-acls", "Web ACLs", cards, "No web ACLs in this config.");
};
