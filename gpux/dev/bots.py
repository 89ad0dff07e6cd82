"""The demo's bots, over the websocket API like any client, so the books are alive.

- a market maker (sdk.bots.market_maker) on the nearest delivery hours of each GPU class,
  quoting around the class's reference and skewing with its inventory; before it quotes an
  hour it issues MAKER_GPU_HOURS of it (bonded, PROTOCOL.md "Delivery"), its inventory's
  home; the set of hours follows the clock as hours close;
- a GPU operator (sdk.bots.operator_quoter) issuing its GPUs' capacity on every listed hour
  and offering it;
- a taker that now and then buys or sells at market on the nearest hours, so trades print,
  candles form and the maker's inventory moves its quotes; on its second round, then one in
  STRIP_EVERY_TAKES, it buys a strip of a few consecutive hours of a class instead
  (sdk.bots.strip_buyer: at the quoted notional plus STRIP_SLIPPAGE_BPS, nothing sent when
  the quote says it would be refused), so the demo shows strips.

- the demo delivery hours (gpux.dev.market, region `eu-west-demo`): the operator and the
  market maker each issue DEMO_GPU_HOURS of every open one on their node of its class and
  offer them all, the market maker DEMO_DISCOUNT_TICKS cheaper. A visitor buying a few at
  market therefore gets the market maker's, whose node is down for part of each measured
  hour (gpux.dev.nodes): the hour's report pays the visitor from the market maker's bond.
  The other bots trade the hourly books of `REGION` only.

Issue ids are `ACCOUNT.SYMBOL.NODE` (sdk.bots.operator_quoter.issue_id): a restart issues
nothing twice, the engine refusing the same id again with `duplicate_issue`. A bot's
failure is logged and does not stop the venue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import random
import time
from collections.abc import Iterable

from gpux.dev.market import (
    GPU_CLASSES,
    REGION,
    TICK_MICRO,
    ApiKeyRecord,
    fair_price_micro,
    is_demo,
)
from protocol import format_micro
from sdk.book import price_micro
from sdk.bots.market_maker import MarketMaker, MarketMakerConfig
from sdk.bots.operator_quoter import DUPLICATE_ISSUE, Capacity, GpuClass, OperatorQuoter, issue_id
from sdk.bots.strip_buyer import trade_strip
from sdk.client import Client, ClientError, Quote, consecutive_instruments
from sdk.signing import ApiKey
from wsapi.messages import Instrument

log = logging.getLogger("gpux.dev.bots")

MAKER_HOURS = 3  # nearest open delivery hours of each GPU class the market maker quotes
TAKER_HOURS = 2  # nearest open delivery hours of each GPU class the taker trades
LEAD_NS = 60 * 10**9  # leave an hour alone this close to its delivery (it closes then)
RESCAN_INTERVAL_S = 30.0
TAKER_INTERVAL_S = 2.0
OPERATOR_INTERVAL_S = 5.0
OPERATOR_GPUS = 8  # GPUs of each class the operator issues and offers per hour
MAKER_GPU_HOURS = 400  # GPU-hours of each hour it quotes the market maker issues and holds
TAKER_QUANTITY_MAX = 4
DRIFT_CHANCE = 0.2  # per refresh (a second) that the maker's fair price moves a tick
DRIFT_TICKS_MAX = 15  # how far it strays, about
TAKER_HOME = 20  # GPU-hours of an hour the taker holds at which it buys and sells alike
STRIP_EVERY_TAKES = 10  # one round in this many the taker buys a strip (every ~20 s),
STRIP_FIRST_TAKE = 2  # from this one on, so that a demo of a few seconds shows a strip
STRIP_HOURS_MAX = MAKER_HOURS  # a strip: 2 to this many hours from the nearest, all quoted
STRIP_QUANTITY_MAX = 2  # GPU-hours per hour
STRIP_SLIPPAGE_BPS = 50  # the limit: the quoted notional plus 0.5 %
DEMO_GPU_HOURS = 4  # what the operator and the market maker each issue of a demo hour
DEMO_DISCOUNT_TICKS = 5  # the market maker offers its demo GPU-hours this much cheaper
DEMO_INTERVAL_S = 2.0  # how often the demo sellers look for demo hours to issue and offer


def nearest_hours(instruments: Iterable[Instrument], count: int,
                  now_ns: int) -> dict[str, Instrument]:
    """Return the `count` nearest open delivery hours of each GPU class in REGION (not the
    demo hours), past the lead."""
    chosen: dict[str, Instrument] = {}
    for gpu in GPU_CLASSES:
        upcoming = sorted((i for i in instruments
                           if i.gpu == gpu and i.region == REGION and i.status == "open"
                           and i.delivery_start > now_ns + LEAD_NS),
                          key=lambda i: i.delivery_start)
        chosen.update((i.symbol, i) for i in upcoming[:count])
    return chosen


def node_name(owner: str, gpu: str) -> str:
    """Return the name of the demo node of `owner` with GPUs of class `gpu`: "op1-h100"."""
    return f"{owner}-{gpu.split('-')[0].lower()}"


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class ManyMarketsMaker(MarketMaker):
    """sdk's market maker, with client order ids unique to its instrument, so that one
    account can make several markets (the SDK bot's ids are the same on every instrument),
    and quotes sent again when what rests differs from the plan (the SDK bot sends only
    when its plan changes, so quotes taken by a fill stay gone until the skew moves). Its
    view of the fair price wanders a tick now and then around the configured reference, so
    the demo's prices move as a market's do."""

    def __init__(self, client: Client, config: MarketMakerConfig) -> None:
        super().__init__(client, config)
        self.prefix = "mm" + hashlib.sha256(config.instrument.encode()).hexdigest()[:10] + "-"
        self.rng = random.Random(config.instrument)
        self.drift_ticks = 0

    def _wander(self) -> int:
        """Move the fair price by a tick, sometimes, pulled back when it strays far."""
        if self.rng.random() < DRIFT_CHANCE:
            pull = -self.drift_ticks / DRIFT_TICKS_MAX / 2
            self.drift_ticks += 1 if self.rng.random() < 0.5 + pull else -1
        return self.drift_ticks

    async def refresh(self, reference_micro: int, tick_micro: int) -> None:
        """As MarketMaker.refresh, with the reference wandering."""
        wandered = max(tick_micro, reference_micro + self._wander() * tick_micro)
        await super().refresh(wandered, tick_micro)

    def plan(self, reference_micro: int, tick_micro: int, inventory: int) -> list[Quote]:
        return [dataclasses.replace(quote, client_order_id=self.prefix + quote.client_order_id)
                for quote in super().plan(reference_micro, tick_micro, inventory)]

    async def needs_sending(self, plan: list[Quote]) -> bool:
        return plan != self.last_plan or not await self._resting_as_planned(plan)

    async def _resting_as_planned(self, plan: list[Quote]) -> bool:
        resting = await self.client.open_orders(self.config.instrument)
        wanted = {(q.client_order_id, q.quantity, price_micro(q.price)) for q in plan}
        return wanted == {(o.client_order_id, o.remaining_quantity,
                           price_micro(o.price) if o.price is not None else 0)
                          for o in resting}


class DemoBots:
    """Run the market maker, the operator and the taker until `stop` is set."""

    def __init__(self, url: str, keys: dict[str, ApiKeyRecord]) -> None:
        self.url = url
        self.keys = keys
        self.taker_orders = 0
        self.taker_strips = 0  # strips sent (the engine's answer logged)

    def _client(self, account: str, cancel_on_disconnect: str = "off") -> Client:
        key = self.keys[account]
        return Client(self.url, credentials=ApiKey(key.key_id, key.private_key),
                      cancel_on_disconnect=cancel_on_disconnect)  # type: ignore[arg-type]

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(
            self._guarded("market maker", self._market_makers(stop)),
            self._guarded("operator", self._operator(stop)),
            self._guarded("taker", self._taker(stop)),
            self._guarded("demo seller operator-1", self._demo_seller(
                stop, "operator-1", "op1", 0)),
            self._guarded("demo seller mm-1", self._demo_seller(
                stop, "mm-1", "mm1", DEMO_DISCOUNT_TICKS)),
        )

    @staticmethod
    async def _guarded(name: str, bot: object) -> None:
        try:
            await bot  # type: ignore[misc]
        except (ClientError, OSError) as error:
            log.error("the %s bot stopped: %s", name, error)

    async def _market_makers(self, stop: asyncio.Event) -> None:
        async with self._client("mm-1", cancel_on_disconnect="session") as client:
            running: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = {}
            try:
                while not stop.is_set():
                    wanted = nearest_hours(await client.instruments(), MAKER_HOURS,
                                           time.time_ns())
                    for symbol in sorted(wanted.keys() - running.keys()):
                        await self._issue_for_maker(client, wanted[symbol])
                        running[symbol] = self._start_maker(client, wanted[symbol])
                    for symbol in list(running):
                        bot_stop, task = running[symbol]
                        if symbol not in wanted:
                            bot_stop.set()
                        if task.done():
                            del running[symbol]
                    await _pause(stop, RESCAN_INTERVAL_S)
            finally:
                for bot_stop, _ in running.values():
                    bot_stop.set()
                await asyncio.gather(*(task for _, task in running.values()),
                                     return_exceptions=True)

    @staticmethod
    async def _issue_for_maker(client: Client, instrument: Instrument) -> None:
        """Issue the market maker's GPU-hours of an hour it is about to quote; a refusal is
        logged, and the maker then bids only (its inventory is below home)."""
        if instrument.bond_per_gpu_hour is None:
            return  # listed before the venue's hours were deliverable
        node = node_name("mm1", instrument.gpu)
        result = await client.issue_capacity(instrument.symbol, node, MAKER_GPU_HOURS,
                                             issue_id("mm-1", instrument.symbol, node))
        if not result.accepted and result.reason != DUPLICATE_ISSUE:
            log.warning("the market maker's issue on %s was refused: %s", instrument.symbol,
                        result.reason)

    def _start_maker(self, client: Client, instrument: Instrument) -> tuple[asyncio.Event,
                                                                            asyncio.Task[None]]:
        # A fixed reference: quoting around the book's own mid would let the inventory skew
        # add up cycle after cycle and walk the price away.
        reference = fair_price_micro(instrument.gpu, instrument.delivery_start)
        config = MarketMakerConfig(instrument=instrument.symbol,
                                   reference_price=format_micro(reference),
                                   target_inventory=MAKER_GPU_HOURS)
        bot_stop = asyncio.Event()
        task = asyncio.create_task(ManyMarketsMaker(client, config).run(bot_stop),
                                   name=f"market-maker {instrument.symbol}")
        return bot_stop, task

    async def _operator(self, stop: asyncio.Event) -> None:
        capacity = Capacity(
            region=REGION, hours_ahead=24, lead_minutes=LEAD_NS // (60 * 10**9),
            classes={gpu: GpuClass(gpus=OPERATOR_GPUS, price=format_micro(price),
                                   node=node_name("op1", gpu))
                     for gpu, price in GPU_CLASSES.items()},
        )
        async with self._client("operator-1") as client:
            await OperatorQuoter(client, capacity).run(stop, OPERATOR_INTERVAL_S)

    async def _demo_seller(self, stop: asyncio.Event, account: str, owner: str,
                           discount_ticks: int) -> None:
        """Issue DEMO_GPU_HOURS of each open demo hour on `owner`'s node of its class, and
        keep what `account` holds of it offered at the class's reference price less
        `discount_ticks`, until `stop`."""
        issued: set[str] = set()  # demo hours issued (this run or, duplicate_issue, before)
        async with self._client(account, cancel_on_disconnect="session") as client:
            while not stop.is_set():
                now_ns = time.time_ns()
                open_demo = [i for i in await client.instruments()
                             if is_demo(i.region) and i.status == "open"
                             and i.bond_per_gpu_hour is not None and i.delivery_start > now_ns]
                for instrument in open_demo:
                    if instrument.symbol not in issued:
                        await self._issue_demo_hour(client, account, owner, instrument)
                        issued.add(instrument.symbol)
                    await self._offer_demo_hour(client, account, instrument, discount_ticks)
                issued &= {i.symbol for i in open_demo}  # bounded: the open demo hours
                await _pause(stop, DEMO_INTERVAL_S)

    @staticmethod
    async def _issue_demo_hour(client: Client, account: str, owner: str,
                               instrument: Instrument) -> None:
        """Issue DEMO_GPU_HOURS on `owner`'s node of the class, once (the id is stable: a
        restart's second issue is refused `duplicate_issue`); a refusal is logged."""
        node = node_name(owner, instrument.gpu)
        result = await client.issue_capacity(instrument.symbol, node, DEMO_GPU_HOURS,
                                             issue_id(account, instrument.symbol, node))
        if not result.accepted and result.reason != DUPLICATE_ISSUE:
            log.warning("%s's issue on demo hour %s was refused: %s", account,
                        instrument.symbol, result.reason)

    @staticmethod
    async def _offer_demo_hour(client: Client, account: str, instrument: Instrument,
                               discount_ticks: int) -> None:
        """Keep one ask of what the account holds of the demo hour (at most DEMO_GPU_HOURS)
        at the class's reference price less `discount_ticks`; quote only on a change."""
        balance = (await client.balances()).get(instrument.symbol)
        held = int(balance.available) + int(balance.held) if balance is not None else 0
        price = max(TICK_MICRO, GPU_CLASSES[instrument.gpu] - discount_ticks * TICK_MICRO)
        order_id = "demo-" + hashlib.sha256(f"{account}/{instrument.symbol}".encode()
                                            ).hexdigest()[:16]
        plan = ([Quote(order_id, "sell", format_micro(price), min(held, DEMO_GPU_HOURS))]
                if held > 0 else [])
        resting = await client.open_orders(instrument.symbol)
        if {(q.client_order_id, q.quantity) for q in plan} != {
                (o.client_order_id, o.remaining_quantity) for o in resting}:
            await client.mass_quote(instrument.symbol, plan)

    async def _taker(self, stop: asyncio.Event) -> None:
        rng = random.Random()
        async with self._client("taker-1") as client:
            instruments: list[Instrument] = []
            symbols: list[str] = []
            scanned_s = 0.0
            for round_number in itertools.count(1):
                await _pause(stop, rng.uniform(0.5, 1.5) * TAKER_INTERVAL_S)
                if stop.is_set():
                    return
                if time.monotonic() - scanned_s > RESCAN_INTERVAL_S:
                    instruments = await client.instruments()
                    symbols = sorted(nearest_hours(instruments, TAKER_HOURS, time.time_ns()))
                    scanned_s = time.monotonic()
                if round_number % STRIP_EVERY_TAKES == STRIP_FIRST_TAKE:
                    await self._buy_strip(client, rng, instruments)
                elif symbols:
                    await self._take(client, rng, rng.choice(symbols))

    async def _take(self, client: Client, rng: random.Random, symbol: str) -> None:
        """Buy or sell a few GPU-hours at market: sell only what it holds, and the more it
        holds the likelier, so the maker's inventory (and with it the price) stays near home."""
        try:
            balance = (await client.balances()).get(symbol)
            holding = int(balance.available) if balance is not None else 0
            quantity = rng.randint(1, TAKER_QUANTITY_MAX)
            selling = holding >= quantity and rng.random() < holding / (holding + TAKER_HOME)
            await client.new_order(symbol, "sell" if selling else "buy", quantity)
            self.taker_orders += 1
        except ClientError as error:
            log.info("taker order on %s failed: %s", symbol, error)

    async def _buy_strip(self, client: Client, rng: random.Random,
                         instruments: list[Instrument]) -> None:
        """Buy a strip of 2 to STRIP_HOURS_MAX consecutive hours of a class from its nearest
        open hour, at the quoted notional plus the slippage; log what became of it."""
        gpu = rng.choice(sorted(GPU_CLASSES))
        nearest = nearest_hours(instruments, 1, time.time_ns())
        first = next((i for i in nearest.values() if i.gpu == gpu), None)
        if first is None:
            return
        hours = rng.randint(2, STRIP_HOURS_MAX)
        quantity = rng.randint(1, STRIP_QUANTITY_MAX)
        try:
            legs = consecutive_instruments(instruments, gpu, REGION, first.delivery_start, hours)
            outcome = await trade_strip(client, legs, "buy", quantity, STRIP_SLIPPAGE_BPS)
        except (ValueError, ClientError) as error:
            log.info("taker strip of %d %s hours failed: %s", hours, gpu, error)
            return
        result = outcome.result
        if result is None:
            log.info("taker strip of %d hours x %d GPU-h of %s from %s not sent: the quote "
                     "says %s", hours, quantity, gpu, legs[0], outcome.reason)
            return
        self.taker_strips += 1
        if result.accepted:
            log.info("taker bought strip %s: %d hours x %d GPU-h of %s from %s, notional %s "
                     "USDC (limit %s), fees %s", result.strip_id, hours, quantity, gpu, legs[0],
                     result.notional, outcome.limit_total, result.fees)
        else:
            log.info("taker strip of %d hours x %d GPU-h of %s from %s refused by the engine: "
                     "%s", hours, quantity, gpu, legs[0], result.reason)
