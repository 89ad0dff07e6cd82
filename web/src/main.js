// The trading page: wires the gateway client to the views. One websocket, the same API as
// any client (docs/asyncapi.yaml): market data without login, trading after an API-key
// login signed in the page.

import { AccountView } from "./account.js";
import { LocalBook } from "./book.js";
import { PriceChart } from "./chart.js";
import { GatewayClient, RequestError } from "./connection.js";
import { decimalsOf, formatDecimal, formatQuantity, formatUsdc } from "./decimal.js";
import { DeliveriesView } from "./deliveries.js";
import { QualityView } from "./quality.js";
import { DepthView } from "./depth.js";
import { byId, countdown, dayUtc, reasonText, windowUtc } from "./dom.js";
import { LadderView } from "./ladder.js";
import { MarketsView, shortLabels } from "./markets.js";
import { OrderForm } from "./orderform.js";
import { KeyError, keyFromFragment, parseApiKey } from "./signing.js";
import { StripTicket } from "./strip.js";
import { TapeView } from "./tape.js";
import { toast } from "./toasts.js";

const INSTRUMENTS_REFRESH_MS = 60_000;
const SESSION_KEY = "gpux.apiKey";
const LAST_INSTRUMENT_KEY = "gpux.instrument";
const MARKET_CHANNELS = ["book", "trades", "ticker", "candles"];
const INDEX_HISTORY_MINUTES = 180; // the index line's past, beside the hour of candles

class App {
  constructor() {
    this.instruments = new Map();
    this.symbol = null;
    this.book = null;
    this.ticker = null;
    this.last = null; // { price, direction }
    this.unsubscribers = [];
    this.privateFor = null; // account whose private feeds are subscribed
    this.orderCounter = 0;
    this.dirty = new Set();
    this.frame = null;
    this.indexOf = null; // { gpu, region } whose index the chart draws
    this.stopIndex = null;
    this.client = new GatewayClient(gatewayUrl(), {
      onState: (state) => {
        this.showConnection(state);
        if (state === "open") this.quality.start();
      },
      onLogin: (result, error) => this.onLogin(result, error),
      onNotice: (notice) => toast("error", "Notice", notice.message),
      onSubscribeFailed: (subscription, error) =>
        toast("error", `Could not subscribe to ${subscription.channel}`, error.message),
    });
    this.markets = new MarketsView({
      onSelect: (symbol) => this.select(symbol),
      onRange: (symbol) => this.pickStrip(symbol),
    });
    this.ladder = new LadderView({ onPick: (price) => this.form.setPrice(price) });
    this.ladder.onResize = () => this.mark("book");
    this.depth = new DepthView();
    this.chart = new PriceChart();
    this.tape = new TapeView();
    this.form = new OrderForm({
      onSubmit: (fields) => this.placeOrder(fields),
      onLoginWanted: () => this.openLogin(),
      nowNs: () => Math.round(this.client.serverTimeMs()) * 1_000_000,
    });
    this.strip = new StripTicket({
      quote: async (fields) => (await this.client.request("strip_quote", fields)).result,
      send: (fields) => this.client.request("new_strip_order", fields),
      nextClientOrderId: () => this.nextClientOrderId(),
      onLoginWanted: () => this.openLogin(),
      onLegs: (symbols) => this.markets.setStrip(symbols),
      onResult: (result) => this.stripDone(result),
      nowMs: () => this.client.serverTimeMs(),
    });
    this.account = new AccountView({
      onCancel: (id) => this.orderCommand("cancel_order", { client_order_id: id }, "Cancel"),
      onAmend: (id, fields) => this.orderCommand("amend_order", { client_order_id: id, ...fields }, "Amend"),
      onCancelAll: () => this.orderCommand("mass_cancel", {}, "Cancel all"),
      instrumentOf: (symbol) => this.instruments.get(symbol),
      describe: (symbol) => this.describe(symbol),
    });
    this.deliveries = new DeliveriesView({
      load: async () => (await this.client.request("deliveries")).result,
      loadAccess: async () => (await this.client.request("delivery_access")).result,
      registerKey: async (line) => (await this.client.request("register_ssh_key", { public_key: line })).result,
      describe: (symbol) => this.describe(symbol),
    });
    this.quality = new QualityView({
      load: async () => (await this.client.request("quality")).result,
      subscribe: (handler) => this.client.subscribe("quality", undefined, handler),
    });
    this.account.reset(false);
    this.deliveries.reset(null);
    this.tape.reset();
    this.bindLogin();
    this.bindEntryTabs();
  }

  start() {
    const fragmentKey = keyFromFragment(location.hash);
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    this.wanted = fragment.get("instrument") ?? localStorage.getItem(LAST_INSTRUMENT_KEY);
    if (fragmentKey) {
      // Keep the secret out of the address bar and the history once read.
      history.replaceState(null, "", location.pathname + location.search);
      this.logInWith(fragmentKey.keyId, fragmentKey.privateKey, "off", fragmentKey.account);
    } else {
      const saved = sessionStorage.getItem(SESSION_KEY);
      if (saved) {
        const { keyId, privateKey, cancelOnDisconnect } = JSON.parse(saved);
        this.logInWith(keyId, privateKey, cancelOnDisconnect, null);
      }
    }
    this.client.start();
    this.loadInstruments();
    setInterval(() => this.loadInstruments(), INSTRUMENTS_REFRESH_MS);
    setInterval(() => this.tick(), 1000);
  }

  // -- instruments -------------------------------------------------------------------------

  async loadInstruments() {
    // The open contracts, page after page (the gateway caps a reply at hello's
    // limits.instruments_page_max and gives a cursor to the next one).
    const listed = [];
    try {
      let cursor = null;
      do {
        const reply = await this.client.request("instruments", cursor === null ? {} : { cursor });
        listed.push(...reply.result.instruments);
        cursor = reply.result.next_cursor ?? null;
      } while (cursor !== null);
    } catch (error) {
      toast("error", "Could not load the instruments", error.message);
      return;
    }
    this.instruments = new Map(listed.map((spec) => [spec.symbol, spec]));
    this.gpuLabels = shortLabels([...new Set([...this.instruments.values()].map((spec) => spec.gpu))]);
    this.markets.setInstruments([...this.instruments.values()], this.client.serverTimeMs());
    this.strip.setInstruments(this.instruments);
    if (this.symbol === null || !this.instruments.has(this.symbol)) {
      const choice = this.instruments.has(this.wanted) ? this.wanted : this.defaultSymbol();
      if (choice) this.select(choice);
      else byId("title-sub").textContent = "No contracts listed yet";
    } else {
      this.form.setInstrument(this.instruments.get(this.symbol));
    }
  }

  defaultSymbol() {
    const now = this.client.serverTimeMs();
    const open = [...this.instruments.values()]
      .filter((spec) => spec.status === "open" && spec.delivery_start / 1e6 > now)
      .sort((a, b) => a.gpu.localeCompare(b.gpu) || a.delivery_start - b.delivery_start);
    return open[0]?.symbol ?? [...this.instruments.keys()][0] ?? null;
  }

  /** A contract in a few characters for tables: "H100 · 27 Nov 14:00" (the full symbol is
   * the cell's title). */
  describe(symbol) {
    const spec = this.instruments.get(symbol);
    if (!spec) return symbol;
    const day = dayUtc(spec.delivery_start).split(" ").slice(1).join(" ");
    const start = windowUtc(spec.delivery_start, spec.delivery_hours).split("–")[0];
    return `${this.gpuLabels?.get(spec.gpu) ?? spec.gpu} · ${day} ${start}`;
  }

  select(symbol) {
    if (symbol === this.symbol) return;
    const spec = this.instruments.get(symbol);
    for (const unsubscribe of this.unsubscribers) unsubscribe();
    this.symbol = symbol;
    this.book = new LocalBook(symbol);
    this.ticker = null;
    this.last = null;
    localStorage.setItem(LAST_INSTRUMENT_KEY, symbol);
    history.replaceState(null, "", `${location.pathname}${location.search}#instrument=${encodeURIComponent(symbol)}`);
    this.markets.setCurrent(symbol);
    this.form.setInstrument(spec);
    this.form.setBook(this.book);
    this.chart.reset(spec);
    this.showIndex(spec);
    this.strip.follow(symbol);
    this.tape.reset();
    byId("title-gpu").textContent = `${spec.gpu} · ${spec.region}`;
    const bond = spec.bond_per_gpu_hour === undefined ? "" : ` · bond ${spec.bond_per_gpu_hour} USDC per GPU-h`;
    byId("title-sub").textContent =
      `${dayUtc(spec.delivery_start)} · ${windowUtc(spec.delivery_start, spec.delivery_hours)} UTC · tick ${spec.tick_size}${bond}`;
    byId("title-symbol").textContent = symbol;
    const handlers = {
      book: (message) => this.onBook(message),
      trades: (message) => this.onTrades(message),
      ticker: (message) => this.onTicker(message),
      candles: (message) => this.chart.apply(message),
    };
    this.unsubscribers = MARKET_CHANNELS.map((channel) => this.client.subscribe(channel, symbol, handlers[channel]));
    this.mark("book", "ticker");
    this.tick();
  }

  spec() {
    return this.instruments.get(this.symbol);
  }

  // -- market data -------------------------------------------------------------------------

  onBook(message) {
    const outcome = this.book.apply(message);
    if (outcome !== "ok") {
      this.book.resyncs += 1;
      this.client.resnapshot("book", this.symbol);
    }
    if (this.strip.includes(this.symbol)) this.strip.bookMoved();
    this.mark("book");
  }

  // -- the price index ---------------------------------------------------------------------

  /** Draw the index of the contract's class and region: its history from GET /index, then
   * each new value from the `index` feed. */
  showIndex(spec) {
    if (this.indexOf?.gpu === spec.gpu && this.indexOf?.region === spec.region) return;
    this.stopIndex?.();
    const scope = { gpu: spec.gpu, region: spec.region };
    this.indexOf = scope;
    this.chart.showIndexOf(spec.gpu, spec.region);
    this.stopIndex = this.client.subscribe("index", scope, (message) => this.chart.addIndex(message.values));
    this.loadIndexHistory(scope);
  }

  async loadIndexHistory(scope) {
    const from = new Date(this.client.serverTimeMs() - INDEX_HISTORY_MINUTES * 60_000).toISOString();
    const query = new URLSearchParams({ gpu: scope.gpu, region: scope.region, from });
    try {
      const response = await fetch(`${this.client.httpOrigin()}/index?${query}`, { cache: "no-store" });
      if (response.status === 404) {
        this.chart.indexUnavailable("not served by this gateway");
        return;
      }
      if (!response.ok) throw new Error((await response.json()).error ?? `HTTP ${response.status}`);
      const points = await response.json();
      if (this.indexOf === scope) this.chart.addIndex(points, true);
    } catch (error) {
      toast("error", "Could not load the price index", error.message);
    }
  }

  onTrades(message) {
    const newest = this.tape.apply(message, this.spec());
    if (newest) this.setLast(newest.price);
  }

  onTicker(message) {
    this.ticker = message;
    if (message.last && !this.last) this.setLast(message.last);
    this.mark("ticker");
  }

  setLast(price) {
    const previous = this.last?.price;
    let direction = this.last?.direction ?? null;
    if (previous && previous !== price) direction = Number(price) > Number(previous) ? "up" : "down";
    this.last = { price, direction };
    this.mark("ticker", "book");
  }

  mark(...views) {
    for (const view of views) this.dirty.add(view);
    if (this.frame !== null) return;
    // requestAnimationFrame does not run in a hidden tab; the timer keeps it current there.
    const run = () => {
      cancelAnimationFrame(this.frame.raf);
      clearTimeout(this.frame.timer);
      this.frame = null;
      this.render();
    };
    this.frame = { raf: requestAnimationFrame(run), timer: setTimeout(run, 250) };
  }

  render() {
    const dirty = this.dirty;
    this.dirty = new Set();
    const spec = this.spec();
    if (dirty.has("book")) {
      this.ladder.render(this.book, spec, this.account.ownLevels(this.symbol), this.last);
      this.depth.render(this.book, spec);
      this.form.setBook(this.book);
    }
    if (dirty.has("ticker")) this.renderStats(spec);
  }

  renderStats(spec) {
    const decimals = spec ? decimalsOf(spec.tick_size) : 2;
    const ticker = this.ticker ?? {};
    const price = (value) => (value ? formatDecimal(value, decimals) : "–");
    const last = byId("stat-last");
    last.textContent = price(this.last?.price ?? ticker.last);
    last.className = this.last?.direction ?? "";
    byId("stat-bbo").textContent = `${price(ticker.bid)} / ${price(ticker.ask)}`;
    byId("stat-high").textContent = price(ticker.high_24h);
    byId("stat-low").textContent = price(ticker.low_24h);
    byId("stat-volume").textContent = ticker.volume_24h !== undefined ? `${formatQuantity(ticker.volume_24h)} GPU-h` : "–";
    const shown = this.last?.price ?? ticker.last;
    document.title = spec ? `${shown ? price(shown) + " · " : ""}${spec.gpu} ${windowUtc(spec.delivery_start, spec.delivery_hours)} · gpux` : "gpux";
  }

  tick() {
    const spec = this.spec();
    if (!spec) return;
    const remainingMs = spec.delivery_start / 1e6 - this.client.serverTimeMs();
    byId("stat-closes").textContent = countdown(remainingMs);
  }

  // -- connection and login ----------------------------------------------------------------

  showConnection(state) {
    const box = byId("connection");
    box.dataset.state = state;
    byId("connection-text").textContent =
      { open: "Live", connecting: "Connecting", closed: "Reconnecting", idle: "Offline" }[state] ?? state;
    if (state === "closed") this.book?.reset();
    this.mark("book");
  }

  bindLogin() {
    byId("login-button").addEventListener("click", () => this.openLogin());
    byId("logout-button").addEventListener("click", () => this.logOut());
    byId("login-cancel").addEventListener("click", () => byId("login-dialog").close());
    byId("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = byId("login-error");
      error.textContent = "";
      byId("login-submit").disabled = true;
      try {
        await this.logInWith(byId("login-key-id").value, byId("login-private-key").value, byId("login-cod").value, null, true);
        byId("login-private-key").value = "";
        byId("login-dialog").close();
      } catch (failure) {
        error.textContent = failure instanceof KeyError ? failure.message : `Login refused: ${failure.message}`;
      } finally {
        byId("login-submit").disabled = false;
      }
    });
  }

  openLogin() {
    byId("login-error").textContent = "";
    byId("login-dialog").showModal();
    byId("login-key-id").focus();
  }

  /** Log in with a key; `rethrow` lets the dialog show the failure. */
  async logInWith(keyId, privateKey, cancelOnDisconnect, account, rethrow = false) {
    let credentials;
    try {
      credentials = { ...parseApiKey(keyId, privateKey), cancelOnDisconnect };
    } catch (error) {
      if (rethrow) throw error;
      toast("error", "That API key cannot be used", error.message);
      return;
    }
    if (account) byId("account-name").textContent = `${account}…`;
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ keyId: credentials.keyId, privateKey, cancelOnDisconnect }));
    try {
      await this.client.logIn(credentials);
    } catch (error) {
      if (rethrow) throw error;
    }
  }

  onLogin(result, error) {
    if (error) {
      sessionStorage.removeItem(SESSION_KEY);
      this.showAccount(null);
      toast("error", "Login refused", error instanceof RequestError ? error.message : String(error.message ?? error));
      return;
    }
    this.showAccount(result);
    if (this.privateFor === result.account) return; // a reconnect: the feeds resubscribe by themselves
    this.privateFor = result.account;
    this.account.reset(true);
    this.deliveries.reset(result.account, result.role);
    if (byId("tab-bonds").hidden && this.account.tab === "bonds") this.account.showTab("orders");
    this.client.subscribe("orders", undefined, (message) => {
      this.account.applyOrders(message);
      this.mark("book");
    });
    this.client.subscribe("fills", undefined, (message) => this.account.applyFills(message));
    this.client.subscribe("balances", undefined, (message) => {
      this.account.applyBalances(message);
      this.form.setAccount(true, this.account.balances);
      this.strip.setAccount(true, this.account.balances);
    });
    this.client.subscribe("deliveries", undefined, (message) => this.deliveries.apply(message));
    this.form.setAccount(true, this.account.balances);
    this.strip.setAccount(true, this.account.balances);
    toast("ok", `Logged in as ${result.account}`, `role ${result.role}`);
  }

  showAccount(result) {
    byId("account").hidden = !result;
    byId("login-button").hidden = Boolean(result);
    byId("account-name").textContent = result ? result.account : "";
    byId("account-role").textContent = result ? result.role.replace("_", " ") : "";
  }

  logOut() {
    sessionStorage.removeItem(SESSION_KEY);
    this.privateFor = null;
    this.client.logOut();
    this.showAccount(null);
    this.account.reset(false);
    this.deliveries.reset(null);
    this.form.setAccount(false, new Map());
    this.strip.setAccount(false, new Map());
    this.mark("book");
  }

  // -- order entry -------------------------------------------------------------------------

  bindEntryTabs() {
    for (const tab of document.querySelectorAll(".entry-tabs .tab")) {
      tab.addEventListener("click", () => this.showEntry(tab.dataset.entry));
    }
  }

  /** Show the order form ("order") or the strip ticket ("strip"). */
  showEntry(name) {
    for (const tab of document.querySelectorAll(".entry-tabs .tab")) {
      tab.setAttribute("aria-selected", String(tab.dataset.entry === name));
    }
    byId("order-form").hidden = name !== "order";
    byId("strip-form").hidden = name !== "strip";
    this.strip.setActive(name === "strip");
  }

  /** A shift-click in the market list: a strip of the hours from the one shown to `symbol`. */
  pickStrip(symbol) {
    this.strip.pickRange(this.symbol ?? symbol, symbol);
    this.showEntry("strip");
  }

  stripDone(result) {
    const hours = `${result.legs?.length ?? 0} hours × ${formatQuantity(result.quantity ?? 0)} GPU-h`;
    if (result.status === "accepted") {
      toast("ok", `Strip ${result.side === "buy" ? "bought" : "sold"}: ${hours}`, `${result.side === "buy" ? "paid" : "received"} ${formatUsdc(result.total)} USDC`);
    } else {
      toast("error", "Strip: rejected", reasonText(result.reason));
    }
  }

  nextClientOrderId() {
    this.orderCounter += 1;
    return `web-${Date.now().toString(36)}-${this.orderCounter}`;
  }

  async placeOrder(fields) {
    const spec = this.spec();
    const what = `${fields.side === "buy" ? "Buy" : "Sell"} ${formatQuantity(fields.quantity)} @ ${fields.price ? formatDecimal(fields.price, decimalsOf(spec.tick_size)) : "market"}`;
    await this.orderCommand("new_order", { client_order_id: this.nextClientOrderId(), ...fields }, what);
  }

  /** Send an order command; tell the user what the engine answered. */
  async orderCommand(op, fields, what) {
    try {
      const reply = await this.client.request(op, fields);
      if (reply.status === "accepted") {
        const canceled = op === "mass_cancel" ? ` (${reply.result?.canceled ?? 0} canceled)` : "";
        toast("ok", `${what}: accepted${canceled}`);
      } else {
        toast("error", `${what}: rejected`, reasonText(reply.reason ?? reply.result?.reason));
      }
    } catch (error) {
      toast("error", `${what}: not sent`, error.message);
      this.account.renderOrders();
    }
  }
}

/** The gateway serves this page on the websocket's own port; `?gateway=ws://…` overrides. */
function gatewayUrl() {
  const override = new URLSearchParams(location.search).get("gateway");
  if (override) return override;
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/`;
}

new App().start();
