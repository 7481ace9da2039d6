// Hearth operator console: an ES module with no dependencies. It uses only the public
// operator API (/api/v1/admin/...) with the session cookie that /api/v1/console/login sets;
// the CSRF token is kept in memory (fetched again from /api/v1/console/session after a
// reload) and sent as X-CSRF-Token on every change. Every value from the server is
// inserted as text (createElement / textContent), never as HTML.

const S = { operator: null, csrf: null, timers: [], catalog: null, ingest: null, gen: 0 };
const $ = (id) => document.getElementById(id);
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "rejected"]);

// ---- helpers -------------------------------------------------------------------------

/** An element: attrs are attributes (`class`, `for`, …) or `on<event>` handlers; children
 *  are nodes or values shown as text. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  append(e, children);
  return e;
}
function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
/** Replaces an element's children (nodes, values as text; arrays flattened, null skipped). */
function fill(e, ...children) {
  e.replaceChildren();
  return append(e, children);
}
const badge = (s) => el("span", { class: `badge ${s || ""}` }, s ?? "—");
const when = (t) => (t ? new Date(t).toLocaleString() : "—");
function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}
const link = (href, text) => el("a", { href }, text);
const enc = encodeURIComponent;
function table(headers, rows, empty = "Nothing to show.") {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", class: h.cls }, h.label ?? h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", { class: c?.cls }, c?.node ?? c))))),
  );
}
function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
}
function field(label, input, help) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  const err = el("div", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  input.setAttribute("aria-describedby", `${id}-error`);
  return el("div", { class: "field" }, el("label", { for: id }, label), input, help ? el("div", { class: "muted" }, help) : null, err);
}
function status(text) {
  $("status").textContent = text || "";
}
/** What the signed-in role may do: `act` (tasks for customers) or `manage` (the rest). */
function can(what) {
  const r = S.operator && S.operator.role;
  return r === "admin" || (what === "act" && r === "support");
}
function every(ms, fn) {
  const gen = S.gen;
  const t = setInterval(() => {
    if (gen !== S.gen) return clearInterval(t);
    fn().catch((e) => status(e.message));
  }, ms);
  S.timers.push(t);
}
function params() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}
function query(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    Object.assign(this, { status, code, details });
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (UNSAFE.has(method) && S.csrf) headers["X-CSRF-Token"] = S.csrf;
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 204) return null;
  const json = await r.json().catch(() => null);
  if (!r.ok) {
    const err = (json && json.error) || { code: `http_${r.status}`, message: r.statusText };
    if (r.status === 401 && !path.startsWith("/api/v1/console/")) showSignIn("Your session has ended; sign in again.");
    throw new ApiError(r.status, err.code, err.message || err.code, err.details);
  }
  return json;
}

/** Runs an action from a button: disabled while it runs, the outcome in the status line. */
async function act(button, fn, done) {
  button.disabled = true;
  status("");
  try {
    const out = await fn();
    if (done) status(done);
    return out;
  } catch (e) {
    status(`${e.code ? e.code + ": " : ""}${e.message}`);
    throw e;
  } finally {
    button.disabled = false;
  }
}

// ---- sign-in -------------------------------------------------------------------------

function showSignIn(message) {
  S.operator = null;
  S.csrf = null;
  S.gen++;
  $("nav").classList.add("hidden");
  $("signout").classList.add("hidden");
  $("who").textContent = "";
  fill($("view"), );
  $("signin").classList.remove("hidden");
  $("signin-error").textContent = message || "";
  $("name").focus();
}

function signedIn(session) {
  S.operator = session.operator;
  S.csrf = session.csrf_token;
  $("signin").classList.add("hidden");
  $("nav").classList.remove("hidden");
  $("signout").classList.remove("hidden");
  $("who").textContent = `${session.operator.name} (${session.operator.role})`;
  route();
}

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("signin-error").textContent = "";
  $("signin-button").disabled = true;
  try {
    const body = { name: $("name").value.trim(), password: $("password").value };
    const code = $("totp").value.trim();
    if (code) body.totp = code;
    const s = await api("POST", "/api/v1/console/login", body);
    $("password").value = "";
    $("totp").value = "";
    $("totp-field").classList.add("hidden");
    signedIn(s);
  } catch (e) {
    if (e.code === "totp_required") {
      $("totp-field").classList.remove("hidden");
      $("totp").focus();
      $("signin-error").textContent = "Enter the code from your authenticator app.";
    } else {
      $("signin-error").textContent = e.message;
    }
  } finally {
    $("signin-button").disabled = false;
  }
});

$("signout").addEventListener("click", async () => {
  try {
    await api("POST", "/api/v1/console/logout");
  } catch (_) {
    /* signed out either way */
  }
  showSignIn("Signed out.");
});

// ---- routing -------------------------------------------------------------------------

const ROUTES = [
  [/^\/$/, fleetPage, "#/"],
  [/^\/tenants$/, tenantsPage, "#/tenants"],
  [/^\/tenants\/([\w-]+)$/, tenantPage, "#/tenants"],
  [/^\/appliances$/, appliancesPage, "#/appliances"],
  [/^\/appliances\/([\w-]+)$/, appliancePage, "#/appliances"],
  [/^\/tasks$/, tasksPage, "#/tasks"],
  [/^\/tasks\/([\w-]+)$/, taskPage, "#/tasks"],
  [/^\/rollouts$/, rolloutsPage, "#/rollouts"],
  [/^\/rollouts\/([\w-]+)$/, rolloutPage, "#/rollouts"],
  [/^\/audit$/, auditPage, "#/audit"],
  [/^\/account$/, accountPage, "#/account"],
];

async function route() {
  if (!S.operator) return;
  S.gen++;
  S.timers.forEach(clearInterval);
  S.timers = [];
  status("");
  const path = (location.hash.slice(1) || "/").split("?")[0];
  const view = $("view");
  for (const [re, page, nav] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.getAttribute("href") === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const gen = S.gen;
    try {
      const content = await page(...m.slice(1));
      if (gen !== S.gen) return;
      fill(view, content);
      view.dataset.route = location.hash; // which view is shown (tests wait for it)
      document.title = `${view.querySelector("h2")?.textContent || "Console"} · Hearth console`;
    } catch (e) {
      if (gen !== S.gen) return;
      fill(view, el("h2", {}, "Could not load this page"), el("p", { class: "error" }, e.message));
    }
    return;
  }
  fill(view, el("h2", {}, "Not found"), el("p", {}, link("#/", "Back to the fleet")));
}
window.addEventListener("hashchange", route);

// ---- fleet overview ------------------------------------------------------------------

function sparkline(points, key, cls, label) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 300 60");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  if (points.length) {
    const max = Math.max(1, ...points.map((p) => p[key]));
    const step = points.length > 1 ? 300 / (points.length - 1) : 0;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map((p, i) => `${(i * step).toFixed(1)},${(58 - (p[key] / max) * 54).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", cls === "online" ? "#16a34a" : "#dc2626");
    line.setAttribute("stroke-width", "2");
    svg.append(line);
  }
  return svg;
}

async function fleetPage() {
  const root = el("div");
  const heading = el("h2", {}, "Fleet");
  const stats = el("div", { class: "grid" });
  const trend = el("div", { class: "card" });
  const tenants = el("div", { class: "card" });
  const side = el("div", { class: "cols" });
  root.append(heading, stats, trend, tenants, side);
  const stat = (n, l, href) => el("div", { class: "stat" }, el("div", { class: "n" }, href ? link(href, n) : n), el("div", { class: "l" }, l));
  async function load() {
    const [sum, tr, ing] = await Promise.all([
      api("GET", "/api/v1/admin/fleet/summary"),
      api("GET", "/api/v1/admin/fleet/trend?hours=6"),
      api("GET", "/api/v1/admin/fleet/ingest"),
    ]);
    let rate = "—";
    if (S.ingest && ing.heartbeats_ingested >= S.ingest.heartbeats_ingested) {
      const dt = (new Date(ing.at) - new Date(S.ingest.at)) / 1000;
      if (dt > 0) rate = ((ing.heartbeats_ingested - S.ingest.heartbeats_ingested) / dt).toFixed(1);
    }
    S.ingest = ing;
    const lag = ing.newest_heartbeat_age_s == null ? "—" : `${ing.newest_heartbeat_age_s.toFixed(1)} s`;
    fill(stats, 
      stat(sum.online, "online", "#/appliances?status=online"),
      stat(sum.offline, "offline", "#/appliances?status=offline"),
      stat(sum.never_seen, "never seen", "#/appliances?status=never_seen"),
      stat(sum.revoked, "revoked", "#/appliances?status=revoked"),
      stat(sum.certificates_expiring, "certificates expiring (7 days)"),
      stat(rate, "heartbeats/s (ingest)"),
      stat(lag, "newest heartbeat age"),
      stat(ing.messages_dropped + ing.batch_errors, "ingest drops + batch errors"),
    );
    const pts = tr.points;
    fill(trend, 
      el("h3", {}, "Trend, last 6 hours (one sample a minute)"),
      pts.length
        ? el("div", { class: "cols" },
            el("div", {}, el("div", { class: "muted" }, `online (now ${pts[pts.length - 1].online})`), sparkline(pts, "online", "online", "online appliances over time")),
            el("div", {}, el("div", { class: "muted" }, `offline (now ${pts[pts.length - 1].offline})`), sparkline(pts, "offline", "offline", "offline appliances over time")))
        : el("p", { class: "muted" }, "No samples yet: the control plane samples the counts once a minute."),
    );
    const shown = sum.tenants.slice(0, 200);
    fill(tenants, 
      el("h3", {}, `Tenants (${sum.tenants.length})`),
      table(
        ["Tenant", { label: "Online", cls: "num" }, { label: "Offline", cls: "num" }, { label: "Never seen", cls: "num" }, { label: "Revoked", cls: "num" }, { label: "Certs expiring", cls: "num" }],
        shown.map((t) => [
          { node: link(`#/tenants/${t.tenant_id}`, t.tenant_name) },
          { node: t.online, cls: "num" },
          { node: t.offline ? link(`#/appliances?tenant=${t.tenant_id}&status=offline`, t.offline) : 0, cls: "num" },
          { node: t.never_seen, cls: "num" },
          { node: t.revoked, cls: "num" },
          { node: t.certificates_expiring, cls: "num" },
        ]),
      ),
      sum.tenants.length > shown.length ? el("p", { class: "muted" }, `First 200 of ${sum.tenants.length}; see Tenants for all.`) : null,
    );
    fill(side, 
      el("div", { class: "card" }, el("h3", {}, "Agent versions"),
        table(["Version", { label: "Appliances", cls: "num" }], sum.agent_versions.map((v) => [v.version ?? "(no heartbeat yet)", { node: v.appliances, cls: "num" }]))),
      el("div", { class: "card" }, el("h3", {}, "Support assistant"),
        kv([["Mode", sum.assistant?.mode ?? "—"], ["Detail", sum.assistant?.reason ?? sum.assistant?.model ?? "—"]])),
    );
  }
  await load();
  every(5000, load);
  return root;
}

// ---- tenants -------------------------------------------------------------------------

async function tenantsPage() {
  const p = params();
  const q = { q: p.get("q"), status: p.get("status"), after: p.get("after") };
  const page = await api("GET", `/api/v1/admin/tenants${query(q)}`);
  const search = el("input", { type: "search", value: q.q || "" });
  const st = el("select", {}, ["", "active", "suspended"].map((s) => el("option", { value: s, selected: s === (q.status || "") }, s || "any")));
  const filter = el("form", { class: "row card", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/tenants${query({ q: search.value.trim(), status: st.value })}`;
  } }, field("Name contains", search), field("Status", st), el("button", { type: "submit" }, "Filter"));
  const out = [el("h2", {}, "Tenants"), filter];
  out.push(el("div", { class: "card" }, table(
    ["Name", "Status", "Plan", { label: "Appliances", cls: "num" }, { label: "Online", cls: "num" }, { label: "Created", cls: "hide-narrow" }],
    page.tenants.map((t) => [
      { node: link(`#/tenants/${t.id}`, t.name) }, { node: badge(t.status) }, t.plan ?? "default",
      { node: t.appliances, cls: "num" }, { node: t.online, cls: "num" }, { node: when(t.created_at), cls: "hide-narrow" },
    ]),
    "No tenant matches.",
  ), page.next_after ? el("div", { class: "pager" }, link(`#/tenants${query({ ...q, after: page.next_after })}`, "Next page")) : null));
  if (can("manage")) {
    const name = el("input", { required: true, maxlength: 200 });
    const err = el("div", { class: "error", role: "alert" });
    const form = el("form", { class: "card", onsubmit: async (e) => {
      e.preventDefault();
      err.textContent = "";
      try {
        const t = await act(form.querySelector("button"), () => api("POST", "/api/v1/admin/tenants", { name: name.value }));
        location.hash = `#/tenants/${t.id}`;
      } catch (x) {
        err.textContent = x.message;
      }
    } }, el("h3", {}, "New tenant"), field("Name", name), el("button", { type: "submit" }, "Create tenant"), err);
    out.push(form);
  }
  return out;
}

function shownOnce(title, secret, note) {
  return el("div", { class: "card", role: "alert" }, el("h3", {}, title), el("p", { class: "muted" }, note || "Shown this once: copy it now; only a hash is stored."), el("div", { class: "secret" }, secret));
}

async function tenantPage(id) {
  const [t, keys] = await Promise.all([api("GET", `/api/v1/admin/tenants/${id}`), api("GET", `/api/v1/admin/tenants/${id}/keys`)]);
  const secrets = el("div");
  const out = [el("h2", {}, t.name), secrets];
  const actions = el("div", { class: "actions" },
    link(`#/appliances?tenant=${id}`, "Appliances"), link(`#/tasks?tenant=${id}`, "Tasks"), link(`#/audit?tenant=${id}`, "Audit"));
  if (can("manage")) {
    const suspend = t.status === "active";
    actions.prepend(el("button", { type: "button", class: suspend ? "danger" : "", id: "tenant-status", onclick: async (e) => {
      if (suspend && !confirm(`Suspend ${t.name}? Its keys, sign-ins and appliances are refused at once.`)) return;
      await act(e.target, () => api("PATCH", `/api/v1/admin/tenants/${id}`, { status: suspend ? "suspended" : "active" }));
      route();
    } }, suspend ? "Suspend tenant" : "Resume tenant"));
  }
  const c = t.counts || {};
  out.push(el("div", { class: "cols" },
    el("div", { class: "card" }, el("h3", {}, "Tenant"), kv([
      ["Status", badge(t.status)], ["Plan", t.plan ?? "default quotas"], ["Id", el("span", { class: "mono" }, t.id)],
      ["Created", when(t.created_at)], ["Updated", when(t.updated_at)],
    ]), actions),
    el("div", { class: "card" }, el("h3", {}, "Appliances"), kv([
      ["Online", c.online ?? 0], ["Offline", c.offline ?? 0], ["Never seen", c.never_seen ?? 0], ["Revoked", c.revoked ?? 0],
      ["Certificates expiring", c.certificates_expiring ?? 0],
    ])),
    el("div", { class: "card" }, el("h3", {}, "Quotas in force"), kv(Object.entries(t.quotas || {}).map(([k, v]) => [k.replaceAll("_", " "), v]))),
  ));
  // Members.
  const users = el("div", { class: "card" }, el("h3", {}, "Users"),
    table(["E-mail", "Role", "Last sign-in"], t.users.map((u) => [u.email, u.role, when(u.last_login_at)]), "No users yet."));
  if (can("manage")) {
    const email = el("input", { type: "email", required: true });
    const pw = el("input", { type: "password", required: true, minlength: 12, autocomplete: "new-password" });
    const role = el("select", {}, el("option", { value: "owner" }, "owner"), el("option", { value: "member" }, "member"));
    const err = el("div", { class: "error", role: "alert" });
    users.append(el("form", { onsubmit: async (e) => {
      e.preventDefault();
      err.textContent = "";
      try {
        await act(e.target.querySelector("button"), () => api("POST", `/api/v1/admin/tenants/${id}/users`, { email: email.value.trim(), password: pw.value, role: role.value }));
        route();
      } catch (x) {
        err.textContent = x.message;
      }
    } }, el("div", { class: "row" }, field("E-mail", email), field("Password (12+ characters)", pw), field("Role", role), el("button", { type: "submit" }, "Add user")), err));
  }
  // API keys.
  const keyCard = el("div", { class: "card" }, el("h3", {}, "API keys"),
    table(["Name", "Prefix", "Created", "State", ""], keys.keys.map((k) => [
      k.name, { node: el("span", { class: "mono" }, k.prefix) }, when(k.created_at), k.revoked_at ? badge("revoked") : badge("active"),
      { node: can("manage") && !k.revoked_at ? el("button", { type: "button", class: "secondary", onclick: async (e) => {
        if (!confirm(`Revoke the key ${k.name}?`)) return;
        await act(e.target, () => api("DELETE", `/api/v1/admin/tenants/${id}/keys/${k.id}`));
        route();
      } }, "Revoke") : "" },
    ]), "No keys."));
  if (can("manage")) {
    const kname = el("input", { required: true, maxlength: 100 });
    keyCard.append(el("form", { onsubmit: async (e) => {
      e.preventDefault();
      const k = await act(e.target.querySelector("button"), () => api("POST", `/api/v1/admin/tenants/${id}/keys`, { name: kname.value.trim() }));
      fill(secrets, shownOnce(`API key ${k.name}`, k.key));
      kname.value = "";
      secrets.scrollIntoView();
    } }, el("div", { class: "row" }, field("New key's name", kname), el("button", { type: "submit" }, "Issue key"))));
    const aname = el("input", { required: true, maxlength: 200 });
    keyCard.append(el("form", { onsubmit: async (e) => {
      e.preventDefault();
      const r = await act(e.target.querySelector("button"), () => api("POST", `/api/v1/admin/tenants/${id}/appliances`, { name: aname.value }));
      fill(secrets, shownOnce("Enrollment token", r.enrollment_token, `For appliance ${r.appliance_id}: run hearth-agent enroll with it before ${when(r.expires_at)}. Shown this once.`));
      aname.value = "";
      secrets.scrollIntoView();
    } }, el("div", { class: "row" }, field("Register an appliance named", aname), el("button", { type: "submit" }, "Register"))));
  }
  out.push(el("div", { class: "cols" }, users, keyCard));
  return out;
}

// ---- appliances ----------------------------------------------------------------------

async function appliancesPage() {
  const p = params();
  const q = { tenant: p.get("tenant"), status: p.get("status"), agent_version: p.get("agent_version"), labels: p.get("labels"), after: p.get("after") };
  const page = await api("GET", `/api/v1/admin/appliances${query(q)}`);
  const tenant = el("input", { value: q.tenant || "", placeholder: "tenant id" });
  const st = el("select", {}, ["", "online", "offline", "never_seen", "revoked"].map((s) => el("option", { value: s, selected: s === (q.status || "") }, s || "any")));
  const ver = el("input", { value: q.agent_version || "" });
  const labels = el("input", { value: q.labels || "", placeholder: "key=value,…" });
  const filter = el("form", { class: "row card", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/appliances${query({ tenant: tenant.value.trim(), status: st.value, agent_version: ver.value.trim(), labels: labels.value.trim() })}`;
  } }, field("Tenant", tenant), field("Status", st), field("Agent version", ver), field("Labels", labels), el("button", { type: "submit" }, "Filter"));
  return [
    el("h2", {}, "Appliances"),
    filter,
    el("div", { class: "card" }, table(
      ["Name", "Status", "Last seen", { label: "Agent", cls: "hide-narrow" }, { label: "Tenant", cls: "hide-narrow" }],
      page.appliances.map((a) => [
        { node: link(`#/appliances/${a.id}`, a.name) }, { node: badge(a.revoked_at ? "revoked" : a.status) }, ago(a.last_seen),
        { node: a.agent_version ?? "—", cls: "hide-narrow" }, { node: link(`#/tenants/${a.tenant_id}`, a.tenant_id.slice(0, 8)), cls: "hide-narrow" },
      ]),
      "No appliance matches.",
    ), page.next_after ? el("div", { class: "pager" }, link(`#/appliances${query({ ...q, after: page.next_after })}`, "Next page")) : null),
  ];
}

function timeline(history) {
  // The last 24 hours as spells of presence (widths in 5 % steps: no inline styles).
  const end = Date.now();
  const start = end - 24 * 3600 * 1000;
  const bar = el("div", { class: "timeline", role: "img" });
  let state = "never_seen";
  let from = start;
  const segs = [];
  for (const h of history) {
    const at = new Date(h.at).getTime();
    if (at > start) {
      segs.push([state, at - from]);
      from = at;
    }
    state = h.status;
  }
  segs.push([state, end - from]);
  // Twenty steps in all; every spell gets at least one, so a short one still shows (the
  // largest spell gives the steps back).
  const steps = segs.filter(([, ms]) => ms > 0).map(([s, ms]) => [s, Math.max(1, Math.round((ms / (end - start)) * 20))]);
  const largest = () => steps.reduce((a, b) => (b[1] > a[1] ? b : a));
  let over = steps.reduce((n, [, k]) => n + k, 0) - 20;
  while (over > 0 && largest()[1] > 1) {
    largest()[1] -= 1;
    over -= 1;
  }
  if (over < 0) largest()[1] -= over;
  for (const [s, k] of steps) bar.append(el("span", { class: `${s} w${k * 5}`, title: s }));
  bar.setAttribute("aria-label", `presence over the last 24 hours, now ${state}`);
  return bar;
}

/** The catalog task form: one field per parameter of the chosen action's schema. */
async function taskForm(applianceId, onQueued) {
  if (!S.catalog) S.catalog = await api("GET", "/api/v1/admin/catalog");
  const actions = S.catalog.actions;
  const select = el("select", { id: "task-action" }, actions.map((a) => el("option", { value: a.id }, `${a.id}${a.risk === "high" ? " (high risk)" : ""}`)));
  const fields = el("div", { id: "task-fields" });
  const err = el("div", { class: "error", role: "alert" });
  const inputs = new Map();
  function build() {
    const a = actions.find((x) => x.id === select.value);
    inputs.clear();
    const props = (a.params && a.params.properties) || {};
    const required = new Set((a.params && a.params.required) || []);
    const nodes = [el("p", { class: "muted" }, a.description)];
    for (const [name, schema] of Object.entries(props)) {
      let input;
      const ex = a.example_params ? a.example_params[name] : undefined;
      if (Array.isArray(schema.enum)) {
        input = el("select", {}, required.has(name) ? null : el("option", { value: "" }, "—"), schema.enum.map((v) => el("option", { value: v }, v)));
      } else if (schema.type === "boolean") {
        input = el("select", {}, el("option", { value: "" }, "—"), el("option", { value: "true" }, "yes"), el("option", { value: "false" }, "no"));
      } else if (schema.type === "array") {
        input = el("textarea", { placeholder: Array.isArray(ex) ? ex.join("\n") : "one per line" });
      } else if (schema.type === "integer" || schema.type === "number") {
        input = el("input", { type: "number", placeholder: ex ?? "" });
      } else {
        input = el("input", { maxlength: schema.maxLength, placeholder: ex ?? "", autocomplete: "off" });
      }
      input.id = `param-${name.replace(/[^\w-]/g, "_")}`;
      input.name = name;
      if (required.has(name)) input.required = true;
      inputs.set(name, { input, schema });
      nodes.push(field(`${name}${required.has(name) ? " (required)" : ""}`, input, schema.description));
    }
    if (!Object.keys(props).length) nodes.push(el("p", { class: "muted" }, "This action takes no parameters."));
    fill(fields, ...nodes);
  }
  select.addEventListener("change", build);
  build();
  const form = el("form", { class: "card", id: "task-form", onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = "";
    form.querySelectorAll(".field-error").forEach((x) => (x.textContent = ""));
    const params = {};
    for (const [name, { input, schema }] of inputs) {
      const v = input.value.trim();
      if (v === "") continue;
      if (schema.type === "array") params[name] = v.split("\n").map((s) => s.trim()).filter(Boolean);
      else if (schema.type === "boolean") params[name] = v === "true";
      else if (schema.type === "integer" || schema.type === "number") params[name] = Number(v);
      else params[name] = v;
    }
    try {
      const r = await act(form.querySelector("button[type=submit]"), () => api("POST", `/api/v1/admin/appliances/${applianceId}/tasks`, { action: select.value, params }));
      onQueued(r.id);
    } catch (x) {
      const param = x.details && x.details.param ? String(x.details.param).split(/[.[]/)[0] : null;
      const target = param && inputs.get(param);
      if (target) {
        $(`${target.input.id}-error`).textContent = x.message;
        target.input.setAttribute("aria-invalid", "true");
        target.input.focus();
      } else {
        err.textContent = x.message;
      }
    }
  } }, el("h3", {}, "Run a catalog task"), field("Action", select), fields, el("button", { type: "submit" }, "Queue task"), err);
  return form;
}

async function appliancePage(id) {
  const [a, cfg] = await Promise.all([api("GET", `/api/v1/admin/appliances/${id}`), api("GET", `/api/v1/admin/appliances/${id}/config`)]);
  const out = [el("h2", {}, a.name)];
  const head = el("div", { class: "card" });
  const tasks = el("div", { class: "card", id: "appliance-tasks" });
  function renderHead(a) {
    const st = a.revoked_at ? "revoked" : a.status;
    const acts = el("div", { class: "actions" }, link(`#/tenants/${a.tenant_id}`, "Tenant"), link(`#/tasks?appliance=${a.id}`, "All tasks"), link(`#/audit?tenant=${a.tenant_id}`, "Tenant's audit"));
    if (can("manage") && !a.revoked_at) {
      acts.prepend(el("button", { type: "button", class: "danger", onclick: async (e) => {
        if (!confirm(`Revoke ${a.name}? Its certificate goes on the CRL and it is disconnected; this cannot be undone.`)) return;
        await act(e.target, () => api("POST", `/api/v1/admin/appliances/${id}/revoke`), "Revoked.");
        route();
      } }, "Revoke appliance"));
    }
    fill(head, 
      el("div", { class: "cols" },
        el("div", {}, el("h3", {}, "Status"), kv([
          ["Status", el("span", { id: "appliance-status" }, badge(st))], ["Since", when(a.status_since)], ["Last seen", ago(a.last_seen)],
          ["Agent", a.agent_version ?? "—"], ["Enrolled", when(a.enrolled_at)], ["Id", el("span", { class: "mono" }, a.id)],
        ])),
        el("div", {}, el("h3", {}, "Certificate"), kv([
          ["Serial", el("span", { class: "mono" }, a.cert_serial ?? "—")], ["Expires", when(a.cert_not_after)], ["Revoked", when(a.revoked_at)],
        ]), el("h3", {}, "Labels"), kv(Object.entries(a.labels || {}).map(([k, v]) => [k, v])))),
      el("h3", {}, "Presence, last 24 hours"), timeline(a.presence_history),
      el("details", {}, el("summary", {}, "Presence changes"), table(["When", "Status", "Why"], a.presence_history.slice().reverse().map((h) => [when(h.at), { node: badge(h.status) }, h.reason]))),
      acts,
    );
  }
  function renderTasks(list) {
    fill(tasks, el("h3", {}, "Recent tasks"), table(["Created", "Action", "Status", "Message"], list.map((t) => [
      when(t.created_at), { node: link(`#/tasks/${t.id}`, t.action) }, { node: badge(t.status) }, t.message ?? "",
    ]), "No tasks yet."));
  }
  renderHead(a);
  renderTasks(a.tasks);
  const m = a.metrics || {};
  const facts = el("div", { class: "card" }, el("h3", {}, `Latest facts (${ago(a.metrics_at)})`),
    Object.keys(m).length ? kv(Object.entries(m).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v])) : el("p", { class: "muted" }, "No heartbeat yet."));
  const config = el("div", { class: "card" }, el("h3", {}, "Configuration"),
    kv([["Desired version", cfg.desired_version], ["Applied version", cfg.applied_version ?? "—"],
      ["Drift", cfg.drift ? badge("drift") : "none"], ["Last apply", cfg.last_apply ? `${cfg.last_apply.status ?? ""} ${when(cfg.last_apply.at)}` : "—"]]),
    el("details", {}, el("summary", {}, "Desired (defaults + overrides, secrets redacted)"), el("pre", {}, JSON.stringify(cfg.desired, null, 2))),
    el("details", {}, el("summary", {}, "This appliance's overrides"), el("pre", {}, JSON.stringify(cfg.overrides, null, 2))));
  out.push(head, el("div", { class: "cols" }, facts, config));
  if (can("act") && !a.revoked_at) out.push(await taskForm(id, (task) => (location.hash = `#/tasks/${task}`)));
  out.push(tasks);
  every(4000, async () => {
    const now = await api("GET", `/api/v1/admin/appliances/${id}`);
    renderHead(now);
    renderTasks(now.tasks);
  });
  return out;
}

// ---- tasks ---------------------------------------------------------------------------

async function tasksPage() {
  const p = params();
  const q = { tenant: p.get("tenant"), appliance: p.get("appliance"), status: p.get("status"), action: p.get("action"), before: p.get("before") };
  const tenant = el("input", { value: q.tenant || "", placeholder: "tenant id" });
  const st = el("select", {}, ["", "queued", "dispatched", "running", "succeeded", "failed", "timed_out", "cancelled", "rejected"].map((s) => el("option", { value: s, selected: s === (q.status || "") }, s || "any")));
  const action = el("input", { value: q.action || "", placeholder: "dns. or users.add" });
  const filter = el("form", { class: "row card", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/tasks${query({ tenant: tenant.value.trim(), appliance: q.appliance, status: st.value, action: action.value.trim() })}`;
  } }, field("Tenant", tenant), field("Status", st), field("Action", action), el("button", { type: "submit" }, "Filter"));
  const list = el("div", { class: "card", "aria-live": "polite" });
  async function load() {
    const page = await api("GET", `/api/v1/admin/tasks${query(q)}`);
    fill(list, table(
      ["Created", "Action", "Status", "Appliance", { label: "Tenant", cls: "hide-narrow" }, ""],
      page.tasks.map((t) => [
        when(t.created_at), { node: link(`#/tasks/${t.id}`, t.action) }, { node: badge(t.status) },
        { node: link(`#/appliances/${t.appliance_id}`, t.appliance_name) }, { node: link(`#/tenants/${t.tenant_id}`, t.tenant_name), cls: "hide-narrow" },
        { node: can("act") && t.status === "queued" ? el("button", { type: "button", class: "secondary", onclick: async (e) => {
          await act(e.target, () => api("POST", `/api/v1/admin/tasks/${t.id}/cancel`), "Cancelled.");
          load();
        } }, "Cancel") : "" },
      ]),
      "No task matches.",
    ), page.next_before ? el("div", { class: "pager" }, link(`#/tasks${query({ ...q, before: page.next_before })}`, "Older")) : null);
  }
  await load();
  if (!q.before) every(3000, load);
  return [el("h2", {}, "Tasks"), filter, list];
}

async function taskPage(id) {
  const head = el("div", { class: "card" });
  const log = el("ol", { class: "log", id: "task-log", "aria-live": "polite" });
  const root = [el("h2", {}, "Task"), head, el("div", { class: "card" }, el("h3", {}, "Ansible log"), log)];
  let seen = 0;
  async function load() {
    const t = await api("GET", `/api/v1/admin/tasks/${id}`);
    root[0].textContent = `Task ${t.action}`;
    const acts = el("div", { class: "actions" }, link(`#/appliances/${t.appliance_id}`, "Appliance"), link(`#/tenants/${t.tenant_id}`, "Tenant"));
    if (can("act") && t.status === "queued") {
      acts.prepend(el("button", { type: "button", class: "secondary", onclick: async (e) => {
        await act(e.target, () => api("POST", `/api/v1/admin/tasks/${id}/cancel`), "Cancelled.");
        load();
      } }, "Cancel task"));
    }
    fill(head, kv([
      ["Status", el("span", { id: "task-status" }, badge(t.status))], ["Message", t.message ?? "—"], ["Created", when(t.created_at)],
      ["Started", when(t.started_at)], ["Finished", when(t.finished_at)], ["Deadline", when(t.deadline)],
      ["Log", t.log_complete ? "complete" : FINAL.has(t.status) ? "waiting for the last events" : "following"],
    ]), el("details", {}, el("summary", {}, "Parameters"), el("pre", {}, JSON.stringify(t.params, null, 2))),
    t.stats ? el("details", {}, el("summary", {}, "Play recap"), el("pre", {}, JSON.stringify(t.stats, null, 2))) : null, acts);
    for (const ev of t.events.slice(seen)) {
      log.append(el("li", { class: ev.kind.includes("fail") ? "failed" : "" }, `${ev.kind}${ev.task ? ` [${ev.task}]` : ""} ${ev.message}`));
    }
    seen = t.events.length;
    if (!t.events.length && !log.children.length) log.append(el("li", { class: "muted" }, "No events yet."));
    else log.querySelector("li.muted")?.remove();
    log.dataset.complete = t.log_complete ? "true" : "false";
    return FINAL.has(t.status) && t.log_complete;
  }
  const done = await load();
  if (!done) {
    const gen = S.gen;
    const t = setInterval(async () => {
      if (gen !== S.gen) return clearInterval(t);
      try {
        if (await load()) clearInterval(t);
      } catch (e) {
        status(e.message);
      }
    }, 1000);
    S.timers.push(t);
  }
  return root;
}

// ---- rollouts ------------------------------------------------------------------------

async function rolloutsPage() {
  const p = params();
  const q = { state: p.get("state"), after: p.get("after") };
  const page = await api("GET", `/api/v1/admin/rollouts${query(q)}`);
  const st = el("select", {}, ["", "scheduled", "running", "paused", "awaiting_approval", "completed", "aborted", "cancelled"].map((s) => el("option", { value: s, selected: s === (q.state || "") }, s || "any")));
  return [
    el("h2", {}, "Rollouts"),
    el("form", { class: "row card", onsubmit: (e) => {
      e.preventDefault();
      location.hash = `#/rollouts${query({ state: st.value })}`;
    } }, field("State", st), el("button", { type: "submit" }, "Filter")),
    el("div", { class: "card" }, table(["Name", "State", "Progress", "Created by", "Started"], page.rollouts.map((r) => {
      const c = r.progress;
      const done = c.succeeded + c.failed + c.rejected + c.timed_out + c.cancelled;
      return [{ node: link(`#/rollouts/${r.id}`, r.name) }, { node: badge(r.state) }, `${done}/${c.total} (${c.failed} failed)`, r.created_by, when(r.started_at)];
    }), "No rollouts."), page.next_after ? el("div", { class: "pager" }, link(`#/rollouts${query({ ...q, after: page.next_after })}`, "Next page")) : null),
  ];
}

async function rolloutPage(id) {
  const box = el("div");
  const root = [el("h2", {}, "Rollout"), box];
  async function load() {
    const [r, ex] = await Promise.all([api("GET", `/api/v1/admin/rollouts/${id}`), api("GET", `/api/v1/admin/rollouts/${id}/executions?limit=100`)]);
    root[0].textContent = `Rollout ${r.name}`;
    const c = r.progress;
    const done = c.succeeded + c.failed + c.rejected + c.timed_out + c.cancelled;
    const pct = c.total ? Math.round((done / c.total) * 20) * 5 : 0;
    const acts = el("div", { class: "actions" });
    if (can("manage")) {
      const verbs = { running: ["pause", "cancel"], paused: ["resume", "cancel"], awaiting_approval: ["approve", "cancel"], scheduled: ["cancel"] }[r.state] || [];
      for (const v of verbs) {
        acts.append(el("button", { type: "button", class: v === "cancel" ? "danger" : "secondary", onclick: async (e) => {
          if (v === "cancel" && !confirm("Cancel this rollout for good?")) return;
          await act(e.target, () => api("POST", `/api/v1/admin/rollouts/${id}/${v}`), `${v}: done`);
          load();
        } }, v[0].toUpperCase() + v.slice(1)));
      }
    }
    fill(box, 
      el("div", { class: "card" }, kv([
        ["State", badge(r.state)], ["Reason", r.reason ?? "—"], ["Payload", JSON.stringify(r.payload)], ["Selector", JSON.stringify(r.selector)],
        ["Waves open", `${r.waves_open} of ${r.wave_sizes.length}`], ["Created by", r.created_by], ["Started", when(r.started_at)], ["Finished", when(r.finished_at)],
      ]), el("p", {}, `${done} of ${c.total} done: ${c.succeeded} succeeded, ${c.failed} failed, ${c.in_progress} running, ${c.pending} pending (${c.pending_offline} offline)`),
      el("div", { class: "bar", role: "img", "aria-label": `${pct}% done` }, el("span", { class: `w${pct}` })), acts),
      el("div", { class: "card" }, el("h3", {}, "Executions"), table(["Wave", "Appliance", "State", "Message", "Task"], ex.executions.map((x) => [
        x.wave, { node: link(`#/appliances/${x.appliance_id}`, x.appliance_id.slice(0, 8)) }, { node: badge(x.state) }, x.message ?? "",
        { node: x.task_id ? link(`#/tasks/${x.task_id}`, "log") : "—" },
      ]), "No executions yet.")),
    );
  }
  await load();
  every(3000, load);
  return root;
}

// ---- audit ---------------------------------------------------------------------------

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

async function auditPage() {
  const p = params();
  const q = { tenant: p.get("tenant"), actor_kind: p.get("actor_kind"), actor_id: p.get("actor_id"), action: p.get("action"), since: p.get("since"), until: p.get("until") };
  const page = await api("GET", `/api/v1/admin/audit${query({ ...q, before: p.get("before") })}`);
  const tenant = el("input", { value: q.tenant || "", placeholder: "tenant id" });
  const kind = el("select", {}, ["", "operator", "tenant_key", "tenant_user", "assistant", "cli", "system"].map((s) => el("option", { value: s, selected: s === (q.actor_kind || "") }, s || "any")));
  const actor = el("input", { value: q.actor_id || "", placeholder: "actor id" });
  const action = el("input", { value: q.action || "", placeholder: "tenant. or task.create" });
  const since = el("input", { type: "datetime-local", value: localInput(q.since) });
  const until = el("input", { type: "datetime-local", value: localInput(q.until) });
  const iso = (v) => (v ? new Date(v).toISOString() : "");
  const filter = el("form", { class: "row card", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/audit${query({ tenant: tenant.value.trim(), actor_kind: kind.value, actor_id: actor.value.trim(), action: action.value.trim(), since: iso(since.value), until: iso(until.value) })}`;
  } }, field("Tenant", tenant), field("Actor kind", kind), field("Actor id", actor), field("Action", action), field("Since", since), field("Until", until),
  el("button", { type: "submit" }, "Filter"));
  const csv = el("a", { href: `/api/v1/admin/audit.csv${query(q)}`, download: "hearth-audit.csv", id: "audit-csv" }, "Export CSV (these filters, up to 10,000 rows)");
  return [
    el("h2", {}, "Audit log"),
    filter,
    el("div", { class: "card" }, el("div", { class: "actions" }, csv), table(
      ["When", "Actor", "Action", "Target", { label: "Tenant", cls: "hide-narrow" }, { label: "Change", cls: "hide-narrow" }],
      page.entries.map((e) => [
        when(e.at), `${e.actor_name ?? e.actor_id ?? ""} (${e.actor_kind})`, { node: el("span", { class: "mono" }, e.action) },
        `${e.target_kind} ${e.target_id ?? ""}`, { node: e.tenant_id ? link(`#/tenants/${e.tenant_id}`, e.tenant_id.slice(0, 8)) : "—", cls: "hide-narrow" },
        { node: el("details", {}, el("summary", {}, "before / after"), el("pre", {}, `${JSON.stringify(e.before)}\n→ ${JSON.stringify(e.after)}`)), cls: "hide-narrow" },
      ]),
      "No entry matches.",
    ), page.next_before ? el("div", { class: "pager" }, link(`#/audit${query({ ...q, before: page.next_before })}`, "Older")) : null),
  ];
}

// ---- account -------------------------------------------------------------------------

async function accountPage() {
  const current = el("input", { type: "password", autocomplete: "current-password", required: true });
  const next = el("input", { type: "password", autocomplete: "new-password", required: true, minlength: 12 });
  const msg = el("div", { class: "error", role: "alert" });
  const pw = el("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    msg.textContent = "";
    try {
      await act(pw.querySelector("button"), () => api("POST", "/api/v1/console/password", { current_password: current.value, new_password: next.value }), "Password changed.");
      current.value = next.value = "";
    } catch (x) {
      msg.textContent = x.message;
    }
  } }, el("h3", {}, "Change password"), field("Current password", current), field("New password (12+ characters)", next), el("button", { type: "submit" }, "Change password"), msg);
  const totpBox = el("div");
  const totp = el("div", { class: "card" }, el("h3", {}, "Two-factor sign-in (TOTP)"),
    el("p", { class: "muted" }, "Adds a code from an authenticator app to your sign-in."),
    el("button", { type: "button", class: "secondary", onclick: async (e) => {
      const r = await act(e.target, () => api("POST", "/api/v1/console/totp"));
      const code = el("input", { inputmode: "numeric", maxlength: 6, required: true, autocomplete: "one-time-code" });
      const err = el("div", { class: "error", role: "alert" });
      fill(totpBox, shownOnce("Secret for your authenticator", r.secret, "Shown this once. Add it to your app (or use the otpauth link below), then confirm with a code."),
        el("p", {}, el("span", { class: "mono secret" }, r.otpauth_uri)),
        el("form", { onsubmit: async (ev) => {
          ev.preventDefault();
          try {
            await act(ev.target.querySelector("button"), () => api("POST", "/api/v1/console/totp/confirm", { code: code.value.trim() }), "Two-factor sign-in is on.");
            fill(totpBox, el("p", {}, "Two-factor sign-in is on."));
          } catch (x) {
            err.textContent = x.message;
          }
        } }, el("div", { class: "row" }, field("Code", code), el("button", { type: "submit" }, "Confirm")), err));
    } }, "Set up TOTP"), totpBox);
  return [el("h2", {}, `Account: ${S.operator.name}`), el("p", {}, `Role: ${S.operator.role}`), el("div", { class: "cols" }, pw, totp)];
}

// ---- start ---------------------------------------------------------------------------

(async () => {
  try {
    signedIn(await api("GET", "/api/v1/console/session"));
  } catch (_) {
    showSignIn("");
  }
})();
