// Short notices in the corner: order outcomes, connection trouble, login results.

import { byId, el } from "./dom.js";

const TOASTS_SHOWN_MAX = 4;
const TOAST_MS = 4500;

export function toast(kind, title, detail = "") {
  const box = byId("toasts");
  const item = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" },
    el("strong", { text: title }), detail ? el("span", { text: detail }) : null);
  box.append(item);
  while (box.children.length > TOASTS_SHOWN_MAX) box.firstElementChild.remove();
  setTimeout(() => item.remove(), TOAST_MS);
}
