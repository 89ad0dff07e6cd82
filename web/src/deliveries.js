// The account's deliveries (PROTOCOL.md, Delivery): the GPU-hours assigned to it at close
// (or, for an issuer, its GPU-hours assigned to their holders) with the share delivered and
// the compensation paid, and an issuer's bonds. The `deliveries` request gives the whole
// picture; the `deliveries` feed says when it changed, and the view reads it again.
// A holder's assignment shows its access (the `delivery_access` request): the node and the
// `ssh` line with a copy button once the delivery service has certified one of the holder's
// SSH keys for the window, or a form to register a key (`register_ssh_key`) until then.

import { byId, el, hourUtc } from "./dom.js";
import { formatQuantity, formatUsdc } from "./decimal.js";
import { toast } from "./toasts.js";

const ISSUER_ROLES = new Set(["operator", "market_maker", "admin"]);
const PPM_PER_PERCENT = 10_000;
const ACCESS_REFRESH_MS = 2_000; // while a certificate is pending

/** A share in parts per million as a percentage, exact: 950000 -> "95%", 1 -> "0.0001%". */
export function percentOfPpm(ppm) {
  const whole = Math.floor(ppm / PPM_PER_PERCENT);
  const fraction = String(ppm % PPM_PER_PERCENT).padStart(4, "0").replace(/0+$/, "");
  return `${whole}${fraction ? "." + fraction : ""}%`;
}

export class DeliveriesView {
  constructor({ load, loadAccess, registerKey, describe }) {
    this.load = load; // () => the `deliveries` request's result
    this.loadAccess = loadAccess; // () => the `delivery_access` request's result
    this.registerKey = registerKey; // (public key line) => the `register_ssh_key` result
    this.describe = describe; // symbol -> short text
    this.account = null;
    this.result = null;
    this.access = new Map(); // issue_id -> AccessItem of the account as holder
    this.accessTimer = null;
    this.loading = false;
    this.again = false;
    byId("ssh-key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submitKey();
    });
  }

  /** Show `account`'s deliveries (null: logged out); its bonds too when `role` may issue. */
  reset(account, role = null) {
    this.account = account;
    this.result = null;
    this.access = new Map();
    clearTimeout(this.accessTimer);
    byId("tab-bonds").hidden = !ISSUER_ROLES.has(role);
    byId("ssh-key-form").hidden = account === null;
    this.render();
  }

  /** Read the holder's access again; while a certificate is pending, again and again. */
  async refreshAccess() {
    clearTimeout(this.accessTimer);
    const account = this.account;
    if (account === null) return;
    let items;
    try {
      items = (await this.loadAccess()).assignments;
    } catch {
      return; // no delivery database on this gateway, or the connection dropped
    }
    if (account !== this.account) return;
    this.access = new Map(items.map((item) => [item.issue_id, item]));
    this.render();
    const waiting = (this.result?.assignments ?? []).some((assignment) => assignment.holder === account
      && assignment.status === "assigned" && this.access.get(assignment.issue_id)?.pending !== false);
    if (waiting) this.accessTimer = setTimeout(() => this.refreshAccess(), ACCESS_REFRESH_MS);
  }

  async submitKey() {
    const input = byId("ssh-key-input");
    const status = byId("ssh-key-status");
    const line = input.value.trim();
    if (!line) {
      status.textContent = "Paste a public key, e.g. the line of ~/.ssh/id_ed25519.pub";
      return;
    }
    byId("ssh-key-submit").disabled = true;
    try {
      const result = await this.registerKey(line);
      input.value = "";
      status.textContent = `${result.added ? "Registered" : "Already registered"}: ${result.fingerprint}`;
      toast("ok", "SSH key registered", result.fingerprint);
      this.refreshAccess();
    } catch (error) {
      status.textContent = error.message ?? String(error);
      toast("error", "SSH key refused", error.message ?? String(error));
    } finally {
      byId("ssh-key-submit").disabled = false;
    }
  }

  /** A `deliveries` feed message: read the deliveries again, one read at a time (what
   * changes during a read makes one more), and tell the holder about its own events. */
  async apply(message) {
    if (message.kind === "update") this.announce(message.events);
    if (this.loading) {
      this.again = true;
      return;
    }
    this.loading = true;
    try {
      do {
        this.again = false;
        const account = this.account;
        const result = await this.load();
        if (account === this.account) {
          this.result = result;
          this.render();
          this.refreshAccess();
        } else {
          this.again = this.account !== null; // logged in as another meanwhile: theirs now
        }
      } while (this.again);
    } catch {
      // The connection dropped: the feed's snapshot after the reconnect reads them again.
    } finally {
      this.loading = false;
    }
  }

  announce(events) {
    for (const event of events) {
      if (event.holder !== this.account) continue;
      const what = `${formatQuantity(event.quantity)} GPU-h of ${this.describe(event.instrument)}`;
      if (event.event === "delivery_assigned") toast("ok", "Delivery assigned", `${what} from ${event.issuer}`);
      if (event.event === "delivery_settled") {
        toast("ok", "Delivery settled", `${what}: ${percentOfPpm(event.delivered_ppm)} delivered, ${formatUsdc(event.compensation)} USDC compensation`);
      }
    }
  }

  render() {
    const assignments = [...(this.result?.assignments ?? [])].reverse(); // newest first
    const issues = [...(this.result?.issues ?? [])].reverse();
    byId("deliveries-count").textContent = String(assignments.length);
    byId("bonds-count").textContent = String(issues.length);
    const loggedIn = this.account !== null;
    byId("deliveries-body").replaceChildren(...(assignments.length || !loggedIn
      ? assignments.map((assignment) => this.assignmentRow(assignment))
      : [placeholder(9, "No deliveries yet: GPU-hours held when trading closes are assigned here")]));
    byId("bonds-body").replaceChildren(...(issues.length || !loggedIn
      ? issues.map((issue) => this.issueRow(issue))
      : [placeholder(7, "No bonds: issued GPU-hours and their bonds show here")]));
  }

  assignmentRow(assignment) {
    const receiving = assignment.holder === this.account;
    const settled = assignment.status === "settled";
    return el("tr", { "data-issue-id": assignment.issue_id, "data-holder": assignment.holder, "data-status": assignment.status },
      el("td", { class: "mono", text: hourUtc(assignment.delivery_start) }),
      el("td", { class: "contract", text: this.describe(assignment.instrument), title: assignment.instrument }),
      el("td", { class: "mono muted", text: assignment.node_id, title: `issue ${assignment.issue_id}` }),
      el("td", { class: "muted", text: receiving ? `from ${assignment.issuer}` : `to ${assignment.holder}` }),
      el("td", { class: "num", text: formatQuantity(assignment.quantity) }),
      el("td", { class: `status-${assignment.status}`, text: settled ? "settled" : "awaiting report" }),
      el("td", { class: "num", "data-field": "delivered", text: settled ? percentOfPpm(assignment.delivered_ppm) : "–", title: assignment.evidence ? `evidence ${assignment.evidence}` : "" }),
      el("td", { class: "num", "data-field": "compensation", text: settled ? formatUsdc(assignment.compensation) : "–" }),
      el("td", { class: "access", "data-field": "access" }, receiving && this.accessOpen(assignment) ? this.accessCell(assignment) : "–"));
  }

  /** Whether the holder may still reach the node: until the window ends, whether or not the
   * measured hour has been reported yet (a compressed probe minute reports it early). */
  accessOpen(assignment) {
    const item = this.access.get(assignment.issue_id);
    if (!item) return assignment.status !== "settled";
    return Date.now() * 1e6 < item.window_end;
  }

  /** How the holder reaches the node: the ssh line to copy, or what it still waits for. */
  accessCell(assignment) {
    const item = this.access.get(assignment.issue_id);
    if (!item) return el("span", { class: "muted", text: "–" });
    if (item.pending) {
      return el("button", { type: "button", class: "button ghost small", "data-action": "register-key", text: "Register an SSH key",
        title: "The delivery service certifies your SSH keys for the delivery window", onclick: () => byId("ssh-key-input").focus() });
    }
    if (!item.ssh_command) return el("span", { class: "muted", text: `node ${item.node_id} not registered yet` });
    const line = el("code", { class: "ssh-line", "data-field": "ssh", text: item.ssh_command, title: `${item.login}@${item.host}:${item.port}, host key ${item.host_key}` });
    const copy = el("button", { type: "button", class: "button ghost small", "data-action": "copy-ssh", text: "Copy", onclick: () => copyText(item.ssh_command) });
    const files = item.certificates.map((certificate) => certificate.file).join(", ");
    return el("span", { class: "access-line", title: `save the certificate as ${files}: gpux trade access --identity KEY writes it` }, line, copy);
  }

  issueRow(issue) {
    return el("tr", { "data-issue-id": issue.issue_id, "data-status": issue.status },
      el("td", { class: "mono muted client-id", text: issue.issue_id, title: issue.issue_id }),
      el("td", { class: "contract", text: this.describe(issue.instrument), title: issue.instrument }),
      el("td", { class: "mono muted", text: issue.node_id }),
      el("td", { class: "num", text: formatQuantity(issue.quantity) }),
      el("td", { class: "num", text: formatQuantity(issue.bonded_quantity) }),
      el("td", { class: "num", "data-field": "bond", text: formatUsdc(issue.bond) }),
      el("td", { class: `status-${issue.status}`, text: issue.status }));
  }
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("ok", "Copied", "the ssh line");
  } catch {
    toast("error", "Copy failed", "select the line and copy it");
  }
}

function placeholder(columns, text) {
  return el("tr", { class: "placeholder" }, el("td", { colspan: String(columns), text }));
}
