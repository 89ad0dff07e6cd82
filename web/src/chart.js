// The price chart: one-minute candles and their volume, and beside them the GPU-hour price
// index of the contract's class and region (docs/index-methodology.md): a solid line where a
// minute's value comes from trades, dashed where it falls back to the mid of the best bid
// and ask or to the last value, a gap where there is none. TradingView's lightweight-charts
// (Apache-2.0; the attribution link sits in the panel's header).

import { CandlestickSeries, ColorType, CrosshairMode, HistogramSeries, LineSeries, LineStyle, createChart } from "lightweight-charts";
import { byId, clockUtc } from "./dom.js";
import { decimalsOf, formatDecimal } from "./decimal.js";

const UP = "#2ebd85";
const DOWN = "#f6465d";
const INDEX = "#f0b90b";
const HIDDEN = "rgba(0, 0, 0, 0)";
const INDEX_POINTS_MAX = 2 * 1440; // two days of minutes; the oldest go first
const SOURCE_TEXT = { trades: "from trades", mid: "fallback: mid of bid and ask", last: "fallback: last value", none: "no value" };

export class PriceChart {
  constructor() {
    this.container = byId("price-chart");
    this.emptyNote = byId("chart-empty");
    this.chart = createChart(this.container, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: "#121619" },
        textColor: "#7d8794",
        fontSize: 11,
        fontFamily: "ui-monospace, Menlo, Consolas, 'DejaVu Sans Mono', monospace",
        attributionLogo: false,
      },
      grid: { vertLines: { color: "#1a1f25" }, horzLines: { color: "#1a1f25" } },
      crosshair: { mode: CrosshairMode.Normal },
      rightPriceScale: { borderColor: "#22282f" },
      timeScale: { borderColor: "#22282f", timeVisible: true, secondsVisible: false, rightOffset: 4 },
      localization: { locale: "en-US" },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: UP, downColor: DOWN, wickUpColor: UP, wickDownColor: DOWN, borderVisible: false,
    });
    this.candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.24 } });
    this.volume = this.chart.addSeries(HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "volume", lastValueVisible: false, priceLineVisible: false,
    });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    const indexLine = { color: INDEX, lineWidth: 2, priceLineVisible: false, crosshairMarkerRadius: 3 };
    this.indexTrades = this.chart.addSeries(LineSeries, { ...indexLine, title: "index" });
    this.indexFallback = this.chart.addSeries(LineSeries, { ...indexLine, lineStyle: LineStyle.Dashed, lastValueVisible: false });
    this.legend = byId("index-legend");
    this.bars = new Map(); // start second -> candle bar
    this.lastTime = null;
    this.indexClass = null; // { gpu, region } whose index is drawn
    this.indexPoints = new Map(); // minute_ns -> IndexPoint
  }

  /** Start afresh for another instrument. */
  reset(spec) {
    const decimals = spec ? decimalsOf(spec.tick_size) : 2;
    const minMove = spec ? Number(spec.tick_size) : 0.01;
    this.candles.applyOptions({ priceFormat: { type: "price", precision: decimals, minMove } });
    // An index value is a volume-weighted average: two more decimals than the tick.
    const indexFormat = { type: "price", precision: decimals + 2, minMove: minMove / 100 };
    this.indexTrades.applyOptions({ priceFormat: indexFormat });
    this.indexFallback.applyOptions({ priceFormat: indexFormat });
    this.bars.clear();
    this.lastTime = null;
    this.candles.setData([]);
    this.volume.setData([]);
    this.showEmpty();
  }

  showEmpty() {
    this.emptyNote.hidden = this.bars.size > 0 || this.indexPoints.size > 0;
  }

  /** Show the latest minutes at a readable width: all of them when they fit. */
  fit() {
    const count = new Set([...this.bars.keys(), ...[...this.indexPoints.keys()].map((ns) => Math.floor(ns / 1e9))]).size;
    const width = this.container.clientWidth || 600;
    const visible = Math.floor(width / 7);
    const timeScale = this.chart.timeScale();
    if (count < 30) timeScale.scrollToRealTime(); // a young market: a few bars on the right
    else if (count <= visible) timeScale.fitContent();
    else timeScale.setVisibleLogicalRange({ from: count - visible, to: count + 3 });
  }

  /** Apply a `candles` message (snapshot or the candles that changed). */
  apply(message) {
    if (message.kind === "snapshot") this.bars.clear();
    const changed = message.candles.map(toBars);
    for (const bar of changed) this.bars.set(bar.candle.time, bar);
    const inOrder = message.kind === "update" && this.lastTime !== null
      && changed.every((bar) => bar.candle.time >= this.lastTime);
    if (inOrder) {
      for (const bar of changed.sort((a, b) => a.candle.time - b.candle.time)) {
        this.candles.update(bar.candle);
        this.volume.update(bar.volume);
      }
    } else {
      const all = [...this.bars.values()].sort((a, b) => a.candle.time - b.candle.time);
      this.candles.setData(all.map((bar) => bar.candle));
      this.volume.setData(all.map((bar) => bar.volume));
      if (message.kind === "snapshot") this.fit();
    }
    const times = [...this.bars.keys()];
    this.lastTime = times.length ? Math.max(...times) : null;
    this.showEmpty();
  }

  // -- the index line ------------------------------------------------------------------------

  /** Draw the index of a class and region from now on (nothing drawn until values come). */
  showIndexOf(gpu, region) {
    if (this.indexClass?.gpu === gpu && this.indexClass?.region === region) return;
    this.indexClass = { gpu, region };
    this.indexPoints.clear();
    this.drawIndex();
  }

  /** Add index values (IndexPoint, from GET /index or the `index` feed) of the class drawn;
   * `fit` shows them all at a readable width (a history just read). */
  addIndex(points, fit = false) {
    const wanted = this.indexClass;
    for (const point of points) {
      if (wanted && point.gpu === wanted.gpu && point.region === wanted.region) this.indexPoints.set(point.minute_ns, point);
    }
    const oldest = [...this.indexPoints.keys()].sort((a, b) => a - b);
    for (const minute of oldest.slice(0, Math.max(0, oldest.length - INDEX_POINTS_MAX))) this.indexPoints.delete(minute);
    this.drawIndex();
    if (fit) this.fit();
  }

  /** A segment is solid between two minutes valued from trades, dashed where either end is
   * a fallback value, and absent next to a minute without a value. Both series carry every
   * valued minute; a segment takes the colour of the point it starts from, so each series
   * hides the segments that are the other's (whitespace would not break a line). */
  drawIndex() {
    const points = [...this.indexPoints.values()].sort((a, b) => a.minute_ns - b.minute_ns);
    const solid = [];
    const dashed = [];
    points.forEach((point, index) => {
      if (point.value === null) return;
      const next = points[index + 1];
      const joined = next !== undefined && next.value !== null;
      const bothFromTrades = joined && point.source === "trades" && next.source === "trades";
      const time = Math.floor(point.minute_ns / 1e9);
      const value = Number(point.value);
      solid.push({ time, value, color: bothFromTrades ? INDEX : HIDDEN });
      dashed.push({ time, value, color: joined && !bothFromTrades ? INDEX : HIDDEN });
    });
    if (solid.length > 0) solid.at(-1).color = INDEX; // starts no segment; colours the price label
    this.indexTrades.setData(solid);
    this.indexFallback.setData(dashed);
    this.legend.dataset.minutes = String(points.filter((p) => p.value !== null).length);
    this.legend.dataset.fallbackMinutes = String(points.filter((p) => p.value !== null && p.source !== "trades").length);
    this.renderLegend(points.at(-1));
    this.showEmpty();
  }

  /** Say why there is no index line (a gateway without the index's database). */
  indexUnavailable(why) {
    byId("index-latest").textContent = why;
  }

  renderLegend(latest) {
    const value = byId("index-latest");
    if (!latest) {
      value.textContent = "no values yet";
      value.title = "";
      this.legend.dataset.source = "";
      return;
    }
    const flags = latest.source === "trades" && !latest.sufficient ? " · thin data" : "";
    value.textContent = `${latest.value === null ? "–" : formatDecimal(latest.value, 2)} · ${SOURCE_TEXT[latest.source] ?? latest.source}${flags}`;
    value.title = `${latest.gpu} · ${latest.region} at ${clockUtc(latest.minute_ns)} UTC: ${latest.trade_count} trades, ${latest.volume} GPU-h over ${latest.instrument_count} hours; inputs ${latest.inputs_hash}`;
    this.legend.dataset.source = latest.source;
    this.legend.dataset.value = latest.value ?? "";
  }
}

function toBars(item) {
  const time = Math.floor(item.start_ns / 1e9);
  const open = Number(item.open);
  const close = Number(item.close);
  return {
    candle: { time, open, high: Number(item.high), low: Number(item.low), close },
    volume: { time, value: item.volume, color: close >= open ? "rgba(46, 189, 133, 0.45)" : "rgba(246, 70, 93, 0.45)" },
  };
}
