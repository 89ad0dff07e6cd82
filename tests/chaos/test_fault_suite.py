"""The fault suite: the whole venue on real services under a steady load, each part killed.

The venue runs on a broker, a PostgreSQL cluster and an anvil node of its own (the session's
shared ones are never touched), on a fresh topic namespace: the engine, the ledger
projector, settlement (submitter and deposit watcher) and the gateway, each a `python -m
gpux` subprocess. The load goes through the gateway with the SDK: wallet accounts log in
with EIP-712 signatures and trade; they were funded by deposits made on chain through the
Vault, which the deposit watcher credited, and more deposits keep coming; withdrawals go
straight onto the commands topic (the gateway has no withdrawal request).

Under that load each part is SIGKILLed and restarted in turn: engine, ledger projector,
settlement, gateway, then the Kafka broker, PostgreSQL, and the chain node (restarted with
its chain; its mempool is lost). After each fault the suite waits (bounded) until the venue
works end to end again: orders answered, the ledger caught up, new trades settled on
chain, a new deposit credited. Last, the engine is SIGKILLed again and again at random
points (3 times at CI size, 20 at full size) and restarted at once: the gateway answers
orders from events the engine has not committed yet (docs/exactly-once.md), so a kill can
abort events clients were told about, which the restarted engine must write again. Two
things an operator would do are done and reported rather than hidden: a service that dies
by itself is restarted by a watchdog (compose's `restart: unless-stopped`), and a broker
that comes back from its SIGKILL wedged is restarted once more (see
`rescued_after_broker_fault`). With GPUX_CHAOS_STRICT=1 either fails the test.

Each round ends with Delivery (PROTOCOL.md v2) under faults: deliverable instruments
(with a bond per GPU-hour, some of 0) are listed to close a few seconds later (the engine's
time is the gateway's command `ts`, the wall clock); the operator, a wallet account with an
operator API key funded by a Vault deposit, issues bonded capacity on them through the
gateway, withdraws a few tokens and sells the rest to the traders, who trade them until the
close. The delivery service (a delivery-role API key) then reports every assignment the
event log holds (`delivery_assigned`), delivered_ppm 0, 1,000,000 and between, sending each
again until answered (`already_reported` after a resend means an earlier send counted).
Around each close the engine, the ledger projector and settlement (the submitter) are
SIGKILLed in rotation: one just before the close, one just after it, one while its reports
are being sent, so at CI size's 3 closes each of the nine (part, moment) pairs happens once.

Then the load stops, everything drains, and `tests/chaos/audit.py` checks the logs, the
three-way reconciliation (engine replay == ledger == Vault), settlement exactly once, every
deposit credited once, every acknowledged order accounted for, and every bond released or
paid out exactly once and in full, in the events, the ledger and the Vault. The clients
record every frame they receive that carries an event seq (`tests/chaos/feeds.py`), and
`tests/chaos/feed_audit.py` checks each against the final committed log at its seq, and
that no subscription skipped or repeated a seq, the resync after a reconnect included.

    python -m pytest tests/chaos                                  # CI size: about 90 s
    GPUX_CHAOS_SIZE=full python -m pytest tests/chaos -s          # full size: about 15 minutes

The full-size result goes in benchmarks/README.md. Each service's log, the broker's, the
database's and the node's are under the test's tmp dir (kept when it fails, with
`result.json`); on a failure their tails are printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import pytest

from harness.errors import ServiceError
from harness.service import Service, remove_run_dir
from protocol import Withdraw
from sdk.client import Client, ClientError, RequestFailed
from tests.chaos.audit import audit_venue
from tests.chaos.feeds import FeedRecorder
from tests.chaos.load import Depositor, LoadStats, Operator, Reporter, Trader, Withdrawer
from tests.chaos.processes import GpuxProcess, Watchdog, log_tails
from tests.chaos.venue import Infrastructure, Venue, build_venue
from tests.helpers import eventually
from wsapi.messages import OrderResult


@dataclass(frozen=True)
class ChaosSize:
    """How big a run is: the venue, the load, the faults and their bounds."""

    name: str
    wallets: int
    sessions_per_wallet: int  # gateway sessions (SDK clients) trading for each wallet
    # of them, those that read their account's feeds and record what they receive
    # (tests/chaos/feeds.py): at full size all three sent 3 million frames and more
    recorded_sessions_per_wallet: int
    instruments: int
    rounds: int  # times the whole sequence of faults is run
    trader_interval_s: float  # pause between one trader's requests
    deposit_interval_s: float
    withdraw_interval_s: float
    answers_per_phase: int  # engine answers the load must get after each fault
    fault_duration_s: float  # how long a killed part stays down
    snapshot_every_commands: int
    recovery_timeout_s: float
    broker_wedge_timeout_s: float  # after this, a broker that came back wedged is restarted
    engine_kills: int  # SIGKILLs of the engine at random points, restarted at once
    closes: int  # closes of deliverable instruments per round, each with its three kills
    deliverable_per_close: int  # instruments closing at once
    issues: tuple[int, ...]  # the GPU-hours of the operator's issues on each of them
    delivery_lead_s: float  # from listing to close: issuing and trading
    report_interval_s: float  # pause between the delivery service's reports
    report_timeout_s: float  # a report unanswered this long is sent again
    timeout_s: int  # the whole test


SIZES = {
    "ci": ChaosSize("ci", wallets=4, sessions_per_wallet=2, recorded_sessions_per_wallet=2,
                    instruments=2, rounds=1,
                    trader_interval_s=0.05, deposit_interval_s=0.5, withdraw_interval_s=0.5,
                    answers_per_phase=150, fault_duration_s=1.0, snapshot_every_commands=60,
                    recovery_timeout_s=120.0, broker_wedge_timeout_s=60.0, engine_kills=3,
                    closes=3, deliverable_per_close=2, issues=(12, 6), delivery_lead_s=8.0,
                    report_interval_s=0.05, report_timeout_s=1.0, timeout_s=600),
    "full": ChaosSize("full", wallets=12, sessions_per_wallet=3, recorded_sessions_per_wallet=1,
                      instruments=4, rounds=3,
                      trader_interval_s=0.02, deposit_interval_s=0.3, withdraw_interval_s=0.2,
                      answers_per_phase=2000, fault_duration_s=3.0,
                      snapshot_every_commands=1000, recovery_timeout_s=240.0,
                      broker_wedge_timeout_s=90.0, engine_kills=20, closes=3,
                      deliverable_per_close=3, issues=(40, 25, 10), delivery_lead_s=12.0,
                      report_interval_s=0.02, report_timeout_s=2.0, timeout_s=3600),
}
SIZE_NAME = os.environ.get("GPUX_CHAOS_SIZE", "").strip() or "ci"
if SIZE_NAME not in SIZES:
    raise ValueError(f"GPUX_CHAOS_SIZE must be one of {sorted(SIZES)}, not {SIZE_NAME!r}")
SIZE = SIZES[SIZE_NAME]
STRICT = os.environ.get("GPUX_CHAOS_STRICT", "").strip() in ("1", "true", "yes")
FAULTS = ("engine", "ledger", "settlement", "gateway", "kafka", "postgres", "chain")
# Killed around each close: before it, after it, while its reports are sent, in rotation
# (in the reverse order every other round, so that each part follows each other one).
DELIVERY_FAULTS = ("engine", "ledger", "settlement")
BONDS = ("3", "0", "2.5")  # USDC per GPU-hour of the deliverable instruments, in turn
TOKENS_WITHDRAWN = 2  # of each deliverable instrument, by the operator before its close
ISSUE_SENDS_MAX = 10
ADMISSION_TIMEOUT_S = 60.0
OPERATOR_INTERVAL_S = 0.1  # within the operator role's 20 requests a second
USDC_FUNDING_MICRO = 1_000_000 * 10**6
TOKEN_FUNDING = 100_000
DAY_NS = 86_400 * 10**9
SETUP_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 300.0

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.chain,
              pytest.mark.timeout(SIZE.timeout_s)]


@dataclass
class Run:
    """The venue, its load and what happened, for one test run."""

    venue: Venue
    size: ChaosSize
    stats: LoadStats
    depositor: Depositor
    withdrawer: Withdrawer
    reporter: Reporter
    phase: str = "setup"
    watchdog: Watchdog | None = None
    started_s: float = 0.0
    recorder: FeedRecorder = field(default_factory=FeedRecorder)

    def __post_init__(self) -> None:
        self.started_s = time.monotonic()
        self.timeline: list[dict[str, object]] = []
        self.broker_rescues: list[str] = []
        self.offered: list[str] = []  # deliverable instruments the operator sells, not closed
        self.delivery_kills: list[dict[str, object]] = []
        self.rng = random.Random(17)

    def note(self, what: str, **facts: object) -> None:
        entry = {"at_s": round(time.monotonic() - self.started_s, 1), "what": what, **facts}
        self.timeline.append(entry)
        print(json.dumps(entry), flush=True)


async def list_instruments(venue: Venue, count: int) -> list[str]:
    """List the instruments through the gateway as the admin; return their symbols."""
    run = uuid.uuid4().hex[:6]
    symbols = [f"H100.chaos{run}.{index}" for index in range(count)]
    async with Client(venue.gateway_url, credentials=venue.admin_key) as admin:
        for symbol in symbols:
            result = await admin.list_instrument(
                symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                delivery_start=time.time_ns() + 7 * DAY_NS, delivery_hours=1,
                tick_size="0.01", max_order_quantity=1000, maker_fee_bps=10, taker_fee_bps=20)
            assert result.status == "accepted", result
    return symbols


async def list_deliverable(run: Run, count: int, delivery_start: int) -> list[str]:
    """List `count` deliverable instruments closing at `delivery_start`, each with the next
    bond of BONDS; return their symbols."""
    venue = run.venue
    first = len(venue.deliverable)
    symbols = [f"H100.chaos{uuid.uuid4().hex[:6]}.d{first + index}" for index in range(count)]
    async with Client(venue.gateway_url, credentials=venue.admin_key) as admin:
        for index, symbol in enumerate(symbols):
            result = await admitted(partial(
                admin.list_instrument, symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                delivery_start=delivery_start, delivery_hours=1, tick_size="0.01",
                max_order_quantity=1000, maker_fee_bps=10, taker_fee_bps=20,
                bond_per_gpu_hour=BONDS[(first + index) % len(BONDS)]))
            assert result.status == "accepted", result
    venue.deliverable += symbols
    return symbols


async def issue_capacity(run: Run, symbols: list[str]) -> None:
    """Issue the size's GPU-hours on each instrument as the operator, one node per issue,
    each issue sent again under its own id until answered (`duplicate_issue` then means an
    earlier send was accepted); then queue the operator's withdrawal of a few tokens."""
    venue = run.venue
    async with Client(venue.gateway_url, credentials=venue.operator_key) as operator:
        for symbol in symbols:
            for node, quantity in enumerate(run.size.issues):
                await issued(operator, symbol, f"n{node}", quantity)
            run.withdrawer.queued.append(Withdraw(
                ts=time.time_ns(), account=venue.operator.address, asset=symbol,
                amount=TOKENS_WITHDRAWN))


async def issued(operator: Client, symbol: str, node: str, quantity: int) -> None:
    issue_id = f"{symbol}:{node}"
    for _ in range(ISSUE_SENDS_MAX):
        try:
            result = await admitted(partial(operator.issue_capacity, symbol, node, quantity,
                                            issue_id=issue_id))
        except ClientError:  # no answer: it may have been applied, so the same id again
            await asyncio.sleep(0.5)
            continue
        assert result.accepted or result.reason == "duplicate_issue", result
        return
    raise AssertionError(f"issue {issue_id} unanswered after {ISSUE_SENDS_MAX} sends")


async def admitted(request: Callable[[], Awaitable[OrderResult]]) -> OrderResult:
    """Send a request again while the gateway turns it away before the engine sees it (a
    rate limit, a full queue): at full size the load uses up the gateway's budget for
    127.0.0.1, which every client of the suite shares."""
    deadline_s = time.monotonic() + ADMISSION_TIMEOUT_S
    while True:
        try:
            return await request()
        except RequestFailed as error:
            if not error.retriable or time.monotonic() > deadline_s:
                raise
            await asyncio.sleep((error.retry_after_ms or 100) / 1000)


async def works_end_to_end(run: Run, timeout_s: float) -> None:
    """Wait until the venue works again: orders answered, the ledger caught up with them,
    their trades settled on chain, and a deposit made from now on credited."""
    venue, stats, depositor = run.venue, run.stats, run.depositor
    assert venue.tail is not None
    tail = venue.tail
    deposits_before = len(depositor.deposits)
    answered = stats.answered + run.size.answers_per_phase
    await eventually(lambda: stats.answered >= answered, timeout_s=timeout_s, interval_s=0.1,
                     message=f"{run.phase}: {run.size.answers_per_phase} more orders answered")
    seq = tail.seq

    async def ledger_caught_up() -> bool:
        return await venue.ledger_seq() >= seq

    await eventually(ledger_caught_up, timeout_s=timeout_s, interval_s=0.2,
                     message=f"{run.phase}: the ledger reached seq {seq}")
    entry_seq = await venue.last_settleable_seq()

    async def settled() -> bool:
        return await venue.settled_through() >= entry_seq

    await eventually(settled, timeout_s=timeout_s, interval_s=0.2,
                     message=f"{run.phase}: trades and delivery entries through seq "
                             f"{entry_seq} settled")

    def deposit_credited() -> bool:
        return any(deposit.deposit_id in tail.deposit_ids
                   for deposit in depositor.deposits[deposits_before:])

    await eventually(deposit_credited, timeout_s=timeout_s, interval_s=0.2,
                     message=f"{run.phase}: a new deposit credited")


async def rescued_after_broker_fault(run: Run, timeout_s: float) -> None:
    """Wait for the venue after the broker's SIGKILL; restart a wedged broker once more.

    Kafka 4.1.1 in KRaft combined mode sometimes comes back from a SIGKILL with the group
    coordinator of one `__consumer_offsets` partition failed (a stale load finishing after
    the partition's leadership bounced as the old broker session was fenced): the engine's
    transaction, which commits its offsets there, can then neither commit nor abort, and
    the engine waits on the broker for good. A second, clean restart of the broker clears
    it. The suite restarts it as an operator would, and reports it (GPUX_CHAOS_STRICT=1
    fails the run on it).
    """
    try:
        await works_end_to_end(run, run.size.broker_wedge_timeout_s)
        return
    except AssertionError as error:
        run.broker_rescues.append(str(error))
        run.note(f"{run.phase}: no recovery; restarting the broker once more")
    await asyncio.to_thread(run.venue.infrastructure.kafka.restart)
    await works_end_to_end(run, timeout_s)


async def kill_and_restart(run: Run, fault: str) -> None:
    """Take one part down for the fault's duration, then start it again."""
    venue, duration_s = run.venue, run.size.fault_duration_s
    infrastructure = venue.infrastructure
    services = {"engine": venue.engine, "ledger": venue.ledger,
                "settlement": venue.settlement, "gateway": venue.gateway}
    service = services.get(fault)
    if service is not None:
        assert run.watchdog is not None
        async with run.watchdog.held(service):
            await asyncio.to_thread(service.kill)
            await asyncio.sleep(duration_s)  # the fault's duration, not a wait for a condition
            await asyncio.to_thread(service.restart)
        return
    if fault == "chain":
        async with run.depositor.lock:  # no deposit is half made when the node dies
            await asyncio.to_thread(infrastructure.anvil.crash)
            await asyncio.sleep(duration_s)
            await asyncio.to_thread(infrastructure.anvil.restart)
        return
    target = {"kafka": infrastructure.kafka, "postgres": infrastructure.postgres}[fault]
    await asyncio.to_thread(target.kill)
    await asyncio.sleep(duration_s)
    await asyncio.to_thread(target.restart)


async def drained(run: Run) -> None:
    """Wait until every deposit is credited, every assignment reported, every command
    applied, every event in the ledger, every trade and delivery entry settled and every
    withdrawal paid out."""
    venue, depositor, reporter = run.venue, run.depositor, run.reporter
    assert venue.tail is not None
    tail = venue.tail

    async def done() -> bool:
        if not {deposit.deposit_id for deposit in depositor.deposits} <= tail.deposit_ids:
            return False
        reporter.add(tail.assignments)
        if reporter.waiting:
            return False
        end = await venue.commands_end()
        if end < 0 or await venue.engine_applied() < end:
            return False
        engine_seq = await asyncio.to_thread(venue.engine_seq)
        if engine_seq != tail.seq or await venue.ledger_seq() != engine_seq:
            return False
        entry_seq = await venue.last_settleable_seq()
        if entry_seq < 0 or await venue.settled_through() < entry_seq:
            return False
        return await venue.unpaid_withdrawals() == 0

    await eventually(done, timeout_s=DRAIN_TIMEOUT_S, interval_s=0.5,
                     message="the venue drained (credited, reported, applied, projected, "
                             "settled, paid)")


async def start_load(run: Run, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    venue, size = run.venue, run.size
    tasks = [asyncio.create_task(
        Trader.of_wallet(wallet, session, venue.gateway_url, venue.tradable,
                         seed=index * 100 + session, stats=run.stats,
                         interval_s=size.trader_interval_s,
                         recording=run.recorder.client(f"trader-{index}.{session}",
                                                       wallet.address)
                         if session < size.recorded_sessions_per_wallet else None,
                         books=venue.symbols if session == 0 else ()).run(stop),
        name=f"trader-{index}.{session}")
        for index, wallet in enumerate(venue.wallets)
        for session in range(size.sessions_per_wallet)]
    operator = Operator(venue.operator_key, venue.operator.address, 0, venue.gateway_url,
                        run.offered, seed=7, stats=run.stats, interval_s=OPERATOR_INTERVAL_S,
                        recording=run.recorder.client("operator", venue.operator.address))
    tasks.append(asyncio.create_task(operator.run(stop), name="operator"))
    tasks.append(asyncio.create_task(run.depositor.run(stop, size.deposit_interval_s),
                                     name="depositor"))
    tasks.append(asyncio.create_task(run.withdrawer.run(stop, size.withdraw_interval_s),
                                     name="withdrawer"))
    return tasks


async def timed(run: Run, what: str, action: Callable[[], Awaitable[None]], **facts: object
                ) -> None:
    started = time.monotonic()
    await action()
    run.note(what, seconds=round(time.monotonic() - started, 1), **facts)


async def exercise(run: Run, stop_load: asyncio.Event, load: list[asyncio.Task[None]]) -> None:
    """Set the venue up, load it (adding the load's tasks to `load`), run every fault."""
    venue, size = run.venue, run.size
    assert venue.tail is not None
    tail = venue.tail
    venue.symbols = await list_instruments(venue, size.instruments)
    venue.tradable += venue.symbols
    run.depositor.symbols = venue.symbols  # a deliverable token comes only from issues
    run.withdrawer.symbols = venue.tradable
    await timed(run, "funded on chain",
                lambda: run.depositor.fund(USDC_FUNDING_MICRO, TOKEN_FUNDING))
    async with run.depositor.lock:
        await asyncio.to_thread(run.depositor.deposit, venue.operator, "USDC",
                                USDC_FUNDING_MICRO)
    funded = {deposit.deposit_id for deposit in run.depositor.deposits}
    await eventually(lambda: funded <= tail.deposit_ids, timeout_s=SETUP_TIMEOUT_S,
                     message="the watcher credited every funding deposit")
    load += await start_load(run, stop_load)
    run.phase = "warm-up"
    await timed(run, "warm-up", lambda: works_end_to_end(run, size.recovery_timeout_s))
    for round_number in range(1, size.rounds + 1):
        for fault in FAULTS:
            run.phase = f"round {round_number}: {fault}"
            await timed(run, f"{run.phase} down and up", partial(kill_and_restart, run, fault))
            recover = rescued_after_broker_fault if fault == "kafka" else works_end_to_end
            await timed(run, f"{run.phase} recovered",
                        partial(recover, run, size.recovery_timeout_s),
                        answered=run.stats.answered, seq=tail.seq)
        for close in range(size.closes):
            run.phase = f"round {round_number}: close {close + 1}"
            order = DELIVERY_FAULTS if round_number % 2 else DELIVERY_FAULTS[::-1]
            await deliver(run, close, order)
        run.phase = f"round {round_number}: closes"
        await timed(run, f"{run.phase} recovered",
                    lambda: works_end_to_end(run, size.recovery_timeout_s),
                    answered=run.stats.answered, seq=tail.seq)
    run.phase = "engine kills"
    await kill_engine_repeatedly(run, size.engine_kills)
    await timed(run, "engine kills recovered",
                lambda: works_end_to_end(run, size.recovery_timeout_s),
                answered=run.stats.answered, seq=tail.seq)


async def kill_engine_repeatedly(run: Run, kills: int) -> None:
    """SIGKILL the engine `kills` times at random points of the load, each time restarted at
    once: the gateway has answered orders from events the engine had not committed yet
    (docs/exactly-once.md), which the audit then finds in the committed log."""
    engine, rng = run.venue.engine, random.Random(kills)
    assert engine is not None and run.watchdog is not None
    for kill in range(1, kills + 1):
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        async with run.watchdog.held(engine):
            await timed(run, f"engine kill {kill} of {kills}", lambda: asyncio.to_thread(
                restarted_after_sigkill, engine))


def restarted_after_sigkill(service: Service) -> None:
    service.kill()
    service.restart()


async def deliver(run: Run, close: int, order: tuple[str, ...]) -> None:
    """List deliverable instruments closing in `delivery_lead_s`, issue on them and let
    them trade; kill one part just before the close and one just after it, then report
    every assignment and kill the third part while the reports go out.

    The parts of `order` take the three roles in rotation (`close` counts from 0). "After"
    is, for the engine, a moment just past the close's time (its events may not be
    committed yet); for the ledger and settlement a moment just after the close is
    committed, which is what they act on. Each kill's moment relative to the close is
    recorded as it came.
    """
    venue, size, tail = run.venue, run.size, run.venue.tail
    assert tail is not None
    before, after, during = (order[(close + step) % len(order)] for step in range(3))
    close_ns = time.time_ns() + int(size.delivery_lead_s * 1e9)
    symbols = await list_deliverable(run, size.deliverable_per_close, close_ns)
    await issue_capacity(run, symbols)
    venue.tradable += symbols
    run.offered += symbols
    run.note(f"{run.phase}: listed and issued", symbols=symbols,
             close_in_s=round((close_ns - time.time_ns()) / 1e9, 1))

    def closed() -> bool:
        return set(symbols) <= tail.closed

    async def kill_before() -> None:
        await asyncio.sleep(max(0.0, (close_ns - time.time_ns()) / 1e9
                                - run.rng.uniform(0.1, 0.6)))
        await delivery_fault(run, before, "before close", close_ns, closed)

    async def kill_after() -> None:
        if after == "engine":  # it commits every 100 ms: the close may be in the open one
            await asyncio.sleep(max(0.0, (close_ns - time.time_ns()) / 1e9
                                    + run.rng.uniform(0.0, 0.15)))
        else:
            await eventually(closed, timeout_s=size.recovery_timeout_s, interval_s=0.02,
                             message=f"{run.phase}: {symbols} closed")
            await asyncio.sleep(run.rng.uniform(0.0, 0.3))
        await delivery_fault(run, after, "after close", close_ns, closed)

    await asyncio.gather(kill_before(), kill_after())
    await eventually(closed, timeout_s=size.recovery_timeout_s, interval_s=0.05,
                     message=f"{run.phase}: {symbols} closed")
    for symbol in symbols:
        venue.tradable.remove(symbol)
        run.offered.remove(symbol)
    run.reporter.add([a for a in tail.assignments if a.instrument in symbols])
    count = run.reporter.answered(symbols)[1]
    await eventually(lambda: run.reporter.answered(symbols)[0] >= count // 3,
                     timeout_s=size.recovery_timeout_s, interval_s=0.02,
                     message=f"{run.phase}: a third of the reports answered")
    await delivery_fault(run, during, "during reports", close_ns, closed, symbols)
    await eventually(lambda: run.reporter.answered(symbols)[0] == count,
                     timeout_s=size.recovery_timeout_s, interval_s=0.1,
                     message=f"{run.phase}: every report of {symbols} answered")
    run.note(f"{run.phase}: reported", assignments=count)


async def delivery_fault(run: Run, fault: str, moment: str, close_ns: int,
                         closed: Callable[[], bool], symbols: list[str] | None = None) -> None:
    """Kill and restart one part (as `kill_and_restart`), recording when, relative to the
    close's time, whether the close was committed then, and how far its reports were."""
    kill = {"fault": fault, "moment": moment, "phase": run.phase,
            "from_close_s": round((time.time_ns() - close_ns) / 1e9, 2),
            "close_committed": closed()}
    if symbols is not None:
        kill["reports_answered"], kill["reports"] = run.reporter.answered(symbols)
    run.delivery_kills.append(kill)
    await timed(run, f"{run.phase}: {fault} down and up, {moment}",
                partial(kill_and_restart, run, fault), **kill)


async def run_and_audit(run: Run, result_path: Path) -> None:
    """Exercise the venue, drain it, stop it and audit it; write and print the report."""
    venue = run.venue
    assert venue.tail is not None
    stop_all, stop_load = asyncio.Event(), asyncio.Event()
    run.watchdog = Watchdog(venue.services(), lambda: run.phase, run.started_s)
    background = [asyncio.create_task(venue.tail.run(stop_all), name="event-tail"),
                  asyncio.create_task(run.watchdog.run(stop_all), name="watchdog"),
                  asyncio.create_task(run.reporter.run(stop_all), name="reporter")]
    load: list[asyncio.Task[None]] = []
    try:
        await exercise(run, stop_load, load)
        run.phase = "drain"
        stop_load.set()
        await asyncio.gather(*load)
        await timed(run, "drained", lambda: drained(run))
    finally:
        stop_load.set()
        stop_all.set()
        await asyncio.gather(*load, *background, return_exceptions=True)
    await asyncio.to_thread(venue.stop_services)
    audit = await audit_venue(venue, run.stats, run.depositor, run.withdrawer, run.reporter,
                              run.recorder)
    report = {
        "size": asdict(run.size), "seconds": round(time.monotonic() - run.started_s, 1),
        "counts": audit.counts, "delivery_kills": run.delivery_kills,
        "reports_unanswered_by_cause": dict(run.reporter.unanswered_by_cause),
        "unplanned_exits": [asdict(unplanned) for unplanned in run.watchdog.exits],
        "restart_failures": run.watchdog.restart_failures,
        "broker_rescues": run.broker_rescues,
        "unanswered_by_cause": dict(run.stats.unanswered_by_cause),
        "latency": run.stats.latency_summary(), "sdk_reconnects": run.stats.reconnects,
        "subscribe_failures": run.stats.subscribe_failures,
        "event_tail_errors": venue.tail.errors,
        "deposit_failures": run.depositor.failures, "audit_problems": audit.problems,
        "timeline": run.timeline,
    }
    result_path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({key: value for key, value in report.items() if key != "timeline"},
                     indent=1))
    assert audit.problems == [], "\n".join(audit.problems)
    if STRICT:
        assert run.watchdog.exits == [], f"services died by themselves: {run.watchdog.exits}"
        assert run.broker_rescues == [], f"the broker needed a rescue: {run.broker_rescues}"


async def start_infrastructure(root: Path) -> Infrastructure:
    """Start the suite's own broker, database and node; like the session fixtures, a
    service that cannot be had fails the test under CI=true and skips it elsewhere."""
    try:
        return await Infrastructure.start(root)
    except ServiceError as error:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"the fault suite's services are unavailable: {error}", pytrace=False)
        pytest.skip(f"the fault suite's services are unavailable: {error}")


async def test_venue_survives_every_part_killed_under_load(tmp_path: Path) -> None:
    infrastructure = await start_infrastructure(tmp_path / "infrastructure")
    services: list[GpuxProcess] = []
    passed = False
    try:
        venue = await build_venue(tmp_path, infrastructure, SIZE.wallets,
                                  SIZE.snapshot_every_commands)
        services = venue.services()
        run = Run(venue, SIZE, LoadStats(),
                  Depositor(venue.contracts, venue.minter, venue.wallets, [], seed=11),
                  Withdrawer(venue.event_log, venue.commands_topic,
                             [wallet.address for wallet in venue.wallets], [], seed=13),
                  Reporter(venue.gateway_url, venue.delivery_key, seed=19,
                           interval_s=SIZE.report_interval_s,
                           timeout_s=SIZE.report_timeout_s))
        try:
            await venue.start_services()
            await run_and_audit(run, tmp_path / "result.json")
            passed = True
        finally:
            await venue.event_log.close()
    except BaseException:
        print(log_tails([*services, *infrastructure.all()]))
        raise
    finally:
        await asyncio.to_thread(_stop_quietly, [*reversed(services), *infrastructure.all()])
        if passed:
            for service in infrastructure.all():
                remove_run_dir(service.run_dir)


def _stop_quietly(services: list[Service]) -> None:
    for service in services:
        try:
            service.stop()
        except Exception as error:  # noqa: BLE001 -- stop the others anyway
            print(f"stopping {service.name} failed: {error}")
