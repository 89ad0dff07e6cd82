// The account's side of the page: open orders (cancel, amend in place), fills with the
// link to their settlement proof, the order history and the balances, all from the private
// feeds (orders, fills, balances); the activity tabs (deliveries.js fills two of them). A
// strip never rests: its reports and its legs' go to the history, never to open orders.

import { byId, clockUtc, el, reasonText } from "./dom.js";
import { decimalsOf, formatDecimal, formatQuantity, formatUsdc } from "./decimal.js";

const FILLS_KEPT_MAX = 500;
const HISTORY_KEPT_MAX = 300;

export class AccountView {
  constructor({ onCancel, onAmend, onCancelAll, instrumentOf, describe }) {
    this.onCancel = onCancel;
    this.onAmend = onAmend;
    this.instrumentOf = instrumentOf; // symbol -> spec or undefined
    this.describe = describe; // symbol -> short text
    this.orders = new Map(); // client_order_id -> latest report of an open order
    this.fills = []; // newest first
    this.history = []; // newest first
    this.balances = new Map();
    this.rows = new Map(); // client_order_id -> { row, editing }
    this.strips = new Set(); // ids of the strips trading now (their legs' order_id)
    this.loggedIn = false;
    this.tab = "orders";
    for (const tab of document.querySelectorAll(".activity .tab")) {
      tab.addEventListener("click", () => this.showTab(tab.dataset.tab));
    }
    byId("cancel-all").addEventListener("click", () => onCancelAll());
  }

  reset(loggedIn) {
    this.loggedIn = loggedIn;
    this.orders.clear();
    this.fills = [];
    this.history = [];
    this.balances.clear();
    this.rows.clear();
    byId("orders-body").replaceChildren();
    this.showTab(this.tab);
    this.renderAll();
  }

  showTab(name) {
    this.tab = name;
    for (const tab of document.querySelectorAll(".activity .tab")) {
      tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
    }
    byId("activity-empty").hidden = this.loggedIn || name === "quality";
    for (const panel of document.querySelectorAll(".activity .tab-panel")) {
      // Quality is public: every operator's record shows logged in or not.
      panel.hidden = (!this.loggedIn && panel.dataset.panel !== "quality") || panel.dataset.panel !== name;
    }
  }

  /** Own open orders as a Set of "bid|price" / "ask|price" on one instrument (for the ladder). */
  ownLevels(symbol) {
    const levels = new Set();
    for (const order of this.orders.values()) {
      if (order.instrument === symbol && order.price) levels.add(`${order.side === "buy" ? "bid" : "ask"}|${order.price}`);
    }
    return levels;
  }

  applyOrders(message) {
    if (message.kind === "snapshot") this.orders.clear();
    for (const report of message.orders) {
      if (report.event === "strip_accepted") this.strips.add(report.order_id);
      const strip = report.event?.startsWith("strip_") || this.strips.has(report.order_id);
      if (report.event === "strip_done") this.strips.delete(report.order_id);
      // A strip's id may be an open order's too: its reports leave that order alone.
      const previous = strip ? undefined : this.orders.get(report.client_order_id);
      const merged = { ...previous, ...report };
      if (!strip && (report.status === "open" || (report.status === undefined && previous))) {
        this.orders.set(report.client_order_id, merged);
      } else if (!strip && report.status !== undefined) {
        this.orders.delete(report.client_order_id);
      }
      if (message.kind === "update") this.history.unshift(merged);
    }
    this.history.length = Math.min(this.history.length, HISTORY_KEPT_MAX);
    this.renderOrders();
    this.renderHistory();
  }

  applyFills(message) {
    const newestFirst = [...message.fills].reverse();
    const kept = message.kind === "snapshot" ? [] : this.fills;
    this.fills = [...newestFirst, ...kept].slice(0, FILLS_KEPT_MAX);
    this.renderFills();
  }

  applyBalances(message) {
    if (message.kind === "snapshot") this.balances.clear();
    for (const [asset, balance] of Object.entries(message.balances)) this.balances.set(asset, balance);
    this.renderBalances();
  }

  renderAll() {
    this.renderOrders();
    this.renderFills();
    this.renderHistory();
    this.renderBalances();
  }

  decimals(symbol) {
    const spec = this.instrumentOf(symbol);
    return spec ? decimalsOf(spec.tick_size) : 2;
  }

  // -- open orders -------------------------------------------------------------------------

  renderOrders() {
    byId("orders-count").textContent = String(this.orders.size);
    byId("cancel-all").disabled = this.orders.size === 0;
    byId("activity-empty").hidden = this.loggedIn || this.tab === "quality";
    byId("activity-empty").textContent = "Log in to see your orders, fills and deliveries.";
    const body = byId("orders-body");
    const orders = [...this.orders.values()].sort((a, b) => b.ts - a.ts);
    for (const [id, entry] of this.rows) {
      if (!this.orders.has(id)) {
        entry.row.remove();
        this.rows.delete(id);
      }
    }
    const rows = orders.map((order) => {
      let entry = this.rows.get(order.client_order_id);
      if (!entry) {
        entry = { row: el("tr", { "data-client-order-id": order.client_order_id }), editing: false };
        this.rows.set(order.client_order_id, entry);
      }
      if (!entry.editing) this.fillOrderRow(entry, order);
      return entry.row;
    });
    if (rows.length === 0 && this.loggedIn) {
      body.replaceChildren(el("tr", { class: "placeholder" }, el("td", { colspan: "9", text: "No open orders" })));
    } else {
      body.replaceChildren(...rows);
    }
  }

  fillOrderRow(entry, order) {
    const decimals = this.decimals(order.instrument);
    const cells = [
      el("td", { class: "mono muted", text: clockUtc(order.ts) }),
      el("td", { class: "contract", text: this.describe(order.instrument), title: order.instrument }),
      el("td", { class: `side-cell ${order.side}`, text: order.side === "buy" ? "Buy" : "Sell" }),
      el("td", { class: "num", text: order.price ? formatDecimal(order.price, decimals) : "market" }),
      el("td", { class: "num", text: formatQuantity(order.quantity) }),
      el("td", { class: "num", text: formatQuantity(order.filled_quantity) }),
      el("td", { class: "num", text: formatQuantity(order.remaining_quantity) }),
      el("td", { class: "mono muted client-id", text: order.client_order_id, title: order.client_order_id }),
      el("td", {}, el("div", { class: "actions" },
        el("button", { type: "button", class: "button ghost small", "data-action": "amend", text: "Amend",
          onclick: () => this.startAmend(entry, order) }),
        el("button", { type: "button", class: "button ghost small danger", "data-action": "cancel", text: "Cancel",
          onclick: (event) => { event.currentTarget.disabled = true; this.onCancel(order.client_order_id); } }))),
    ];
    entry.row.replaceChildren(...cells);
  }

  startAmend(entry, order) {
    entry.editing = true;
    const decimals = this.decimals(order.instrument);
    const price = el("input", { class: "amend-input", "data-field": "new_price", inputmode: "decimal",
      value: order.price ? formatDecimal(order.price, decimals) : "", "aria-label": "New price" });
    const quantity = el("input", { class: "amend-input", "data-field": "new_quantity", inputmode: "numeric",
      value: String(order.quantity), "aria-label": "New total quantity" });
    const finish = () => {
      entry.editing = false;
      const latest = this.orders.get(order.client_order_id);
      if (latest) this.fillOrderRow(entry, latest);
    };
    const save = async () => {
      const fields = {};
      if (order.price && price.value.trim() !== formatDecimal(order.price, decimals)) fields.new_price = price.value.trim();
      if (quantity.value.trim() !== String(order.quantity)) fields.new_quantity = Number(quantity.value);
      if (Object.keys(fields).length === 0) return finish();
      saveButton.disabled = true;
      await this.onAmend(order.client_order_id, fields);
      finish();
    };
    const saveButton = el("button", { type: "button", class: "button primary small", "data-action": "save", text: "Save", onclick: save });
    for (const input of [price, quantity]) {
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") save();
        if (event.key === "Escape") finish();
      });
    }
    const cells = entry.row.children;
    if (order.price) cells[3].replaceChildren(price);
    cells[4].replaceChildren(quantity);
    cells[8].replaceChildren(el("div", { class: "actions" }, saveButton,
      el("button", { type: "button", class: "button ghost small", text: "Keep", onclick: finish })));
    (order.price ? price : quantity).focus();
  }

  // -- fills, history, balances ------------------------------------------------------------

  renderFills() {
    byId("fills-count").textContent = String(this.fills.length);
    const rows = this.fills.map((fill) => {
      const decimals = this.decimals(fill.instrument);
      return el("tr", { "data-trade-id": fill.trade_id },
        el("td", { class: "mono muted", text: clockUtc(fill.ts) }),
        el("td", { class: "contract", text: this.describe(fill.instrument), title: fill.instrument }),
        el("td", { class: `side-cell ${fill.side}`, text: fill.side === "buy" ? "Buy" : "Sell" }),
        el("td", { class: "num", text: formatDecimal(fill.price, decimals) }),
        el("td", { class: "num", text: formatQuantity(fill.quantity) }),
        el("td", { class: "num", text: formatUsdc(fill.fee) }),
        el("td", { class: "liquidity", text: fill.liquidity }),
        el("td", { class: "mono muted", text: fill.trade_id }),
        el("td", {}, el("a", { href: `/proof/${encodeURIComponent(fill.trade_id)}`, class: "proof-link",
          target: "_blank", rel: "noopener", text: "Proof ↗", title: `Settlement proof of trade ${fill.trade_id}` })));
    });
    if (rows.length === 0 && this.loggedIn) {
      rows.push(el("tr", { class: "placeholder" }, el("td", { colspan: "9", text: "No fills yet" })));
    }
    byId("fills-body").replaceChildren(...rows);
  }

  renderHistory() {
    const rows = this.history.map((report) => {
      const decimals = this.decimals(report.instrument);
      const price = report.fill_price ?? report.price;
      const quantity = report.fill_quantity ?? report.quantity;
      return el("tr", {},
        el("td", { class: "mono muted", text: clockUtc(report.ts) }),
        el("td", { text: report.event }),
        el("td", { class: "contract", text: report.instrument ? this.describe(report.instrument) : "", title: report.instrument ?? "" }),
        el("td", { class: `side-cell ${report.side ?? ""}`, text: report.side ?? "" }),
        el("td", { class: "num", text: price ? formatDecimal(price, decimals) : "" }),
        el("td", { class: "num", text: quantity !== undefined ? formatQuantity(quantity) : "" }),
        el("td", { class: "num", text: report.filled_quantity !== undefined ? formatQuantity(report.filled_quantity) : "" }),
        el("td", { class: `status-${report.status ?? "open"}`, text: report.status ?? "" }),
        el("td", { class: "mono muted client-id", text: report.client_order_id, title: report.client_order_id }),
        el("td", { class: "muted", text: reasonText(report.reason), title: report.reason ?? "" }));
    });
    if (rows.length === 0 && this.loggedIn) {
      rows.push(el("tr", { class: "placeholder" }, el("td", { colspan: "10", text: "No order events since this page opened" })));
    }
    byId("history-body").replaceChildren(...rows);
  }

  renderBalances() {
    const body = byId("balances-body");
    if (!this.loggedIn) {
      body.replaceChildren(el("tr", { class: "placeholder" }, el("td", { colspan: "3", text: "Log in to see balances" })));
      return;
    }
    const assets = [...this.balances.keys()].sort((a, b) => (a === "USDC" ? -1 : b === "USDC" ? 1 : a.localeCompare(b)));
    const rows = assets.map((asset) => {
      const balance = this.balances.get(asset);
      const usdc = asset === "USDC";
      const show = (value) => (usdc ? formatUsdc(value) : formatQuantity(value));
      return el("tr", { "data-asset": asset },
        el("td", { class: "contract", text: usdc ? "USDC" : this.describe(asset), title: asset }),
        el("td", { class: "num", text: show(balance.available) }),
        el("td", { class: "num", text: show(balance.held) }));
    });
    if (rows.length === 0) rows.push(el("tr", { class: "placeholder" }, el("td", { colspan: "3", text: "No balances" })));
    body.replaceChildren(...rows);
  }
}
