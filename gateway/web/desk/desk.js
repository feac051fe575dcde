// The agent desktop: one tab per session over the agent WebSocket (/v1/agents/{id}/ws).
// Focus follows the tab in front: switching tabs sends `focus`, hiding or leaving the page
// sends `focus: null`, so every session's focus time is the time its tab was looked at.
import {
  api, ApiError, CHANNEL_ICONS, CHANNELS, LiveSocket, clock, customerName, el, seconds, tokenStore,
} from "/ui/common/gateway.js";

const PAGE = "desk";
const OCCUPYING = new Set(["offered", "active", "wrap_up"]);
const FOCUSABLE = new Set(["active", "wrap_up"]);
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  me: null, // {agent_id, name}
  profile: null,
  agent: null,
  sessions: new Map(), // id -> session object, in tab order
  selected: null,
  sentFocus: undefined, // what the gateway was last told (undefined: unknown)
  panels: new Map(), // id -> {root, parts}
  unread: new Map(),
  transcripts: new Map(),
  muted: sessionStorage.getItem("cti-gateway.desk.muted") === "1",
  sock: null,
  audio: null,
};

// ---------------------------------------------------------------- sign in / out

async function signIn(token) {
  const who = await api(token, "/v1/whoami");
  if (who.kind !== "agent") throw new ApiError(403, "forbidden", "this is not an agent token (the board is at /board)");
  return who;
}

async function start(token) {
  state.token = token;
  state.me = await signIn(token);
  const { profiles } = await api(token, "/v1/profiles");
  state.profile = Object.values(profiles)[0] || null;
  $("signin").hidden = true;
  $("desk").hidden = false;
  $("agent-name").textContent = `${state.me.name || state.me.agent_id} (${state.me.agent_id})`;
  renderMute();
  state.sock = new LiveSocket(`/v1/agents/${encodeURIComponent(state.me.agent_id)}/ws`, token, {
    onMessage,
    onStatus: (status, wait) => {
      const conn = $("conn");
      conn.className = `conn ${status}`;
      conn.textContent = status === "offline" ? `reconnecting in ${seconds(wait)}` :
        status === "replaced" ? "another desktop took over" : status;
      document.body.dataset.conn = status;
      if (status !== "online") state.sentFocus = undefined;
    },
  });
  state.sock.connect();
  setInterval(tick, 250);
}

function showSignIn(message = "") {
  $("desk").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").focus();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  ensureAudio();
  const input = $("token");
  const token = input.value.trim();
  if (!token) return;
  try {
    await signIn(token);
  } catch (err) {
    $("signin-error").textContent = err.code === "unauthorized" ? "Unknown token." : err.message;
    return;
  }
  input.value = "";
  tokenStore.set(PAGE, token);
  start(token).catch((err) => showSignIn(err.message));
});

$("signout").addEventListener("click", () => {
  if (state.sock) {
    state.sock.send({ type: "focus", session_id: null });
    state.sock.close();
  }
  tokenStore.clear(PAGE);
  location.reload();
});

// ---------------------------------------------------------------- alert sound (WebAudio, mutable)

function ensureAudio() {
  if (!state.audio && window.AudioContext) state.audio = new AudioContext();
  if (state.audio && state.audio.state === "suspended") state.audio.resume().catch(() => {});
}
document.addEventListener("pointerdown", ensureAudio);
document.addEventListener("keydown", ensureAudio);

function chime() {
  document.body.dataset.chimes = String(Number(document.body.dataset.chimes || 0) + 1);
  if (state.muted || !state.audio) return;
  const ctx = state.audio;
  const t = ctx.currentTime;
  for (const [i, freq] of [880, 1320].entries()) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, t + i * 0.18);
    gain.gain.exponentialRampToValueAtTime(0.2, t + i * 0.18 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.18 + 0.16);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t + i * 0.18);
    osc.stop(t + i * 0.18 + 0.17);
  }
}

function renderMute() {
  const button = $("mute");
  button.textContent = state.muted ? "Sound off" : "Sound on";
  button.setAttribute("aria-pressed", String(state.muted));
}

$("mute").addEventListener("click", () => {
  state.muted = !state.muted;
  sessionStorage.setItem("cti-gateway.desk.muted", state.muted ? "1" : "0");
  renderMute();
});

// ---------------------------------------------------------------- messages from the gateway

function onMessage(message) {
  switch (message.type) {
    case "hello": {
      state.agent = message.agent;
      const fresh = new Map(message.agent.sessions.map((s) => [s.id, s]));
      for (const id of [...state.sessions.keys()]) if (!fresh.has(id)) dropSession(id);
      for (const session of message.agent.sessions) upsert(session);
      const focused = message.agent.sessions.find((s) => s.focused);
      state.sentFocus = focused ? focused.id : null;
      if (focused && (!state.selected || !state.sessions.has(state.selected))) state.selected = focused.id;
      if (state.selected && !state.sessions.has(state.selected)) state.selected = null;
      renderAll();
      syncFocus();
      break;
    }
    case "session.offered":
      upsert(message.session);
      chime();
      renderAll();
      break;
    case "session.opened":
    case "session.updated":
      upsert(message.session);
      renderAll();
      break;
    case "session.closed":
      dropSession(message.session.id);
      renderAll();
      break;
    case "chat.message":
      chatMessage(message);
      break;
    case "agent.presence":
      if (state.agent) state.agent.presence = message.presence;
      renderPresence();
      break;
    default:
      break;
  }
}

function upsert(session) {
  if (session.state === "closed") {
    dropSession(session.id);
    return;
  }
  state.sessions.set(session.id, { ...(state.sessions.get(session.id) || {}), ...session });
  // what the gateway holds as focused (it may change it itself: a new manual session)
  if (session.focused) state.sentFocus = session.id;
  else if (state.sentFocus === session.id) state.sentFocus = null;
  if (session.focused && session.channel === "manual" && !state.selected) state.selected = session.id;
}

function dropSession(id) {
  state.sessions.delete(id);
  state.unread.delete(id);
  const panel = state.panels.get(id);
  if (panel) panel.root.remove();
  state.panels.delete(id);
  if (state.selected === id) state.selected = null;
}

function chatMessage(message) {
  const list = state.transcripts.get(message.session_id) || [];
  list.push(message);
  state.transcripts.set(message.session_id, list);
  const looking = message.session_id === state.selected && document.visibilityState === "visible";
  if (message.alert && !looking) {
    state.unread.set(message.session_id, (state.unread.get(message.session_id) || 0) + 1);
    chime();
  }
  const panel = state.panels.get(message.session_id);
  if (panel) renderTranscript(panel, message.session_id);
  renderTabs();
}

// ---------------------------------------------------------------- focus follows the tab in front

function desiredFocus() {
  if (document.visibilityState !== "visible" || !state.selected) return null;
  const session = state.sessions.get(state.selected);
  return session && FOCUSABLE.has(session.state) ? session.id : null;
}

function syncFocus() {
  if (!state.sock || !state.sock.open) return;
  const want = desiredFocus();
  if (want === state.sentFocus) return;
  state.sentFocus = want;
  state.sock.request({ type: "focus", session_id: want }).catch((err) => {
    state.sentFocus = undefined;
    if (err.code !== "disconnected") notice(`Focus: ${err.code}: ${err.message}`);
  });
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.selected) state.unread.delete(state.selected);
  syncFocus();
  renderTabs();
});
window.addEventListener("pagehide", () => {
  if (state.sock && state.sock.open) state.sock.send({ type: "focus", session_id: null });
});

function select(id) {
  if (!state.sessions.has(id)) return;
  state.selected = id;
  state.unread.delete(id);
  syncFocus();
  renderAll();
}

// ---------------------------------------------------------------- rendering

function counts() {
  const inUse = { sessions: 0, units: 0 };
  for (const c of CHANNELS) inUse[c] = 0;
  for (const s of state.sessions.values()) {
    if (!OCCUPYING.has(s.state)) continue;
    inUse.sessions += 1;
    inUse[s.channel] += 1;
    inUse.units += state.profile ? state.profile.units[s.channel] : 1;
  }
  return inUse;
}

function renderAll() {
  renderPresence();
  renderCapacity();
  renderTabs();
  renderPanels();
}

function renderPresence() {
  if (!state.agent) return;
  const { state: presence, reason } = state.agent.presence;
  const select = $("presence");
  if (document.activeElement !== select) select.value = presence;
  const input = $("presence-reason");
  if (document.activeElement !== input) input.value = reason || "";
  document.body.dataset.presence = presence;
}

function renderCapacity() {
  const box = $("capacity");
  box.replaceChildren();
  const profile = state.profile;
  if (!profile) return;
  const used = counts();
  const free = profile.max_sessions - used.sessions;
  box.append(el("span", { class: "total", "data-testid": "in-use", text: `Sessions ${used.sessions} / ${profile.max_sessions}` }));
  for (const c of CHANNELS) {
    const cap = profile.channels[c];
    box.append(el("span", {
      class: `chip${used[c] >= cap ? " full" : ""}`, "data-testid": `use-${c}`, title: `${c}: ${used[c]} of ${cap}`,
    }, `${CHANNEL_ICONS[c]} ${used[c]}/${cap}`));
  }
  const slots = el("span", { class: "slots", "aria-hidden": "true" });
  const occupied = [...state.sessions.values()].filter((s) => OCCUPYING.has(s.state));
  for (let i = 0; i < profile.max_sessions; i += 1) {
    const s = occupied[i];
    const reserved = !s && i >= profile.max_sessions - profile.reserved_inbound;
    slots.append(el("span", { class: `slot${s ? " used" : ""}${reserved ? " reserved" : ""}`, title: s ? s.label : reserved ? "reserved for inbound" : "free" },
      s ? CHANNEL_ICONS[s.channel] : reserved ? "R" : ""));
  }
  box.append(slots);
  if (profile.reserved_inbound > 0) {
    const onlyReserved = free > 0 && free <= profile.reserved_inbound;
    box.append(el("span", { class: `chip reserved${onlyReserved ? " full" : ""}`, "data-testid": "reserved" },
      onlyReserved ? "only reserved free" : `${profile.reserved_inbound} reserved inbound`));
  }
}

function tabLabel(session) {
  return `${CHANNEL_ICONS[session.channel] || ""} ${customerName(session)}`;
}

function renderTabs() {
  const tabs = $("tabs");
  // the strip is rebuilt: a tab that had the keyboard focus gets it back
  const keyboard = tabs.contains(document.activeElement) ? document.activeElement.dataset.session : null;
  tabs.replaceChildren();
  let index = 0;
  let alerts = 0;
  for (const session of state.sessions.values()) {
    index += 1;
    const selected = session.id === state.selected;
    const unread = state.unread.get(session.id) || 0;
    if (session.state === "offered") alerts += 1;
    alerts += unread;
    const badge = session.state === "offered" ? el("span", { class: "badge offer", "data-testid": "offer-badge" }, "new")
      : unread ? el("span", { class: "badge", "data-testid": "unread-badge", "aria-label": `${unread} unread` }, String(unread)) : null;
    tabs.append(el("button", {
      type: "button",
      role: "tab",
      id: `tab-${session.id}`,
      class: `tab state-${session.state}${selected ? " selected" : ""}`,
      "aria-selected": String(selected),
      "aria-controls": `panel-${session.id}`,
      tabindex: selected || (!state.selected && index === 1) ? "0" : "-1",
      title: `Alt+${index}`,
      dataset: { session: session.id, state: session.state, channel: session.channel },
      onclick: () => select(session.id),
    }, el("span", { class: "icon", "aria-label": session.channel }, CHANNEL_ICONS[session.channel] || "?"),
    el("span", { class: "who" }, customerName(session)),
    el("span", { class: "st" }, session.state.replace("_", "-")), badge));
  }
  document.title = alerts ? `(${alerts}) Desk · cti-gateway` : "Desk · cti-gateway";
  if (keyboard) document.getElementById(`tab-${keyboard}`)?.focus();
}

function renderPanels() {
  $("empty").hidden = state.sessions.size > 0 && state.selected !== null;
  for (const session of state.sessions.values()) {
    let panel = state.panels.get(session.id);
    if (!panel) {
      panel = buildPanel(session);
      state.panels.set(session.id, panel);
      $("panels").append(panel.root);
    }
    panel.root.hidden = session.id !== state.selected;
    updatePanel(panel, session);
  }
}

tabKeys();
function tabKeys() {
  $("tabs").addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return; // Alt+keys: the document's handler
    const ids = [...state.sessions.keys()];
    const at = ids.indexOf(state.selected);
    let next = null;
    if (event.key === "ArrowRight") next = ids[(at + 1) % ids.length];
    else if (event.key === "ArrowLeft") next = ids[(at - 1 + ids.length) % ids.length];
    else if (event.key === "Home") next = ids[0];
    else if (event.key === "End") next = ids[ids.length - 1];
    if (next) {
      event.preventDefault();
      select(next);
      document.getElementById(`tab-${next}`)?.focus();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (!event.altKey || event.ctrlKey || event.metaKey) return;
    const ids = [...state.sessions.keys()];
    if (/^[1-9]$/.test(event.key)) {
      const id = ids[Number(event.key) - 1];
      if (id) {
        event.preventDefault();
        select(id);
        document.getElementById(`tab-${id}`)?.focus();
      }
    } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      const at = ids.indexOf(state.selected);
      const id = ids[(at + (event.key === "ArrowRight" ? 1 : ids.length - 1)) % ids.length];
      if (id) {
        event.preventDefault();
        select(id);
      }
    } else if (event.key === "n" || event.key === "N") {
      event.preventDefault();
      newSession();
    }
  });
}

// ---------------------------------------------------------------- one panel per session

function field(label, node) {
  return el("div", { class: "field" }, el("span", { class: "label" }, label), node);
}

function act(session, message, part) {
  return state.sock.request({ session_id: session.id, ...message }).catch((err) => {
    if (part) part.textContent = `${err.code}: ${err.message}`;
    else notice(`${err.code}: ${err.message}`);
    throw err;
  });
}

function buildPanel(session) {
  const id = session.id;
  const parts = {};
  const current = () => state.sessions.get(id);
  parts.customer = el("span", { "data-testid": "customer" });
  parts.subject = el("span", { "data-testid": "subject" });
  parts.state = el("span", { "data-testid": "state" });
  parts.countdown = el("span", { class: "countdown", "data-testid": "countdown" });
  parts.error = el("p", { class: "error", role: "alert", "data-testid": "panel-error" });

  parts.accept = el("button", { type: "button", class: "primary", "data-testid": "accept", onclick: () =>
    act(current(), { type: "accept" }, parts.error).then(() => { if (state.selected === id) syncFocus(); }).catch(() => {}) }, "Accept");
  parts.decline = el("button", { type: "button", "data-testid": "decline", onclick: () =>
    act(current(), { type: "decline" }, parts.error).catch(() => {}) }, "Decline");
  parts.end = el("button", { type: "button", class: "danger", "data-testid": "end", onclick: () =>
    act(current(), { type: "end" }, parts.error).catch(() => {}) }, "End");
  parts.offer = el("div", { class: "offer" }, parts.accept, parts.decline);

  // chat transcript and reply box
  parts.transcript = el("ol", { class: "transcript", "data-testid": "transcript", "aria-live": "polite" });
  parts.reply = el("textarea", { rows: "2", placeholder: "Reply to the customer (Enter sends)", "data-testid": "reply", "aria-label": "Reply" });
  const sendReply = () => {
    const text = parts.reply.value.trim();
    if (!text) return;
    act(current(), { type: "send", text }, parts.error).then(() => {
      parts.reply.value = "";
      // the gateway does not echo a reply to the desktop that sent it: show it here
      const list = state.transcripts.get(id) || [];
      list.push({ session_id: id, sender: "agent", text, at: new Date().toISOString() });
      state.transcripts.set(id, list);
      renderTranscript(state.panels.get(id), id);
    }).catch(() => {});
  };
  parts.reply.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      sendReply();
    }
  });
  parts.chat = el("section", { class: "chat" }, el("h3", {}, "Chat"), parts.transcript,
    el("div", { class: "row" }, parts.reply, el("button", { type: "button", class: "primary", "data-testid": "send", onclick: sendReply }, "Send")));

  // notes
  parts.notes = el("ul", { class: "notes", "data-testid": "notes" });
  parts.note = el("textarea", { rows: "2", placeholder: "Note", "aria-label": "Note", "data-testid": "note" });
  const addNote = () => {
    const text = parts.note.value.trim();
    if (text) act(current(), { type: "note", text }, parts.error).then(() => { parts.note.value = ""; }).catch(() => {});
  };
  // account
  parts.account = el("span", { "data-testid": "account" });
  parts.accountId = el("input", { placeholder: "account id", "aria-label": "Account id", "data-testid": "account-id", maxlength: "200" });
  // transfer
  parts.mode = el("select", { "aria-label": "Transfer mode", "data-testid": "transfer-mode" },
    el("option", { value: "blind" }, "blind"), el("option", { value: "consult" }, "consult"));
  parts.target = el("select", { "aria-label": "Transfer target", "data-testid": "transfer-target" });
  parts.target.append(el("option", { value: "" }, "choose a colleague or queue"));
  parts.target.addEventListener("focus", () => loadTargets(current(), parts.target));
  parts.target.addEventListener("pointerdown", () => loadTargets(current(), parts.target));
  const transfer = () => {
    const value = parts.target.value;
    if (!value) return;
    const [kind, name] = [value.slice(0, value.indexOf(":")), value.slice(value.indexOf(":") + 1)];
    const message = { type: "transfer", mode: parts.mode.value, ...(kind === "agent" ? { to_agent: name } : { to_queue: name }) };
    act(current(), message, parts.error).then(() => { parts.error.textContent = `Transferred (${parts.mode.value}) to ${name}`; }).catch(() => {});
  };
  parts.work = el("div", { class: "work" },
    el("section", {}, el("h3", {}, "Notes"), parts.notes,
      el("div", { class: "row" }, parts.note, el("button", { type: "button", onclick: addNote, "data-testid": "add-note" }, "Add"))),
    el("section", {}, el("h3", {}, "Account"), field("Status", parts.account),
      el("div", { class: "row" }, parts.accountId,
        el("button", { type: "button", "data-testid": "confirm-account", onclick: () =>
          act(current(), { type: "confirm_account", ...(parts.accountId.value.trim() ? { account_id: parts.accountId.value.trim() } : {}) }, parts.error).catch(() => {}) }, "Confirm"),
        el("button", { type: "button", "data-testid": "reset-account", onclick: () => act(current(), { type: "reset_account" }, parts.error).catch(() => {}) }, "Reset"))),
    el("section", {}, el("h3", {}, "Transfer"),
      el("div", { class: "row" }, parts.mode, parts.target,
        el("button", { type: "button", "data-testid": "transfer", onclick: transfer }, "Transfer"))));

  const root = el("article", {
    id: `panel-${id}`, class: "panel", role: "tabpanel", "aria-labelledby": `tab-${id}`, dataset: { session: id },
  },
  el("header", { class: "panel-head" },
    field("Customer", parts.customer), field("Subject", parts.subject), field("State", parts.state), parts.countdown,
    el("span", { class: "grow" }), parts.offer, parts.end),
  parts.error, el("div", { class: "body" }, parts.chat, parts.work));
  const panel = { root, parts };
  renderTranscript(panel, id);
  return panel;
}

function updatePanel(panel, session) {
  const { parts } = panel;
  const customer = session.customer || {};
  parts.customer.textContent = [customer.name, customer.address].filter(Boolean).join(" · ") || (session.channel === "manual" ? session.label : "unknown");
  parts.subject.textContent = session.subject || "—";
  parts.state.textContent = session.state.replace("_", "-") + (session.flagged ? " (flagged)" : "");
  parts.offer.hidden = session.state !== "offered";
  parts.end.hidden = session.state !== "active";
  parts.chat.hidden = session.channel !== "chat";
  parts.work.hidden = session.state === "offered";
  parts.reply.disabled = session.state !== "active";
  parts.notes.replaceChildren(...(session.notes || []).map((n) => el("li", {}, el("time", {}, clock(n.at)), " ", n.text)));
  const account = session.account || {};
  parts.account.textContent = account.state === "confirmed" ? `confirmed ${account.id || ""}` : account.id ? `${account.state}: ${account.id}` : account.state || "unidentified";
  if (!parts.accountId.value && account.id && document.activeElement !== parts.accountId) parts.accountId.value = account.id;
  updateCountdown(panel, session);
}

function deadline(session) {
  const profile = state.profile;
  if (!profile) return null;
  if (session.state === "offered") return Date.parse(session.offered_at) + 1000 * (profile.offer_timeout_s[session.channel] ?? 30);
  if (session.state === "wrap_up" && session.ended_at) return Date.parse(session.ended_at) + 1000 * (profile.wrap_up_s[session.channel] ?? 0);
  return null;
}

function updateCountdown(panel, session) {
  const due = deadline(session);
  panel.parts.countdown.textContent = due === null ? "" :
    `${session.state === "offered" ? "answer within" : "wrap-up"} ${seconds(due - Date.now())}`;
}

function tick() {
  for (const [id, panel] of state.panels) {
    const session = state.sessions.get(id);
    if (session && !panel.root.hidden) updateCountdown(panel, session);
  }
  for (const tab of document.querySelectorAll(".tab.state-offered .st, .tab.state-wrap_up .st")) {
    const session = state.sessions.get(tab.parentElement.dataset.session);
    const due = session && deadline(session);
    if (due) tab.textContent = `${session.state.replace("_", "-")} ${seconds(due - Date.now())}`;
  }
}

function renderTranscript(panel, id) {
  const list = state.transcripts.get(id) || [];
  panel.parts.transcript.replaceChildren(...list.map((m) => el("li", { class: `msg ${m.sender}` },
    el("time", {}, clock(m.at)), " ", el("b", {}, m.sender === "agent" ? "you" : (m.customer && m.customer.name) || "customer"), ": ", m.text)));
  panel.parts.transcript.scrollTop = panel.parts.transcript.scrollHeight;
}

async function loadTargets(session, select) {
  if (!session) return;
  const keep = select.value;
  try {
    const [{ agents }, { queues }] = await Promise.all([api(state.token, "/v1/agents"), api(state.token, "/v1/queues")]);
    const colleagues = agents.filter((a) => a.id !== state.me.agent_id && a.presence.state === "ready" && (a.free_capacity[session.channel] || 0) > 0);
    select.replaceChildren(
      el("option", { value: "" }, colleagues.length ? "choose a colleague or queue" : "choose a queue (no colleague has room)"),
      el("optgroup", { label: "Colleagues with room" }, ...colleagues.map((a) => el("option", { value: `agent:${a.id}` }, `${a.name || a.id} (${a.free_capacity[session.channel]} free)`))),
      el("optgroup", { label: "Queues" }, ...queues.map((q) => el("option", { value: `queue:${q.name}` }, q.name))),
    );
    if (keep) select.value = keep;
  } catch (err) {
    notice(`Transfer targets: ${err.code}: ${err.message}`);
  }
}

// ---------------------------------------------------------------- presence, new session, notices

$("presence-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("presence").value;
  const reason = $("presence-reason").value.trim();
  state.sock.request({ type: "presence", state: value, ...(value === "not_ready" && reason ? { reason } : {}) })
    .then(() => notice(""))
    .catch((err) => notice(`Presence: ${err.code}: ${err.message}`));
});
$("presence").addEventListener("change", () => $("presence-form").requestSubmit());

function newSession() {
  state.sock.request({ type: "new_session" }).then((ack) => {
    notice("");
    if (ack.session) {
      upsert(ack.session);
      state.selected = ack.session.id;
      state.sentFocus = ack.session.id; // created active and focused by the gateway
      renderAll();
    }
  }).catch((err) => notice(`New session refused: ${err.code} (${err.message})`));
}
$("new-session").addEventListener("click", newSession);

function notice(text) {
  $("notice").textContent = text;
}

// ---------------------------------------------------------------- boot

const saved = tokenStore.get(PAGE);
if (saved) {
  start(saved).catch((err) => {
    if (err.code === "unauthorized" || err.code === "forbidden") tokenStore.clear(PAGE);
    showSignIn(err.code === "network_error" ? "The gateway cannot be reached; try again." : err.message);
  });
} else {
  showSignIn();
}
