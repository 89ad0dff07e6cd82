"""`gpux dev` as a person meets it: the venue comes up with every hour deliverable, the
operator issues its GPU-hours (bonding USDC) and offers them, the printed URL opens a live
market in Chromium, alice buys GPU-hours of the operator and offers them through the form,
another account crosses her, both see the fill; Ctrl-C stops everything, and a second start
on the same data directory resumes the same market (instruments, balances, the trade and its
settlement proof on chain) without issuing anything twice. Nobody gets GPU-hours by deposit:
the log shows USDC deposits only, and every issue's bond taken from its issuer's USDC. The
taker bot buys a strip every twenty seconds or so: each one in the log bought every hour
of it, at most its limit.

`gpux dev` runs as a subprocess on a temporary data directory and free ports, with its
embedded log, PostgreSQL (the pgserver wheel's binaries) and anvil. Screenshots and the
browser consoles go to test-artifacts/dev-venue/, with the venue's output and dev.log.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventlog.embedded import EmbeddedLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC
from gpux.dev.bots import OPERATOR_GPUS, node_name
from gpux.dev.market import GPU_CLASSES, REGION, TICK_MICRO, bond_per_gpu_hour_micro
from harness.ports import free_ports
from harness.service import remove_run_dir
from matching_engine.core import Engine
from protocol import (
    USDC,
    CapacityIssued,
    Deposited,
    IssueCapacity,
    StripAccepted,
    StripDone,
    Trade,
    decode_command,
    decode_event,
    encode,
    format_micro,
    parse_micro,
)
from sdk.client import Client
from sdk.signing import ApiKey
from tests.e2e.browser import Browser, Page, chromium_path, level_size, toast_with, unavailable
from tests.helpers import eventually, read_topic
from wsapi.messages import Balance, Instrument, Issue

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dev-venue"
# The first start on a fresh machine may run `npm ci` and compile the contracts.
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 90.0
WAIT_TIMEOUT_S = 30.0
URL_PATTERN = re.compile(r"(http://127\.0\.0\.1:(\d+)/#key=[^\s]+)")
GPU = "H100-SXM-80GB"
QUANTITY = 3


@dataclass
class DevProcess:
    """One `gpux dev` run: its output lines, and the page URL once it printed one."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, data_dir: Path, name: str, extra_args: Sequence[str] = (),
                    artifacts: Path = ARTIFACTS) -> DevProcess:
        port, metrics_port = free_ports(2)
        artifacts.mkdir(parents=True, exist_ok=True)
        stderr = (artifacts / f"{name}-stderr.txt").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpux", "dev", "--data-dir", str(data_dir),
            "--port", str(port), "--metrics-port", str(metrics_port), *extra_args,
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        stderr.close()
        dev = cls(process)
        dev.reader = asyncio.create_task(dev._read(artifacts / f"{name}-stdout.txt"))
        await eventually(lambda: dev.url is not None or process.returncode is not None,
                         timeout_s=START_TIMEOUT_S, interval_s=0.2,
                         message=f"gpux dev ({name}) printed its URL")
        assert dev.url is not None, "gpux dev exited before it was up:\n" + "\n".join(dev.lines)
        return dev

    async def _read(self, copy: Path) -> None:
        assert self.process.stdout is not None
        with copy.open("w", encoding="utf-8") as out:
            while raw := await self.process.stdout.readline():
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                out.write(line + "\n")
                out.flush()

    @property
    def url(self) -> str | None:
        for line in self.lines:
            if "trading page" in line and (match := URL_PATTERN.search(line)):
                return match.group(1)
        return None

    @property
    def port(self) -> int:
        assert self.url is not None
        match = URL_PATTERN.search(self.url)
        assert match is not None
        return int(match.group(2))

    @property
    def metrics_url(self) -> str:
        for line in self.lines:
            if line.strip().startswith("metrics") and (found := re.search(r"http://\S+", line)):
                return found.group(0).removesuffix("/metrics")
        raise AssertionError("gpux dev printed no metrics URL")

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def interrupt(self) -> int:
        """Stop it as Ctrl-C does; return its exit code."""
        self.process.send_signal(signal.SIGINT)
        await eventually(lambda: self.process.returncode is not None, timeout_s=STOP_TIMEOUT_S,
                         interval_s=0.2, message="gpux dev stopped after SIGINT")
        if self.reader is not None:
            await self.reader
        assert self.process.returncode is not None
        return self.process.returncode

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metric_value(body: bytes, name: str) -> float:
    """The value of an unlabelled sample in a Prometheus text exposition."""
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no sample {name} on /metrics")


async def proof_verified(url: str) -> bool:
    status, body = await asyncio.to_thread(http_get, url)
    return status == 200 and json.loads(body)["verified"] is True


async def assert_proof_numbers_are_strings(url: str) -> None:
    """A uint256 as a JSON number is rounded by every JavaScript verifier (the token id has
    76 digits), which then recomputes a wrong Merkle leaf: ids and amounts are strings."""
    status, body = await asyncio.to_thread(http_get, url)
    proof = json.loads(body)
    assert status == 200 and isinstance(proof["batch_id"], str), body[:300]
    assert all(isinstance(value, str) for value in proof["fill"].values()), proof["fill"]
    assert int(proof["fill"]["asset"]) > 2**53


async def add_key_with_dev_flag(dev: DevProcess, data_dir: Path) -> None:
    """The command `gpux dev` prints adds a key to the running venue without a database
    URL, and prints it in the KEY_ID:PRIVATE_KEY form the page and `gpux trade --key` take;
    the CLI client logs in with it."""
    printed = next(line for line in dev.lines if "gateway add-key --dev" in line)
    gpux = Path(printed.split()[3])
    assert gpux.is_file(), f"{gpux}: the venv's gpux, usable without activating the venv"
    added = await asyncio.to_thread(subprocess.run, [
        str(gpux), "gateway", "add-key", "--dev", str(data_dir), "--account", "carol",
        "--role", "trader"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert added.returncode == 0, added.stderr
    login = next(line.split()[1] for line in added.stdout.splitlines()
                 if line.startswith("login:"))
    trade = await asyncio.to_thread(subprocess.run, [
        str(gpux), "trade", "--url", dev.ws_url, "--key", login, "balances"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert trade.returncode == 0, trade.stdout + trade.stderr


@dataclass
class Snapshot:
    """What a client sees of the market: instruments, an account's balances and issues."""

    instruments: list[Instrument]
    balances: dict[str, Balance]
    issues: list[Issue]


async def snapshot(dev: DevProcess, key: dict[str, str]) -> Snapshot:
    async with Client(dev.ws_url, credentials=ApiKey(key["key_id"], key["private_key"]),
                      reconnect=False) as client:
        return Snapshot(await client.instruments(status="all"), await client.balances(),
                        (await client.deliveries()).issues)


def tokens(balances: dict[str, Balance], symbol: str) -> int:
    balance = balances.get(symbol)
    return int(balance.available) + int(balance.held) if balance is not None else 0


def hourly(instruments: list[Instrument]) -> list[Instrument]:
    """The hourly books (not the demo delivery hours of their own region)."""
    return [i for i in instruments if i.region == REGION]


def last_hour(instruments: list[Instrument], gpu: str) -> Instrument:
    """The furthest delivery hour: only the operator quotes it, the bots never trade it."""
    return max((i for i in hourly(instruments) if i.gpu == gpu and i.status == "open"),
               key=lambda i: i.delivery_start)


def next_hour(instruments: list[Instrument], gpu: str) -> Instrument:
    """The nearest delivery hour not about to close: the market maker quotes it."""
    soon_ns = time.time_ns() + 5 * 60 * 10**9
    return min((i for i in hourly(instruments)
                if i.gpu == gpu and i.status == "open" and i.delivery_start > soon_ns),
               key=lambda i: i.delivery_start)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    executable = chromium_path()
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    if shutil.which("node") is None:
        unavailable("gpux dev needs node and npm (anvil and solc come from npm)")
    async with Browser.launch(str(executable), tmp_path / "profile", ARTIFACTS) as launched:
        yield launched


async def log_in_from_url(page: Page, url: str, account: str) -> None:
    await page.goto(url)
    await page.wait_for(f"document.getElementById('account-name').textContent === '{account}'"
                        " && !location.hash.includes('key=')"
                        " && document.querySelector('#balances-body tr[data-asset=\"USDC\"]')"
                        " !== null", f"{account} is logged in from the URL")


async def pick(page: Page, symbol: str) -> None:
    await page.click(f'.gpu-tab[data-gpu="{GPU}"]')
    await page.click(f'.hour[data-symbol="{symbol}"]')
    await page.wait_for(f"location.hash.includes({json.dumps(symbol)})"
                        " && document.querySelectorAll('#ladder-asks .level[data-price]').length"
                        " > 0", f"{symbol}'s book shows")


@pytest.mark.timeout(900)
async def test_dev_brings_up_a_live_venue_that_trades_in_the_browser_and_resumes(
    browser: Browser, tmp_path: Path
) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    data_dir = tmp_path / "dev"
    keys = {}
    dev = await DevProcess.start(data_dir, "first")
    try:
        keys = json.loads((data_dir / "demo-keys.json").read_text())
        before = await snapshot(dev, keys["alice"])
        assert len(hourly(before.instruments)) == 72, "24 delivery hours of 3 GPU classes"
        assert {(i.gpu, i.bond_per_gpu_hour) for i in before.instruments} == {
            (gpu, format_micro(bond_per_gpu_hour_micro(gpu))) for gpu in GPU_CLASSES
        }, "every hour deliverable, bonded at 1.5 reference prices"
        assert set(before.balances) == {USDC}, "a trader starts with USDC only"
        target = last_hour(before.instruments, GPU)

        # The operator issues the furthest hour (its bond out of its USDC) and offers it.
        operator = await snapshot(dev, keys["operator-1"])

        async def operator_offers() -> bool:
            nonlocal operator
            operator = await snapshot(dev, keys["operator-1"])
            balance = operator.balances.get(target.symbol)
            return balance is not None and int(balance.held) == OPERATOR_GPUS

        await eventually(operator_offers, timeout_s=START_TIMEOUT_S, interval_s=0.5,
                         message="the operator's ask rests on the furthest hour")
        issue = next(i for i in operator.issues if i.instrument == target.symbol)
        bond = OPERATOR_GPUS * bond_per_gpu_hour_micro(GPU)
        assert (issue.issue_id, issue.node_id, issue.quantity, parse_micro(issue.bond),
                issue.status) == (f"operator-1.{target.symbol}.{node_name('op1', GPU)}",
                                  node_name("op1", GPU), OPERATOR_GPUS, bond, "open")
        operator_price = format_micro(GPU_CLASSES[GPU])
        ask = format_micro(GPU_CLASSES[GPU] - 5 * TICK_MICRO)  # below the operator's ask

        # The books are alive: the market maker quotes both sides of the nearest hours.
        alice = await browser.new_page(1600, 1000)
        await log_in_from_url(alice, dev.url or "", "alice")
        await pick(alice, next_hour(before.instruments, GPU).symbol)
        await alice.wait_for("document.querySelectorAll('#ladder-bids .level[data-price]').length"
                             " > 0 && document.querySelectorAll('#ladder-asks .level[data-price]')"
                             ".length > 0", "the nearest hour has bids and asks")
        await alice.screenshot("01-live-market")

        # Alice buys GPU-hours of the operator at market on the furthest hour (only the
        # operator offers it), then offers them cheaper through the form.
        await pick(alice, target.symbol)
        await alice.wait_for(f"{level_size('asks', operator_price)} === '{OPERATOR_GPUS}'",
                             "the operator's issued GPU-hours are on the book")
        await alice.click(".type-tabs input[value=market] + span")
        await alice.fill("#order-quantity", str(QUANTITY))
        await alice.click("#order-submit")
        await alice.wait_for(f"{level_size('asks', operator_price)} === "
                             f"'{OPERATOR_GPUS - QUANTITY}' && document.querySelectorAll("
                             "'#fills-body tr[data-trade-id]').length === 1",
                             "alice bought of the operator's ask")
        await alice.click(".type-tabs input[value=limit] + span")
        await alice.click(".side.sell span")
        await alice.fill("#order-price", ask)
        await alice.fill("#order-quantity", str(QUANTITY))
        await alice.click("#order-submit")
        await alice.wait_for(f"{level_size('asks', ask)} === '{QUANTITY}'"
                             " && document.querySelectorAll('#orders-body tr"
                             "[data-client-order-id]').length === 1",
                             "alice's ask rests on the book and in her open orders")
        await alice.screenshot("02-order-resting")

        # Bob, logged in from a link to that hour, buys at market and crosses it.
        bob = await browser.new_page(1600, 1000)
        await log_in_from_url(bob, f"{dev.http_url}#key={keys['bob']['key_id']}:"
                              f"{keys['bob']['private_key']}&account=bob"
                              f"&instrument={target.symbol}", "bob")
        await bob.click(".type-tabs input[value=market] + span")
        await bob.fill("#order-quantity", str(QUANTITY))
        await bob.click("#order-submit")
        await bob.wait_for(toast_with("accepted"), "bob's market buy is accepted")
        await bob.wait_for("document.querySelectorAll('#fills-body tr[data-trade-id]').length"
                           " === 1", "bob sees his fill")
        await alice.front()
        await alice.wait_for("document.querySelectorAll('#fills-body tr[data-trade-id]').length"
                             " === 2 && document.querySelectorAll('#orders-body tr"
                             "[data-client-order-id]').length === 0 && "
                             f"{level_size('asks', ask)} === ''",
                             "alice sees her fill, and her ask left the book")
        trade_id = await alice.evaluate(
            "document.querySelector('#fills-body tr[data-trade-id]').dataset.tradeId")
        await alice.click("#tab-fills")
        await alice.screenshot("03-alice-filled")

        # The fill is settled on chain; its proof verifies against the Vault's root.
        proof_url = f"{dev.http_url}proof/{trade_id}"
        await eventually(lambda: proof_verified(proof_url), timeout_s=WAIT_TIMEOUT_S,
                         interval_s=0.5, message="the fill's settlement proof verifies")
        await assert_proof_numbers_are_strings(proof_url)
        await add_key_with_dev_flag(dev, data_dir)
        status, body = await asyncio.to_thread(http_get, dev.metrics_url + "/metrics")
        assert status == 200
        assert b"gpux_gateway_order_ack_seconds_count" in body
        assert b"gpux_engine_commands_total" in body
        assert metric_value(body, "gpux_ledger_events_total") > 0
        assert metric_value(body, "gpux_settlement_fills_settled_total") > 0
        assert (await asyncio.to_thread(http_get, dev.metrics_url + "/healthz"))[0] == 200
        filled = await snapshot(dev, keys["alice"])
        for name, page in (("alice", alice), ("bob", bob)):
            page.save_console(f"first-{name}")
            assert page.errors == [], f"{name}'s console: {page.errors}"
        await alice.close()
        await bob.close()
        assert await dev.interrupt() == 0
        assert dev.lines[-1] == "gpux dev: stopped"
    finally:
        await dev.kill()

    # Started again on the same data dir: the same market, keys, balances, trade and proof.
    again = await DevProcess.start(data_dir, "second")
    try:
        assert json.loads((data_dir / "demo-keys.json").read_text()) == keys
        after = await snapshot(again, keys["alice"])
        assert {i.symbol for i in before.instruments} <= {i.symbol for i in after.instruments}
        assert after.balances[USDC] == filled.balances[USDC]
        assert tokens(filled.balances, target.symbol) == 0, "alice sold what she bought"
        assert tokens(after.balances, target.symbol) == 0
        operator_again = await snapshot(again, keys["operator-1"])
        assert [i for i in operator_again.issues if i.instrument == target.symbol] == [issue], \
            "the restarted operator issued the hour once"
        alice = await browser.new_page(1600, 1000)
        await log_in_from_url(alice, again.url or "", "alice")
        await pick(alice, target.symbol)
        await alice.wait_for(f"document.querySelector('#tape .tape-row[data-trade-id="
                             f"\"{trade_id}\"]') !== null", "the trade is on the tape again")
        await alice.screenshot("04-resumed")
        assert await proof_verified(f"{again.http_url}proof/{trade_id}")
        alice.save_console("second-alice")
        assert alice.errors == [], f"alice's console: {alice.errors}"
        assert await again.interrupt() == 0
    finally:
        await again.kill()
        shutil.copy(data_dir / "dev.log", ARTIFACTS / "dev.log")
        remove_run_dir(data_dir / "postgres")  # as root its data may be linked from /tmp

    # The log is the truth: replaying its commands gives its events, byte for byte.
    event_log = EmbeddedLog.open(data_dir / "log")
    try:
        commands = await read_topic(event_log, COMMANDS_TOPIC)
        events = await read_topic(event_log, EVENTS_TOPIC)
    finally:
        await event_log.close()
    engine, replayed, issuers = replay_checking_issues(commands)
    assert replayed == events
    assert b'"duplicate_instrument"' not in b"".join(events), "no hour was listed twice"
    assert engine.trade_counter > 1, "the bots traded too"
    assert issuers == {"operator-1", "mm-1"}, "the operator and the market maker issued"
    check_strips([decode_event(line) for line in events])


def check_strips(events: list[object]) -> None:
    """Every strip the taker bot bought traded each of its hours in order, its quantity in
    each, for the notional strip_done says and at most its limit."""
    accepted = {e.strip_id: e for e in events if isinstance(e, StripAccepted)}
    done = [e for e in events if isinstance(e, StripDone)]
    assert {e.strip_id for e in done} == set(accepted), "every accepted strip is done"
    for strip in done:
        legs = accepted[strip.strip_id]
        assert legs.account == "taker-1" and legs.side == "buy"
        trades = [e for e in events if isinstance(e, Trade) and e.taker_order_id == strip.strip_id]
        bought: dict[str, int] = {}
        for trade in trades:
            bought[trade.instrument] = bought.get(trade.instrument, 0) + trade.quantity
        assert list(bought) == legs.instruments
        assert set(bought.values()) == {legs.quantity}
        notional = sum(parse_micro(t.price) * t.quantity for t in trades)
        assert notional == parse_micro(strip.notional) <= parse_micro(legs.limit_total)


def replay_checking_issues(commands: list[bytes]) -> tuple[Engine, list[bytes], set[str]]:
    """Replay the log's commands; check that nobody deposits GPU-hours and that each issue
    takes its bond out of the issuer's available USDC and credits its tokens; return the
    engine, the events' lines and the accounts that issued."""
    engine = Engine()
    replayed: list[bytes] = []
    issuers: set[str] = set()
    for line in commands:
        command = decode_command(line)
        if isinstance(command, IssueCapacity):
            usdc = engine.available(command.account, USDC)
            held = engine.available(command.account, command.instrument)
        for event in engine.apply(command):
            replayed.append(encode(event))
            if isinstance(event, Deposited):
                assert event.asset == USDC, f"{event.account} got {event.asset} by deposit"
            if isinstance(event, CapacityIssued):
                issuers.add(event.account)
                assert engine.available(event.account, USDC) == usdc - parse_micro(event.bond)
                assert engine.available(event.account, event.instrument) == (
                    held + event.quantity)
    return engine, replayed, issuers
