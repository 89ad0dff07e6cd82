// The instrument picker: GPU classes as tabs, their delivery hours as a list. A click picks
// the hour shown; a shift-click picks a range of hours from the one shown, for a strip.

import { byId, dayUtc, el, windowUtc } from "./dom.js";

const CLOSED_SHOWN_MAX = 3;

export class MarketsView {
  constructor({ onSelect, onRange }) {
    this.onSelect = onSelect;
    this.onRange = onRange;
    this.tabs = byId("gpu-tabs");
    this.hours = byId("hours");
    this.region = byId("markets-region");
    this.instruments = [];
    this.gpu = null;
    this.current = null;
    this.strip = new Set(); // the symbols of the strip's hours, marked in the list
  }

  /** Show the instruments (InstrumentSpec list); `nowMs` decides which are closed. */
  setInstruments(instruments, nowMs) {
    this.instruments = instruments;
    this.nowMs = nowMs;
    this.render();
  }

  setCurrent(symbol) {
    this.current = symbol;
    const spec = this.instruments.find((i) => i.symbol === symbol);
    if (spec) this.gpu = spec.gpu;
    this.render();
  }

  /** Mark the hours of a strip (a list of symbols; empty for none). */
  setStrip(symbols) {
    this.strip = new Set(symbols);
    this.render();
  }

  isOpen(spec) {
    return spec.status === "open" && spec.delivery_start / 1e6 > this.nowMs;
  }

  render() {
    const gpus = [...new Set(this.instruments.map((i) => i.gpu))].sort();
    if (!gpus.includes(this.gpu)) this.gpu = gpus[0] ?? null;
    const labels = shortLabels(gpus);
    this.tabs.replaceChildren(...gpus.map((gpu) => el("button", {
      type: "button", class: "gpu-tab", role: "tab", "data-gpu": gpu, title: gpu,
      "aria-selected": String(gpu === this.gpu), text: labels.get(gpu),
      onclick: () => { this.gpu = gpu; this.render(); },
    })));
    const ofGpu = this.instruments.filter((i) => i.gpu === this.gpu)
      .sort((a, b) => a.delivery_start - b.delivery_start || a.symbol.localeCompare(b.symbol));
    const open = ofGpu.filter((i) => this.isOpen(i));
    const closed = ofGpu.filter((i) => !this.isOpen(i)).slice(-CLOSED_SHOWN_MAX);
    const regions = new Set(ofGpu.map((i) => i.region));
    this.region.textContent = regions.size === 1 ? [...regions][0] : `${regions.size} regions`;
    const rows = [];
    let day = null;
    for (const spec of [...closed, ...open]) {
      const specDay = dayUtc(spec.delivery_start);
      if (specDay !== day) {
        day = specDay;
        rows.push(el("li", { class: "hour-day", text: day }));
      }
      rows.push(this.row(spec, regions.size > 1));
    }
    if (rows.length === 0) rows.push(el("li", { class: "hour-day", text: "No contracts listed" }));
    this.hours.replaceChildren(...rows);
    this.hours.querySelector('[aria-current="true"]')?.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  row(spec, showRegion) {
    const open = this.isOpen(spec);
    const label = el("span", { class: "hour-time", text: windowUtc(spec.delivery_start, spec.delivery_hours) },
      showRegion ? el("span", { class: "hour-region", text: spec.region }) : null);
    const inStrip = this.strip.has(spec.symbol);
    const button = el("button", {
      type: "button", class: `hour${open ? "" : " closed"}${inStrip ? " in-strip" : ""}`, "data-symbol": spec.symbol,
      title: `${spec.symbol}${open ? " · shift-click: a strip of the hours from the one shown to this one" : ""}`,
      "aria-current": String(spec.symbol === this.current),
      onclick: (event) => (event.shiftKey && open ? this.onRange(spec.symbol) : this.onSelect(spec.symbol)),
    }, label, el("span", { class: "hour-status", text: inStrip ? "Strip" : open ? "Open" : "Closed" }));
    return el("li", {}, button);
  }
}

/** "H100-SXM-80GB" -> "H100" when no other class starts the same; else the full name. */
export function shortLabels(gpus) {
  const short = (gpu) => gpu.split(/[-_ ]/)[0];
  const counts = new Map();
  for (const gpu of gpus) counts.set(short(gpu), (counts.get(short(gpu)) ?? 0) + 1);
  return new Map(gpus.map((gpu) => [gpu, counts.get(short(gpu)) === 1 ? short(gpu) : gpu]));
}
