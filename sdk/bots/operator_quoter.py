"""An operator's quoter: bond its GPUs' coming delivery hours and keep them offered on the book.

The capacity file (YAML) says what the operator has:

    region: eu-west
    hours_ahead: 12          # the delivery hours starting within the next 12 hours
    lead_minutes: 5          # stop quoting an hour this close to its delivery
    classes:
      H100-SXM-80GB: {gpus: 8, price: "2.40", node: h100-node-7}
      A100-SXM-80GB: {gpus: 16, price: "1.45"}     # node: the class's name

Each refresh it lists the instruments, then, for every open one of its region and GPU
classes in the window:
- on a deliverable instrument (listed with a bond), it issues `gpus` GPU-hours of the
  class's node once (`issue_capacity`, bonding `gpus x bond_per_gpu_hour` USDC), nearest
  hour first, as many hours as its available USDC bonds; the issue id is
  `ACCOUNT.SYMBOL.NODE`, so a restarted bot never bonds an hour twice;
- it wants one ask of min(gpus, GPU-hour tokens it holds) at the class price, and sends a
  mass quote for an instrument only when what rests differs from that.
An issue the engine refuses is logged with its reason; the bot goes on with the others.

    python -m sdk.bots.operator_quoter --config capacity.yaml --url ws://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from protocol import format_micro
from protocol.commands import IDENTIFIER_PATTERN
from protocol.effects import bond
from sdk.book import price_micro
from sdk.client import Client, ClientError, Quote
from sdk.signing import ApiKey
from wsapi.messages import Balance, Instrument, OrderReport, OrderResult

log = logging.getLogger("gpux.bots.operator")
HOUR_NS = 3600 * 10**9
ISSUE_ID_LENGTH_MAX = 64
USDC = "USDC"
# The engine's answers to an issue that are not final: the same issue may pass later.
DUPLICATE_ISSUE = "duplicate_issue"
INSUFFICIENT_FUNDS = "insufficient_funds"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


class CapacityError(ValueError):
    """The capacity file is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class GpuClass:
    gpus: int
    price: str
    node: str  # the node that delivers these GPU-hours: it names their issues


@dataclass(frozen=True, slots=True)
class Capacity:
    region: str
    hours_ahead: int
    lead_minutes: int
    classes: dict[str, GpuClass]

    @classmethod
    def from_yaml(cls, text: str) -> Capacity:
        data: Any = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise CapacityError("the capacity file must be a mapping")
        classes = data.get("classes")
        if not isinstance(classes, dict) or not classes:
            raise CapacityError("classes: a mapping of GPU class to {gpus, price, node} is "
                                "required")
        parsed = {str(name): _gpu_class(str(name), spec) for name, spec in classes.items()}
        region = data.get("region")
        hours_ahead = data.get("hours_ahead", 24)
        lead_minutes = data.get("lead_minutes", 5)
        if not isinstance(region, str) or not region:
            raise CapacityError("region: a region name is required")
        if not isinstance(hours_ahead, int) or not 1 <= hours_ahead <= 24 * 14:
            raise CapacityError("hours_ahead: an integer within 1..336")
        if not isinstance(lead_minutes, int) or lead_minutes < 0:
            raise CapacityError("lead_minutes: an integer >= 0")
        return cls(region=region, hours_ahead=hours_ahead, lead_minutes=lead_minutes,
                   classes=parsed)


def _gpu_class(name: str, spec: object) -> GpuClass:
    if not isinstance(spec, dict) or not isinstance(spec.get("gpus"), int) \
            or spec["gpus"] < 0 or not isinstance(spec.get("price"), str):
        raise CapacityError(f"classes.{name}: needs gpus (integer >= 0) and price "
                            "(a decimal string)")
    node = spec.get("node", name)
    if not isinstance(node, str) or not _IDENTIFIER.match(node):
        raise CapacityError(f"classes.{name}.node: 1 to 64 of A-Z a-z 0-9 _ . : - "
                            f"(it defaults to the class's name), got {node!r}")
    return GpuClass(gpus=spec["gpus"], price=spec["price"], node=node)


def quote_id(symbol: str) -> str:
    """Return the client order id of the operator's ask on `symbol` (stable, <= 64 chars)."""
    return "opq-" + hashlib.sha256(symbol.encode()).hexdigest()[:16]


def issue_id(account: str, symbol: str, node: str) -> str:
    """Return the id of `account`'s issue of `node` on `symbol`: the same on every start, so
    that a restarted bot's issue is refused `duplicate_issue` rather than bonded twice;
    `ACCOUNT.SYMBOL.NODE` when that fits an identifier, else a digest of it."""
    readable = f"{account}.{symbol}.{node}"
    if len(readable) <= ISSUE_ID_LENGTH_MAX:
        return readable
    return "issue-" + hashlib.sha256(readable.encode()).hexdigest()[:40]


def in_window(capacity: Capacity, spec: Instrument, now_ns: int) -> GpuClass | None:
    """Return the operator's class of an open instrument of its region in the window, else
    None."""
    window_start = now_ns + capacity.lead_minutes * 60 * 10**9
    window_end = now_ns + capacity.hours_ahead * HOUR_NS
    gpu_class = capacity.classes.get(spec.gpu)
    if (gpu_class is None or spec.region != capacity.region or spec.status != "open"
            or not window_start <= spec.delivery_start <= window_end):
        return None
    return gpu_class


@dataclass(frozen=True, slots=True)
class PlannedIssue:
    issue_id: str
    instrument: str
    node_id: str
    quantity: int
    bond_micro: int  # quantity x the instrument's bond per GPU-hour


def plan_issues(
    capacity: Capacity, instruments: list[Instrument], account: str, now_ns: int,
) -> list[PlannedIssue]:
    """Return the issue the operator wants on each deliverable instrument in the window,
    nearest hour first (made or not: the caller knows which were)."""
    planned = []
    for spec in sorted(instruments, key=lambda spec: (spec.delivery_start, spec.symbol)):
        gpu_class = in_window(capacity, spec, now_ns)
        if gpu_class is None or spec.bond_per_gpu_hour is None or gpu_class.gpus == 0:
            continue
        quantity = min(gpu_class.gpus, spec.max_order_quantity)
        planned.append(PlannedIssue(
            issue_id=issue_id(account, spec.symbol, gpu_class.node), instrument=spec.symbol,
            node_id=gpu_class.node, quantity=quantity,
            bond_micro=bond(quantity, price_micro(spec.bond_per_gpu_hour))))
    return planned


def within_funds(
    planned: list[PlannedIssue], usdc_available_micro: int,
) -> tuple[list[PlannedIssue], list[PlannedIssue]]:
    """Split `planned` into the issues to make now and those waiting for USDC: in order,
    each is made now when the USDC left after the earlier ones bonds it."""
    now: list[PlannedIssue] = []
    waiting: list[PlannedIssue] = []
    for issue in planned:
        if issue.bond_micro <= usdc_available_micro:
            now.append(issue)
            usdc_available_micro -= issue.bond_micro
        else:
            waiting.append(issue)
    return now, waiting


def available_usdc_micro(balances: dict[str, Balance]) -> int:
    balance = balances.get(USDC)
    return price_micro(str(balance.available)) if balance is not None else 0


def plan_asks(
    capacity: Capacity, instruments: list[Instrument], balances: dict[str, Balance],
    now_ns: int,
) -> dict[str, Quote | None]:
    """Return, per instrument in the window, the ask to hold (None: hold nothing)."""
    plan: dict[str, Quote | None] = {}
    for spec in instruments:
        gpu_class = in_window(capacity, spec, now_ns)
        if gpu_class is None:
            continue
        balance = balances.get(spec.symbol)
        tokens = int(balance.available) + int(balance.held) if balance else 0
        quantity = min(gpu_class.gpus, tokens, spec.max_order_quantity)
        plan[spec.symbol] = (Quote(quote_id(spec.symbol), "sell", gpu_class.price, quantity)
                             if quantity > 0 else None)
    return plan


def resting_matches(quote: Quote | None, resting: list[OrderReport]) -> bool:
    """Tell whether the orders resting on an instrument are exactly the wanted ask."""
    if quote is None:
        return not resting
    return (len(resting) == 1 and resting[0].client_order_id == quote.client_order_id
            and resting[0].price is not None
            and price_micro(resting[0].price) == price_micro(quote.price)
            and resting[0].remaining_quantity == quote.quantity)


class OperatorQuoter:
    """Issue the planned capacity and keep the planned asks resting; `refresh` once, or `run`
    until stopped."""

    def __init__(self, client: Client, capacity: Capacity) -> None:
        self.client = client
        self.capacity = capacity
        self.mass_quotes_sent = 0
        self.issued: set[str] = set()  # ids of the account's issues, accepted or found
        self.issued_read = False  # whether the account's issues were read (on first refresh)
        self.refused: dict[str, str] = {}  # issue id -> the engine's final reason
        self.waiting_for_usdc = 0

    async def refresh(self, now_ns: int) -> dict[str, Quote | None]:
        instruments = await self.client.instruments()
        balances = await self.client.balances()
        if await self.issue(instruments, balances, now_ns):
            balances = await self.client.balances()
        plan = plan_asks(self.capacity, instruments, balances, now_ns)
        open_orders = await self.client.open_orders()
        for symbol, quote in plan.items():
            resting = [o for o in open_orders if o.instrument == symbol]
            if resting_matches(quote, resting):
                continue
            result = await self.client.mass_quote(symbol, [quote] if quote else [])
            self.mass_quotes_sent += 1
            for outcome in result.results:
                if not outcome.accepted:
                    log.warning("ask on %s rejected: %s", symbol, outcome.reason)
        return plan

    async def issue(self, instruments: list[Instrument], balances: dict[str, Balance],
                    now_ns: int) -> int:
        """Make the planned issues; return how many the engine accepted."""
        if self.client.login is None:
            raise ClientError("the operator bot issues capacity for its account: log in")
        if not self.issued_read:
            self.issued.update(issue.issue_id for issue in (await self.client.deliveries()).issues)
            self.issued_read = True
        planned = plan_issues(self.capacity, instruments, self.client.login.account, now_ns)
        self._forget_all_but({issue.issue_id for issue in planned})
        now, waiting = within_funds(
            [issue for issue in planned
             if issue.issue_id not in self.issued and issue.issue_id not in self.refused],
            available_usdc_micro(balances))
        if len(waiting) != self.waiting_for_usdc:
            self.waiting_for_usdc = len(waiting)
            if waiting:
                log.warning("%d delivery hours wait for USDC to bond (%s USDC needed)",
                            len(waiting), format_micro(sum(p.bond_micro for p in waiting)))
        accepted = 0
        for issue in now:
            result = await self.client.issue_capacity(issue.instrument, issue.node_id,
                                                      issue.quantity, issue.issue_id)
            accepted += self._note_issue(issue, result)
        return accepted

    def _forget_all_but(self, wanted: set[str]) -> None:
        """Keep what is known of the issues still wanted only (hours leave the window as
        they near delivery), so that what the bot remembers stays bounded."""
        self.issued &= wanted
        self.refused = {key: reason for key, reason in self.refused.items() if key in wanted}

    def _note_issue(self, issue: PlannedIssue, result: OrderResult) -> bool:
        """Remember what the engine answered an issue; return whether it was accepted. A
        refusal that funds may cure is not remembered: the planner retries it once the USDC
        is there."""
        if result.accepted or result.reason == DUPLICATE_ISSUE:
            self.issued.add(issue.issue_id)
            return result.accepted
        log.warning("issue %s of %d GPU-hours on %s refused: %s", issue.issue_id,
                    issue.quantity, issue.instrument, result.reason)
        if result.status == "rejected" and result.reason != INSUFFICIENT_FUNDS:
            self.refused[issue.issue_id] = result.reason or result.status
        return False

    async def run(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        while not stop.is_set():
            try:
                await self.refresh(time.time_ns())
            except ClientError as error:
                log.warning("operator refresh failed: %s", error)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpux trade operator",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("GPUX_URL", "ws://127.0.0.1:8765"))
    parser.add_argument("--config", type=Path, required=True, help="capacity YAML file")
    parser.add_argument("--interval-s", type=float, default=5.0)
    parser.add_argument("--duration-s", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    capacity = Capacity.from_yaml(args.config.read_text())
    asyncio.run(_run(args.url, capacity, args.interval_s, args.duration_s))
    return 0


async def _run(url: str, capacity: Capacity, interval_s: float, duration_s: float | None) -> None:
    key = ApiKey(os.environ["GPUX_KEY_ID"], os.environ["GPUX_PRIVATE_KEY"])
    stop = asyncio.Event()
    if duration_s is not None:
        asyncio.get_running_loop().call_later(duration_s, stop.set)
    async with Client(url, credentials=key) as client:
        await OperatorQuoter(client, capacity).run(stop, interval_s)


if __name__ == "__main__":
    raise SystemExit(main())
