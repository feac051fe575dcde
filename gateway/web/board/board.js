// The supervisor wallboard: a REST snapshot (agents, queues, profiles), then live updates
// from the event stream (/v1/events/ws). Nothing polls: the queues are re-read only when
// the stream says something that changes them, and the snapshot when the stream reconnects.
import {
  api, ApiError, CHANNEL_ICONS, CHANNELS, LiveSocket, clock, customerName, el, seconds, tokenStore,
} from "/ui/common/gateway.js";

const PAGE = "board";
const WINDOW_MIN = 15;
const MAX_EVENTS = 300;
const OCCUPYING = new Set(["offered", "active", "wrap_up"]);
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  agents: new Map(), // id -> agent object (sessions included)
  profiles: {},
  queues: [],
  queuesAt: 0,
  decisions: [], // {at, decision, reason}
  events: [], // newest last
  sock: null,
  queueTimer: null,
};

// ---------------------------------------------------------------- sign in / out

async function signIn(token) {
  const who = await api(token, "/v1/whoami");
  if (who.kind !== "supervisor") throw new ApiError(403, "forbidden", "this is not the supervisor token (agents use /desk)");
}

async function start(token) {
  state.token = token;
  await signIn(token);
  $("signin").hidden = true;
  $("board").hidden = false;
  $("window").textContent = String(WINDOW_MIN);
  state.sock = new LiveSocket("/v1/events/ws", token, {
    onMessage,
    onOpen: () => snapshot().catch((err) => notice(`${err.code}: ${err.message}`)),
    onStatus: (status, wait) => {
      $("conn").className = `conn ${status}`;
      $("conn").textContent = status === "offline" ? `reconnecting in ${seconds(wait)}` : status;
      document.body.dataset.conn = status;
    },
  });
  state.sock.connect();
  setInterval(tick, 1000);
}

function showSignIn(message = "") {
  $("board").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").focus();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  try {
    await signIn(token);
  } catch (err) {
    $("signin-error").textContent = err.code === "unauthorized" ? "Unknown token." : err.message;
    return;
  }
  $("token").value = "";
  tokenStore.set(PAGE, token);
  start(token).catch((err) => showSignIn(err.message));
});

$("signout").addEventListener("click", () => {
  if (state.sock) state.sock.close();
  tokenStore.clear(PAGE);
  location.reload();
});

// ---------------------------------------------------------------- state from REST

async function snapshot() {
  // subscribed first (the socket is open), then read: nothing that happens in between is lost
  const [{ agents }, { profiles }] = await Promise.all([api(state.token, "/v1/agents"), api(state.token, "/v1/profiles")]);
  state.profiles = profiles;
  state.agents = new Map(agents.map((a) => [a.id, a]));
  await loadQueues();
  renderAgents();
  notice("");
}

async function loadQueues() {
  const { queues } = await api(state.token, "/v1/queues");
  state.queues = queues;
  state.queuesAt = Date.now();
  renderQueues();
}

function queuesChanged() {
  // coalesce a burst of stream messages into one read
  if (state.queueTimer) return;
  state.queueTimer = setTimeout(() => {
    state.queueTimer = null;
    loadQueues().catch((err) => notice(`queues: ${err.code}: ${err.message}`));
  }, 200);
}

// ---------------------------------------------------------------- the stream

function onMessage(message) {
  if (message.type === "pong" || message.type === "error") return;
  state.events.push({ at: Date.now(), message });
  if (state.events.length > MAX_EVENTS) state.events.shift();
  switch (message.type) {
    case "session.changed": {
      const session = message.session;
      const agent = state.agents.get(session.agent_id);
      if (agent) {
        const sessions = agent.sessions || [];
        const at = sessions.findIndex((s) => s.id === session.id);
        if (session.state === "closed") {
          if (at >= 0) sessions.splice(at, 1);
        } else if (at >= 0) {
          sessions[at] = session; // keep the order the sessions came in
        } else {
          sessions.push(session);
        }
        agent.sessions = sessions;
      }
      if (message.transition === "offered") queuesChanged();
      renderAgents();
      break;
    }
    case "agent.presence": {
      const agent = state.agents.get(message.agent_id);
      if (agent) agent.presence = { state: message.state, reason: message.reason };
      renderAgents();
      break;
    }
    case "event.routed": {
      const decision = message.decision || {};
      if (decision.decision && decision.decision !== "duplicate" && decision.decision !== "accepted") {
        record(decision.decision, decision.reason);
      }
      if (decision.decision === "queued" || message.event_type === "end") queuesChanged();
      break;
    }
    case "vendor.notice":
      if (message.action === "decision" && message.data) {
        record(message.data.decision, message.data.reason);
        queuesChanged();
      }
      break;
    default:
      break;
  }
  renderEvents();
}

function record(decision, reason) {
  state.decisions.push({ at: Date.now(), decision, reason: reason || "" });
  renderDecisions();
}

// ---------------------------------------------------------------- rendering

function inUse(agent) {
  const used = { sessions: 0 };
  for (const c of CHANNELS) used[c] = 0;
  for (const s of agent.sessions || []) {
    if (!OCCUPYING.has(s.state)) continue;
    used.sessions += 1;
    used[s.channel] += 1;
  }
  return used;
}

function sessionLink(session) {
  return el("a", { href: `#record/${encodeURIComponent(session.id)}`, class: `sess ${session.state}`, title: `${session.state} · open the record`, dataset: { session: session.id } },
    `${CHANNEL_ICONS[session.channel] || ""} ${customerName(session)} (${session.state.replace("_", "-")})`);
}

function renderAgents() {
  const body = $("agents");
  const rows = [];
  let ready = 0;
  let total = 0;
  for (const agent of state.agents.values()) {
    const profile = state.profiles[agent.profile] || { max_sessions: 0, channels: {} };
    const used = inUse(agent);
    total += used.sessions;
    if (agent.presence.state === "ready") ready += 1;
    rows.push(el("tr", { dataset: { agent: agent.id } },
      el("td", {}, el("b", {}, agent.name || agent.id), " ", el("span", { class: "muted" }, agent.id)),
      el("td", { class: `p-${agent.presence.state}`, "data-testid": "presence" }, agent.presence.state.replace("_", " "),
        agent.presence.reason ? el("span", { class: "muted" }, ` (${agent.presence.reason})`) : null),
      el("td", { "data-testid": "in-use" }, `${used.sessions} / ${profile.max_sessions}`),
      el("td", {}, ...CHANNELS.map((c) => el("span", {
        class: `chip${used[c] >= (profile.channels[c] ?? 0) ? " full" : ""}`, dataset: { channel: c }, "data-testid": `use-${c}`,
      }, `${CHANNEL_ICONS[c]} ${used[c]}/${profile.channels[c] ?? "?"}`))),
      el("td", {}, ...(agent.sessions || []).map(sessionLink)),
    ));
  }
  body.replaceChildren(...rows);
  $("totals").textContent = `${ready} of ${state.agents.size} agents ready · ${total} sessions in use`;
}

function renderQueues() {
  const elapsed = Date.now() - state.queuesAt;
  $("queues").replaceChildren(...state.queues.map((q) => {
    const longest = q.waiting.length ? q.longest_wait_ms + elapsed : 0;
    return el("tr", { dataset: { queue: q.name } },
      el("td", {}, q.name, el("span", { class: "muted" }, ` ${q.on_full}`)),
      el("td", { "data-testid": "waiting" }, String(q.waiting.length)),
      el("td", { "data-testid": "longest", class: longest > 60000 ? "waiting-long" : "" }, q.waiting.length ? seconds(longest) : "—"));
  }));
}

function renderDecisions() {
  const since = Date.now() - WINDOW_MIN * 60000;
  state.decisions = state.decisions.filter((d) => d.at >= since);
  const counts = new Map();
  for (const d of state.decisions) {
    const key = `${d.decision}|${d.reason}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  const rows = [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([key, count]) => {
    const [decision, reason] = key.split("|");
    return el("tr", { class: decision === "rejected" ? "rejected" : "", dataset: { decision, reason } },
      el("td", {}, decision), el("td", {}, reason || "—"), el("td", { "data-testid": "count" }, String(count)));
  });
  $("decisions").replaceChildren(...rows);
}

function summary(message) {
  switch (message.type) {
    case "event.routed": {
      const d = message.decision || {};
      return `${message.vendor} ${message.event_type} ${message.interaction_id} ${message.channel || ""} → ${d.decision}${d.reason ? ` ${d.reason}` : ""}${d.agent_id ? ` ${d.agent_id}` : ""}`;
    }
    case "session.changed":
      return `${message.session.agent_id} ${message.transition} ${message.session.channel} ${customerName(message.session)} (${message.session.id})`;
    case "agent.presence":
      return `${message.agent_id} ${message.state}${message.reason ? ` (${message.reason})` : ""}`;
    case "vendor.notice":
      return `${message.vendor} ${message.action} ${message.interaction_id || ""} ${message.data ? JSON.stringify(message.data) : ""}`;
    default:
      return JSON.stringify(message);
  }
}

function renderEvents() {
  const text = $("filter").value.trim().toLowerCase();
  const type = $("filter-type").value;
  const shown = [];
  for (let i = state.events.length - 1; i >= 0 && shown.length < 200; i -= 1) {
    const { at, message } = state.events[i];
    if (type && message.type !== type) continue;
    const line = summary(message);
    if (text && !line.toLowerCase().includes(text) && !JSON.stringify(message).toLowerCase().includes(text)) continue;
    const sessionId = message.type === "session.changed" ? message.session.id : message.decision && message.decision.session_id;
    shown.push(el("li", { dataset: { type: message.type } },
      el("span", { class: "t" }, clock(new Date(at).toISOString())), el("span", { class: "k" }, message.type), line,
      sessionId ? el("a", { href: `#record/${encodeURIComponent(sessionId)}`, class: "rec" }, " record") : null));
  }
  $("events").replaceChildren(...shown);
}
$("filter").addEventListener("input", renderEvents);
$("filter-type").addEventListener("change", renderEvents);

function tick() {
  renderQueues();
  renderDecisions();
}

// ---------------------------------------------------------------- records and the report

async function showRecord() {
  const match = /^#record\/(.+)$/.exec(location.hash);
  if (!match || !state.token) return;
  const id = decodeURIComponent(match[1]);
  const body = $("record-body");
  body.textContent = "loading…";
  const dialog = $("record");
  if (!dialog.open) dialog.showModal();
  try {
    body.textContent = JSON.stringify(await api(state.token, `/v1/sessions/${encodeURIComponent(id)}`), null, 2);
  } catch (err) {
    body.textContent = `${err.code}: ${err.message}`;
  }
}
window.addEventListener("hashchange", showRecord);
$("record").addEventListener("close", () => history.replaceState(null, "", location.pathname));

$("report").addEventListener("click", async () => {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  try {
    const response = await api(state.token, `/v1/reports/sessions?format=csv&from=${Math.floor(midnight.getTime() / 1000)}`, { raw: true });
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const day = `${midnight.getFullYear()}-${String(midnight.getMonth() + 1).padStart(2, "0")}-${String(midnight.getDate()).padStart(2, "0")}`;
    const link = el("a", { href: url, download: `sessions-${day}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    notice(`Report: ${err.code}: ${err.message}`);
  }
});

function notice(text) {
  $("notice").textContent = text;
}

// ---------------------------------------------------------------- boot

const saved = tokenStore.get(PAGE);
if (saved) {
  start(saved).then(showRecord).catch((err) => {
    if (err.code === "unauthorized" || err.code === "forbidden") tokenStore.clear(PAGE);
    showSignIn(err.message);
  });
} else {
  showSignIn();
}
