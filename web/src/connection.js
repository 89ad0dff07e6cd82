// The page's client of the gateway websocket (docs/asyncapi.yaml): requests with req_id and
// their one reply, feeds routed to the handlers of live subscriptions, login on every
// (re)connect, resubscription after a reconnect, and retries of rate-limited requests.

import { signLogin } from "./signing.js";

const PENDING_MAX = 256;
const REQUEST_TIMEOUT_MS = 15_000;
const WAIT_OPEN_TIMEOUT_MS = 20_000;
const RATE_LIMIT_RETRIES_MAX = 5;
const RECONNECT_DELAY_MS_MIN = 500;
const RECONNECT_DELAY_MS_MAX = 10_000;
const SILENCE_HEARTBEATS_MAX = 3;
const PUBLIC_CHANNELS = new Set(["book", "trades", "ticker", "candles", "index"]);

export class RequestError extends Error {
  constructor(reply) {
    super(reply.error?.message ?? reply.reason ?? reply.status);
    this.reply = reply;
    this.code = reply.error?.code ?? reply.status;
  }
}

/** A feed's scope: an instrument's symbol, `{ gpu, region }` for one class's index, or
 * undefined (the private feeds, the index of every class). */
function scopeKey(scope) {
  if (scope === undefined || scope === null) return "";
  return typeof scope === "string" ? scope : `${scope.gpu}|${scope.region}`;
}

function subscriptionKey(channel, scope) {
  return `${channel}|${scopeKey(scope)}`;
}

/** The subscribe/unsubscribe fields of a feed and its scope. */
function scopeFields(channel, scope) {
  if (scope === undefined || scope === null) return { channel };
  if (typeof scope === "string") return { channel, instrument: scope };
  return { channel, gpu: scope.gpu, region: scope.region };
}

/** The scope a feed message belongs to (the public feeds name it; the private ones do not). */
function messageScope(message) {
  if (message.type === "index") return message.gpu === undefined ? undefined : { gpu: message.gpu, region: message.region };
  return PUBLIC_CHANNELS.has(message.type) ? message.instrument : undefined;
}

export class GatewayClient {
  /**
   * @param {string} url websocket URL of the gateway
   * @param {object} hooks onState(state), onLogin(result|null, error|null), onNotice(notice)
   */
  constructor(url, hooks = {}) {
    this.url = url;
    this.hooks = hooks;
    this.state = "idle"; // idle | connecting | open | closed
    this.credentials = null; // { keyId, seed, cancelOnDisconnect }
    this.loginWaiter = null;
    this.loginTried = false;
    this.login = null; // { account, role, cancel_on_disconnect }
    this.hello = null;
    this.clockOffsetMs = 0;
    this.ws = null;
    this.nextReqId = 1;
    this.pending = new Map();
    this.subscriptions = new Map();
    this.waiters = [];
    this.reconnectDelayMs = RECONNECT_DELAY_MS_MIN;
    this.lastMessageAt = 0;
    this.watchdog = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.#open();
    this.watchdog = setInterval(() => this.#checkSilence(), 1000);
  }

  /** Log in with an API key: on this connection if it has not tried yet, else on a fresh
   * one; the page logs in again by itself after every reconnect. */
  async logIn(credentials) {
    this.credentials = credentials;
    if (this.state === "open" && !this.loginTried) return this.#logInNow();
    const done = new Promise((resolve, reject) => {
      this.loginWaiter = { resolve, reject };
    });
    if (this.state === "open") this.#reconnectNow(); // one login per connection
    return done;
  }

  logOut() {
    this.credentials = null;
    this.login = null;
    for (const [key, sub] of this.subscriptions) {
      if (!PUBLIC_CHANNELS.has(sub.channel)) this.subscriptions.delete(key);
    }
    this.#reconnectNow();
  }

  serverTimeMs() {
    return Date.now() + this.clockOffsetMs;
  }

  /** Send a request and resolve with its reply; reject on `error` (RequestError). */
  async request(op, fields = {}) {
    for (let attempt = 0; ; attempt += 1) {
      await this.#waitOpen();
      const reply = await this.#send(op, fields);
      if (reply.status !== "error") return reply;
      const retryMs = reply.error?.retry_after_ms;
      const retriable = reply.error?.code === "rate_limited" || reply.error?.code === "overloaded";
      if (!retriable || attempt >= RATE_LIMIT_RETRIES_MAX) throw new RequestError(reply);
      await delay((retryMs ?? 250) + Math.random() * 100);
    }
  }

  /** Subscribe to a feed of a scope (an instrument, `{ gpu, region }` for one class's
   * index, or none); `handler(message)` gets the snapshot and updates. Returns the
   * unsubscriber. */
  subscribe(channel, scope, handler) {
    const key = subscriptionKey(channel, scope);
    const subscription = { channel, scope, handler };
    this.subscriptions.set(key, subscription);
    this.#sendSubscribe(subscription);
    return () => {
      if (this.subscriptions.get(key) !== subscription) return;
      this.subscriptions.delete(key);
      if (this.state === "open") this.request("unsubscribe", scopeFields(channel, scope)).catch(() => {});
    };
  }

  /** Ask again for a snapshot of a live subscription (after a gap in the book feed). */
  resnapshot(channel, scope) {
    const subscription = this.subscriptions.get(subscriptionKey(channel, scope));
    if (subscription) this.#sendSubscribe(subscription);
  }

  /** The gateway's plain HTTP origin (its `GET /index`): the websocket URL's, ws -> http. */
  httpOrigin() {
    const url = new URL(this.url);
    return `${url.protocol === "wss:" ? "https:" : "http:"}//${url.host}`;
  }

  // -- internals ---------------------------------------------------------------------------

  #sendSubscribe(subscription) {
    if (this.state !== "open") return; // sent on (re)connect
    this.request("subscribe", scopeFields(subscription.channel, subscription.scope)).catch((error) => {
      this.hooks.onSubscribeFailed?.(subscription, error);
    });
  }

  #setState(state) {
    this.state = state;
    this.hooks.onState?.(state);
  }

  #open() {
    if (this.stopped) return;
    this.#setState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastMessageAt = Date.now();
      this.#dispatch(JSON.parse(event.data));
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.login = null;
      this.#failPending("the connection closed");
      this.#setState("closed");
      const wait = this.reconnectDelayMs * (0.75 + Math.random() / 2);
      this.reconnectDelayMs = Math.min(this.reconnectDelayMs * 2, RECONNECT_DELAY_MS_MAX);
      setTimeout(() => this.#open(), wait);
    };
  }

  #reconnectNow() {
    const ws = this.ws;
    this.ws = null;
    this.login = null;
    this.#failPending("reconnecting");
    if (ws) ws.close(1000, "reconnect");
    this.#open();
  }

  #checkSilence() {
    if (this.state !== "open" || !this.hello) return;
    const silentMs = Date.now() - this.lastMessageAt;
    if (silentMs > this.hello.heartbeat_interval_ms * SILENCE_HEARTBEATS_MAX) this.#reconnectNow();
  }

  async #onHello(hello) {
    this.hello = hello;
    this.loginTried = false;
    this.clockOffsetMs = hello.server_time_ns / 1e6 - Date.now();
    const ws = this.ws;
    if (this.credentials) {
      const waiter = this.loginWaiter;
      this.loginWaiter = null;
      try {
        const result = await this.#logInNow(); // not inside `waiter?.…(…)`: that may skip it
        waiter?.resolve(result);
      } catch (error) {
        waiter?.reject(error);
      }
    }
    if (ws !== this.ws) return;
    this.reconnectDelayMs = RECONNECT_DELAY_MS_MIN;
    this.#setState("open");
    for (const subscription of this.subscriptions.values()) {
      if (PUBLIC_CHANNELS.has(subscription.channel) || this.login) this.#sendSubscribe(subscription);
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  async #logInNow() {
    this.loginTried = true;
    const ws = this.ws;
    const credentials = this.credentials;
    try {
      const timestampMs = Math.round(this.serverTimeMs());
      const fields = await signLogin(credentials, this.hello.nonce, timestampMs);
      fields.cancel_on_disconnect = credentials.cancelOnDisconnect ?? "off";
      const reply = await this.#send("login", fields);
      if (reply.status !== "ok") throw new RequestError(reply);
      if (ws !== this.ws) throw new Error("the connection closed during login");
      this.login = reply.result;
      this.hooks.onLogin?.(reply.result, null);
      return reply.result;
    } catch (error) {
      if (ws === this.ws && this.credentials === credentials) {
        this.credentials = null;
        this.hooks.onLogin?.(null, error);
      }
      throw error;
    }
  }

  #dispatch(message) {
    switch (message.type) {
      case "hello":
        this.#onHello(message);
        return;
      case "reply": {
        const pending = this.pending.get(message.req_id);
        if (pending) {
          this.pending.delete(message.req_id);
          clearTimeout(pending.timer);
          pending.resolve(message);
        }
        return;
      }
      case "heartbeat":
        this.clockOffsetMs = message.ts / 1e6 - Date.now();
        return;
      case "notice":
        this.hooks.onNotice?.(message);
        return;
      default: {
        const subscription = this.subscriptions.get(subscriptionKey(message.type, messageScope(message)));
        subscription?.handler(message); // a message for a feed no longer wanted is dropped
      }
    }
  }

  #send(op, fields) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("not connected"));
    if (this.pending.size >= PENDING_MAX) return Promise.reject(new Error("too many requests in flight"));
    const reqId = this.nextReqId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(reqId);
        reject(new Error(`${op}: no reply within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(reqId, { resolve, reject, timer });
      ws.send(JSON.stringify({ op, req_id: reqId, ...fields }));
    });
  }

  #waitOpen() {
    if (this.state === "open") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.waiters.push(waiter);
      setTimeout(() => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) {
          this.waiters.splice(index, 1);
          reject(new Error("the gateway is not reachable"));
        }
      }, WAIT_OPEN_TIMEOUT_MS);
    });
  }

  #failPending(reason) {
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(reason));
    }
    this.pending.clear();
  }
}

function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
