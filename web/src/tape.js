// The trades tape: the instrument's latest trades, newest on top, coloured by the side
// of the order that took liquidity.

import { byId, clockUtc, el } from "./dom.js";
import { decimalsOf, formatDecimal, formatQuantity } from "./decimal.js";

const TRADES_SHOWN_MAX = 80;

export class TapeView {
  constructor() {
    this.tape = byId("tape");
    this.trades = []; // newest first
  }

  reset() {
    this.trades = [];
    this.tape.replaceChildren(el("div", { class: "empty", text: "No trades yet" }));
  }

  /** Apply a `trades` message; return the newest trade, if any. */
  apply(message, spec) {
    const decimals = spec ? decimalsOf(spec.tick_size) : 2;
    const incoming = [...message.trades].reverse(); // the feed is oldest first
    if (message.kind === "snapshot") {
      this.trades = incoming.slice(0, TRADES_SHOWN_MAX);
      this.tape.replaceChildren(...this.trades.map((trade) => this.row(trade, decimals, false)));
    } else {
      this.trades = [...incoming, ...this.trades].slice(0, TRADES_SHOWN_MAX);
      if (this.tape.firstElementChild?.classList.contains("empty")) this.tape.replaceChildren();
      this.tape.prepend(...incoming.map((trade) => this.row(trade, decimals, true)));
      while (this.tape.children.length > TRADES_SHOWN_MAX) this.tape.lastElementChild.remove();
    }
    if (this.trades.length === 0) this.reset();
    return this.trades[0] ?? null;
  }

  row(trade, decimals, isNew) {
    return el("div", {
      class: `tape-row ${trade.aggressor_side}${isNew ? " new" : ""}`,
      "data-trade-id": trade.trade_id,
      title: `trade ${trade.trade_id} · ${trade.aggressor_side === "buy" ? "buyer" : "seller"} took liquidity`,
    },
    el("span", { class: "price", text: formatDecimal(trade.price, decimals) }),
    el("span", { class: "size", text: formatQuantity(trade.quantity) }),
    el("span", { class: "time", text: clockUtc(trade.ts) }));
  }
}
