"""The demo market of `gpux dev`: what is listed, who trades, and their API keys.

Three GPU classes in one region, one deliverable contract per delivery hour for the next 24
hours (`listing_commands` lists whatever hours are missing, on every start and every few
minutes), each bonded at 1.5 times its class's price index when the index has a value, else
1.5 times the class's reference price. The demo accounts are
anvil's default dev wallets, so the same wallets exist on every start of the same chain and
need no keys kept: each deposits USDC on chain through the Vault, credited by the deposit
watcher like any depositor's. Nobody deposits GPU-hours: the accounts that supply them
(the operator, the market maker) issue them at the venue, bonding USDC (gpux.dev.bots), and
the traders buy theirs. The API keys are made once and kept in the data directory
(`demo-keys.json`, private keys: mode 0600).

The demo delivery hours (issue 17): so that a visitor sees an hour delivered without waiting
for the next whole hour, `gpux dev` also lists one H100 hour starting `--demo-lead-s` after
its start (rounded up to the minute) and then one every `--demo-interval-s`. They are not
hour-aligned, so they live in a region of their own, `eu-west-demo`, with a minute in the
symbol (`H100-SXM-80GB.eu-west-demo.20261205T0931`): the hourly strips, the price index
series of `eu-west` and the bots trading the hourly books (`REGION`) never see them; the
page lists them among the H100 hours with their region shown. The operator and the market
maker each issue DEMO_GPU_HOURS of a demo hour and offer them (gpux.dev.bots).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Final

from gateway.store import PostgresKeyStore
from protocol import ListInstrument, format_micro

HOUR_NS: Final = 3600 * 10**9
DELIVERY_HOURS_AHEAD: Final = 24
REGION: Final = "eu-west"
TICK_MICRO: Final = 10_000  # 0.01 USDC
# GPU class -> its reference price per GPU-hour (the operator asks it), in micro-USDC.
GPU_CLASSES: Final = {"H100-SXM-80GB": 2_150_000, "A100-SXM-80GB": 1_300_000,
                      "L40S-48GB": 800_000}
BOND_PER_REFERENCE: Final = Fraction(3, 2)  # a GPU-hour's bond, in reference prices
DEMO_REGION: Final = "eu-west-demo"  # the demo hours' own region: see the module docstring
DEMO_GPU: Final = "H100-SXM-80GB"
MINUTE_NS: Final = 60 * 10**9
DEMO_SLOTS_AHEAD: Final = 2  # demo hours listed ahead of now
DEMO_LIST_LEAD_NS: Final = 30 * 10**9  # a demo hour this close to its start is not listed
CENT_MICRO: Final = 10_000
MAX_ORDER_QUANTITY: Final = 10_000
MAKER_FEE_BPS: Final = 2
TAKER_FEE_BPS: Final = 5

# anvil's default dev wallets (settlement.chain.dev_account) and what each does.
DEPLOYER_WALLET: Final = 0
SETTLER_WALLET: Final = 1
MINTER_WALLET: Final = 2
FEES_WALLET: Final = 8


@dataclass(frozen=True, slots=True)
class DemoAccount:
    """An exchange account of the demo, its role, wallet and the USDC it starts with."""

    name: str
    role: str
    wallet: int  # anvil dev account index
    usdc: int  # whole USDC deposited on the first start


PAGE_ACCOUNT: Final = "alice"
# The operator bonds 8 GPUs of each class for 24 hours at a time (about 1,250 USDC, given
# back at close for what it did not sell); the market maker 400 GPU-hours of each class for
# the hours it quotes (about 7,700 USDC).
DEMO_ACCOUNTS: Final = (
    DemoAccount("alice", "trader", wallet=5, usdc=100_000),
    DemoAccount("bob", "trader", wallet=6, usdc=100_000),
    DemoAccount("mm-1", "market_maker", wallet=3, usdc=2_000_000),
    DemoAccount("operator-1", "operator", wallet=4, usdc=10_000),
    DemoAccount("taker-1", "trader", wallet=7, usdc=500_000),
)


def symbol_for(gpu: str, delivery_start_ns: int) -> str:
    hour = datetime.fromtimestamp(delivery_start_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H")
    return f"{gpu}.{REGION}.{hour}"


def demo_symbol_for(gpu: str, delivery_start_ns: int) -> str:
    """The symbol of a demo hour: its region and its start to the minute."""
    minute = datetime.fromtimestamp(delivery_start_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H%M")
    return f"{gpu}.{DEMO_REGION}.{minute}"


def is_demo(region: str) -> bool:
    """Tell whether an instrument of `region` is a demo hour (not one of the hourly books)."""
    return region == DEMO_REGION


def demo_anchor_ns(started_ns: int, lead_ns: int) -> int:
    """The first demo hour's start: `lead_ns` after `started_ns`, rounded up to the minute."""
    return -(-(started_ns + lead_ns) // MINUTE_NS) * MINUTE_NS


def demo_starts(anchor_ns: int, interval_ns: int, now_ns: int,
                count: int = DEMO_SLOTS_AHEAD) -> list[int]:
    """The next `count` demo hour starts (`anchor_ns + k * interval_ns`, k >= 0) at least
    DEMO_LIST_LEAD_NS after `now_ns`."""
    if interval_ns <= 0:
        raise ValueError(f"interval_ns must be > 0, got {interval_ns}")
    earliest = now_ns + DEMO_LIST_LEAD_NS
    k = max(0, -(-(earliest - anchor_ns) // interval_ns))
    return [anchor_ns + (k + i) * interval_ns for i in range(count)]


def demo_listing_commands(listed: Collection[str], now_ns: int,
                          starts: list[int]) -> list[ListInstrument]:
    """The listings of the demo hours starting at `starts` not yet in `listed`: DEMO_GPU in
    DEMO_REGION, one hour each, bonded at 1.5 reference prices like the hourly books."""
    commands = []
    for start in starts:
        symbol = demo_symbol_for(DEMO_GPU, start)
        if symbol not in listed:
            commands.append(ListInstrument(
                ts=now_ns, symbol=symbol, gpu=DEMO_GPU, region=DEMO_REGION,
                delivery_start=start, delivery_hours=1, tick_size=format_micro(TICK_MICRO),
                max_order_quantity=MAX_ORDER_QUANTITY, maker_fee_bps=MAKER_FEE_BPS,
                taker_fee_bps=TAKER_FEE_BPS,
                bond_per_gpu_hour=format_micro(bond_per_gpu_hour_micro(DEMO_GPU))))
    return commands


def upcoming_hours(now_ns: int) -> Iterator[int]:
    """Yield the starts of the next DELIVERY_HOURS_AHEAD delivery hours, in ns."""
    first = (now_ns // HOUR_NS + 1) * HOUR_NS
    return (first + hour * HOUR_NS for hour in range(DELIVERY_HOURS_AHEAD))


def fair_price_micro(gpu: str, delivery_start_ns: int) -> int:
    """Return the market maker's reference for one delivery hour: the operator's price less
    up to 8%, least at 15:00 UTC, most at 03:00 (a day's demand), on the tick."""
    hour = delivery_start_ns // HOUR_NS % 24
    discount = 0.04 * (1 - math.cos(2 * math.pi * (hour - 15) / 24))
    price = GPU_CLASSES[gpu] * (1 - discount)
    return max(TICK_MICRO, round(price / TICK_MICRO) * TICK_MICRO)


def bond_per_gpu_hour_micro(gpu: str, index_micro: int | None = None) -> int:
    """Return the bond of one GPU-hour of `gpu`: 1.5 times the class's price index (its
    reference price when there is none), rounded to the cent (half up), so that an hour not
    delivered costs its issuer more than it sold for."""
    price = GPU_CLASSES[gpu] if index_micro is None else index_micro
    cents = price * BOND_PER_REFERENCE / CENT_MICRO
    return math.floor(cents + Fraction(1, 2)) * CENT_MICRO


def listing_commands(listed: Collection[str], now_ns: int,
                     index_micro: Mapping[str, int] | None = None) -> list[ListInstrument]:
    """Return the listings of the upcoming delivery hours not yet in `listed`, by hour, each
    deliverable with its class's bond: from `index_micro` (GPU class -> its latest index
    value in REGION) where it has the class, else from the reference price."""
    index_micro = index_micro or {}
    commands = []
    for start in upcoming_hours(now_ns):
        for gpu in GPU_CLASSES:
            symbol = symbol_for(gpu, start)
            if symbol not in listed:
                bond = bond_per_gpu_hour_micro(gpu, index_micro.get(gpu))
                commands.append(ListInstrument(
                    ts=now_ns, symbol=symbol, gpu=gpu, region=REGION, delivery_start=start,
                    delivery_hours=1, tick_size=format_micro(TICK_MICRO),
                    max_order_quantity=MAX_ORDER_QUANTITY, maker_fee_bps=MAKER_FEE_BPS,
                    taker_fee_bps=TAKER_FEE_BPS, bond_per_gpu_hour=format_micro(bond),
                ))
    return commands


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    account: str
    role: str
    key_id: str
    private_key: str


async def demo_keys(store: PostgresKeyStore, path: Path) -> dict[str, ApiKeyRecord]:
    """Return an API key per demo account: those in `path` that the store still knows,
    new ones for the rest (then written back to `path`)."""
    kept = _read_keys(path)
    keys: dict[str, ApiKeyRecord] = {}
    for account in DEMO_ACCOUNTS:
        record = kept.get(account.name)
        if record is not None and record.role == account.role:
            stored = await store.get_key(record.key_id)
            if stored is not None and not stored.revoked and stored.account == account.name:
                keys[account.name] = record
                continue
        key_id, private_key = await store.add_key(account.name, account.role)
        keys[account.name] = ApiKeyRecord(account.name, account.role, key_id, private_key)
    if keys != kept:
        _write_keys(path, keys)
    return keys


async def service_key(store: PostgresKeyStore, path: Path, account: str,
                      role: str) -> ApiKeyRecord:
    """Return the API key of a venue service's account (the delivery service's), kept in
    `path` like the demo keys: the one there while the store still knows it, else a new
    one (written to `path`, 0600)."""
    kept = _read_keys(path).get(account)
    if kept is not None and kept.role == role:
        stored = await store.get_key(kept.key_id)
        if stored is not None and not stored.revoked and stored.account == account:
            return kept
    key_id, private_key = await store.add_key(account, role)
    record = ApiKeyRecord(account, role, key_id, private_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_keys(path, {account: record})
    return record


def _read_keys(path: Path) -> dict[str, ApiKeyRecord]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: ApiKeyRecord(account=name, **fields) for name, fields in data.items()}
    except (OSError, ValueError, TypeError):
        return {}


def _write_keys(path: Path, keys: dict[str, ApiKeyRecord]) -> None:
    data = {name: {"role": key.role, "key_id": key.key_id, "private_key": key.private_key}
            for name, key in keys.items()}
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    temporary.replace(path)


def page_url(host: str, port: int, key: ApiKeyRecord) -> str:
    """Return the trading page's URL that logs `key` in (the key rides in the fragment,
    which the browser never sends to a server)."""
    return f"http://{host}:{port}/#key={key.key_id}:{key.private_key}&account={key.account}"
