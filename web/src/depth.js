// The depth chart: cumulative GPU-hours bid (left, green) and offered (right, red) against
// price, drawn on a canvas at the device's pixel ratio; hovering reads a point off a side.

import { byId } from "./dom.js";
import { decimalsOf, formatQuantity } from "./decimal.js";

const LEVELS_MAX = 60;
const PAD = { left: 10, right: 52, top: 14, bottom: 22 };
const COLORS = {
  bid: "#2ebd85", bidFill: "rgba(46, 189, 133, 0.16)",
  ask: "#f6465d", askFill: "rgba(246, 70, 93, 0.16)",
  grid: "#1b2026", text: "#7d8794", mid: "#56606b", hover: "#b7bec7",
};

export class DepthView {
  constructor() {
    this.canvas = byId("depth-canvas");
    this.legend = byId("depth-legend");
    this.context = this.canvas.getContext("2d");
    this.data = null;
    this.hoverX = null;
    new ResizeObserver(() => this.draw()).observe(this.canvas.parentElement);
    this.canvas.addEventListener("pointermove", (event) => {
      this.hoverX = event.offsetX;
      this.draw();
    });
    this.canvas.addEventListener("pointerleave", () => {
      this.hoverX = null;
      this.draw();
    });
  }

  render(book, spec) {
    const [bids, asks] = book && book.synced ? book.levels() : [[], []];
    const cumulative = (levels) => {
      let sum = 0;
      return levels.slice(0, LEVELS_MAX).map(([price, quantity]) => [Number(price), (sum += quantity)]);
    };
    this.data = { bids: cumulative(bids), asks: cumulative(asks), decimals: spec ? decimalsOf(spec.tick_size) : 2 };
    const bidTotal = this.data.bids.at(-1)?.[1] ?? 0;
    const askTotal = this.data.asks.at(-1)?.[1] ?? 0;
    this.legend.textContent = bidTotal || askTotal
      ? `${formatQuantity(bidTotal)} GPU-h bid · ${formatQuantity(askTotal)} offered (${LEVELS_MAX} levels max)`
      : "";
    this.draw();
  }

  draw() {
    const { canvas, context } = this;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0) return;
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    context.font = "11px ui-monospace, Menlo, Consolas, 'DejaVu Sans Mono', monospace";
    const data = this.data;
    if (!data || (data.bids.length === 0 && data.asks.length === 0)) {
      context.fillStyle = COLORS.mid;
      context.textAlign = "center";
      context.fillText("No orders on the book", width / 2, height / 2);
      return;
    }
    const scale = this.scale(data, width, height);
    this.grid(scale, data.decimals, width, height);
    this.side(data.bids, scale, COLORS.bid, COLORS.bidFill, -1);
    this.side(data.asks, scale, COLORS.ask, COLORS.askFill, 1);
    if (scale.mid !== null) {
      const x = scale.x(scale.mid);
      context.strokeStyle = COLORS.mid;
      context.setLineDash([3, 3]);
      context.beginPath();
      context.moveTo(x, PAD.top);
      context.lineTo(x, height - PAD.bottom);
      context.stroke();
      context.setLineDash([]);
    }
    if (this.hoverX !== null) this.hover(data, scale, width, height);
  }

  scale(data, width, height) {
    const bestBid = data.bids[0]?.[0];
    const bestAsk = data.asks[0]?.[0];
    const mid = bestBid !== undefined && bestAsk !== undefined ? (bestBid + bestAsk) / 2 : bestBid ?? bestAsk;
    const low = data.bids.at(-1)?.[0] ?? mid;
    const high = data.asks.at(-1)?.[0] ?? mid;
    const half = Math.max(mid - low, high - mid, mid * 0.002, 1e-6);
    const minPrice = mid - half;
    const maxPrice = mid + half;
    const maxQuantity = Math.max(data.bids.at(-1)?.[1] ?? 0, data.asks.at(-1)?.[1] ?? 0) * 1.12 || 1;
    const plotWidth = width - PAD.left - PAD.right;
    const plotHeight = height - PAD.top - PAD.bottom;
    return {
      mid, minPrice, maxPrice, maxQuantity,
      x: (price) => PAD.left + ((price - minPrice) / (maxPrice - minPrice)) * plotWidth,
      price: (x) => minPrice + ((x - PAD.left) / plotWidth) * (maxPrice - minPrice),
      y: (quantity) => PAD.top + plotHeight - (quantity / maxQuantity) * plotHeight,
    };
  }

  grid(scale, decimals, width, height) {
    const { context } = this;
    context.strokeStyle = COLORS.grid;
    context.fillStyle = COLORS.text;
    context.lineWidth = 1;
    context.textAlign = "left";
    for (let step = 1; step <= 3; step += 1) {
      const quantity = (scale.maxQuantity / 1.12) * (step / 3);
      const y = Math.round(scale.y(quantity)) + 0.5;
      context.beginPath();
      context.moveTo(PAD.left, y);
      context.lineTo(width - PAD.right, y);
      context.stroke();
      context.fillText(formatQuantity(Math.round(quantity)), width - PAD.right + 6, y + 4);
    }
    context.textAlign = "center";
    const ticks = Math.max(2, Math.min(6, Math.floor((width - PAD.left - PAD.right) / 110)));
    for (let index = 0; index <= ticks; index += 1) {
      const price = scale.minPrice + ((scale.maxPrice - scale.minPrice) * index) / ticks;
      const x = scale.x(price);
      context.fillText(price.toFixed(decimals), Math.min(Math.max(x, 24), width - PAD.right - 20), height - 6);
    }
  }

  side(points, scale, stroke, fill, direction) {
    if (points.length === 0) return;
    const { context } = this;
    const base = scale.y(0);
    context.beginPath();
    context.moveTo(scale.x(points[0][0]), base);
    let previous = 0;
    for (const [price, total] of points) {
      const x = scale.x(price);
      context.lineTo(x, scale.y(previous));
      context.lineTo(x, scale.y(total));
      previous = total;
    }
    const edge = direction < 0 ? scale.x(scale.minPrice) : scale.x(scale.maxPrice);
    context.lineTo(edge, scale.y(previous));
    context.strokeStyle = stroke;
    context.lineWidth = 1.5;
    context.stroke();
    context.lineTo(edge, base);
    context.closePath();
    context.fillStyle = fill;
    context.fill();
  }

  hover(data, scale, width, height) {
    const { context } = this;
    const price = scale.price(this.hoverX);
    const isBid = scale.mid !== null && price < scale.mid;
    const points = isBid ? data.bids : data.asks;
    let total = 0;
    for (const [levelPrice, levelTotal] of points) {
      if (isBid ? levelPrice >= price : levelPrice <= price) total = levelTotal;
    }
    const x = this.hoverX;
    context.strokeStyle = COLORS.hover;
    context.beginPath();
    context.moveTo(x + 0.5, PAD.top);
    context.lineTo(x + 0.5, height - PAD.bottom);
    context.stroke();
    const label = `${price.toFixed(data.decimals)} · ${formatQuantity(total)} GPU-h`;
    context.font = "11px ui-monospace, Menlo, Consolas, 'DejaVu Sans Mono', monospace";
    const labelWidth = context.measureText(label).width + 12;
    const left = Math.min(Math.max(x - labelWidth / 2, PAD.left), width - PAD.right - labelWidth);
    context.fillStyle = "#181d22";
    context.fillRect(left, PAD.top - 12, labelWidth, 18);
    context.fillStyle = isBid ? COLORS.bid : COLORS.ask;
    context.textAlign = "left";
    context.fillText(label, left + 6, PAD.top + 1);
  }
}
