// sluice operator console: read-only pages over the edge's admin API.
//
// Every value shown comes from agents and admins (names, URLs, metadata), so the page is
// built from DOM nodes with text content only: no HTML is ever parsed from data. The key
// lives in this tab's sessionStorage and goes out only as a bearer header to this origin.
"use strict";

const KEY_SLOT = "sluice.console.key";
const REFRESH_MS = 3000;
const PAGE_SIZE = 100;

let timer = null;
let generation = 0;

// ---- DOM helpers -------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function $(id) {
  return document.getElementById(id);
}

// ---- formatting --------------------------------------------------------------------

function count(n) {
  return Number(n || 0).toLocaleString("en-US");
}

function bytes(n) {
  n = Number(n || 0);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  const shown = Number.isInteger(n) ? String(n) : n.toFixed(1);
  return shown + " " + units[i];
}

function rate(n, unit) {
  n = Number(n || 0);
  const shown = n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
  return shown + " " + unit;
}

function when(ms) {
  if (!ms) return "";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function ago(ms, now) {
  const s = Math.max(0, Math.round(((now || Date.now()) - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
  return (s / 86400).toFixed(1) + " d ago";
}

function badge(text, kind) {
  return el("span", { class: "badge " + kind }, text);
}

function health(member) {
  if (!member.healthy) return badge("unhealthy", "bad");
  if (member.suspect) return badge("suspect", "warn");
  return badge("healthy", "ok");
}

// ---- the API -----------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path) {
  const key = sessionStorage.getItem(KEY_SLOT);
  if (!key) throw new Unauthorized("no key");
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + key, Accept: "application/json" },
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 401) throw new Unauthorized("the edge refused the key");
  if (response.status === 429) throw new Error("too many wrong keys from this address; wait and retry");
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(path + ": " + response.status + " " + message);
  }
  return body;
}

// ---- charts ------------------------------------------------------------------------

// Per-second rates between consecutive samples of `series` for `field`, each held over
// its interval: { from, t, v }.
function rates(series, field) {
  const out = [];
  for (let i = 1; i < series.length; i++) {
    const dt = (series[i].t - series[i - 1].t) / 1000;
    const d = series[i][field] - series[i - 1][field];
    out.push({ from: series[i - 1].t, t: series[i].t, v: dt > 0 && d > 0 ? d / dt : 0 });
  }
  return out;
}

// Levels at each sample, each held until the next: { from, t, v }.
function levels(series, field) {
  return series.map((p, i) => ({ from: i > 0 ? series[i - 1].t : p.t, t: p.t, v: Math.max(0, p[field]) }));
}

// A step chart of `points` over the last hour, or since the first sample when the edge
// has run for less.
function chart(id, title, points, format, now, firstSample) {
  const width = 600, height = 110;
  const start = Math.max(now - 3600 * 1000, Math.min(firstSample, now - 60 * 1000));
  const max = Math.max(0, ...points.map((p) => p.v));
  const top = max > 0 ? max * 1.1 : 1;
  const x = (t) => (((Math.max(t, start) - start) / (now - start)) * width).toFixed(1);
  const y = (v) => (height - 4 - (v / top) * (height - 8)).toFixed(1);
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
  box.appendChild(svg("line", { x1: 0, y1: height - 4, x2: width, y2: height - 4, stroke: "#d9dde5" }));
  const shown = points.filter((p) => p.t >= start);
  if (shown.length > 0) {
    let d = `M ${x(shown[0].from)} ${y(0)}`;
    for (const p of shown) d += ` L ${x(p.from)} ${y(p.v)} L ${x(p.t)} ${y(p.v)}`;
    box.appendChild(svg("path", { d: d + ` L ${x(shown[shown.length - 1].t)} ${y(0)} Z`, fill: "#2756c522", stroke: "none" }));
    box.appendChild(svg("path", { d: d.replace(/^M [^L]*L/, "M"), fill: "none", stroke: "#2756c5", "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  }
  const last = shown.length ? shown[shown.length - 1].v : 0;
  const since = start > now - 3600 * 1000 ? "since " + new Date(start).toLocaleTimeString("en-GB") : "1 h ago";
  return el("div", { class: "chart", id, "data-points": shown.length },
    el("div", { class: "title" }, el("span", {}, title), el("span", { class: "now" }, format(last))),
    box,
    el("div", { class: "axis" }, el("span", {}, since), el("span", {}, "peak " + format(max)), el("span", {}, "now")));
}

function trafficCharts(prefix, series, now) {
  const first = series.length ? series[0].t : now;
  return el("div", { class: "charts" },
    chart(prefix + "-conn-rate", "connections / s", rates(series, "connections"), (v) => rate(v, "/s"), now, first),
    chart(prefix + "-refused-rate", "refused / s", rates(series, "refused"), (v) => rate(v, "/s"), now, first),
    chart(prefix + "-bytes-in-rate", "bytes in / s", rates(series, "bytes_in"), (v) => bytes(v) + "/s", now, first),
    chart(prefix + "-bytes-out-rate", "bytes out / s", rates(series, "bytes_out"), (v) => bytes(v) + "/s", now, first),
    chart(prefix + "-active", "active connections", levels(series, "active"), (v) => count(Math.round(v)), now, first));
}

// ---- pages -------------------------------------------------------------------------

function card(id, label, value) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value", id }, value));
}

function table(id, headers, rows, empty) {
  const head = el("tr", {}, headers.map(([label, cls]) => el("th", { class: cls }, label)));
  const body = el("tbody", {}, rows);
  if (rows.length === 0) body.appendChild(el("tr", { class: "empty" }, el("td", { colspan: headers.length, class: "muted" }, empty)));
  return el("table", { id }, el("thead", {}, head), body);
}

async function overviewPage() {
  const o = await api("/v1/console/overview");
  const t = o.totals;
  const now = o.edge.now_ms;
  return [
    el("h1", {}, "Overview"),
    el("div", { class: "cards" },
      card("overview-sessions", "agent sessions", count(t.sessions)),
      card("overview-endpoints", "endpoints", count(t.endpoints)),
      card("overview-pools", "pools", count(t.pools)),
      card("overview-healthy", "healthy pool members", t.healthy_members + " / " + t.pool_members),
      card("overview-active", "active connections", count(t.active)),
      card("overview-connections", "connections since start", count(t.connections)),
      card("overview-refused", "refused since start", count(t.refused)),
      card("overview-bytes", "bytes in / out", bytes(t.bytes_in) + " / " + bytes(t.bytes_out))),
    el("h2", {}, "Last hour"),
    trafficCharts("overview", o.series, now),
    el("h2", {}, "Endpoints"),
    table("endpoints-table",
      [["URL"], ["listens on"], ["description"], ["active", "num"], ["connections", "num"], ["refused", "num"], ["bytes in", "num"], ["bytes out", "num"]],
      o.endpoints.map((e) => el("tr", { "data-endpoint": e.id },
        el("td", { class: "wrap" }, el("a", { href: "#/endpoints/" + encodeURIComponent(e.id) }, e.url)),
        el("td", {}, e.listen_addr),
        el("td", { class: "wrap" }, e.description),
        el("td", { class: "num" }, count(e.now.active)),
        el("td", { class: "num" }, count(e.now.connections)),
        el("td", { class: "num" }, count(e.now.refused)),
        el("td", { class: "num" }, bytes(e.now.bytes_in)),
        el("td", { class: "num" }, bytes(e.now.bytes_out)))),
      "No endpoints."),
    el("h2", {}, "Pools"),
    table("overview-pools-table",
      [["internal URL"], ["members", "num"], ["in service", "num"]],
      o.pools.map((p) => el("tr", { "data-url": p.url },
        el("td", { class: "wrap" }, el("a", { href: "#/pools" }, p.url)),
        el("td", { class: "num" }, count(p.members)),
        el("td", { class: "num" }, p.healthy < p.members ? badge(p.healthy + " / " + p.members, p.healthy === 0 ? "bad" : "warn") : badge(p.healthy + " / " + p.members, "ok")))),
      "No agent has bound an internal URL."),
  ];
}

async function endpointPage(id) {
  const p = await api("/v1/console/endpoints/" + encodeURIComponent(id));
  const e = p.endpoint;
  const now = p.edge.now_ms;
  const last = p.series[p.series.length - 1] || {};
  const http = Object.values(p.http_responses || {}).some((n) => n > 0);
  return [
    el("h1", {}, "Endpoint ", el("code", { id: "endpoint-url" }, e.url)),
    el("dl", { class: "kv" },
      el("dt", {}, "id"), el("dd", {}, e.id),
      el("dt", {}, "listens on"), el("dd", {}, e.listen_addr || "not serving"),
      el("dt", {}, "description"), el("dd", { id: "endpoint-description" }, e.description),
      el("dt", {}, "declared"), el("dd", {}, e.static ? "in edge.yml" : "through the admin API, " + when(e.updated_at)),
      el("dt", {}, "limits"), el("dd", {}, "max_connections " + (e.max_connections ?? "none") + ", per client IP " + (e.max_connections_per_ip ?? "none")),
      el("dt", {}, "idle timeout"), el("dd", {}, e.idle_timeout_secs ? e.idle_timeout_secs + " s" : "none"),
      el("dt", {}, "active connections"), el("dd", { id: "endpoint-active" }, count(last.active))),
    el("h2", {}, "Last hour"),
    trafficCharts("endpoint", p.series, now),
    el("h2", {}, "Connections by outcome"),
    table("endpoint-outcomes", [["outcome"], ["since start", "num"]],
      p.outcomes.map(([name, n]) => el("tr", { "data-outcome": name }, el("td", {}, name), el("td", { class: "num" }, count(n)))),
      "Not serving on this edge."),
    http ? [el("h2", {}, "HTTP responses"),
      table("endpoint-http", [["class"], ["since start", "num"]],
        Object.entries(p.http_responses).map(([cls, n]) => el("tr", {}, el("td", {}, cls), el("td", { class: "num" }, count(n)))), "")] : null,
    el("h2", {}, "Refused clients"),
    p.denials_skipped > 0 ? el("p", { class: "muted" }, count(p.denials_skipped) + " refusals came while the table was busy and are only counted.") : null,
    table("endpoint-denials", [["client"], ["cause"], ["by"], ["rule"], ["times", "num"], ["last"]],
      p.denials.map((d) => el("tr", { "data-client": d.client },
        el("td", {}, d.client), el("td", {}, d.cause), el("td", { class: "wrap" }, d.by), el("td", { class: "wrap" }, d.rule),
        el("td", { class: "num" }, count(d.count)), el("td", {}, ago(d.last_ms, now)))),
      "No client refused lately."),
    el("h2", {}, "Traffic policy"),
    el("pre", { id: "endpoint-policy" }, e.traffic_policy),
  ];
}

async function poolsPage() {
  const p = await api("/v1/console/pools");
  const now = p.edge.now_ms;
  const events = Object.entries(p.events).map(([name, n]) => name + " " + count(n)).join(" · ");
  return [
    el("h1", {}, "Pools"),
    el("p", { class: "muted", id: "pool-events" }, "Since start: ", events),
    p.items.length === 0 ? el("p", { class: "muted" }, "No agent has bound an internal URL.") : null,
    p.items.map((pool) => {
      const inService = pool.members.filter((m) => m.healthy && !m.suspect).length;
      const failed = pool.members.reduce((n, m) => n + m.open_failures, 0);
      return el("section", { class: "pool", "data-url": pool.url },
        el("h2", {}, el("code", {}, pool.url), " ",
          badge(inService + " / " + pool.members.length + " in service", inService === 0 ? "bad" : inService < pool.members.length ? "warn" : "ok"),
          " ", el("span", { class: "muted" }, count(failed) + " failed opens, each failed over to another member while one was left")),
        table(null, [["session", "num"], ["user"], ["agent address"], ["health"], ["weight", "num"], ["streams now", "num"], ["RTT", "num"], ["since"], ["description"], ["metadata"], ["failed opens", "num"]],
          pool.members.map((m) => el("tr", { class: "member", "data-session": m.session },
            el("td", { class: "num" }, m.session),
            el("td", {}, m.user),
            el("td", {}, m.peer),
            el("td", { class: "health" }, health(m)),
            el("td", { class: "num" }, m.weight),
            el("td", { class: "num" }, count(m.in_flight)),
            el("td", { class: "num" }, m.rtt_ms == null ? "" : m.rtt_ms.toFixed(2) + " ms"),
            el("td", {}, ago(m.started_at, now)),
            el("td", { class: "wrap" }, m.description),
            el("td", { class: "wrap" }, m.metadata),
            el("td", { class: "num failed-opens" }, count(m.open_failures)))),
          "No members."));
    }),
  ];
}

async function sessionsPage() {
  const s = await api("/v1/sessions");
  const now = Date.now();
  return [
    el("h1", {}, "Agent sessions"),
    table("sessions-table",
      [["session", "num"], ["edge"], ["user"], ["agent address"], ["agent version"], ["since"], ["RTT", "num"], ["streams", "num"], ["idle channels", "num"], ["serves"], ["metadata"]],
      s.items.map((x) => el("tr", { "data-session": x.id ?? "" },
        el("td", { class: "num" }, x.id ?? ""),
        el("td", {}, x.edge),
        el("td", {}, x.user),
        el("td", {}, x.peer ?? ""),
        el("td", {}, x.agent_version ?? ""),
        el("td", {}, x.started_at ? ago(x.started_at, now) : ""),
        el("td", { class: "num" }, x.rtt_ms == null ? "" : x.rtt_ms.toFixed(2) + " ms"),
        el("td", { class: "num" }, x.in_flight ?? ""),
        el("td", { class: "num" }, x.idle_data_channels ?? ""),
        el("td", { class: "wrap" }, (x.endpoints || []).map((b) => el("div", {}, typeof b === "string" ? b : b.url))),
        el("td", { class: "wrap" }, x.metadata ?? ""))),
      "No agent is connected."),
  ];
}

// The events page keeps its filter form across refreshes; only the table is redrawn.
const eventFilters = { type: "", since: "3600" };

function eventsForm() {
  const type = el("input", { id: "events-type", placeholder: "session.*, endpoint.created", value: eventFilters.type });
  const since = el("select", { id: "events-since" },
    [["900", "15 minutes"], ["3600", "1 hour"], ["86400", "1 day"], ["", "all"]].map(([v, label]) =>
      el("option", { value: v, selected: v === eventFilters.since }, label)));
  const form = el("form", { class: "filters", id: "events-filters" },
    el("label", {}, "type (comma-separated, * at the end)", type),
    el("label", {}, "since", since),
    el("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    eventFilters.type = type.value.trim();
    eventFilters.since = since.value;
    refresh();
  });
  return form;
}

async function eventsTable() {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (eventFilters.type) q.set("type", eventFilters.type);
  if (eventFilters.since) q.set("since", String(Date.now() - Number(eventFilters.since) * 1000));
  const page = await api("/v1/events?" + q.toString());
  const now = Date.now();
  return table("events-table", [["when"], ["type"], ["actor"], ["subject"], ["details"], ["edge"]],
    page.items.map((e) => el("tr", { "data-kind": e.type },
      el("td", { title: when(e.at) }, ago(e.at, now)),
      el("td", { class: "kind" }, e.type),
      el("td", {}, e.actor),
      el("td", { class: "wrap" }, e.subject),
      el("td", { class: "wrap" }, e.detail == null ? "" : typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail)),
      el("td", {}, e.edge ?? ""))),
    "No events match.");
}

// ---- the shell ---------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "endpoints" && parts[1]) return { name: "overview", load: () => endpointPage(parts[1]) };
  if (parts[0] === "pools") return { name: "pools", load: poolsPage };
  if (parts[0] === "sessions") return { name: "sessions", load: sessionsPage };
  if (parts[0] === "events") return { name: "events", load: eventsTable, keep: eventsForm };
  return { name: "overview", load: overviewPage };
}

function showLogin(message) {
  sessionStorage.removeItem(KEY_SLOT);
  if (timer) clearTimeout(timer);
  timer = null;
  $("page").hidden = true;
  clear($("page"));
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("updated").textContent = "";
  $("edge-name").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("key").value = "";
  $("key").focus();
}

let keptRoute = null;

async function refresh() {
  if (timer) clearTimeout(timer);
  timer = null;
  const mine = ++generation;
  const r = route();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === r.name);
  const page = $("page");
  try {
    const content = await r.load();
    if (mine !== generation) return;
    if (r.keep) {
      if (keptRoute !== location.hash) {
        clear(page);
        append(page, [el("h1", {}, "Audit events"), r.keep(), el("div", { id: "kept-body" })]);
        keptRoute = location.hash;
      }
      const body = $("kept-body");
      clear(body);
      append(body, [content]);
    } else {
      keptRoute = null;
      clear(page);
      append(page, [content]);
    }
    page.hidden = false;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    $("updated").classList.remove("error");
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof Unauthorized) {
      showLogin(sessionStorage.getItem(KEY_SLOT) ? "The edge refused the key." : "");
      if (err.message !== "no key") $("login-error").textContent = "The edge refused the key.";
      return;
    }
    $("updated").textContent = "update failed: " + err.message;
    $("updated").classList.add("error");
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

async function loadEdgeName() {
  try {
    const o = await api("/v1/console/overview");
    $("edge-name").textContent = "edge " + o.edge.id + " · v" + o.edge.version;
  } catch (_) {
    // The page's own refresh reports errors.
  }
}

function signedIn() {
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  loadEdgeName();
  refresh();
}

async function signIn(ev) {
  ev.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_SLOT, key);
  $("login-submit").disabled = true;
  try {
    await api("/v1/console/overview");
    signedIn();
  } catch (err) {
    sessionStorage.removeItem(KEY_SLOT);
    $("login-error").textContent = err instanceof Unauthorized ? "The edge refused the key." : err.message;
  } finally {
    $("login-submit").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", () => showLogin("Signed out."));
  window.addEventListener("hashchange", () => { keptRoute = null; if (sessionStorage.getItem(KEY_SLOT)) refresh(); });
  if (sessionStorage.getItem(KEY_SLOT)) signedIn();
  else showLogin("");
});
