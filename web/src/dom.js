// Small DOM and time helpers. Everything shown is set through textContent or attributes,
// never parsed as HTML, so data from the wire cannot inject markup.

export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from the page`);
  return element;
}

/** Create an element: el("td", { class: "num", text: "2.15" }, ...children). */
export function el(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") element.textContent = value;
    else if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) element.append(child);
  return element;
}

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad = (n) => String(n).padStart(2, "0");

/** HH:MM:SS in UTC of a nanosecond timestamp. */
export function clockUtc(ns) {
  const date = new Date(ns / 1e6);
  return `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}`;
}

/** "Tue 15 Jul" in UTC. */
export function dayUtc(ns) {
  const date = new Date(ns / 1e6);
  return `${WEEKDAYS[date.getUTCDay()]} ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]}`;
}

/** "Tue 15 Jul 14:00" in UTC: the hour a delivery starts. */
export function hourUtc(ns) {
  const date = new Date(ns / 1e6);
  return `${dayUtc(ns)} ${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}`;
}

/** "14:00–15:00" in UTC for a delivery window. */
export function windowUtc(startNs, hours) {
  const start = new Date(startNs / 1e6);
  const end = new Date(startNs / 1e6 + hours * 3_600_000);
  const hhmm = (d) => `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  return `${hhmm(start)}–${hhmm(end)}`;
}

/** "1h 05m", "4m 10s", "2d 3h" until a moment; "closed" once past. */
export function countdown(ms) {
  if (ms <= 0) return "closed";
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `in ${d}d ${h}h`;
  if (h > 0) return `in ${h}h ${pad(m)}m`;
  return `in ${m}m ${pad(s % 60)}s`;
}

const REASONS = {
  insufficient_funds: "insufficient funds",
  post_only_would_cross: "post-only order would cross the book",
  duplicate_client_order_id: "an open order already has this client id",
  invalid_price: "price is not a multiple of the tick",
  unknown_order: "the order is no longer open",
  instrument_closed: "trading in this contract has closed",
  mass_cancel: "canceled by cancel all",
  disconnect: "canceled by the venue: the connection that placed it closed (cancel on disconnect)",
  dead_man_switch: "canceled by the venue: the dead-man's switch fired",
  not_deliverable: "this contract was listed without a bond: nothing can be issued on it",
  duplicate_issue: "an issue with this id was already made",
  insufficient_liquidity: "some hour has not enough on offer from other accounts",
  limit_exceeded: "the strip's cost is past its limit",
  invalid_quantity: "the quantity is outside what the contract allows",
  unknown_instrument: "the contract is not listed",
};

/** A reject or cancel reason for people: "post_only_would_cross" -> "post-only order would cross…". */
export function reasonText(reason) {
  if (!reason) return "";
  return REASONS[reason] ?? reason.replace(/_/g, " ");
}
