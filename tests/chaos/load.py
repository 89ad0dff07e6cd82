"""The steady load of the fault suite, and what each part of it was told.

- `Trader`: one wallet account logged in through the gateway with the SDK (EIP-712 login),
  placing passive and aggressive limit orders, market orders, amends and cancels around a
  fixed mid (the mix of `matching_engine.workload`) in the instruments not closed yet (a
  list the suite keeps up to date). Every new order has a client order id of its own, and
  its outcome is kept: accepted (with the engine's order id), rejected (with the reason),
  or unknown (no answer: the connection, the gateway or the engine was down). Each
  trader subscribes to its account's balances, orders and fills (the first session of
  each wallet to the books of the suite's fixed instruments too) and now and then asks
  for its balances; what it receives that carries an event seq is recorded
  (`tests.chaos.feeds`) for the audit to check against the committed log.
- `Operator`: the issuer, with an operator API key: sells the tokens it issued on the
  deliverable instruments not closed yet (asks around the mid, some crossing the bids);
  subscribes to its deliveries feed too and now and then asks for its deliveries.
- `Reporter`: the delivery service, with a delivery API key: reports each assignment it is
  given (delivered_ppm 0, 1,000,000 and between), sending again until the engine answers;
  an `already_reported` after a resend means an earlier send was applied.
- `Depositor`: deposits USDC and GPU-hour tokens on chain through the Vault, so the deposit
  watcher credits them; one deposit (mint/register, approve, deposit) at a time under
  `lock`, which the chain fault holds so that no deposit is ever half made.
- `Withdrawer`: writes `withdraw` commands straight onto the commands topic (the gateway
  has no withdrawal request): random ones of the trading wallets, and first any the suite
  queued (the operator's issued tokens); each is sent, or unknown when the broker did not
  confirm it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.logs import DISCARD

from eventlog.errors import LogError
from eventlog.port import EventLog, Producer
from protocol import DeliveryAssigned, Withdraw, encode
from sdk.client import ApiKey, Client, ClientError, RequestFailed, Wallet
from sdk.requests import FeedKey
from sdk.signing import Credentials
from settlement.chain import Contracts
from settlement.dev import deposit_tokens, deposit_usdc
from settlement.errors import SettlementError
from tests.chaos.feeds import ClientRecording
from wsapi.messages import OrderResult
from wsapi.requests import Channel, Side, TimeInForce

log = logging.getLogger("gpux.chaos")

TICK_MICRO = 10_000  # 0.01 USDC
MID_TICKS = 200  # 2.00 USDC per GPU-hour
OPEN_ORDERS_MAX = 12
CONNECT_ATTEMPTS_MAX = 20
REQUEST_TIMEOUT_S = 20.0
SEND_TIMEOUT_S = 10.0
USDC_DEPOSIT_MICRO = 50 * 10**6
TOKEN_DEPOSIT = 20
OPERATOR_OPEN_ORDERS_MAX = 8
SIDES: tuple[Side, ...] = ("buy", "sell")
SUBSCRIBE_ATTEMPTS_MAX = 20
POSITION_REQUEST_SHARE = 0.02  # of a trader's steps: a `balances` (or `deliveries`) request
# The account's feeds each trader reads, balances first: its snapshot's seq is a position
# the others' subscriptions are checked up to.
PRIVATE_FEEDS: tuple[Channel, ...] = ("balances", "orders", "fills")
# Shares delivered the reporter draws from: none, all, and between (1 and 999,999 at the
# edges of the rounding of the compensation).
DELIVERED_PPM = (0, 1_000_000, 500_000, 1, 999_999, 250_000, 875_000)


def price_text(ticks: int) -> str:
    micro = ticks * TICK_MICRO
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Pace the load: return after `seconds`, or at once when `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


@dataclass
class OrderRecord:
    """One new order a trader sent, and what it was told."""

    account: str
    client_order_id: str
    instrument: str
    side: str
    status: str  # "accepted", "rejected" or "unknown"
    order_id: str | None = None
    reason: str | None = None


@dataclass
class LoadStats:
    """Counts the fault phases wait on and the report prints."""

    requests: int = 0
    answered: int = 0  # the engine answered (accepted or rejected)
    unanswered: int = 0
    unanswered_by_cause: Counter[str] = field(default_factory=Counter)
    orders: list[OrderRecord] = field(default_factory=list)
    reconnects: int = 0
    subscribe_failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # of answered requests

    def latency_summary(self) -> dict[str, float]:
        """Return p50, p99 and max of the answered requests' round trips, in ms."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return {}
        def at(fraction: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)
        return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1], 1)}


async def connect(client: Client, who: str) -> None:
    """Connect and log in, trying again a few times while the gateway does not answer."""
    for attempt in range(CONNECT_ATTEMPTS_MAX):
        try:
            await client.connect()
            return
        except (ClientError, OSError, TimeoutError) as error:
            if attempt + 1 == CONNECT_ATTEMPTS_MAX:
                raise
            log.info("%s: connect failed (%s); again", who, error)
            await asyncio.sleep(0.2)


class Trader:
    """Trade as one account, in one session of its own, through the gateway."""

    def __init__(self, credentials: Credentials, account: str, session: int, url: str,
                 symbols: list[str], seed: int, interval_s: float, stats: LoadStats,
                 recording: ClientRecording | None = None, books: Sequence[str] = ()) -> None:
        self.credentials = credentials
        self.account = account
        self.url = url
        self.symbols = symbols  # the suite's list, not a copy: it changes as instruments close
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.stats = stats
        self.open: deque[str] = deque()
        self.count = 0
        self.prefix = f"k{self.account[2:8]}s{session}"  # sessions never share an id
        self.recording = recording
        self.books = list(books)

    @classmethod
    def of_wallet(cls, wallet: LocalAccount, session: int, url: str, symbols: list[str],
                  seed: int, interval_s: float, stats: LoadStats,
                  recording: ClientRecording | None = None, books: Sequence[str] = ()
                  ) -> Trader:
        """A trader logged in with its wallet's EIP-712 signature."""
        return cls(Wallet("0x" + bytes(wallet.key).hex()), wallet.address, session, url,
                   symbols, seed, interval_s, stats, recording, books)

    def feeds(self) -> list[tuple[Channel, FeedKey]]:
        """The feeds this trader reads (the SDK subscribes to them again on a reconnect)."""
        return [*((channel, None) for channel in PRIVATE_FEEDS),
                *(("book", symbol) for symbol in self.books)]

    async def run(self, stop: asyncio.Event) -> None:
        client = Client(self.url, credentials=self.credentials,
                        reconnect_attempts_max=1_000_000, reconnect_backoff_max_s=0.5,
                        request_timeout_s=REQUEST_TIMEOUT_S,
                        on_frame=self.recording.hook if self.recording else None,
                        subscription_queue_max=1)  # the recording is read, not the queues
        await connect(client, self.account)
        try:
            if self.recording is not None:
                for channel, key in self.feeds():
                    await self._subscribe(client, channel, key)
            while not stop.is_set():
                if self.symbols:
                    await self._step(client)
                await pause(stop, self.interval_s)
        finally:
            self.stats.reconnects += client.reconnects
            await client.close()

    async def _subscribe(self, client: Client, channel: Channel, key: FeedKey) -> None:
        """Subscribe, trying again while refused for a while or not answered."""
        for _ in range(SUBSCRIBE_ATTEMPTS_MAX):
            try:
                await client.subscribe(channel, key)
                return
            except RequestFailed as error:
                if not error.retriable:
                    raise
                await asyncio.sleep((error.retry_after_ms or 100) / 1000)
            except (ClientError, OSError, TimeoutError):
                await asyncio.sleep(0.2)
        self.stats.subscribe_failures += 1

    async def _position_request(self, client: Client) -> Any:
        """A request whose reply is a state of the log at a seq."""
        return await client.balances()

    async def _step(self, client: Client) -> None:
        self.stats.requests += 1
        try:
            await self._act(client)
        except RequestFailed as error:
            self._unanswered(f"refused:{error.code}")
        except (ClientError, OSError, TimeoutError) as error:
            self._unanswered(type(error).__name__)

    def _unanswered(self, cause: str) -> None:
        self.stats.unanswered += 1
        self.stats.unanswered_by_cause[cause] += 1

    async def _act(self, client: Client) -> None:
        rng = self.rng
        if self.recording is not None and rng.random() < POSITION_REQUEST_SHARE:
            await self._position_request(client)
            return
        roll = rng.random()
        if self.open and (len(self.open) > OPEN_ORDERS_MAX or roll < 0.15):
            await self._answered(client.cancel_order(self.open.popleft()))
        elif self.open and roll < 0.25:
            client_order_id = self.open[rng.randrange(len(self.open))]
            if rng.random() < 0.5:
                amend = client.amend_order(client_order_id, new_quantity=rng.randint(1, 6))
            else:
                amend = client.amend_order(client_order_id,
                                           new_price=price_text(MID_TICKS + rng.randint(-4, 4)))
            await self._answered(amend)
        elif roll < 0.30:
            await self._new_order(client, rng.choice(SIDES), None, None, False)
        else:
            side = rng.choice(SIDES)
            aggressive = rng.random() < 0.4
            offset = rng.randint(1, 3) if aggressive else -rng.randint(0, 4)
            ticks = MID_TICKS + offset if side == "buy" else MID_TICKS - offset
            time_in_force: TimeInForce | None = (
                "ioc" if aggressive and rng.random() < 0.25 else None)
            post_only = not aggressive and rng.random() < 0.2  # at the mid, some cross
            await self._new_order(client, side, price_text(ticks), time_in_force, post_only)

    async def _answered(self, request: Awaitable[OrderResult]) -> OrderResult:
        started = time.perf_counter()
        result = await request
        self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.stats.answered += 1
        return result

    async def _new_order(self, client: Client, side: Side, price: str | None,
                         time_in_force: TimeInForce | None, post_only: bool) -> None:
        self.count += 1
        client_order_id = f"{self.prefix}-{self.count}"
        symbol = self.rng.choice(self.symbols)
        record = OrderRecord(self.account, client_order_id, symbol, side, "unknown")
        self.stats.orders.append(record)
        quantity = self.rng.randint(1, 3) if price is None else self.rng.randint(1, 5)
        result = await self._answered(client.new_order(
            symbol, side, quantity, price,
            client_order_id=client_order_id, time_in_force=time_in_force, post_only=post_only))
        record.status = result.status
        record.order_id = result.order_id
        record.reason = result.reason
        if result.accepted and price is not None and time_in_force is None:
            self.open.append(client_order_id)


class Operator(Trader):
    """Sell issued tokens as the operator: asks around the mid in the deliverable
    instruments not closed yet (`symbols`), the oldest canceled now and then. An ask the
    operator has no tokens left for is rejected, which is an answer like any other."""

    def feeds(self) -> list[tuple[Channel, FeedKey]]:
        return [*super().feeds(), ("deliveries", None)]

    async def _position_request(self, client: Client) -> Any:
        if self.rng.random() < 0.5:
            return await client.deliveries()
        return await client.balances()

    async def _act(self, client: Client) -> None:
        rng = self.rng
        if self.recording is not None and rng.random() < POSITION_REQUEST_SHARE:
            await self._position_request(client)
            return
        if self.open and (len(self.open) > OPERATOR_OPEN_ORDERS_MAX or rng.random() < 0.1):
            await self._answered(client.cancel_order(self.open.popleft()))
        else:
            ticks = MID_TICKS + rng.randint(-2, 2)
            await self._new_order(client, "sell", price_text(ticks), None, False)


@dataclass
class Report:
    """One assignment, what the delivery service reports for it, and what it was told:
    `outcome` is "accepted", "already_reported" (an earlier send was applied) or the
    reason of another rejection; None while unanswered."""

    instrument: str
    issue_id: str
    holder: str
    quantity: int
    delivered_ppm: int
    evidence: str | None
    outcome: str | None = None
    compensation: str | None = None
    sends: int = 0


class Reporter:
    """Report assignments as the delivery service, in one session, one at a time; a send
    with no answer within `timeout_s` (the engine down, the connection lost) is sent again."""

    def __init__(self, url: str, key: ApiKey, seed: int, interval_s: float,
                 timeout_s: float) -> None:
        self.url = url
        self.key = key
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.reports: dict[tuple[str, str], Report] = {}
        self.waiting: deque[Report] = deque()
        self.unanswered_by_cause: Counter[str] = Counter()

    def add(self, assignments: Sequence[DeliveryAssigned]) -> None:
        """Queue a report of each assignment not queued before: delivered_ppm goes round
        DELIVERED_PPM, so the first few reports take every value; the evidence is left
        out, empty or a root in turn."""
        for assignment in assignments:
            key = (assignment.issue_id, assignment.holder)
            if key in self.reports:
                continue
            index = len(self.reports)
            evidence = (None, "", f"{self.rng.getrandbits(256):064x}")[index % 3]
            report = Report(assignment.instrument, assignment.issue_id, assignment.holder,
                            assignment.quantity, DELIVERED_PPM[index % len(DELIVERED_PPM)],
                            evidence)
            self.reports[key] = report
            self.waiting.append(report)

    def answered(self, instruments: Sequence[str]) -> tuple[int, int]:
        """Return (answered, queued) reports of the assignments of `instruments`."""
        mine = [r for r in self.reports.values() if r.instrument in instruments]
        return sum(r.outcome is not None for r in mine), len(mine)

    async def run(self, stop: asyncio.Event) -> None:
        client = Client(self.url, credentials=self.key, reconnect_attempts_max=1_000_000,
                        reconnect_backoff_max_s=0.5, request_timeout_s=REQUEST_TIMEOUT_S)
        await connect(client, "reporter")
        try:
            while not stop.is_set():
                if self.waiting:
                    await self._send(client, self.waiting[0])
                await pause(stop, self.interval_s)
        finally:
            await client.close()

    async def _send(self, client: Client, report: Report) -> None:
        report.sends += 1
        try:
            result = await asyncio.wait_for(client.delivery_report(
                report.issue_id, report.holder, report.delivered_ppm, report.evidence),
                self.timeout_s)
        except RequestFailed as error:
            self.unanswered_by_cause[f"refused:{error.code}"] += 1
            return
        except (ClientError, OSError, TimeoutError) as error:
            self.unanswered_by_cause[type(error).__name__] += 1
            return
        report.outcome = "accepted" if result.accepted else result.reason or result.status
        report.compensation = result.compensation
        self.waiting.popleft()


@dataclass(frozen=True)
class ChainDeposit:
    """A deposit the Vault took: the watcher must turn it into exactly one `deposited`."""

    address: str
    asset: str
    amount: int
    deposit_id: str


class Depositor:
    """Deposit through the Vault from the trading wallets, one deposit at a time."""

    def __init__(self, contracts: Contracts, minter: LocalAccount,
                 wallets: Sequence[LocalAccount], symbols: Sequence[str], seed: int) -> None:
        self.contracts = contracts
        self.minter = minter
        self.wallets = list(wallets)
        self.symbols = list(symbols)
        self.rng = random.Random(seed)
        self.lock = asyncio.Lock()
        self.deposits: list[ChainDeposit] = []
        self.failures: list[str] = []

    def _deposit_id(self, receipt: object) -> str:
        (entry,) = self.contracts.vault.events.Deposited().process_receipt(receipt, errors=DISCARD)
        return f"0x{bytes(entry['transactionHash']).hex()}:{entry['logIndex']}"

    def deposit(self, wallet: LocalAccount, asset: str, amount: int) -> ChainDeposit:
        """Make one deposit (blocking: web3); record it once the Vault has taken it."""
        if asset == "USDC":
            receipt = deposit_usdc(self.contracts, wallet, amount)
        else:
            receipt = deposit_tokens(self.contracts, self.minter, wallet, asset, amount)
        made = ChainDeposit(wallet.address, asset, amount, self._deposit_id(receipt))
        self.deposits.append(made)
        return made

    async def fund(self, usdc_micro: int, tokens: int) -> None:
        """Fund every wallet with USDC and every instrument's tokens before the load."""
        async with self.lock:
            for wallet in self.wallets:
                await asyncio.to_thread(self.deposit, wallet, "USDC", usdc_micro)
                for symbol in self.symbols:
                    await asyncio.to_thread(self.deposit, wallet, symbol, tokens)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        while not stop.is_set():
            wallet = self.rng.choice(self.wallets)
            asset = self.rng.choice(["USDC", *self.symbols])
            amount = USDC_DEPOSIT_MICRO if asset == "USDC" else TOKEN_DEPOSIT
            async with self.lock:
                try:
                    await asyncio.to_thread(self.deposit, wallet, asset, amount)
                except SettlementError as error:
                    self.failures.append(f"{wallet.address} {asset}: {error}")
            await pause(stop, interval_s)


class Withdrawer:
    """Write `withdraw` commands onto the commands topic: the queued ones first, else a
    random one of the trading wallets."""

    def __init__(self, event_log: EventLog, topic: str, accounts: Sequence[str],
                 symbols: Sequence[str], seed: int) -> None:
        self.log = event_log
        self.topic = topic
        self.accounts = list(accounts)
        self.symbols = list(symbols)
        self.rng = random.Random(seed)
        self.sent: list[Withdraw] = []
        self.unconfirmed: list[Withdraw] = []
        self.queued: deque[Withdraw] = deque()  # sent before the next random one

    def _next(self) -> Withdraw:
        if self.queued:
            return self.queued.popleft()
        account = self.rng.choice(self.accounts)
        if self.rng.random() < 0.6:
            return Withdraw(ts=time.time_ns(), account=account, asset="USDC", amount="1.5")
        return Withdraw(ts=time.time_ns(), account=account, asset=self.rng.choice(self.symbols),
                        amount=self.rng.randint(1, 2))

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        producer: Producer | None = None
        try:
            while not stop.is_set():
                if producer is None:
                    producer = await self._producer()
                if producer is not None:
                    command = self._next()
                    try:
                        await asyncio.wait_for(producer.send(self.topic, encode(command)),
                                               SEND_TIMEOUT_S)
                        self.sent.append(command)
                    except (LogError, OSError, TimeoutError) as error:
                        log.info("withdrawer: %s; starting a new producer", error)
                        self.unconfirmed.append(command)
                        await _stop_quietly(producer)
                        producer = None
                await pause(stop, interval_s)
        finally:
            if producer is not None:
                await _stop_quietly(producer)

    async def _producer(self) -> Producer | None:
        producer = self.log.producer()
        try:
            await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
        except (LogError, OSError, TimeoutError) as error:
            log.info("withdrawer: no producer yet (%s)", error)
            await _stop_quietly(producer)
            return None
        return producer


async def _stop_quietly(producer: Producer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), SEND_TIMEOUT_S)
    except (LogError, OSError, TimeoutError) as error:
        log.info("withdrawer: stopping a producer failed: %s", error)
