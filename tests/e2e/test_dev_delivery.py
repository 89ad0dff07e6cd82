"""A demo hour bought in `gpux dev` is delivered end to end (issue 17).

`gpux dev` runs as a subprocess (tests.e2e.test_dev_venue.DevProcess) with the first demo
hour `--demo-lead-s` after it is up. The operator and the market maker each issue and offer
DEMO_GPU_HOURS of it; the page account (alice) buys all of them on the page, in Chromium,
opened from the URL `gpux dev` prints: she picks the demo hour among the H100 hours, and one
market order of the ticket takes both asks (the market maker's is the cheaper). So at the
close she holds an assignment of each issue: one on the operator's node, one on the market
maker's node, which is down for minutes 30-44 of the measured hour. Then:
- `delivery_access` gives her a certificate for each, and she logs in to both embedded
  nodes inside the window, with asyncssh and with the `ssh` line the banner's access command
  prints (OpenSSH's client); the page shows both access lines on the Deliveries tab while
  the hour is measured;
- each report settles from the measurement: the operator's hour in full, the market
  maker's 45 of 60 minutes (750000 ppm, a minute either way tolerated), and alice's USDC
  grows by exactly the compensation the engine paid;
- the quality request, feed and `GET /quality` show both operators' hours, the market
  maker's with its incident, and so does the page's Quality tab;
- /metrics counts the settled reports; Ctrl-C stops everything (exit 0).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from gpux.dev.bots import DEMO_GPU_HOURS, node_name
from gpux.dev.market import DEMO_GPU, DEMO_REGION, bond_per_gpu_hour_micro
from gpux.dev.nodes import OUTAGE_MINUTES, OUTAGE_NODE
from harness.service import remove_run_dir
from protocol import USDC, parse_micro
from sdk.client import Client
from sdk.signing import ApiKey
from tests.e2e.browser import Browser, Page, chromium_path, sent_ops, unavailable
from tests.e2e.test_dev_venue import ROOT, START_TIMEOUT_S, DevProcess, http_get, log_in_from_url
from tests.helpers import eventually
from wsapi.messages import AccessItem, Assignment, Instrument, OperatorQuality, QualityMessage

ARTIFACTS = ROOT / "test-artifacts" / "dev-delivery"
DEMO_LEAD_S = 40  # the first demo hour: 40 s after the venue is up, rounded up to the minute
MEASURE_TIMEOUT_S = 180.0  # the lead, the close, 60 compressed minutes, the report
FULL_PPM = 1_000_000
PAUSED_PPM = (60 - OUTAGE_MINUTES) * FULL_PPM // 60
ONE_MINUTE_PPM = FULL_PPM // 60 + 1


def client(dev: DevProcess, key: dict[str, str]) -> Client:
    return Client(dev.ws_url, credentials=ApiKey(key["key_id"], key["private_key"]),
                  reconnect=False)


def banner_value(dev: DevProcess, label: str) -> str:
    line = next(line for line in dev.lines if line.strip().startswith(label))
    return line.strip().removeprefix(label).strip()


async def offers(dev: DevProcess, key: dict[str, str], symbol: str) -> bool:
    """Tell whether the account offers DEMO_GPU_HOURS of `symbol` (its tokens held)."""
    async with client(dev, key) as session:
        balance = (await session.balances()).get(symbol)
    return balance is not None and int(balance.held) == DEMO_GPU_HOURS


async def login_with_asyncssh(item: AccessItem, identity: Path) -> str:
    """Log in to the assignment's node with the holder's key and certificate, the node's
    registered host key checked; return what the session wrote."""
    assert item.host is not None and item.port is not None and item.login is not None
    assert item.host_key is not None
    mine = item.certificates[0].certificate
    known = asyncssh.import_known_hosts(f"[{item.host}]:{item.port} {item.host_key}\n")
    async with asyncssh.connect(
            item.host, item.port, username=item.login, known_hosts=known,
            client_keys=[(asyncssh.read_private_key(identity),
                          asyncssh.import_certificate(mine))],
            agent_path=None, config=None, login_timeout=10) as connection:
        result = await connection.run("hostname", check=False, timeout=10)
    assert result.exit_status == 0
    return str(result.stdout)


async def login_with_printed_ssh(dev: DevProcess) -> list[str]:
    """Run the banner's access command; run each `ssh` line it prints (OpenSSH's client),
    non-interactive; return what the sessions wrote."""
    access = shlex.split(banner_value(dev, "ssh access"))
    printed = await asyncio.to_thread(subprocess.run, access, capture_output=True, text=True,
                                      timeout=60, cwd=ROOT)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    lines = [line.strip() for line in printed.stdout.splitlines()
             if line.strip().startswith("ssh ")]
    outputs = []
    for line in lines:
        command = shlex.split(line)
        command[1:1] = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        session = await asyncio.to_thread(subprocess.run, [*command, "hostname"],
                                          capture_output=True, text=True, timeout=60)
        assert session.returncode == 0, f"{line}: {session.stderr}"
        outputs.append(session.stdout)
    return outputs


@pytest.fixture
async def page_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Chromium, in which alice buys the demo hour and follows its delivery."""
    executable = chromium_path()
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium): the demo hour is "
                    "bought on the page")
    async with Browser.launch(str(executable), tmp_path / "profile", ARTIFACTS) as launched:
        yield launched


async def buy_on_the_page(page: Page, symbol: str, quantity: int) -> None:
    """Pick the demo hour among its class's hours (region shown), wait for both sellers'
    asks on its ladder, and buy `quantity` at market through the order ticket; return once
    the fills and the GPU-hours show on the page."""
    await page.click(f'.gpu-tab[data-gpu="{DEMO_GPU}"]')
    hour = f'.hour[data-symbol="{symbol}"]'
    await page.wait_for(f"document.querySelector('{hour} .hour-region')?.textContent"
                        f" === '{DEMO_REGION}'", "the demo hour is listed, its region shown")
    await page.click(hour)
    asks = "[...document.querySelectorAll('#ladder-asks .level[data-price]')]"
    await page.wait_for(f"location.hash.includes({json.dumps(symbol)})"
                        f" && {asks}.length === 2 && {asks}.reduce((sum, row) =>"
                        f" sum + Number(row.querySelector('.size').textContent), 0)"
                        f" === {quantity}", "both sellers' asks are on the demo hour's ladder",
                        timeout_s=30)
    await page.screenshot("00-demo-hour-offered")
    orders_before = sent_ops(page, "new_order")
    await page.click(".side.buy input[value=buy] + span")
    await page.click(".type-tabs input[value=market] + span")
    await page.fill("#order-quantity", str(quantity))
    await page.click("#order-submit")
    await page.wait_for(
        "document.querySelectorAll('#fills-body tr[data-trade-id]').length === 2"
        f" && document.querySelector('#balances-body tr[data-asset=\"{symbol}\"]') !== null",
        "alice sees both fills and holds the demo hour", timeout_s=30)
    assert sent_ops(page, "new_order") == orders_before + 1
    sent = [json.loads(text) for direction, text in page.frames
            if direction == "send" and json.loads(text).get("op") == "new_order"]
    order = sent[-1]
    assert (order["instrument"], order["side"], order["order_type"], order["quantity"]) == (
        symbol, "buy", "market", quantity), order
    await page.screenshot("00-demo-hour-bought")


@pytest.mark.timeout(900)
async def test_a_demo_hour_bought_is_delivered_measured_and_compensated(
        tmp_path: Path, page_browser: Browser) -> None:
    assert shutil.which("ssh") is not None, "the test runs the printed ssh line: apt-get " \
        "install openssh-client"
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    data_dir = tmp_path / "dev"
    dev = await DevProcess.start(data_dir, "delivery", ["--demo-lead-s", str(DEMO_LEAD_S)],
                                 artifacts=ARTIFACTS)
    try:
        keys = json.loads((data_dir / "demo-keys.json").read_text())
        alice_key, operator_key, maker_key = keys["alice"], keys["operator-1"], keys["mm-1"]
        symbol = banner_value(dev, "demo hour").split()[0]
        identity = Path(banner_value(dev, "ssh access").split("--identity")[1].split()[0])
        assert identity.is_file() and identity.with_name(identity.name + ".pub").is_file()

        async with client(dev, alice_key) as alice:
            demo: Instrument = next(i for i in await alice.instruments() if i.symbol == symbol)
            assert (demo.gpu, demo.region, demo.delivery_hours) == (DEMO_GPU, DEMO_REGION, 1)
            assert demo.bond_per_gpu_hour is not None

            # Both sellers issue the demo hour and offer it; alice, on the page opened from
            # the printed URL, buys all of it at market through the order ticket.
            for seller in (operator_key, maker_key):
                await eventually(functools.partial(offers, dev, seller, symbol),
                                 timeout_s=START_TIMEOUT_S, interval_s=0.5,
                                 message="a seller offers its demo GPU-hours")
            page = await page_browser.new_page(1600, 1000)
            await log_in_from_url(page, dev.url or "", "alice")
            await buy_on_the_page(page, symbol, 2 * DEMO_GPU_HOURS)
            await eventually(lambda: alice_tokens(alice, symbol, 2 * DEMO_GPU_HOURS),
                             timeout_s=30, interval_s=0.2, message="alice holds the demo hour")
            usdc_before = parse_micro((await alice.balances())[USDC].available)
            feed = await alice.quality_feed()

            # At the close: an assignment of each issue, a certificate of alice's key each.
            items: list[AccessItem] = []

            async def certified() -> bool:
                nonlocal items
                items = [i for i in await alice.delivery_access() if i.instrument == symbol]
                return len(items) == 2 and all(i.certificates and i.host for i in items)

            await eventually(certified, timeout_s=MEASURE_TIMEOUT_S, interval_s=0.5,
                             message="alice's two assignments are certified")
            nodes = {item.node_id: item for item in items}
            healthy_node = node_name("op1", DEMO_GPU)
            assert set(nodes) == {healthy_node, OUTAGE_NODE}
            assert {i.quantity for i in items} == {DEMO_GPU_HOURS}
            assert all(i.window_start == demo.delivery_start for i in items)

            # Alice logs in to the healthy node at once; the page shows both access lines.
            assert healthy_node in await login_with_asyncssh(nodes[healthy_node], identity)
            await page.click("#tab-deliveries")
            for item in items:
                row = (f'#deliveries-body tr[data-issue-id="{item.issue_id}"]'
                       '[data-holder="alice"]')
                await page.wait_for(f"document.querySelector('{row} [data-field=ssh]')"
                                    " !== null", f"the ssh line of {item.node_id} shows")
                assert (await page.text(f"{row} [data-field=ssh]")).endswith(
                    f"-p {item.port} {item.login}@{item.host}")
            await page.screenshot("01-deliveries-access-lines")

            # The reports settle from the measurement, paying her the compensation.
            settled: dict[str, Assignment] = {}

            async def reported() -> bool:
                nonlocal settled
                settled = {a.node_id: a for a in (await alice.deliveries()).assignments
                           if a.instrument == symbol and a.status == "settled"}
                return len(settled) == 2

            await eventually(reported, timeout_s=MEASURE_TIMEOUT_S, interval_s=0.5,
                             message="both demo assignments are settled")
            assert settled[healthy_node].delivered_ppm == FULL_PPM
            paused_ppm = settled[OUTAGE_NODE].delivered_ppm
            assert paused_ppm is not None and abs(paused_ppm - PAUSED_PPM) <= ONE_MINUTE_PPM, \
                paused_ppm
            bond_micro = bond_per_gpu_hour_micro(DEMO_GPU)
            assert parse_micro(demo.bond_per_gpu_hour) == bond_micro
            compensation = {node: DEMO_GPU_HOURS * bond_micro * (FULL_PPM - a.delivered_ppm)
                            // FULL_PPM for node, a in settled.items()
                            if a.delivered_ppm is not None}
            assert compensation[healthy_node] == 0 < compensation[OUTAGE_NODE]
            for node, assignment in settled.items():
                assert parse_micro(assignment.compensation or "0") == compensation[node]
                assert assignment.evidence is not None and len(assignment.evidence) == 64
            await eventually(lambda: usdc_grew(alice, usdc_before + sum(compensation.values())),
                             timeout_s=30, interval_s=0.2,
                             message="alice's USDC grew by the compensation")

            # Inside the window (a real hour), after the outage: both nodes let her in.
            assert OUTAGE_NODE in await login_with_asyncssh(nodes[OUTAGE_NODE], identity)
            printed = await login_with_printed_ssh(dev)
            assert sorted(node for node in nodes for out in printed if node in out) == \
                sorted(nodes), printed

            # The quality record: request, feed and HTTP, both operators' demo hours.
            records = {r.operator: r for r in await alice.quality()}
            check_quality(records, healthy_node)
            http = {r.operator: r for r in await alice.quality_http()}
            check_quality(http, healthy_node)
            fed: dict[str, OperatorQuality] = {}
            while not {"operator-1", "mm-1"} <= fed.keys() or not quality_shows(fed):
                message = await feed.get(timeout_s=30)
                assert isinstance(message, QualityMessage)
                fed.update((r.operator, r) for r in message.operators)
            check_quality(fed, healthy_node)
            await page.click("#tab-quality")
            for operator in ("operator-1", "mm-1"):
                await page.wait_for(f"document.querySelector('#quality-body tr[data-operator="
                                    f"\"{operator}\"]') !== null",
                                    f"the Quality tab shows {operator}")
            await page.click("#tab-deliveries")
            await page.screenshot("02-deliveries-settled")
            await page.click("#tab-quality")
            await page.screenshot("03-quality")
            page.save_console("alice")
            assert page.errors == [], f"alice's console: {page.errors}"

        status, body = await asyncio.to_thread(http_get, dev.metrics_url + "/metrics")
        assert status == 200
        settled_metric = next(line for line in body.decode().splitlines() if line.startswith(
            'gpux_delivery_reports_answered_total{outcome="settled"}'))
        assert float(settled_metric.split()[1]) >= 2
        assert (await asyncio.to_thread(http_get, dev.metrics_url + "/healthz"))[0] == 200
        await eventually(lambda: status_settled(dev) >= 2, timeout_s=30, interval_s=0.5,
                         message="the status line counts the settled hours")
        assert await dev.interrupt() == 0
        assert dev.lines[-1] == "gpux dev: stopped"
    finally:
        await dev.kill()
        if (data_dir / "dev.log").exists():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / "dev.log", ARTIFACTS / "dev.log")
        remove_run_dir(data_dir / "postgres")  # as root its data may be linked from /tmp


async def alice_tokens(alice: Client, symbol: str, quantity: int) -> bool:
    balance = (await alice.balances()).get(symbol)
    return balance is not None and int(balance.available) + int(balance.held) == quantity


async def usdc_grew(alice: Client, expected_micro: int) -> bool:
    return parse_micro((await alice.balances())[USDC].available) == expected_micro


def status_settled(dev: DevProcess) -> int:
    """The settled hours the latest status line of gpux dev counts."""
    for line in reversed(dev.lines):
        if (found := re.search(r"delivery: \d+ hours measured, (\d+) settled", line)):
            return int(found.group(1))
    return 0


def quality_shows(records: dict[str, OperatorQuality]) -> bool:
    """Both operators' records have their demo node's hour (and the maker's an incident)."""
    operator, maker = records.get("operator-1"), records.get("mm-1")
    if operator is None or maker is None:
        return False
    healthy = next((n for n in operator.nodes if n.node_id == node_name("op1", DEMO_GPU)), None)
    paused = next((n for n in maker.nodes if n.node_id == OUTAGE_NODE), None)
    return (healthy is not None and healthy.hours >= 1 and paused is not None
            and paused.hours >= 1 and paused.incidents_count >= 1)


def check_quality(records: dict[str, OperatorQuality], healthy_node: str) -> None:
    assert quality_shows(records), records
    healthy = next(n for n in records["operator-1"].nodes if n.node_id == healthy_node)
    assert healthy.delivered_share_ppm == FULL_PPM
    assert healthy.delivered_share_histogram.get("100", 0) >= 1
    assert healthy.challenges_passed >= 1 and healthy.challenges_failed == 0
    paused = next(n for n in records["mm-1"].nodes if n.node_id == OUTAGE_NODE)
    assert paused.delivered_share_ppm < FULL_PPM
    assert paused.delivered_share_histogram.get("0-75", 0) \
        + paused.delivered_share_histogram.get("75-90", 0) >= 1
