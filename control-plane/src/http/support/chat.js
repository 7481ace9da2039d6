// Hearth support chat. Uses only the public API; everything the server sends is shown as
// text (textContent), never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("hearth.token"),
  email: sessionStorage.getItem("hearth.email"),
  conversation: null,
  appliances: new Map(),
  messages: new Map(), // seq -> element
  proposals: new Map(), // proposal id -> card element
  tasks: new Map(), // task id -> proposal card
  stream: null, // AbortController of the event stream
  lastSeq: 0,
};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function status(text) {
  $("status").textContent = text || "";
}

class ApiError extends Error {
  constructor(status, code, message, retryAfter, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.details = details;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await r.json().catch(() => null);
  if (!r.ok) {
    const err = (json && json.error) || { code: "http_" + r.status, message: r.statusText };
    if (r.status === 401 && path !== "/api/v1/auth/login") signOut("Your session has ended; sign in again.");
    throw new ApiError(r.status, err.code, err.message, r.headers.get("Retry-After"), err.details);
  }
  return json;
}

// ---- sign-in -------------------------------------------------------------------------

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("signin-error").textContent = "";
  $("signin-button").disabled = true;
  try {
    const body = { email: $("email").value.trim(), password: $("password").value };
    // Shown only when the password matched in several households (422 tenant_required).
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
      const select = $("tenant");
      select.replaceChildren(...e.details.tenants.map((t) => el("option", { value: t.tenant_id }, t.name)));
      $("tenant-choice").classList.remove("hidden");
      $("signin-error").textContent = "This address belongs to several households: choose one and sign in again.";
    } else {
      $("signin-error").textContent = e.message;
    }
  } finally {
    $("signin-button").disabled = false;
  }
});

// Another address: the household choice was for the previous one.
$("email").addEventListener("input", () => $("tenant-choice").classList.add("hidden"));

function signOut(message) {
  if (state.token) {
    const token = state.token;
    fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
  }
  state.token = null;
  sessionStorage.clear();
  if (state.stream) state.stream.abort();
  $("chat").classList.add("hidden");
  $("signout").classList.add("hidden");
  $("signin").classList.remove("hidden");
  $("who").textContent = "";
  $("signin-error").textContent = message || "";
}

$("signout").addEventListener("click", () => signOut());

async function enter() {
  const list = await api("GET", "/api/v1/appliances");
  const select = $("appliance");
  select.replaceChildren();
  state.appliances.clear();
  for (const a of list.appliances) {
    if (a.revoked_at) continue;
    state.appliances.set(a.id, a);
    select.append(el("option", { value: a.id }, `${a.name} (${a.status})`));
  }
  $("signin").classList.add("hidden");
  $("chat").classList.remove("hidden");
  $("signout").classList.remove("hidden");
  $("who").textContent = state.email || "";
  const saved = sessionStorage.getItem("hearth.conversation");
  if (saved) {
    try {
      const c = await api("GET", `/api/v1/support/conversations/${saved}`);
      if (c.appliance_id && state.appliances.has(c.appliance_id)) select.value = c.appliance_id;
      return open(c);
    } catch (e) {
      if (e.status !== 404) throw e;
    }
  }
  await startConversation();
}

// ---- conversations -------------------------------------------------------------------

async function startConversation() {
  const appliance = $("appliance").value || null;
  const c = await api("POST", "/api/v1/support/conversations", appliance ? { appliance_id: appliance } : {});
  open(c);
}

function open(c) {
  state.conversation = c.id;
  sessionStorage.setItem("hearth.conversation", c.id);
  state.messages.clear();
  state.proposals.clear();
  state.tasks.clear();
  state.lastSeq = 0;
  $("messages").replaceChildren();
  if (c.messages.length === 0) {
    $("messages").append(
      el("div", { class: "msg assistant", "data-intro": "1" },
        "Hello! I can answer questions about your Hearth appliance and do things on it for you — " +
        "DNS names, file shares, mail, certificates, users. What can I do for you?"));
  }
  for (const m of c.messages) showMessage(m);
  follow(c.id);
  $("text").focus();
}

$("new-conversation").addEventListener("click", () => startConversation().catch((e) => status(e.message)));
$("appliance").addEventListener("change", () => startConversation().catch((e) => status(e.message)));

$("composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text || !state.conversation) return;
  $("send").disabled = true;
  status("The assistant is thinking…");
  try {
    const r = await api("POST", `/api/v1/support/conversations/${state.conversation}/messages`, { text });
    $("text").value = "";
    showMessage(r.customer);
    showMessage(r.assistant);
    status("");
  } catch (e) {
    status(e.status === 429 ? `${e.message}` : `Could not send: ${e.message}`);
  } finally {
    $("send").disabled = false;
    $("text").focus();
  }
});

$("text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});

// ---- rendering -----------------------------------------------------------------------

function showMessage(m) {
  if (m.seq > state.lastSeq) state.lastSeq = m.seq;
  let node = state.messages.get(m.seq);
  if (!node) {
    const intro = $("messages").querySelector("[data-intro]");
    if (intro) intro.remove();
    node = el("div", { class: `msg ${m.role}`, "data-seq": m.seq }, ...(m.role === "assistant" ? rich(m.text) : [m.text]));
    if (m.role === "assistant" && m.degraded) {
      node.append(el("span", { class: "note" }, "reduced mode: the language model is unavailable"));
    }
    state.messages.set(m.seq, node);
    $("messages").append(node);
  }
  const plan = m.plan && m.plan.length ? m.plan : m.proposal ? [m.proposal] : [];
  if (plan.length > 1) node.dataset.steps = plan.length;
  for (const p of plan) showProposal(p, node);
  if (plan.length > 1 && !node.querySelector("button.confirm-all")) {
    const all = el("button", { class: "confirm confirm-all", type: "button" }, `Confirm all ${plan.length} steps`);
    all.addEventListener("click", () => confirmPlan(m.id, all));
    node.append(all);
  }
  if (plan.length > 1) {
    node.querySelector("button.confirm-all").classList.toggle("hidden", !plan.some((p) => p.status === "pending"));
  }
  scrollDown();
}

// The assistant's "little markdown": **bold** and `code`, built as elements (never HTML).
function rich(text) {
  return text.split(/(\*\*[^*\n]+\*\*|`[^`\n]+`)/).filter((part) => part !== "").map((part) => {
    if (part.length > 4 && part.startsWith("**") && part.endsWith("**")) return el("strong", {}, part.slice(2, -2));
    if (part.length > 2 && part.startsWith("`") && part.endsWith("`")) return el("code", {}, part.slice(1, -1));
    return document.createTextNode(part);
  });
}

function scrollDown() {
  window.scrollTo(0, document.body.scrollHeight);
}

const STATUS_TEXT = {
  pending: "Waiting for your confirmation",
  confirmed: "Confirmed",
  superseded: "No longer current (you wrote again)",
};

function showProposal(p, messageNode) {
  let card = state.proposals.get(p.id);
  if (!card) {
    if (!messageNode) return; // its message arrives with it
    const appliance = state.appliances.get(p.appliance_id);
    // The technical details (action id, parameters) are one click away.
    const params = el("table", { class: "params" },
      el("tr", {}, el("td", {}, "action"), el("td", {}, el("code", {}, p.action))));
    for (const [k, v] of Object.entries(p.params)) {
      params.append(el("tr", {}, el("td", {}, k), el("td", {}, typeof v === "string" ? v : JSON.stringify(v))));
    }
    const details = el("details", { class: "technical" }, el("summary", {}, "Technical details"), params);
    const confirm = el("button", { class: "confirm", type: "button" }, "Confirm");
    confirm.addEventListener("click", () => confirmProposal(p.id, confirm));
    card = el("div", { class: "proposal", "data-id": p.id },
      el("h3", {}, messageNode.dataset.steps ? `${p.step}. ` : "",
        p.summary || p.action, el("span", { class: `risk ${p.risk}` }, `${p.risk} risk`)),
      el("div", { class: "target" }, `on ${appliance ? appliance.name : p.appliance_id}`),
      details,
      confirm,
      el("span", { class: "proposal-status" }));
    messageNode.append(card);
    state.proposals.set(p.id, card);
  }
  card.dataset.status = p.status;
  card.querySelector(".proposal-status").textContent =
    p.status === "pending" && !p.needs_confirmation ? "Running" : STATUS_TEXT[p.status] || p.status;
  card.querySelector("button.confirm").classList.toggle("hidden", p.status !== "pending");
  if (p.task_id && !state.tasks.has(p.task_id)) {
    state.tasks.set(p.task_id, card);
    const log = el("details", { class: "task-log" },
      el("summary", {}, "Technical log (", el("span", { class: "task-count" }, "0"), " events)"),
      el("ol", { class: "task-events" }));
    card.append(el("div", { class: "task", "data-task": p.task_id },
      "Task ", el("span", { class: "task-status queued" }, "queued"),
      el("div", { class: "task-outcome" }),
      el("div", { class: "task-message" }),
      log));
  }
}

async function confirmProposal(id, button) {
  button.disabled = true;
  try {
    const p = await api("POST", `/api/v1/support/conversations/${state.conversation}/proposals/${id}/confirm`);
    showProposal(p);
    status("");
  } catch (e) {
    status(`Could not confirm: ${e.message}`);
    button.disabled = false;
  }
}

async function confirmPlan(messageId, button) {
  button.disabled = true;
  try {
    const r = await api("POST", `/api/v1/support/conversations/${state.conversation}/messages/${messageId}/confirm`);
    for (const p of r.proposals) showProposal(p);
    button.classList.add("hidden");
    status("");
  } catch (e) {
    status(`Could not confirm: ${e.message}`);
    button.disabled = false;
  }
}

function taskNode(taskId) {
  const card = state.tasks.get(taskId);
  return card && card.querySelector(`.task[data-task="${taskId}"]`);
}

function showTask(t, outcome) {
  const node = taskNode(t.id);
  if (!node) return;
  const s = node.querySelector(".task-status");
  s.textContent = t.status.replace("_", " ");
  s.className = `task-status ${t.status}`;
  // The outcome in words first; Ansible's own message stays with the technical log.
  node.querySelector(".task-outcome").textContent = outcome || "";
  node.querySelector(".task-message").textContent = outcome ? "" : t.message || "";
  if (outcome && t.message) node.querySelector(".task-log summary").title = t.message;
  // A failure opens the technical log; a task that went well keeps it folded.
  if (t.status === "failed" || t.status === "timed_out") node.querySelector(".task-log").open = true;
  scrollDown();
}

function showTaskEvent(taskId, e) {
  const node = taskNode(taskId);
  if (!node) return;
  const list = node.querySelector(".task-events");
  if (list.querySelector(`[data-seq="${e.seq}"]`)) return;
  const what = [e.kind, e.task, e.message].filter((x) => x).join(" · ");
  list.append(el("li", { "data-seq": e.seq }, what));
  node.querySelector(".task-count").textContent = list.children.length;
  list.scrollTop = list.scrollHeight;
}

// ---- the event stream ----------------------------------------------------------------

async function follow(conversation) {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  while (!ctl.signal.aborted && state.conversation === conversation) {
    try {
      const r = await fetch(`/api/v1/support/conversations/${conversation}/events?after=${state.lastSeq}`, {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        signal: ctl.signal,
      });
      if (r.status === 401) return signOut("Your session has ended; sign in again.");
      if (r.status === 404) return status("This conversation no longer exists; start a new one.");
      if (!r.ok) throw new Error(`stream: HTTP ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n/g, "\n");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          dispatch(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
}

function dispatch(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return;
  const payload = JSON.parse(data.join("\n"));
  switch (name) {
    case "message": return showMessage(payload);
    case "proposal": return showProposal(payload);
    case "task": return showTask(payload.task, payload.outcome);
    case "task_event": return showTaskEvent(payload.task_id, payload.event);
    case "end": return; // the loop reconnects (after the last message seen)
  }
}

// ---- start ---------------------------------------------------------------------------

if (state.token) {
  enter().catch((e) => signOut(e.status === 401 ? "Sign in again." : e.message));
}
