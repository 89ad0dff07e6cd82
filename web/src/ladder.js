// The order book ladder: asks above the spread (best ask nearest), bids below, each level
// with its size, the running total from the best price, and a depth bar of that total.

import { byId, el } from "./dom.js";
import { decimalsOf, formatDecimal, formatQuantity, fromMicro, toMicro } from "./decimal.js";

const ROW_PX = 20;
const ROWS_MAX = 40;

export class LadderView {
  constructor({ onPick }) {
    this.onPick = onPick;
    this.asks = byId("ladder-asks");
    this.bids = byId("ladder-bids");
    this.spreadLast = byId("spread-last");
    this.spreadText = byId("spread-text");
    this.seqText = byId("book-seq");
    this.rowsPerSide = 12;
    this.previous = new Map(); // "side|price" -> quantity, for flashing changes
    this.edges = null; // the worst ask and bid shown last time
    this.instrument = null;
    this.askRows = [];
    this.bidRows = [];
    new ResizeObserver(() => this.resize()).observe(byId("ladder"));
  }

  resize() {
    const height = byId("ladder").clientHeight - byId("spread").offsetHeight;
    const rows = Math.max(3, Math.min(ROWS_MAX, Math.floor(height / 2 / ROW_PX)));
    if (rows !== this.rowsPerSide) {
      this.rowsPerSide = rows;
      this.onResize?.();
    }
  }

  makeRow(side) {
    const bar = el("div", { class: "bar" });
    const price = el("span", { class: "price" });
    const size = el("span", { class: "size" });
    const total = el("span", { class: "total" });
    const row = el("div", { class: "level", "data-side": side }, bar, price, size, total);
    row.addEventListener("click", () => row.dataset.price && this.onPick(row.dataset.price, side));
    return { row, bar, price, size, total };
  }

  ensureRows(container, rows, side) {
    while (rows.length < this.rowsPerSide) {
      const row = this.makeRow(side);
      rows.push(row);
      if (side === "ask") container.prepend(row.row);
      else container.append(row.row);
    }
    rows.forEach((row, index) => { row.row.hidden = index >= this.rowsPerSide; });
  }

  /**
   * @param book LocalBook (or null), spec the instrument, mine Set of "side|price" of own orders
   * @param last {price, direction} of the last trade
   */
  render(book, spec, mine, last) {
    if ((book?.instrument ?? null) !== this.instrument) {
      this.instrument = book?.instrument ?? null; // another contract: nothing to flash against
      this.previous = new Map();
      this.edges = null;
    }
    const decimals = spec ? decimalsOf(spec.tick_size) : 2;
    const [bids, asks] = book && book.synced ? book.levels() : [[], []];
    const shownBids = bids.slice(0, this.rowsPerSide);
    const shownAsks = asks.slice(0, this.rowsPerSide);
    const totals = (levels) => { let sum = 0; return levels.map(([, q]) => (sum += q)); };
    const bidTotals = totals(shownBids);
    const askTotals = totals(shownAsks);
    const max = Math.max(1, bidTotals.at(-1) ?? 0, askTotals.at(-1) ?? 0);
    const seen = new Map();
    // A level flashes when its size changed, or when it is new inside the prices shown
    // before (an insertion); rows revealed by a resize or a first snapshot do not.
    const edges = this.edges ?? { ask: -Infinity, bid: Infinity };
    this.ensureRows(this.asks, this.askRows, "ask");
    this.ensureRows(this.bids, this.bidRows, "bid");
    const fill = (rows, levels, levelTotals, side) => {
      rows.slice(0, this.rowsPerSide).forEach((row, index) => {
        const level = levels[index];
        if (!level) {
          row.price.textContent = row.size.textContent = row.total.textContent = "";
          row.bar.style.width = "0";
          row.row.className = "level empty-level";
          delete row.row.dataset.price;
          return;
        }
        const [price, quantity] = level;
        const key = `${side}|${price}`;
        seen.set(key, quantity);
        const before = this.previous.get(key);
        const inside = side === "ask" ? Number(price) < edges.ask : Number(price) > edges.bid;
        const changed = before === undefined ? inside && this.previous.size > 0 : before !== quantity;
        row.price.textContent = formatDecimal(price, decimals);
        row.size.textContent = formatQuantity(quantity);
        row.total.textContent = formatQuantity(levelTotals[index]);
        row.bar.style.width = `${(100 * levelTotals[index]) / max}%`;
        row.row.dataset.price = price;
        row.row.className = `level${mine.has(key) ? " mine" : ""}`;
        if (changed) {
          void row.row.offsetWidth; // restart the animation
          row.row.classList.add("flash");
        }
      });
    };
    fill(this.askRows, shownAsks, askTotals, "ask");
    fill(this.bidRows, shownBids, bidTotals, "bid");
    this.previous = seen;
    this.edges = {
      ask: shownAsks.length ? Number(shownAsks.at(-1)[0]) : -Infinity,
      bid: shownBids.length ? Number(shownBids.at(-1)[0]) : Infinity,
    };
    this.renderSpread(bids[0]?.[0], asks[0]?.[0], decimals, last);
    this.seqText.textContent = book && book.synced ? `seq ${book.seq}` : "";
  }

  renderSpread(bestBid, bestAsk, decimals, last) {
    this.spreadLast.textContent = last?.price ? formatDecimal(last.price, decimals) : "–";
    this.spreadLast.className = `spread-last${last?.direction ? " " + last.direction : ""}`;
    if (bestBid && bestAsk) {
      const bid = toMicro(bestBid);
      const ask = toMicro(bestAsk);
      const spread = ask - bid;
      const percent = (Number(spread) / Number((ask + bid) / 2n)) * 100;
      this.spreadText.textContent =
        `Spread ${formatDecimal(fromMicro(spread), decimals)} (${percent.toFixed(2)}%)`;
    } else {
      this.spreadText.textContent = bestBid || bestAsk ? "One-sided book" : "Empty book";
    }
  }
}
