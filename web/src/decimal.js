// Exact USDC decimals (micro-USDC as BigInt), display formatting, and the book checksum.
// Prices travel as canonical decimal strings; floats are used only to draw.

const MICRO_PER_USDC = 1_000_000n;
const PRICE_PATTERN = /^\d{1,12}(\.\d{1,6})?$/;
const USDC_PATTERN = /^-?\d+(\.\d{1,6})?$/;

/** Parse a decimal USDC string into micro-USDC; null when it is not one. */
export function toMicro(text) {
  const value = String(text).trim();
  if (!USDC_PATTERN.test(value)) return null;
  const negative = value.startsWith("-");
  const [whole, fraction = ""] = value.replace("-", "").split(".");
  const micro = BigInt(whole) * MICRO_PER_USDC + BigInt(fraction.padEnd(6, "0"));
  return negative ? -micro : micro;
}

/** Tell whether `text` is a price the API accepts (positive, at most 6 decimals). */
export function isPrice(text) {
  return PRICE_PATTERN.test(String(text).trim()) && toMicro(text) > 0n;
}

/** Write micro-USDC as the canonical decimal: no trailing zeros, no dot for a whole number. */
export function fromMicro(micro) {
  const negative = micro < 0n;
  const absolute = negative ? -micro : micro;
  const whole = absolute / MICRO_PER_USDC;
  const fraction = (absolute % MICRO_PER_USDC).toString().padStart(6, "0").replace(/0+$/, "");
  return `${negative ? "-" : ""}${whole}${fraction ? "." + fraction : ""}`;
}

export function canonical(text) {
  const micro = toMicro(text);
  return micro === null ? String(text) : fromMicro(micro);
}

/** Decimals to show for prices of an instrument with this tick size ("0.01" -> 2). */
export function decimalsOf(tickSize) {
  const fraction = canonical(tickSize).split(".")[1];
  return fraction ? fraction.length : 0;
}

const GROUPING = /\B(?=(\d{3})+(?!\d))/g;

/** Show a decimal string with exactly `decimals` decimals (more if it has them). */
export function formatDecimal(text, decimals, { group = false } = {}) {
  if (text === undefined || text === null || text === "") return "–";
  const value = canonical(String(text));
  const negative = value.startsWith("-");
  let [whole, fraction = ""] = value.replace("-", "").split(".");
  if (fraction.length < decimals) fraction = fraction.padEnd(decimals, "0");
  if (group) whole = whole.replace(GROUPING, ",");
  return `${negative ? "-" : ""}${whole}${fraction ? "." + fraction : ""}`;
}

export function formatQuantity(quantity) {
  if (quantity === undefined || quantity === null) return "–";
  return String(quantity).replace(GROUPING, ",");
}

/** USDC amounts: grouped, two decimals at least, up to six when the amount has them. */
export function formatUsdc(text) {
  return formatDecimal(text, 2, { group: true });
}

/** Multiply a price by a whole quantity, exactly. */
export function notionalMicro(priceText, quantity) {
  const micro = toMicro(priceText);
  return micro === null ? null : micro * BigInt(quantity);
}

/** Fee in micro-USDC for a notional at `bps` basis points (an estimate shown before sending;
 * the engine computes the fee of each trade). */
export function feeMicro(notional, bps) {
  return (notional * BigInt(bps)) / 10_000n;
}

// -- CRC-32 (IEEE 802.3, as zlib.crc32) --------------------------------------------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

const encoder = new TextEncoder();

export function crc32(text) {
  let crc = 0xffffffff;
  for (const byte of encoder.encode(text)) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** The book checksum of docs/asyncapi.yaml (BookChecksum): best 10 levels of each side. */
export function bookChecksum(bids, asks) {
  const side = (levels) => levels.slice(0, 10).map(([price, quantity]) => `${price}:${quantity}`).join(",");
  return crc32(`${side(bids)}|${side(asks)}`);
}
