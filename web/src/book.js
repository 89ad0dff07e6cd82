// A local copy of one instrument's L2 book, kept in step by the `book` feed and proved by
// its checksum (docs/asyncapi.yaml). Same rules as sdk/book.py: an update whose prev_seq is
// not the seq held is a gap, a checksum that differs is a divergence; either way the caller
// asks for a fresh snapshot.

import { bookChecksum, canonical, toMicro } from "./decimal.js";

export class LocalBook {
  constructor(instrument) {
    this.instrument = instrument;
    this.bids = new Map(); // canonical price -> { micro, quantity }
    this.asks = new Map();
    this.seq = null;
    this.ts = 0;
    this.sorted = null;
    this.resyncs = 0;
  }

  get synced() {
    return this.seq !== null;
  }

  reset() {
    this.bids.clear();
    this.asks.clear();
    this.seq = null;
    this.sorted = null;
  }

  /** Apply a book message; return "ok", "gap" or "checksum" (then the book is reset). */
  apply(message) {
    if (message.kind === "snapshot") {
      this.bids.clear();
      this.asks.clear();
    } else if (this.seq === null || message.prev_seq !== this.seq) {
      this.reset();
      return "gap";
    }
    setLevels(this.bids, message.bids);
    setLevels(this.asks, message.asks);
    this.sorted = null;
    this.seq = message.seq;
    this.ts = message.ts;
    const [bids, asks] = this.levels();
    if (bookChecksum(bids, asks) !== message.checksum) {
      this.reset();
      return "checksum";
    }
    return "ok";
  }

  /** Return [bids, asks], best first, as [price, quantity] pairs. */
  levels() {
    if (this.sorted === null) {
      const bids = [...this.bids.entries()].sort((a, b) => compare(b[1].micro, a[1].micro));
      const asks = [...this.asks.entries()].sort((a, b) => compare(a[1].micro, b[1].micro));
      this.sorted = [
        bids.map(([price, level]) => [price, level.quantity]),
        asks.map(([price, level]) => [price, level.quantity]),
      ];
    }
    return this.sorted;
  }

  bestBid() {
    return this.levels()[0][0] ?? null;
  }

  bestAsk() {
    return this.levels()[1][0] ?? null;
  }
}

function setLevels(side, levels) {
  for (const [price, quantity] of levels) {
    const key = canonical(price);
    if (quantity > 0) side.set(key, { micro: toMicro(key), quantity });
    else side.delete(key);
  }
}

function compare(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}
