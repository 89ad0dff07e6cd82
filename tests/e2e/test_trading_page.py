"""The trading page in headless Chromium against a venue: market data without login, an
API-key login signed in the browser, an order placed, amended and crossed through the page,
its fill with the settlement-proof link, a reconnect after the gateway drops the page, a
cancel; GPU-hours bought of an operator's issue assigned at close and settled by a delivery
report, in the buyer's deliveries and the issuer's bonds; a strip of hours picked in the
market list, quoted leg by leg and bought in one click, and one that cannot fill refused
before anything is sent; the price index drawn beside the candles from the index store's
rows, history and live; no console error anywhere.

The venue (engine and gateway in this process) runs on the embedded log in a temporary
directory with keys held in memory; its gateway reads the price index from a PostgreSQL
database of this module's own. The gateway serves web/dist on its websocket port
through gateway.static's `process_request` hook, which the venue hands to its gateway
(after the gateway's own `/index`). Chromium is driven over the DevTools protocol with
`websockets` (tests/e2e/browser.py). Screenshots and the browser console go to
test-artifacts/trading-page/.
"""

from __future__ import annotations

import asyncio
import filecmp
import itertools
import json
import random
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import websockets

from eventlog.embedded import EmbeddedConfig, EmbeddedLog
from eventlog.port import COMMANDS_TOPIC
from gateway.config import GatewayConfig
from gateway.static import StaticSite
from gateway.testing import ApiContract, MemoryKeyStore
from gpux.venue import Venue, VenueConfig
from index import store as index_store
from index.value import IndexValue
from matching_engine.config import EngineConfig
from protocol import (
    AnyCommand,
    DeliveryReport,
    Deposit,
    ListInstrument,
    NewOrder,
    Tick,
    encode,
    format_micro,
)
from runtime.postgres import connect, create_database, drop_database
from sdk.client import Client
from sdk.signing import ApiKey
from tests.e2e.browser import (
    WAIT_TIMEOUT_S,
    Browser,
    Page,
    chromium_path,
    level_size,
    sent_ops,
    toast_with,
    unavailable,
)
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "trading-page"
SITE_DIR = ROOT / "web" / "dist"
HOUR_NS = 3600 * 10**9
MINUTE_NS = 60 * 10**9
TICK_MICRO = 10_000  # 0.01 USDC
GPU_REFERENCE_TICKS = {"H100-SXM-80GB": 215, "A100-SXM-80GB": 130, "L40S-48GB": 80}
REGION = "eu-west"
HOURS_LISTED = 6
HISTORY_MINUTES = 90
BOOK_LEVELS = 15
NAMESPACE = "page."


# -- the venue ------------------------------------------------------------------------------


def price(ticks: int) -> str:
    return format_micro(ticks * TICK_MICRO)


def symbol_for(gpu: str, delivery_start_ns: int) -> str:
    hour = datetime.fromtimestamp(delivery_start_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H")
    return f"{gpu}.{REGION}.{hour}"


@dataclass
class Market:
    """What the seeded venue holds: its URL, the contract traded, the keys."""

    venue: Venue
    event_log: EmbeddedLog
    url: str
    main: str
    other: str
    last_ticks: int
    keys: dict[str, tuple[str, str]]
    site: StaticSite
    index_url: str
    symbols: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://", 1) + "/"

    def login_url(self, account: str, instrument: str) -> str:
        key_id, private_key = self.keys[account]
        return (f"{self.http_url}#key={key_id}:{private_key}&account={account}"
                f"&instrument={instrument}")

    async def send(self, commands: list[AnyCommand]) -> None:
        """Put commands on the engine's topic, as an admin tool would."""
        producer = self.event_log.producer()
        await producer.start()
        try:
            await producer.send_batch(NAMESPACE + COMMANDS_TOPIC, [encode(c) for c in commands])
        finally:
            await producer.stop()


def seed_commands(now_ns: int) -> tuple[list[AnyCommand], list[str], int]:
    """List 3 GPU classes x 6 hours, fund accounts, trade 90 minutes of history (engine time
    comes from the commands' ts, so these make real one-minute candles), rest a book."""
    first_hour = (now_ns // HOUR_NS + 2) * HOUR_NS  # an hour or more before trading closes
    start = now_ns - HISTORY_MINUTES * MINUTE_NS
    rng = random.Random(7)
    commands: list[AnyCommand] = []
    symbols: list[str] = []
    for gpu in GPU_REFERENCE_TICKS:
        for hour in range(HOURS_LISTED):
            symbol = symbol_for(gpu, first_hour + hour * HOUR_NS)
            symbols.append(symbol)
            commands.append(ListInstrument(
                ts=start, symbol=symbol, gpu=gpu, region=REGION,
                delivery_start=first_hour + hour * HOUR_NS, delivery_hours=1,
                tick_size=price(1), max_order_quantity=10_000, maker_fee_bps=2, taker_fee_bps=5))
            for account in ("mm", "flow"):
                commands.append(Deposit(ts=start, account=account, asset=symbol, amount=1_000_000))
    for account, usdc in (("mm", "50000000"), ("flow", "50000000"), ("alice", "100000"),
                          ("bob", "100000")):
        commands.append(Deposit(ts=start, account=account, asset="USDC", amount=usdc))
    main = symbols[0]
    commands.append(Deposit(ts=start, account="bob", asset=main, amount=500))
    counter = itertools.count(1)
    last_by_symbol: dict[str, int] = {}
    for symbol, minutes in ((main, HISTORY_MINUTES), (symbols[HOURS_LISTED], 30)):
        ticks = GPU_REFERENCE_TICKS[symbol.split(".")[0]]
        for minute in range(HISTORY_MINUTES - minutes, HISTORY_MINUTES):
            for trade in range(rng.randint(1, 4)):
                ticks = max(10, ticks + rng.choice((-2, -1, -1, 0, 1, 1, 2)))
                ts = start + minute * MINUTE_NS + trade * 10 * 10**9
                quantity = rng.randint(1, 60)
                maker_sells = rng.random() < 0.5
                commands += _cross(symbol, ticks, quantity, maker_sells, ts, next(counter))
        last_by_symbol[symbol] = ticks
    book_ts = now_ns - 10**9
    for symbol in symbols:
        last = last_by_symbol.get(symbol, GPU_REFERENCE_TICKS[symbol.split(".")[0]])
        levels = BOOK_LEVELS if symbol in last_by_symbol else 5
        for level in range(levels):
            for side, ticks in (("buy", last - 2 - level), ("sell", last + 2 + level)):
                commands.append(NewOrder(
                    ts=book_ts, account="mm", client_order_id=f"book-{next(counter)}",
                    instrument=symbol, side=side, order_type="limit", price=price(ticks),
                    quantity=rng.randint(5, 120), time_in_force="gtc"))
    return commands, symbols, last_by_symbol[main]


def _cross(symbol: str, ticks: int, quantity: int, maker_sells: bool, ts: int,
           number: int) -> list[AnyCommand]:
    maker_side, taker_side = ("sell", "buy") if maker_sells else ("buy", "sell")
    return [
        NewOrder(ts=ts, account="mm", client_order_id=f"h-{number}", instrument=symbol,
                 side=maker_side, order_type="limit", price=price(ticks), quantity=quantity,
                 time_in_force="gtc"),
        NewOrder(ts=ts, account="flow", client_order_id=f"t-{number}", instrument=symbol,
                 side=taker_side, order_type="limit", price=price(ticks), quantity=quantity,
                 time_in_force="ioc"),
    ]


@pytest.fixture(scope="module")
async def market(database_url: str) -> AsyncIterator[Market]:
    if not (SITE_DIR / "index.html").is_file():
        unavailable(f"{SITE_DIR} is not built: run `npm run build:web`")
    site = StaticSite.from_directory(SITE_DIR)
    store = MemoryKeyStore()
    keys = {name: store.add_key(name, role) for name, role in (
        ("alice", "trader"), ("bob", "trader"), ("carol", "trader"), ("dave", "trader"),
        ("op-7", "operator"))}
    # The index store's last_seq counts one venue's events: a database of the module's own.
    index_database = f"page_index_{time.time_ns()}"
    index_url = await create_database(database_url, index_database)
    with tempfile.TemporaryDirectory(prefix="gpux-page-") as directory:
        event_log = EmbeddedLog.open(Path(directory) / "log", EmbeddedConfig(fsync=False))
        venue = Venue(event_log, VenueConfig(
            engine=EngineConfig(topic_namespace=NAMESPACE, transactional_id=f"{NAMESPACE}engine",
                                group_id=f"{NAMESPACE}engine", batch_interval_ms=2),
            gateway=GatewayConfig(port=0, index_database_url=index_url,
                                  index_poll_interval_ms=100),
        ), key_store=store, process_request=site.process_request)
        try:
            await venue.start()
            try:
                commands, symbols, last_ticks = seed_commands(time.time_ns())
                producer = event_log.producer()
                await producer.start()
                await producer.send_batch(NAMESPACE + COMMANDS_TOPIC,
                                          [encode(c) for c in commands])
                await producer.stop()
                core = venue.gateways[0].core
                await eventually(lambda: core.projection.instruments.keys() >= set(symbols)
                                 and core.projection.event_seq >= len(commands),
                                 message="the gateway applied the seeded market")
                yield Market(venue=venue, event_log=event_log, url=venue.urls[0],
                             main=symbols[0],
                             other=symbols[HOURS_LISTED], last_ticks=last_ticks, keys=keys,
                             site=site, index_url=index_url, symbols=symbols)
            finally:
                await venue.stop()
        finally:
            await event_log.close()
            await drop_database(database_url, index_database)


# -- a headless Chromium (tests/e2e/browser.py) ---------------------------------------------


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    executable = chromium_path()
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    async with Browser.launch(str(executable), tmp_path / "profile", ARTIFACTS) as launched:
        yield launched


# -- the tests ------------------------------------------------------------------------------


async def test_page_shows_market_data_logs_in_trades_and_sees_its_fill(
    market: Market, browser: Browser
) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's screenshots only
    alice = await browser.new_page(1600, 1000)
    await alice.goto(market.http_url)
    # Market data without a login: the default contract's book, then the picker.
    await alice.wait_for("document.querySelectorAll('#ladder-bids .level[data-price]').length > 0",
                         "the default contract's book shows anonymously")
    await alice.click('.gpu-tab[data-gpu="H100-SXM-80GB"]')
    await alice.click(f'.hour[data-symbol="{market.main}"]')
    await alice.wait_for(f"location.hash.includes({json.dumps(market.main)})"
                         " && document.querySelectorAll('#tape .tape-row').length >= 20"
                         " && document.querySelectorAll('#ladder-asks .level[data-price]').length"
                         " >= 10 && document.querySelector('#price-chart canvas') !== null"
                         " && document.getElementById('chart-empty').hidden",
                         "the picked contract's book, trades and candles show")
    assert await alice.text("#connection-text") == "Live"
    await alice.screenshot("01-market-data-anonymous")

    # Log in through the dialog: the page signs the challenge with the pasted key.
    key_id, private_key = market.keys["alice"]
    await alice.click("#login-button")
    await alice.fill("#login-key-id", key_id)
    await alice.fill("#login-private-key", private_key)
    await alice.click("#login-submit")
    await alice.wait_for("document.getElementById('account-name').textContent === 'alice'"
                         " && document.querySelector('#balances-body tr[data-asset=\"USDC\"]')"
                         " !== null",
                         "alice is logged in and sees her balances")
    assert "100,000.00" in await alice.text('#balances-body tr[data-asset="USDC"]')

    # A limit buy inside the spread through the form: on the book and in open orders.
    bid = price(market.last_ticks - 1)
    await alice.fill("#order-price", bid)
    await alice.fill("#order-quantity", "7")
    await alice.click("#order-submit")
    # The ladder is redrawn on the next frame, the orders table as its message comes: the
    # level is marked as alice's once both are drawn.
    await alice.wait_for(f"{level_size('bids', bid)} === '7'"
                         " && document.querySelectorAll('#orders-body tr[data-client-order-id]')"
                         ".length === 1"
                         f" && document.querySelector('#ladder-bids .level[data-price=\"{bid}\"]')"
                         ".classList.contains('mine')",
                         "the order rests on the book, marked as alice's, and in open orders")
    await alice.screenshot("02-order-resting")

    # Amend it in place: new price and total quantity.
    amended = price(market.last_ticks)
    await alice.click("#orders-body [data-action=amend]")
    await alice.fill("#orders-body [data-field=new_price]", amended)
    await alice.fill("#orders-body [data-field=new_quantity]", "9")
    await alice.click("#orders-body [data-action=save]")
    await alice.wait_for(f"{level_size('bids', amended)} === '9' && {level_size('bids', bid)}"
                         " === ''", "the amended order moved on the book")

    # A post-only order that would cross is refused, and the page says why.
    await alice.fill("#order-price", price(market.last_ticks + 2))
    await alice.fill("#order-quantity", "1")
    await alice.click("#order-post-only")
    await alice.click("#order-submit")
    await alice.wait_for(toast_with("post-only order would cross"), "the post-only refusal")

    # Bob logs in from a link (key in the fragment) and sells at market into alice's bid.
    bob = await browser.new_page(1600, 1000)
    bob_key_id, bob_private_key = market.keys["bob"]
    await bob.goto(f"{market.http_url}#key={bob_key_id}:{bob_private_key}&account=bob"
                   f"&instrument={market.main}")
    await bob.wait_for("document.getElementById('account-name').textContent === 'bob'"
                       " && !location.hash.includes('key=')"
                       " && document.querySelector("
                       f"'#balances-body tr[data-asset=\"{market.main}\"]') !== null",
                       "bob is logged in from the link, and the key left the address bar")
    await bob.click(".side.sell span")
    await bob.click(".type-tabs input[value=market] + span")
    await bob.fill("#order-quantity", "9")
    await bob.click("#order-submit")
    await bob.wait_for(toast_with("accepted"), "bob's market sell is accepted")
    await bob.wait_for("document.querySelectorAll('#fills-body tr[data-trade-id]').length === 1",
                       "bob sees his fill")
    await bob.click("#tab-fills")
    await bob.screenshot("03-bob-after-market-sell")

    # Alice sees the fill, its proof link, the trade on the tape, and her order gone.
    await alice.front()
    await alice.wait_for("document.querySelectorAll('#fills-body tr[data-trade-id]').length === 1"
                         " && document.querySelectorAll('#orders-body tr[data-client-order-id]')"
                         ".length === 0", "alice sees her fill and no open order")
    trade_id = await alice.evaluate(
        "document.querySelector('#fills-body tr[data-trade-id]').dataset.tradeId")
    assert await alice.evaluate("document.querySelector('#fills-body a.proof-link').getAttribute"
                                "('href')") == f"/proof/{trade_id}"
    assert await alice.evaluate(f"document.querySelector('#tape .tape-row').dataset.tradeId"
                                f" === {json.dumps(trade_id)}")
    assert "9" in await alice.text(f'#balances-body tr[data-asset="{market.main}"]')
    await alice.click("#tab-fills")
    await alice.screenshot("04-alice-filled")

    # A page bob opens after the trade lists it too: the fills feed's snapshot.
    later = await browser.new_page(1600, 1000)
    await later.goto(f"{market.http_url}#key={bob_key_id}:{bob_private_key}&account=bob"
                     f"&instrument={market.main}")
    await later.wait_for("document.querySelectorAll('#fills-body tr[data-trade-id]').length"
                         f" === 1 && document.querySelector('#fills-body tr[data-trade-id]')"
                         f".dataset.tradeId === {json.dumps(trade_id)}",
                         "a page opened after the trade lists bob's fill")

    # The gateway drops every connection (as a restart would): the pages reconnect, log in
    # again by themselves and resubscribe; the cancel below needs that login.
    service = market.venue.gateways[0]
    # The page records the drop itself: it may reconnect before a poll would see it down.
    assert await alice.evaluate(
        "(() => { const indicator = document.getElementById('connection');"
        " window.sawConnectionDrop = false;"
        " new MutationObserver(() => { if (indicator.dataset.state !== 'open')"
        " window.sawConnectionDrop = true; })"
        ".observe(indicator, {attributes: true, attributeFilter: ['data-state']});"
        " return true; })()")
    for conn_id in list(service.transport.connections):
        service.transport.close(conn_id, 1012, "restarting")
    await alice.wait_for("window.sawConnectionDrop"
                         " && document.getElementById('connection').dataset.state === 'open'",
                         "the page sees the connection drop and reconnects")
    await eventually(lambda: any(s.principal is not None and s.principal.account == "alice"
                                 for s in service.core.sessions.values()),
                     timeout_s=WAIT_TIMEOUT_S, message="the page logged in again")

    # Cancel through the page.
    await alice.click("#tab-orders")
    await alice.fill("#order-price", bid)
    await alice.fill("#order-quantity", "4")
    await alice.click("#order-submit")
    await alice.wait_for(f"{level_size('bids', bid)} === '4'", "the second order rests")
    await alice.click("#orders-body [data-action=cancel]")
    await alice.wait_for(f"{level_size('bids', bid)} === ''"
                         " && document.querySelectorAll('#orders-body tr[data-client-order-id]')"
                         ".length === 0", "the canceled order left the book and open orders")

    # Narrower screens: everything still fits the width.
    for width, height, name in ((1180, 900, "05-medium"), (414, 860, "06-phone")):
        await alice.resize(width, height)
        await alice.wait_for("document.documentElement.scrollWidth <= window.innerWidth",
                             f"no sideways scrolling at {width} px")
        await alice.screenshot(name)

    sent = assert_pages_kept_the_contract({"alice": alice, "bob": bob})
    assert {"login", "new_order", "amend_order", "cancel_order", "subscribe", "unsubscribe",
            "instruments"} <= sent, sent


async def test_page_shows_the_deliveries_of_gpu_hours_bought_and_the_issuers_bonds(
    market: Market, browser: Browser
) -> None:
    """Carol buys 5 of the 8 GPU-hours op-7 issued on an hour about to close; at close
    they are assigned to her (op-7's own 3 release their bond); the delivery service reports
    90% delivered: carol is paid 5 x 3.23 x 10% = 1.615 USDC. Both pages show it live."""
    now = time.time_ns()
    soon = f"H100-SXM-80GB.{REGION}.soon"
    start = now + 10 * MINUTE_NS
    issue_id = f"op-7.{soon}.h100-node-7"
    await market.send([
        ListInstrument(ts=now, symbol=soon, gpu="H100-SXM-80GB", region=REGION,
                       delivery_start=start, delivery_hours=1, tick_size=price(1),
                       max_order_quantity=1000, maker_fee_bps=0, taker_fee_bps=0,
                       bond_per_gpu_hour="3.23"),
        Deposit(ts=now, account="op-7", asset="USDC", amount="1000"),
        Deposit(ts=now, account="carol", asset="USDC", amount="1000"),
    ])
    core = market.venue.gateways[0].core
    await eventually(lambda: soon in core.projection.instruments,
                     message="the gateway knows the deliverable hour")
    op_key_id, op_private_key = market.keys["op-7"]
    async with Client(market.url, credentials=ApiKey(op_key_id, op_private_key),
                      reconnect=False) as operator:
        issued = await operator.issue_capacity(soon, "h100-node-7", 8, issue_id)
        assert issued.accepted and issued.bond == "25.84", issued
        assert (await operator.new_order(soon, "sell", 8, price(215))).accepted

    # Carol buys 5 at market through the page; nothing is assigned before close.
    carol = await browser.new_page(1600, 1000)
    await carol.goto(market.login_url("carol", soon))
    await carol.wait_for("document.getElementById('account-name').textContent === 'carol'"
                         f" && {level_size('asks', price(215))} === '8'",
                         "carol is logged in on the hour about to close, op-7's ask on it")
    assert "bond 3.23 USDC per GPU-h" in await carol.text("#title-sub")
    await carol.click(".type-tabs input[value=market] + span")
    await carol.fill("#order-quantity", "5")
    await carol.click("#order-submit")
    await carol.wait_for("document.querySelectorAll('#fills-body tr[data-trade-id]').length"
                         " === 1", "carol bought 5")
    await carol.click("#tab-deliveries")
    await carol.wait_for("document.querySelector('#deliveries-body tr.placeholder') !== null",
                         "no delivery before close")
    assert await carol.evaluate("document.getElementById('tab-bonds').hidden"), \
        "a trader issues nothing: no bonds tab"

    # Trading closes: carol's 5 are assigned to her, op-7 keeps 5 under bond.
    await market.send([Tick(ts=start)])
    row = f'#deliveries-body tr[data-issue-id="{issue_id}"][data-holder="carol"]'
    await carol.wait_for(f"document.querySelector('{row}[data-status=\"assigned\"]') !== null",
                         "carol's delivery shows as assigned")
    cells = await carol.evaluate(f"[...document.querySelector('{row}').cells]"
                                 ".map((cell) => cell.textContent)")
    hour = datetime.fromtimestamp(start / 1e9, tz=UTC).strftime("%H:%M")
    assert cells[0].endswith(hour) and cells[2:] == [
        "h100-node-7", "from op-7", "5", "awaiting report", "–", "–", "–"], cells
    await carol.wait_for(toast_with("Delivery assigned"), "carol is told of the assignment")
    assert await carol.text("#deliveries-count") == "1"
    await carol.screenshot("07-delivery-assigned")

    operator_page = await browser.new_page(1600, 1000)
    await operator_page.goto(market.login_url("op-7", market.main))
    bond_row = f'#bonds-body tr[data-issue-id="{issue_id}"]'
    await operator_page.wait_for("!document.getElementById('tab-bonds').hidden"
                                 f" && document.querySelector('{bond_row}"
                                 "[data-status=\"delivering\"]') !== null",
                                 "op-7 sees its bond, delivering")
    await operator_page.click("#tab-bonds")
    bond_cells = await operator_page.evaluate(f"[...document.querySelector('{bond_row}').cells]"
                                              ".map((cell) => cell.textContent)")
    assert bond_cells[2:] == ["h100-node-7", "8", "5", "16.15", "delivering"], bond_cells
    await operator_page.screenshot("08-issuer-bonds")

    # The delivery service reports 90% delivered: both pages follow.
    await market.send([DeliveryReport(ts=start, issue_id=issue_id, holder="carol",
                                      delivered_ppm=900_000, evidence="9f2c41d0")])
    await carol.front()
    await carol.wait_for(f"document.querySelector('{row}[data-status=\"settled\"]') !== null",
                         "carol's delivery shows as settled")
    assert await carol.text(f"{row} [data-field=delivered]") == "90%"
    assert await carol.text(f"{row} [data-field=compensation]") == "1.615"
    await carol.wait_for(toast_with("1.615 USDC compensation"), "carol is told she was paid")
    await carol.screenshot("09-delivery-settled")
    await operator_page.front()
    await operator_page.wait_for(f"document.querySelector('{bond_row}[data-status=\"settled\"]')"
                                 " !== null", "op-7's bond is settled")
    assert await operator_page.text(f"{bond_row} [data-field=bond]") == "0.00"
    await operator_page.click("#tab-deliveries")
    await operator_page.wait_for(f"document.querySelector('{row}') !== null"
                                 f" && document.querySelector('{row}').cells[3].textContent"
                                 " === 'to carol'", "op-7 sees what it delivered to carol")

    sent = assert_pages_kept_the_contract({"carol": carol, "op-7": operator_page})
    assert "deliveries" in sent, sent


def assert_pages_kept_the_contract(pages: dict[str, Page]) -> set[str]:
    """Save each page's console (named by its key), assert it logged no error and that every
    websocket frame it sent or received kept the API contract; return the ops they sent."""
    contract = ApiContract()
    for name, page in pages.items():
        page.save_console(name)
        assert page.errors == [], f"{name}'s console: {page.errors}"
        for direction, text in page.frames:
            contract.check(direction, text)
    assert contract.violations == [], contract.violations[:5]
    return {op for direction, op in contract.seen if direction == "send"}


def usdc_text(micro: int) -> str:
    """A USDC amount as the page writes it: grouped, at least two decimals."""
    whole, _, fraction = format_micro(micro).partition(".")
    return f"{int(whole):,}.{fraction.ljust(2, '0')}"


def best_ask_micro(market: Market, symbol: str) -> int:
    book = market.venue.gateways[0].core.projection.instruments[symbol].book
    return min(book.asks)


async def test_page_buys_a_strip_of_hours_picked_in_the_market_list(
    market: Market, browser: Browser
) -> None:
    """Dave shift-clicks four consecutive L40S hours, each with the market maker's asks on
    it; the ticket quotes them leg by leg (3 GPU-h at each hour's best ask, 5 bps taker fee)
    and he buys them in one click at the quoted notional plus the 0.5 % slippage shown. A
    strip of more than the books hold is refused by the quote and nothing is sent."""
    legs = market.symbols[2 * HOURS_LISTED:2 * HOURS_LISTED + 4]  # L40S, hours 0-3
    usdc_micro = 5_000 * 10**6
    await market.send([Deposit(ts=time.time_ns(), account="dave", asset="USDC",
                               amount=format_micro(usdc_micro))])
    dave = await browser.new_page(1600, 1000)
    await dave.goto(market.login_url("dave", legs[0]))
    await dave.wait_for("document.getElementById('account-name').textContent === 'dave'"
                        " && document.querySelector('#balances-body tr[data-asset=\"USDC\"]')"
                        f" !== null && location.hash.includes({json.dumps(legs[0])})",
                        "dave is logged in on the first hour")

    # Shift-click the fourth hour: the four hours are the strip, marked in the list.
    await dave.click(f'.hour[data-symbol="{legs[3]}"]', shift=True)
    await dave.wait_for("!document.getElementById('strip-form').hidden"
                        " && document.querySelectorAll('.hour.in-strip').length === 4",
                        "the strip ticket opens on the four hours")
    marked = await dave.evaluate("[...document.querySelectorAll('.hour.in-strip')]"
                                 ".map((row) => row.dataset.symbol)")
    assert marked == legs
    assert await dave.text("#strip-hours") == "4 hours"
    await dave.fill("#strip-quantity", "3")
    await dave.wait_for("document.getElementById('strip-status').dataset.state === 'ready'"
                        " && [...document.querySelectorAll('#strip-legs-body tr')].every("
                        "(row) => row.dataset.filled === '3')", "the quote fills every hour")

    # The quote, leg by leg: 3 GPU-h at each hour's best ask; the totals and the limit.
    asks = [best_ask_micro(market, symbol) for symbol in legs]
    rows = await dave.evaluate("[...document.querySelectorAll('#strip-legs-body tr')].map("
                               "(row) => [row.dataset.symbol, ...[...row.cells].map("
                               "(cell) => cell.textContent)])")
    assert [row[0] for row in rows] == legs
    assert [row[2:] for row in rows] == [
        ["3/3", usdc_text(ask), usdc_text(3 * ask)] for ask in asks], rows
    notional = 3 * sum(asks)
    fees = sum(3 * ask * 5 // 10_000 for ask in asks)
    limit = -(-notional * 10_050 // 10_000)  # the notional plus 0.5 %, rounded up
    assert await dave.text("#strip-notional") == f"{usdc_text(notional)} USDC"
    assert await dave.text("#strip-fees") == f"{usdc_text(fees)} USDC"
    assert await dave.text("#strip-total") == f"{usdc_text(notional + fees)} USDC"
    assert await dave.text("#strip-limit-shown") == f"{usdc_text(limit)} USDC (quote + 0.5 %)"
    await dave.screenshot("10-strip-quoted")

    # One click buys it: the result, the fills and the balances follow.
    await dave.click("#strip-submit")
    await dave.wait_for("document.getElementById('strip-result').dataset.status === 'accepted'",
                        "the strip is bought")
    assert f"paid {usdc_text(notional + fees)} USDC" in await dave.text("#strip-result")
    sent = [json.loads(text) for direction, text in dave.frames
            if direction == "send" and json.loads(text).get("op") == "new_strip_order"]
    assert [(m["side"], m["instruments"], m["quantity"], m["limit_total"]) for m in sent] == [
        ("buy", legs, 3, format_micro(limit))]
    await dave.wait_for(" && ".join(
        f"document.querySelector('#balances-body tr[data-asset=\"{symbol}\"] td.num')"
        "?.textContent === '3'" for symbol in legs)
        + " && document.querySelector('#balances-body tr[data-asset=\"USDC\"] td.num')"
        f".textContent === {json.dumps(usdc_text(usdc_micro - notional - fees))}"
        " && document.querySelectorAll('#fills-body tr[data-trade-id]').length === 4",
        "dave holds 3 GPU-h of each hour, paid the total, and sees four fills")
    assert await dave.evaluate(
        "document.querySelectorAll('#orders-body tr[data-client-order-id]').length") == 0
    await dave.click("#tab-fills")
    await dave.screenshot("11-strip-bought")

    # A limit below the cost: the quote says the strip would be refused for its limit.
    await dave.fill("#strip-limit", "0.01")
    await dave.wait_for("document.getElementById('strip-status').dataset.reason"
                        " === 'limit_exceeded' && document.getElementById('strip-submit')"
                        ".disabled", "a strip over its limit cannot be sent")
    await dave.evaluate("(() => { const limit = document.getElementById('strip-limit');"
                        " limit.value = ''; limit.dispatchEvent(new Event('input',"
                        " {bubbles: true})); })()")

    # More than the books hold: refused by the quote, the short hours named, nothing sent
    # (not even on a click), while the ticket keeps asking for quotes.
    await dave.fill("#strip-quantity", "5000")
    await dave.wait_for("document.getElementById('strip-status').dataset.reason"
                        " === 'insufficient_liquidity' && document.getElementById("
                        "'strip-submit').disabled", "a strip the books cannot fill is refused")
    assert "of 5000 GPU-h" in await dave.text("#strip-status")
    assert await dave.evaluate("document.querySelectorAll('#strip-legs-body tr.short').length"
                               " === 4")
    quotes = sent_ops(dave, "strip_quote")
    await dave.click("#strip-submit")
    await eventually(lambda: sent_ops(dave, "strip_quote") > quotes, timeout_s=WAIT_TIMEOUT_S,
                     message="the ticket quotes the strip again")
    assert sent_ops(dave, "new_strip_order") == 1
    await dave.screenshot("12-strip-refused")

    assert_pages_kept_the_contract({"dave": dave})


async def test_chart_draws_the_index_of_the_class_from_its_history_and_its_feed(
    market: Market, browser: Browser
) -> None:
    """Index rows of H100 in eu-west, written to the store as the index service writes them:
    twenty minutes from trades, three falling back to the mid, one with no value; the page
    draws them beside the candles (GET /index), then the next minute's value from the feed."""
    gpu = "H100-SXM-80GB"
    first_minute = time.time_ns() // MINUTE_NS * MINUTE_NS - 25 * MINUTE_NS
    sources = ["trades"] * 12 + ["mid"] * 3 + ["none"] + ["trades"] * 8

    def row(minute: int, source: str) -> IndexValue:
        micro = None if source == "none" else 2_150_000 + minute * 2_500
        return IndexValue(
            gpu=gpu, region=REGION, minute_ns=first_minute + minute * MINUTE_NS,
            value_micro=micro, source=source,  # type: ignore[arg-type]
            trade_count=3 if source == "trades" else 0, volume=12 if source == "trades" else 0,
            instrument_count=2 if source == "trades" else 0, sufficient=source == "trades",
            inputs_hash=bytes([minute]) * 32, last_seq=1 + minute)

    connection = await connect(market.index_url)
    try:
        await index_store.migrate(connection)
        async with connection.transaction():
            await index_store.write_values(
                connection, [row(minute, source) for minute, source in enumerate(sources)])
        page = await browser.new_page(1600, 1000)
        await page.goto(f"{market.http_url}#instrument={market.main}")
        await page.wait_for("document.getElementById('index-legend').dataset.minutes === '23'"
                            " && document.getElementById('index-legend').dataset"
                            ".fallbackMinutes === '3'",
                            "the index's history is drawn, its fallback minutes dashed")
        latest = format_micro(2_150_000 + 23 * 2_500)
        assert await page.evaluate("document.getElementById('index-legend').dataset.value") \
            == latest
        assert await page.text("#index-latest") == f"{latest} · from trades"
        await page.screenshot("13-index-line")

        async with connection.transaction():
            await index_store.write_values(connection, [row(len(sources), "mid")])
        live = format_micro(2_150_000 + len(sources) * 2_500)
        await page.wait_for("document.getElementById('index-legend').dataset.minutes === '24'"
                            f" && document.getElementById('index-legend').dataset.value"
                            f" === {json.dumps(live)}", "the feed's new value is drawn")
        assert await page.text("#index-latest") == f"{live} · fallback: mid of bid and ask"
    finally:
        await connection.close()
    assert_pages_kept_the_contract({"index": page})
    subscribed = [json.loads(text) for direction, text in page.frames
                  if direction == "send" and json.loads(text).get("channel") == "index"]
    assert subscribed and subscribed[0]["gpu"] == gpu and subscribed[0]["region"] == REGION


async def test_gateway_port_serves_the_page_and_nothing_outside_it(market: Market) -> None:
    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(market.http_url.rstrip("/") + path,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    status, headers, body = await asyncio.to_thread(get, "/")
    assert status == 200 and b"<title>gpux" in body
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, headers, _ = await asyncio.to_thread(get, "/", {"If-None-Match": headers["ETag"]})
    assert status == 304
    status, headers, body = await asyncio.to_thread(get, "/app.js?v=1")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and body
    for path in ("/proof/12", "/../pyproject.toml", "/%2e%2e/pyproject.toml", "/web/src/main.js"):
        status, _, _ = await asyncio.to_thread(get, path)
        assert status == 404, path
    async with websockets.connect(market.url) as ws:  # the websocket still answers on "/"
        assert json.loads(await ws.recv())["type"] == "hello"


def test_committed_bundle_is_what_the_sources_build(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "esbuild").is_dir():
        unavailable("node and the npm packages (npm ci) are needed to build web/")
    result = subprocess.run(["node", "web/build.mjs", "--outdir", str(tmp_path / "dist")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    comparison = filecmp.dircmp(SITE_DIR, tmp_path / "dist")
    _, mismatch, errors = filecmp.cmpfiles(SITE_DIR, tmp_path / "dist", comparison.common_files,
                                           shallow=False)
    assert not (comparison.left_only or comparison.right_only or mismatch or errors), (
        "web/dist is stale: run `npm run build:web` and commit web/dist")
