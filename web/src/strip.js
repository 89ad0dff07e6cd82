// The strip ticket (PROTOCOL.md "Strip orders (v2)"): the same GPU-hours bought or sold in
// each of consecutive delivery hours of one class and region, all or nothing, under a limit
// on the total notional. The hours come from the market list (shift-click) or the From and
// To fields; the gateway's strip_quote prices them leg by leg while the ticket is open, and
// one button sends new_strip_order with the user's limit or, by default, the quoted
// notional plus a slippage the ticket shows. Nothing is sent while the quote says the strip
// would be refused.

import { byId, el, hourUtc, reasonText, windowUtc } from "./dom.js";
import { decimalsOf, formatDecimal, formatQuantity, formatUsdc, fromMicro, isPrice, toMicro } from "./decimal.js";

const LEGS_MIN = 2;
const LEGS_MAX = 168;
const NS_PER_HOUR = 3_600_000_000_000;
const QUOTE_DEBOUNCE_MS = 300;
// The page watches the book of the hour it shows only; the other legs' books move unseen,
// so an open ticket asks again this often (one rate-limit token each time).
const QUOTE_REFRESH_MS = 3000;
const SLIPPAGE_BPS_MAX = 1000; // 10 %
const BPS_PER_UNIT = 10_000n;

/** Strip refusals in the words of the ticket; the rest as for any order. */
function refusalText(reason, side) {
  switch (reason) {
    case "insufficient_liquidity": return "some hour has not enough on offer from other accounts";
    case "limit_exceeded": return side === "buy" ? "it costs more than the limit" : "it pays less than the limit";
    case "insufficient_funds": return side === "buy" ? "not enough USDC for the notional and the fees" : "you hold fewer GPU-hours of some hour than you sell";
    case "invalid_order": return "the hours are not consecutive hours of one class and region";
    case "invalid_price": return "the limit is not a positive USDC amount";
    default: return reasonText(reason);
  }
}

/** The slippage field ("0.5", in %) in basis points; null when it is not 0 to 10 % in at
 * most two decimals. */
function slippageBps(text) {
  const value = text.trim();
  if (!/^\d{1,2}(\.\d{1,2})?$/.test(value)) return null;
  const [whole, fraction = ""] = value.split(".");
  const bps = Number(whole) * 100 + Number(fraction.padEnd(2, "0"));
  return bps <= SLIPPAGE_BPS_MAX ? bps : null;
}

/** The default limit on a quoted notional: a buy pays up to `bps` more, rounded up to the
 * micro-USDC; a sell takes down to `bps` less, rounded down. */
export function limitWithSlippage(notionalMicro, side, bps) {
  const factor = side === "buy" ? BPS_PER_UNIT + BigInt(bps) : BPS_PER_UNIT - BigInt(bps);
  const scaled = notionalMicro * factor;
  return side === "buy" ? (scaled + BPS_PER_UNIT - 1n) / BPS_PER_UNIT : scaled / BPS_PER_UNIT;
}

export class StripTicket {
  /**
   * @param {object} hooks quote(fields) -> strip_quote result; send(fields) -> reply;
   *   nextClientOrderId(); onLoginWanted(); onLegs(symbols) when the hours change;
   *   onResult(result) after the engine's answer; nowMs() the server's time
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.form = byId("strip-form");
    this.from = byId("strip-from");
    this.to = byId("strip-to");
    this.quantity = byId("strip-quantity");
    this.slippage = byId("strip-slippage");
    this.limit = byId("strip-limit");
    this.submit = byId("strip-submit");
    this.error = byId("strip-error");
    this.instruments = new Map();
    this.range = null; // { gpu, region, fromStart, toStart } (delivery starts in ns)
    this.loggedIn = false;
    this.balances = new Map();
    this.active = false;
    this.quote = null; // { key, result } of the latest strip_quote answered
    this.asked = null; // the key of the quote in flight
    this.timer = null;
    this.busy = false;
    this.legsShown = ""; // the symbols last handed to onLegs, joined
    this.hoursShown = ""; // what the From and To fields list now
    this.form.addEventListener("input", () => this.changed());
    this.form.addEventListener("change", (event) => {
      if (event.target === this.from || event.target === this.to) this.pickStarts();
      this.changed();
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    setInterval(() => {
      if (document.visibilityState !== "hidden") this.requote(0);
    }, QUOTE_REFRESH_MS);
    this.render();
  }

  get side() {
    return this.form.elements.strip_side.value;
  }

  setInstruments(instruments) {
    this.instruments = instruments;
    this.changed();
  }

  setAccount(loggedIn, balances) {
    this.loggedIn = loggedIn;
    this.balances = balances;
    if (!loggedIn) this.quote = null;
    this.requote(QUOTE_DEBOUNCE_MS);
    this.render();
  }

  /** Show or hide the ticket: an open ticket keeps its quote fresh, and its hours are
   * marked in the market list. */
  setActive(active) {
    this.active = active;
    this.announceLegs();
    if (active) this.requote(0);
  }

  /** Hand the hours of an open ticket (none when closed) to onLegs, when they changed. */
  announceLegs() {
    const symbols = this.active ? this.legs().symbols : [];
    if (symbols.join(" ") === this.legsShown) return;
    this.legsShown = symbols.join(" ");
    this.hooks.onLegs(symbols);
  }

  /** The hours from one contract to another, in either order (a shift-click); an error
   * is shown when they are of different classes or regions. */
  pickRange(firstSymbol, lastSymbol) {
    const first = this.instruments.get(firstSymbol);
    const last = this.instruments.get(lastSymbol);
    if (!first || !last) return;
    if (first.gpu !== last.gpu || first.region !== last.region) {
      this.error.textContent = "a strip's hours are of one GPU class and one region";
      return;
    }
    const [from, to] = first.delivery_start <= last.delivery_start ? [first, last] : [last, first];
    this.range = { gpu: from.gpu, region: from.region, fromStart: from.delivery_start, toStart: to.delivery_start };
    this.error.textContent = "";
    this.changed();
  }

  /** A range of two hours from `symbol`, unless the ticket already has hours of its class
   * and region. */
  follow(symbol) {
    const spec = this.instruments.get(symbol);
    if (!spec || (this.range && this.range.gpu === spec.gpu && this.range.region === spec.region)) return;
    const next = this.openHours(spec.gpu, spec.region).find((s) => s.delivery_start > spec.delivery_start);
    this.range = { gpu: spec.gpu, region: spec.region, fromStart: spec.delivery_start, toStart: (next ?? spec).delivery_start };
    this.changed();
  }

  /** Whether a contract is one of the strip's hours (its book moving moves the quote). */
  includes(symbol) {
    return this.legs().symbols.includes(symbol);
  }

  /** Ask for a fresh quote soon, as a book the strip trades on moved. */
  bookMoved() {
    this.requote(QUOTE_DEBOUNCE_MS);
  }

  // -- the hours -----------------------------------------------------------------------------

  openHours(gpu, region) {
    const now = this.hooks.nowMs();
    return [...this.instruments.values()]
      .filter((s) => s.gpu === gpu && s.region === region && s.status === "open" && s.delivery_start / 1e6 > now)
      .sort((a, b) => a.delivery_start - b.delivery_start || a.symbol.localeCompare(b.symbol));
  }

  /** The legs of the range, in delivery order: `{ symbols, specs, error }`. */
  legs() {
    const range = this.range;
    if (!range) return { symbols: [], specs: [], error: "shift-click an hour in Markets, or choose the hours here" };
    const byStart = new Map();
    for (const spec of this.openHours(range.gpu, range.region)) {
      if (!byStart.has(spec.delivery_start)) byStart.set(spec.delivery_start, spec);
    }
    const specs = [];
    let start = range.fromStart;
    while (start <= range.toStart && specs.length <= LEGS_MAX) {
      const spec = byStart.get(start);
      if (!spec) return { symbols: [], specs: [], error: `no open hour from ${hourUtc(start)} UTC: a strip's hours follow each other` };
      specs.push(spec);
      start += spec.delivery_hours * NS_PER_HOUR;
    }
    const symbols = specs.map((spec) => spec.symbol);
    if (specs.length < LEGS_MIN) return { symbols, specs, error: "a strip has at least 2 hours: shift-click a later hour" };
    if (specs.length > LEGS_MAX) return { symbols: [], specs: [], error: `a strip has at most ${LEGS_MAX} hours` };
    if (specs.at(-1).delivery_start !== range.toStart) {
      return { symbols: [], specs: [], error: "the last hour does not follow on from the others" };
    }
    return { symbols, specs, error: null };
  }

  /** Take the hours from the From and To fields; a To not after From moves to the hour
   * after From. */
  pickStarts() {
    if (!this.range) return;
    const fromStart = Number(this.from.value);
    let toStart = Number(this.to.value);
    if (!(toStart > fromStart)) {
      const next = this.openHours(this.range.gpu, this.range.region).find((spec) => spec.delivery_start > fromStart);
      toStart = next?.delivery_start ?? fromStart;
    }
    this.range = { ...this.range, fromStart, toStart };
  }

  /** List the open hours of the range's class in the From and To fields, when they changed
   * (rebuilding a list the user has open would close it). */
  renderRangeFields() {
    const range = this.range;
    const hours = range ? this.openHours(range.gpu, range.region) : [];
    const shown = JSON.stringify([range, hours.map((spec) => spec.symbol)]);
    if (shown === this.hoursShown) return;
    this.hoursShown = shown;
    const option = (spec, chosen) => el("option", { value: String(spec.delivery_start), text: hourUtc(spec.delivery_start), selected: chosen });
    this.from.replaceChildren(...hours.map((spec) => option(spec, spec.delivery_start === range.fromStart)));
    this.to.replaceChildren(...hours.filter((spec) => spec.delivery_start > range.fromStart)
      .map((spec) => option(spec, spec.delivery_start === range.toStart)));
    this.from.disabled = this.to.disabled = !range;
    byId("strip-class").textContent = range ? `${range.gpu} · ${range.region}` : "–";
  }

  // -- the fields and the quote ----------------------------------------------------------------

  /** The quantity, slippage and limit as entered: `{ quantity, bps, limit, error }`; `limit`
   * is the user's in micro-USDC, or null for the default. */
  entered() {
    const quantity = Number(this.quantity.value);
    if (!Number.isInteger(quantity) || quantity < 1) return { error: "quantity must be a whole number of GPU-hours per hour" };
    const bps = slippageBps(this.slippage.value);
    if (bps === null) return { error: "slippage must be 0 to 10 %, e.g. 0.5" };
    const limitText = this.limit.value.trim();
    if (limitText === "") return { quantity, bps, limit: null, error: null };
    if (!isPrice(limitText)) return { error: "the limit is a USDC amount, e.g. 96.50" };
    return { quantity, bps, limit: toMicro(limitText), error: null };
  }

  /** The strip_quote fields of the ticket now, or null when it has nothing to quote. */
  quoteFields() {
    const { symbols, error } = this.legs();
    const entered = this.entered();
    if (error || entered.error) return null;
    const fields = { side: this.side, instruments: symbols, quantity: entered.quantity };
    if (entered.limit !== null) fields.limit_total = fromMicro(entered.limit);
    return fields;
  }

  changed() {
    this.announceLegs();
    this.requote(QUOTE_DEBOUNCE_MS, true);
    this.render();
  }

  /** Quote again in `delayMs`: a change of the fields restarts the wait (`restart`), a
   * moving book does not, so a busy book still gets quotes. */
  requote(delayMs, restart = false) {
    if (this.timer !== null && !restart) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.runQuote();
    }, delayMs);
  }

  async runQuote() {
    const fields = this.quoteFields();
    if (!this.active || !this.loggedIn || fields === null) return;
    const key = JSON.stringify(fields);
    if (this.asked === key) return; // its answer is on the way
    this.asked = key;
    try {
      const result = await this.hooks.quote(fields);
      // An answer to fields changed since is dropped: the quote of the new ones is coming.
      if (key === JSON.stringify(this.quoteFields())) this.quote = { key, result };
      this.error.textContent = "";
    } catch (error) {
      this.error.textContent = `Could not quote the strip: ${error.message}`;
    } finally {
      if (this.asked === key) this.asked = null;
    }
    this.render();
  }

  /** The latest quote if it answers the ticket as it is now, else null. */
  currentQuote() {
    const fields = this.quoteFields();
    return fields && this.quote?.key === JSON.stringify(fields) ? this.quote.result : null;
  }

  /** The limit to send: the user's, or the quoted notional with the slippage. */
  limitMicro(quote) {
    const entered = this.entered();
    if (entered.error) return null;
    if (entered.limit !== null) return entered.limit;
    return quote && !quote.reason ? limitWithSlippage(toMicro(quote.notional), this.side, entered.bps) : null;
  }

  // -- rendering -----------------------------------------------------------------------------

  render() {
    this.renderRangeFields();
    const { specs, error } = this.legs();
    const quote = this.currentQuote();
    const entered = this.entered();
    byId("strip-hours").textContent = specs.length && !error ? `${specs.length} hours` : "";
    this.renderLegs(specs, error ? null : quote, entered.quantity);
    this.renderSummary(quote, entered);
    this.renderStatus(error ?? entered.error, quote, specs);
    const side = this.side;
    const limit = this.limitMicro(quote);
    const ready = quote !== null && !quote.reason && limit !== null && limit > 0n;
    this.submit.className = `button submit ${side}`;
    this.submit.textContent = !this.loggedIn ? "Log in to trade"
      : this.busy ? "Sending…"
        : `${side === "buy" ? "Buy" : "Sell"} ${specs.length || ""} hours${entered.quantity ? ` × ${formatQuantity(entered.quantity)} GPU-h` : ""}`;
    this.submit.disabled = this.loggedIn && (this.busy || !ready);
  }

  renderLegs(specs, quote, quantity) {
    const rows = specs.map((spec, index) => {
      const leg = quote?.legs[index];
      const decimals = decimalsOf(spec.tick_size);
      const prices = leg ? [...new Set(leg.fills.map((fill) => formatDecimal(fill.price, decimals)))] : [];
      const short = leg !== undefined && quantity !== undefined && leg.filled < quantity;
      return el("tr", { "data-symbol": spec.symbol, "data-filled": leg ? String(leg.filled) : "", class: short ? "short" : null },
        el("td", { class: "mono", text: windowUtc(spec.delivery_start, spec.delivery_hours), title: spec.symbol }),
        el("td", { class: "num", text: leg ? `${formatQuantity(leg.filled)}/${formatQuantity(quantity)}` : "–" }),
        el("td", { class: "num", text: prices.length === 0 ? "–" : prices.length === 1 ? prices[0] : `${prices[0]}–${prices.at(-1)}`,
          title: leg ? leg.fills.map((fill) => `${fill.quantity} @ ${fill.price}`).join(", ") : "" }),
        el("td", { class: "num", text: leg ? formatUsdc(leg.notional) : "–" }));
    });
    if (rows.length === 0) rows.push(el("tr", { class: "placeholder" }, el("td", { colspan: "4", text: "No hours chosen" })));
    byId("strip-legs-body").replaceChildren(...rows);
  }

  renderSummary(quote, entered) {
    const usdc = (value) => (value === null || value === undefined ? "–" : `${formatUsdc(value)} USDC`);
    const shown = quote && quote.legs.length > 0 ? quote : null;
    byId("strip-notional").textContent = usdc(shown?.notional);
    byId("strip-fees").textContent = usdc(shown?.fees);
    byId("strip-total-label").textContent = this.side === "buy" ? "You pay" : "You receive";
    byId("strip-total").textContent = usdc(shown?.total);
    const limit = this.limitMicro(quote);
    const how = entered.error ? "" : entered.limit !== null ? " (yours)"
      : ` (quote ${this.side === "buy" ? "+" : "−"} ${formatDecimal(fromMicro(BigInt(entered.bps) * 10_000n), 1)} %)`;
    byId("strip-limit-shown").textContent = limit === null ? "–" : `${formatUsdc(fromMicro(limit))} USDC${how}`;
    this.limit.placeholder = entered.limit === null && limit !== null ? formatDecimal(fromMicro(limit), 2) : "quote + slippage";
    const usdcBalance = this.balances.get("USDC");
    byId("strip-available").textContent = !this.loggedIn || !usdcBalance ? "–" : `${formatUsdc(usdcBalance.available)} USDC`;
  }

  renderStatus(problem, quote, specs) {
    const status = byId("strip-status");
    let state = "idle";
    let text = "";
    if (!this.loggedIn) text = "Log in to see what the strip costs now.";
    else if (problem) text = problem;
    else if (quote === null) [state, text] = ["quoting", "Quoting…"];
    else if (quote.reason) [state, text] = ["refused", `Would be refused: ${refusalText(quote.reason, this.side)}${this.shortLegs(quote, specs)}.`];
    else [state, text] = ["ready", "Executable now at these prices; the engine decides when the order reaches it."];
    status.dataset.state = state;
    status.dataset.reason = quote?.reason ?? "";
    status.textContent = text;
  }

  /** " (13:00–14:00: 3 of 8 GPU-h)" for the legs a quote could not fill. */
  shortLegs(quote, specs) {
    if (quote.reason !== "insufficient_liquidity") return "";
    const short = quote.legs
      .map((leg, index) => ({ leg, spec: specs[index] }))
      .filter(({ leg }) => leg.filled < quote.quantity)
      .map(({ leg, spec }) => `${spec ? windowUtc(spec.delivery_start, spec.delivery_hours) : leg.instrument}: ${leg.filled} of ${quote.quantity} GPU-h`);
    return short.length ? ` (${short.join(", ")})` : "";
  }

  renderResult(result) {
    const box = byId("strip-result");
    box.hidden = false;
    box.dataset.status = result.status;
    if (result.status !== "accepted") {
      box.replaceChildren(el("strong", { text: "The engine refused the strip; nothing traded." }),
        el("span", { text: refusalText(result.reason, this.side) }));
      return;
    }
    const verb = result.side === "buy" ? "Bought" : "Sold";
    const legs = result.legs.map((leg) => {
      const spec = this.instruments.get(leg.instrument);
      const hour = spec ? windowUtc(spec.delivery_start, spec.delivery_hours) : leg.instrument;
      const fills = leg.fills.map((fill) => `${fill.quantity} @ ${fill.price}`).join(", ");
      return el("li", { "data-symbol": leg.instrument, text: `${hour}: ${formatQuantity(leg.filled)} GPU-h · ${fills}` });
    });
    box.replaceChildren(
      el("strong", { text: `${verb} strip ${result.strip_id}: ${result.legs.length} hours × ${formatQuantity(result.quantity)} GPU-h` }),
      el("span", { "data-field": "totals",
        text: `notional ${formatUsdc(result.notional)} · fees ${formatUsdc(result.fees)} · ${result.side === "buy" ? "paid" : "received"} ${formatUsdc(result.total)} USDC` }),
      el("ul", {}, ...legs));
  }

  // -- sending -------------------------------------------------------------------------------

  async send() {
    if (!this.loggedIn) {
      this.hooks.onLoginWanted();
      return;
    }
    const quote = this.currentQuote();
    const limit = this.limitMicro(quote);
    if (quote === null || quote.reason || limit === null || limit <= 0n) return; // the button says why
    const fields = {
      client_order_id: this.hooks.nextClientOrderId(), side: this.side, instruments: this.legs().symbols,
      quantity: this.entered().quantity, limit_total: fromMicro(limit),
    };
    this.busy = true;
    this.render();
    try {
      const reply = await this.hooks.send(fields);
      const result = reply.result ?? { status: reply.status, reason: reply.reason };
      this.renderResult(result);
      this.hooks.onResult(result);
    } catch (error) {
      this.error.textContent = `The strip was not sent: ${error.message}`;
    } finally {
      this.busy = false;
      this.quote = null;
      this.requote(0, true);
      this.render();
    }
  }
}
