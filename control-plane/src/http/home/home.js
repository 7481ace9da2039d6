// Hearth home: the household's appliances, recent tasks, configuration, account and
// members. Signs in as the support chat page does (the session token in this tab's
// sessionStorage under the same name, so home and chat share it) and uses only the
// customer API. Every value from the server is inserted as text, never as HTML.

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("hearth.token"), email: sessionStorage.getItem("hearth.email"), timer: null };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const badge = (s) => el("span", { class: `badge ${s || ""}` }, s ?? "—");
const when = (t) => (t ? new Date(t).toLocaleString() : "—");
const kv = (pairs) => el("dl", { class: "kv" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
const WORDS = { online: "online", offline: "offline", never_seen: "not connected yet" };

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    Object.assign(this, { status, code, details });
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await r.json().catch(() => null);
  if (!r.ok) {
    const err = (json && json.error) || { code: `http_${r.status}`, message: r.statusText };
    if (r.status === 401 && path !== "/api/v1/auth/login") signOut("Your session has ended; sign in again.");
    throw new ApiError(r.status, err.code, err.message, err.details);
  }
  return json;
}

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("signin-error").textContent = "";
  $("signin-button").disabled = true;
  try {
    const body = { email: $("email").value.trim(), password: $("password").value };
    if (!$("tenant-choice").classList.contains("hidden")) body.tenant_id = $("tenant").value;
    const r = await api("POST", "/api/v1/auth/login", body);
    state.token = r.token;
    state.email = r.user.email;
    sessionStorage.setItem("hearth.token", r.token);
    sessionStorage.setItem("hearth.email", r.user.email);
    $("password").value = "";
    $("tenant-choice").classList.add("hidden");
    await enter();
  } catch (e) {
    if (e.code === "tenant_required" && e.details && Array.isArray(e.details.tenants)) {
      $("tenant").replaceChildren(...e.details.tenants.map((t) => el("option", { value: t.tenant_id }, t.name)));
      $("tenant-choice").classList.remove("hidden");
      $("signin-error").textContent = "This address belongs to several households: choose one and sign in again.";
    } else {
      $("signin-error").textContent = e.message;
    }
  } finally {
    $("signin-button").disabled = false;
  }
});
$("email").addEventListener("input", () => $("tenant-choice").classList.add("hidden"));

function signOut(message) {
  if (state.token) {
    const token = state.token;
    fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
  }
  state.token = null;
  sessionStorage.clear();
  clearInterval(state.timer);
  $("home").replaceChildren();
  $("signout").classList.add("hidden");
  $("who").textContent = "";
  $("signin").classList.remove("hidden");
  $("signin-error").textContent = message || "";
}
$("signout").addEventListener("click", () => signOut());

async function render() {
  const [account, users, list] = await Promise.all([api("GET", "/api/v1/account"), api("GET", "/api/v1/users"), api("GET", "/api/v1/appliances")]);
  const appliances = list.appliances.filter((a) => !a.revoked_at).slice(0, 20);
  const details = await Promise.all(
    appliances.map((a) => Promise.all([api("GET", `/api/v1/appliances/${a.id}/tasks`), api("GET", `/api/v1/appliances/${a.id}/config`)])),
  );
  const cards = appliances.map((a, i) => {
    const [tasks, cfg] = details[i];
    const recent = tasks.tasks.slice(0, 5);
    return el("section", { class: "card appliance", "aria-label": a.name },
      el("h3", {}, a.name, " ", badge(a.status), el("span", { class: "muted" }, ` ${WORDS[a.status] || a.status}`)),
      kv([["Last seen", when(a.last_seen)], ["Agent", a.agent_version ?? "—"]]),
      el("h3", {}, "Recent tasks"),
      recent.length
        ? el("table", {}, el("thead", {}, el("tr", {}, ["When", "What", "Outcome"].map((h) => el("th", { scope: "col" }, h)))),
            el("tbody", {}, recent.map((t) => el("tr", {}, el("td", {}, when(t.created_at)), el("td", {}, t.action), el("td", {}, badge(t.status), t.message ? ` ${t.message}` : "")))))
        : el("p", { class: "muted" }, "No tasks yet."),
      el("h3", {}, "Configuration"),
      kv([["Version wanted", cfg.desired_version], ["Version running", cfg.applied_version ?? "—"], ["Up to date", cfg.drift ? "not yet (being applied)" : "yes"]]),
      el("details", {}, el("summary", {}, "Settings (secrets hidden)"), el("pre", {}, JSON.stringify(cfg.desired, null, 2))),
      el("p", {}, el("a", { href: "/support" }, `Ask support about ${a.name}`)),
    );
  });
  $("home").replaceChildren(
    el("h2", {}, account.tenant.name),
    el("div", { class: "cols" },
      el("section", { class: "card", "aria-label": "Account" }, el("h3", {}, "Account"),
        kv([["Household", account.tenant.name], ["Status", badge(account.tenant.status)], ["Plan", account.plan ?? "standard"], ["Signed in as", state.email ?? ""]]),
        el("p", {}, el("a", { href: "/support" }, "Open the support chat"))),
      el("section", { class: "card", "aria-label": "Members" }, el("h3", {}, "Members"),
        el("table", {}, el("thead", {}, el("tr", {}, ["E-mail", "Role"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, users.users.map((u) => el("tr", {}, el("td", {}, u.email), el("td", {}, u.role))))))),
    el("h2", {}, `Appliances (${list.appliances.length})`),
    ...(cards.length ? cards : [el("p", { class: "muted" }, "No appliance yet.")]),
  );
}

async function enter() {
  $("signin").classList.add("hidden");
  $("signout").classList.remove("hidden");
  $("who").textContent = state.email || "";
  await render();
  clearInterval(state.timer);
  state.timer = setInterval(() => render().catch((e) => ($("status").textContent = e.message)), 10000);
}

if (state.token) enter().catch(() => signOut(""));
else signOut("");
