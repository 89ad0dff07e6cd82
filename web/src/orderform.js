// Order entry: side, limit or market, price, quantity, time in force (gtd with its expiry),
// post-only; checks the fields against the instrument before anything is sent, and shows
// the notional, an estimate of the fee and what is available to pay with.

import { byId } from "./dom.js";
import { decimalsOf, feeMicro, formatDecimal, formatQuantity, formatUsdc, fromMicro, isPrice, notionalMicro, toMicro } from "./decimal.js";

const LIMIT_TIFS = ["gtc", "ioc", "fok", "gtd"];
const MARKET_TIFS = ["ioc", "fok"];
const EXPIRE_MINUTES_MAX = 7 * 24 * 60;

export class OrderForm {
  constructor({ onSubmit, onLoginWanted, nowNs }) {
    this.onSubmit = onSubmit;
    this.nowNs = nowNs;
    this.onLoginWanted = onLoginWanted;
    this.form = byId("order-form");
    this.price = byId("order-price");
    this.quantity = byId("order-quantity");
    this.tif = byId("order-tif");
    this.expire = byId("order-expire");
    this.postOnly = byId("order-post-only");
    this.error = byId("order-error");
    this.submit = byId("order-submit");
    this.hint = byId("order-hint");
    this.spec = null;
    this.loggedIn = false;
    this.balances = new Map();
    this.book = null;
    this.busy = false;
    this.wasMarket = false;
    this.limitTif = this.tif.value; // restored when the order type goes back to limit
    this.form.addEventListener("input", () => this.refresh());
    this.form.addEventListener("change", () => this.refresh());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.refresh();
  }

  get side() {
    return this.form.elements.side.value;
  }

  get orderType() {
    return this.form.elements.order_type.value;
  }

  setInstrument(spec) {
    this.spec = spec;
    this.price.placeholder = spec ? formatDecimal(spec.tick_size, decimalsOf(spec.tick_size)) : "0.00";
    this.price.value = "";
    this.error.textContent = "";
    this.refresh();
  }

  setPrice(price) {
    if (this.orderType !== "limit") this.form.elements.order_type.value = "limit";
    this.price.value = this.spec ? formatDecimal(price, decimalsOf(this.spec.tick_size)) : price;
    this.refresh();
  }

  setAccount(loggedIn, balances) {
    this.loggedIn = loggedIn;
    this.balances = balances;
    this.refresh();
  }

  setBook(book) {
    this.book = book;
    if (this.orderType === "market") this.refresh();
  }

  /** Make the controls agree with each other; update the summary. */
  refresh() {
    const isMarket = this.orderType === "market";
    if (isMarket !== this.wasMarket) {
      if (isMarket) this.limitTif = this.tif.value;
      else this.tif.value = this.limitTif;
      this.wasMarket = isMarket;
    }
    byId("price-field").hidden = isMarket;
    const allowed = isMarket ? MARKET_TIFS : LIMIT_TIFS;
    for (const option of this.tif.options) option.hidden = option.disabled = !allowed.includes(option.value);
    if (!allowed.includes(this.tif.value)) this.tif.value = allowed[0];
    byId("expire-field").hidden = this.tif.value !== "gtd";
    const postOnlyAllowed = !isMarket && (this.tif.value === "gtc" || this.tif.value === "gtd");
    this.postOnly.disabled = !postOnlyAllowed;
    if (!postOnlyAllowed) this.postOnly.checked = false;
    byId("post-only-field").classList.toggle("disabled", !postOnlyAllowed);
    const side = this.side;
    this.submit.className = `button submit ${side}`;
    const symbolOk = this.spec && this.spec.status === "open";
    this.submit.textContent = !this.loggedIn ? "Log in to trade" : side === "buy" ? "Buy" : "Sell";
    this.submit.disabled = this.busy || (this.loggedIn && !symbolOk);
    this.hint.hidden = this.loggedIn;
    this.summary();
  }

  summary() {
    const quantity = Number(this.quantity.value);
    const validQuantity = Number.isInteger(quantity) && quantity > 0;
    let price = null;
    if (this.orderType === "limit") price = isPrice(this.price.value) ? this.price.value.trim() : null;
    else if (validQuantity) price = this.marketAverage(quantity);
    const notional = price && validQuantity ? notionalMicro(price, quantity) : null;
    const prefix = this.orderType === "market" ? "≈ " : "";
    byId("order-notional").textContent = notional === null ? "–" : `${prefix}${formatUsdc(fromMicro(notional))} USDC`;
    // Post-only orders only ever make; anything else may take, so show the taker fee.
    const feeBps = this.spec ? (this.postOnly.checked ? this.spec.maker_fee_bps : this.spec.taker_fee_bps) : 0;
    byId("order-fee").textContent = notional === null || !this.spec
      ? "–" : `${formatUsdc(fromMicro(feeMicro(notional, feeBps)))} USDC (${feeBps} bps)`;
    const asset = this.side === "buy" ? "USDC" : this.spec?.symbol;
    const balance = asset ? this.balances.get(asset) : undefined;
    byId("order-available").textContent = !this.loggedIn || !balance
      ? "–" : this.side === "buy" ? `${formatUsdc(balance.available)} USDC` : `${formatQuantity(balance.available)} GPU-h`;
  }

  /** The average price a market order of `quantity` would get from the book now (estimate). */
  marketAverage(quantity) {
    if (!this.book || !this.book.synced) return null;
    const [bids, asks] = this.book.levels();
    let left = quantity;
    let cost = 0n;
    for (const [price, size] of this.side === "buy" ? asks : bids) {
      const take = Math.min(left, size);
      cost += toMicro(price) * BigInt(take);
      left -= take;
      if (left === 0) break;
    }
    if (left > 0 || quantity === 0) return null;
    return fromMicro(cost / BigInt(quantity));
  }

  /** Check the fields; return the new_order fields or throw an Error for the user. */
  build() {
    const spec = this.spec;
    if (!spec) throw new Error("choose a contract first");
    if (spec.status !== "open") throw new Error("trading in this contract has closed");
    const quantity = Number(this.quantity.value);
    if (!Number.isInteger(quantity) || quantity < 1) throw new Error("quantity must be a whole number of GPU-hours");
    if (quantity > spec.max_order_quantity) throw new Error(`at most ${formatQuantity(spec.max_order_quantity)} GPU-hours per order`);
    const fields = { instrument: spec.symbol, side: this.side, order_type: this.orderType, quantity, time_in_force: this.tif.value };
    if (this.orderType === "limit") {
      const price = this.price.value.trim();
      if (!isPrice(price)) throw new Error("enter a price in USDC, e.g. 2.15");
      if (toMicro(price) % toMicro(spec.tick_size) !== 0n) throw new Error(`price must be a multiple of the tick, ${spec.tick_size}`);
      fields.price = fromMicro(toMicro(price));
      if (this.postOnly.checked) fields.post_only = true;
    }
    if (fields.time_in_force === "gtd") {
      const minutes = Number(this.expire.value);
      if (!Number.isInteger(minutes) || minutes < 1 || minutes > EXPIRE_MINUTES_MAX) throw new Error("expiry must be 1 to 10080 minutes");
      fields.expire_at = minutes * 60_000_000_000 + this.nowNs();
    }
    return fields;
  }

  async send() {
    if (!this.loggedIn) {
      this.onLoginWanted();
      return;
    }
    let fields;
    try {
      fields = this.build();
    } catch (error) {
      this.error.textContent = error.message;
      return;
    }
    this.error.textContent = "";
    this.busy = true;
    this.refresh();
    try {
      await this.onSubmit(fields);
    } finally {
      this.busy = false;
      this.refresh();
    }
  }
}
