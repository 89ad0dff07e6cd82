// The price chart: one-minute candles and their volume, with TradingView's
// lightweight-charts (Apache-2.0; the attribution link sits in the panel's header).

import { CandlestickSeries, ColorType, CrosshairMode, HistogramSeries, createChart } from "lightweight-charts";
import { byId } from "./dom.js";
import { decimalsOf } from "./decimal.js";

const UP = "#2ebd85";
const DOWN = "#f6465d";

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
    this.bars = new Map(); // start second -> candle bar
    this.lastTime = null;
  }

  /** Start afresh for another instrument. */
  reset(spec) {
    const decimals = spec ? decimalsOf(spec.tick_size) : 2;
    const minMove = spec ? Number(spec.tick_size) : 0.01;
    this.candles.applyOptions({ priceFormat: { type: "price", precision: decimals, minMove } });
    this.bars.clear();
    this.lastTime = null;
    this.candles.setData([]);
    this.volume.setData([]);
    this.emptyNote.hidden = false;
  }

  /** Show the latest candles at a readable width: all of them when they fit. */
  fit(count) {
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
      if (message.kind === "snapshot") this.fit(all.length);
    }
    const times = [...this.bars.keys()];
    this.lastTime = times.length ? Math.max(...times) : null;
    this.emptyNote.hidden = this.bars.size > 0;
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
