// Every operator's measured delivery record (docs/delivery.md), public: the `quality` feed's
// snapshot, then each operator's whole record again as its hours are reported. A buyer
// compares operators here: GPU-hours delivered of those assigned, how the hours spread over
// the delivered-share buckets, the compute challenges' speed against the class floor, and
// the incidents (runs of undelivered minutes). A gateway without a delivery database refuses
// the `quality` request `unavailable`: the tab stays hidden.

import { byId, el, hourUtc } from "./dom.js";
import { percentOfPpm } from "./deliveries.js";

const BUCKETS = ["100", "99-100", "95-99", "90-95", "75-90", "0-75"];
const PPM = 1_000_000;

/** GPU-hours from the ppm-weighted sum: 3750000 -> "3.75". */
export function gpuHours(ppmWeighted) {
  const whole = Math.floor(ppmWeighted / PPM);
  const fraction = String(ppmWeighted % PPM).padStart(6, "0").replace(/0+$/, "");
  return `${whole}${fraction ? "." + fraction : ""}`;
}

export class QualityView {
  constructor({ load, subscribe }) {
    this.load = load; // () => the `quality` request's result
    this.subscribe = subscribe; // (handler) => unsubscribe
    this.records = new Map(); // operator -> OperatorQuality
    this.started = false;
  }

  /** Ask whether this gateway keeps a quality record; if so show the tab and follow it. */
  async start() {
    if (this.started) return;
    this.started = true;
    let result;
    try {
      result = await this.load();
    } catch (error) {
      // No delivery database here (for good), or the connection dropped (try again later).
      if (error.code !== "unavailable") this.started = false;
      return;
    }
    byId("tab-quality").hidden = false;
    this.apply({ kind: "snapshot", operators: result.operators });
    this.subscribe((message) => this.apply(message));
  }

  apply(message) {
    if (message.kind === "snapshot") this.records.clear();
    for (const record of message.operators) this.records.set(record.operator, record);
    this.render();
  }

  render() {
    const records = [...this.records.values()].sort((a, b) => a.operator < b.operator ? -1 : 1);
    byId("quality-count").textContent = String(records.length);
    byId("quality-body").replaceChildren(...(records.length
      ? records.map((record) => this.row(record))
      : [el("tr", { class: "placeholder" }, el("td", { colspan: "8", text: "No hours measured yet: each delivered hour's record shows here" }))]));
  }

  row(record) {
    const ratios = record.throughput_ratio_percentiles;
    const nodes = record.nodes.map((node) => `${node.node_id} (${node.gpu}, ${node.region})`).join(", ");
    return el("tr", { "data-operator": record.operator },
      el("td", { class: "mono", text: record.operator, title: nodes }),
      el("td", { class: "num", text: String(record.hours) }),
      el("td", { class: "num", "data-field": "delivered", text: `${gpuHours(record.gpu_hours_delivered)} / ${record.gpu_hours_assigned}` }),
      el("td", { class: "num", "data-field": "share", text: percentOfPpm(record.delivered_share_ppm) }),
      el("td", { "data-field": "histogram" }, histogram(record.delivered_share_histogram)),
      el("td", { class: "num", "data-field": "ratios", text: ratios ? `${ratios.p10.toFixed(2)} / ${ratios.p50.toFixed(2)} / ${ratios.p90.toFixed(2)}` : "–", title: `challenges passed ${record.challenges_passed}, failed ${record.challenges_failed}` }),
      el("td", { class: "num", "data-field": "incidents", text: String(record.incidents_count) }),
      el("td", { class: "mono muted", text: record.last_window_start_ns ? hourUtc(record.last_window_start_ns) : "–" }));
  }
}

/** Hours per delivered-share bucket as small bars, tallest = most hours. */
function histogram(counts) {
  const most = Math.max(1, ...BUCKETS.map((bucket) => counts[bucket] ?? 0));
  return el("span", { class: "histogram" }, ...BUCKETS.map((bucket) => {
    const count = counts[bucket] ?? 0;
    const bar = el("span", { class: `bar bucket-${bucket}`, title: `${bucket}%: ${count} h`, "data-bucket": bucket, "data-count": String(count) });
    bar.style.height = `${Math.round(4 + 16 * count / most)}px`; // CSSOM: the page's CSP allows no style attribute
    return bar;
  }));
}
