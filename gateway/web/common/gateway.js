// Shared by /desk and /board: the token (session storage only), REST calls with the bearer
// header, a WebSocket that reconnects with backoff, and small DOM helpers.
// Plain ES module: no build step, no dependency, nothing fetched from elsewhere.

const TOKEN_KEY = "cti-gateway.token";

export const tokenStore = {
  get: (page) => sessionStorage.getItem(`${TOKEN_KEY}.${page}`),
  set: (page, token) => sessionStorage.setItem(`${TOKEN_KEY}.${page}`, token),
  clear: (page) => sessionStorage.removeItem(`${TOKEN_KEY}.${page}`),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/** A REST call with the bearer token; resolves to the parsed JSON (or text), throws ApiError. */
export async function api(token, path, { method = "GET", body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, "network_error", "the gateway cannot be reached");
  }
  if (raw && response.ok) return response;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || response.statusText);
  }
  return data;
}

/**
 * A WebSocket that comes back by itself: after a drop it reconnects with exponential
 * backoff (0.5 s doubling to 10 s, with jitter). The token goes in `?token=` because
 * browsers cannot set headers on a WebSocket; the gateway never logs query strings.
 * `request(msg)` sends a message with a `ref` and resolves on its `ack` (rejects on `error`).
 */
export class LiveSocket {
  constructor(path, token, { onMessage, onStatus, onOpen }) {
    this.path = path;
    this.token = token;
    this.onMessage = onMessage;
    this.onStatus = onStatus || (() => {});
    this.onOpen = onOpen || (() => {});
    this.ws = null;
    this.delay = 500;
    this.refs = 0;
    this.pending = new Map();
    this.closed = false;
    this.timer = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.path}?token=${encodeURIComponent(this.token)}`;
  }

  connect() {
    if (this.closed) return;
    this.onStatus("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.delay = 500;
      this.onStatus("online");
      this.onOpen();
    });
    ws.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if ((message.type === "ack" || message.type === "error" || message.type === "pong") && message.ref != null) {
        const waiter = this.pending.get(message.ref);
        if (waiter) {
          this.pending.delete(message.ref);
          if (message.type === "error") waiter.reject(new ApiError(0, message.code, message.message));
          else waiter.resolve(message);
          return;
        }
      }
      this.onMessage(message);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const waiter of this.pending.values()) waiter.reject(new ApiError(0, "disconnected", "the connection dropped"));
      this.pending.clear();
      if (this.closed) return;
      // 1008/4401-like refusals and a replaced desktop are not retried in a tight loop either
      const wait = Math.min(10000, this.delay) * (0.75 + Math.random() * 0.5);
      this.delay = Math.min(10000, this.delay * 2);
      this.onStatus(event.code === 4009 ? "replaced" : "offline", Math.round(wait));
      if (event.code === 4009) return; // a newer desktop took over: do not fight it
      this.timer = setTimeout(() => this.connect(), wait);
    });
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(message) {
    if (this.open) this.ws.send(JSON.stringify(message));
  }

  request(message) {
    if (!this.open) return Promise.reject(new ApiError(0, "disconnected", "not connected to the gateway"));
    const ref = `r${++this.refs}`;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject });
      this.ws.send(JSON.stringify({ ...message, ref }));
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "signed out");
    this.ws = null;
  }
}

/** el("div", {class: "x", dataset: {id: 1}, onclick: f}, child, "text") */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const CHANNEL_ICONS = { voice: "☎", chat: "❝", email: "✉", manual: "✚" };
export const CHANNELS = ["voice", "chat", "email", "manual"];

export function seconds(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return s >= 60 ? `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}` : `${s} s`;
}

export function clock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function customerName(session) {
  const c = session.customer || {};
  return c.name || c.address || session.subject || session.label || session.channel;
}
