"""Builders and drivers shared by the engine tests.

Every command goes through `protocol.decode_command` on JSON bytes, so the tests exercise the
real decode path (and malformed input is built the same way). `Driver` wraps an engine, the
real one or the reference model, checks `seq` continuity and returns events as the plain
dicts of their JSON encoding, which is what the tests compare. `run_both` holds the two
cores (`matching_engine.cores`) to the same bytes, record by record.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

import protocol
from matching_engine.core import Engine
from matching_engine.cores import NativeCore, PythonCore
from tests.reference_model import ReferenceEngine

T0 = 1_000_000_000_000  # ns: the time of the first command of most tests
SECOND = 1_000_000_000
DELIVERY = T0 + 3_600 * SECOND  # delivery start of the default instrument
SYMBOL = "H100-EU-1"

Command = Any  # protocol.AnyCommand | protocol.MalformedCommand

class NativeEngine:
    """The Rust core (`make native`) behind the face the rules suite drives: each command
    goes in as the JSON line the log would hold, its events come back decoded."""

    def __init__(self) -> None:
        from matching_engine.cores import NativeCore

        self.core = NativeCore()

    def apply(self, command: Command) -> list[protocol.Event]:
        payloads = self.core.apply_records([command_line(command)])
        return [protocol.decode_event(payload) for payload in payloads]

    def validate(self) -> None:
        problem = self.core.validate()
        assert problem is None, problem

    def final_state(self) -> dict[str, Any]:
        return self.core.final_state()


def command_line(command: Command) -> bytes:
    """A JSON line that decodes to `command` (a malformed one: to the same salvage)."""
    from matching_engine.cores import as_applied

    if not isinstance(command, protocol.MalformedCommand):
        return protocol.encode(command)
    fields = {name: getattr(command, name) for name in command.__struct_fields__
              if name not in ("type", "error") and getattr(command, name) is not None}
    line = msgspec.json.encode({**({"type": command.type} if command.type else {}), **fields,
                                "not_a_field": True})
    assert as_applied(protocol.decode_command(line)) == as_applied(command), line
    return line


IMPLEMENTATIONS: dict[str, Callable[[], Any]] = {
    "engine": lambda: Engine(check_invariants=True),
    "reference": ReferenceEngine,
    "native": NativeEngine,
}


# ------------------------------------------------------------------------- commands


def cmd(command_type: str, **fields: Any) -> Command:
    """Build a command of `command_type` through the real JSON decode path."""
    return protocol.decode_command(msgspec.json.encode({"type": command_type, **fields}))


def raw(text: str | bytes) -> Command:
    """Decode arbitrary bytes as a command (for malformed input)."""
    return protocol.decode_command(text.encode() if isinstance(text, str) else text)


def listing(symbol: str = SYMBOL, ts: int = T0, **overrides: Any) -> Command:
    fields: dict[str, Any] = {
        "ts": ts, "symbol": symbol, "gpu": "H100-SXM-80GB", "region": "eu-west",
        "delivery_start": DELIVERY, "delivery_hours": 24, "tick_size": "0.01",
        "max_order_quantity": 1_000, "maker_fee_bps": 10, "taker_fee_bps": 20,
    }
    fields.update(overrides)
    return cmd("list_instrument", **fields)


def deposit(account: str, asset: str, amount: str | int, ts: int = T0, **extra: Any) -> Command:
    return cmd("deposit", ts=ts, account=account, asset=asset, amount=amount, **extra)


def withdraw(account: str, asset: str, amount: str | int, ts: int = T0) -> Command:
    return cmd("withdraw", ts=ts, account=account, asset=asset, amount=amount)


def limit(account: str, client_order_id: str, side: str, price: str, quantity: int,
          ts: int = T0, instrument: str = SYMBOL, **extra: Any) -> Command:
    return cmd("new_order", ts=ts, account=account, client_order_id=client_order_id,
               instrument=instrument, side=side, order_type="limit", price=price,
               quantity=quantity, **extra)


def market(account: str, client_order_id: str, side: str, quantity: int, ts: int = T0,
           instrument: str = SYMBOL, **extra: Any) -> Command:
    return cmd("new_order", ts=ts, account=account, client_order_id=client_order_id,
               instrument=instrument, side=side, order_type="market", quantity=quantity,
               **extra)


def cancel(account: str, client_order_id: str, ts: int = T0) -> Command:
    return cmd("cancel_order", ts=ts, account=account, client_order_id=client_order_id)


def amend(account: str, client_order_id: str, ts: int = T0, **fields: Any) -> Command:
    return cmd("amend_order", ts=ts, account=account, client_order_id=client_order_id,
               **fields)


def mass_cancel(account: str, ts: int = T0, **fields: Any) -> Command:
    return cmd("mass_cancel", ts=ts, account=account, **fields)


def tick(ts: int) -> Command:
    return cmd("tick", ts=ts)


# ---------------------------------------------------------------------------- events


def to_dict(event: protocol.Event) -> dict[str, Any]:
    """An event as the dict of its JSON encoding (what goes on the wire)."""
    decoded: dict[str, Any] = msgspec.json.decode(protocol.encode(event))
    return decoded


class Driver:
    """Apply commands to one engine; check seq continuity; return events without `seq`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.last_seq = 0

    def apply(self, command: Command) -> list[dict[str, Any]]:
        events = self.engine.apply(command)
        self.engine.validate()
        out = []
        for event in events:
            assert event.seq == self.last_seq + 1, f"seq {event.seq} after {self.last_seq}"
            self.last_seq = event.seq
            as_dict = to_dict(event)
            del as_dict["seq"]
            out.append(as_dict)
        return out

    def run(self, *commands: Command) -> list[dict[str, Any]]:
        return [event for command in commands for event in self.apply(command)]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.engine.final_state()
        return state

    def open_orders(self) -> list[tuple[str, str, str, int]]:
        """(account, client_order_id, price, remaining) of each open order, in state order."""
        return [(o["account"], o["client_order_id"], o["price"], o["remaining_quantity"])
                for o in self.state()["open_orders"]]

    def balance(self, account: str, asset: str) -> tuple[str | int, str | int]:
        """(available, held) of one asset, zeros when absent from the final state."""
        zero: str | int = "0" if asset == protocol.USDC else 0
        entry = self.state()["accounts"].get(account, {}).get(asset)
        if entry is None:
            return zero, zero
        return entry["available"], entry["held"]


# ------------------------------------------------------------- the two cores, records


def run_both(records: list[bytes], python: PythonCore | None = None,
             native: NativeCore | None = None) -> list[dict[str, Any]]:
    """Apply each record to both cores, asserting the same events, final state and snapshot
    after each; return the events as dicts."""
    python = python if python is not None else PythonCore()
    native = native if native is not None else NativeCore()
    events: list[dict[str, Any]] = []
    for record in records:
        expected = python.apply_records([record])
        assert native.apply_records([record]) == expected, record
        assert json.dumps(native.final_state()) == json.dumps(python.final_state()), record
        assert native.snapshot() == python.snapshot(), record
        assert native.validate() is None, record
        events += [json.loads(event) for event in expected]
    return events


def outcomes(events: list[dict[str, Any]]) -> set[tuple[str, str | None]]:
    """(type, reason) of each event, reason None where it has none."""
    return {(event["type"], event.get("reason")) for event in events}


# ----------------------------------------------------------------- random streams


class RandomStream:
    """A seeded random stream of command JSON lines over a small market.

    It lists a few instruments (one with a 0.0001 tick and odd fee bps so fee floors show),
    funds several accounts, then draws orders near a mid price with every type, time in
    force, post-only and stp mode, cancels and amends of live and unknown client order
    ids, mass cancels, ticks that expire gtd orders and close instruments, withdrawals,
    deposits (some duplicate or bad) and some malformed lines. `next_line()` can go on
    forever: when instruments close, new ones are listed.
    """

    ACCOUNTS = ("alice", "bob", "carol", "dave", "erin")
    # erin is thin: her limit buys run out of funds and her market buys get capped.
    FUNDING: dict[str, tuple[str, int]] = {"erin": ("3.7", 4)}

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ts = T0
        self.listed = 0
        self.symbols: list[tuple[str, str, int]] = []  # (symbol, tick, delivery_start)
        self.client_order_ids: list[tuple[str, str]] = []
        self.deposit_count = 0
        self.pending: list[dict[str, Any]] = []

    def lines(self, count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield self.next_line()

    def next_line(self) -> bytes:
        if not self.pending:
            self._refill()
        item = self.pending.pop(0)
        if "__raw__" in item:
            text: bytes = item["__raw__"]
            return text
        return msgspec.json.encode(item)

    def _live_symbols(self) -> list[tuple[str, str, int]]:
        return [s for s in self.symbols if s[2] > self.ts]

    def _list_new(self) -> None:
        self.listed += 1
        tick = ("0.01", "0.0001", "0.05", "0.0003")[self.listed % 4]
        maker, taker = ((10, 20), (3, 7), (0, 13), (17, 9))[self.listed % 4]
        delivery = self.ts + self.rng.randint(400, 4_000) * SECOND
        symbol = f"GPU-{self.listed}"
        self.symbols.append((symbol, tick, delivery))
        self.pending.append({
            "type": "list_instrument", "ts": self.ts, "symbol": symbol, "gpu": "H100",
            "region": "eu", "delivery_start": delivery, "delivery_hours": 1,
            "tick_size": tick, "max_order_quantity": 50, "maker_fee_bps": maker,
            "taker_fee_bps": taker,
        })
        for account in self.ACCOUNTS:
            usdc, tokens = self.FUNDING.get(account, ("5000", 200))
            self.pending.append(self._deposit(account, "USDC", usdc))
            self.pending.append(self._deposit(account, symbol, tokens))

    def _deposit(self, account: str, asset: str, amount: str | int) -> dict[str, Any]:
        self.deposit_count += 1
        return {"type": "deposit", "ts": self.ts, "account": account, "asset": asset,
                "amount": amount, "deposit_id": f"tx-{self.deposit_count}"}

    def _refill(self) -> None:
        rng = self.rng
        self.ts += rng.choice((0, 0, 0, 1, 1_000, SECOND, SECOND, 5 * SECOND))
        if len(self._live_symbols()) < 2 or rng.random() < 0.003:
            self._list_new()
            return
        ts = self.ts
        if rng.random() < 0.03:
            ts -= rng.randint(1, 10) * SECOND  # late: the engine's time must not go back
        command = random_command(rng, ts, self._live_symbols(), self.symbols, self.ACCOUNTS,
                                 self.client_order_ids)
        if command.get("type") == "tick":
            self.ts = max(self.ts, command["ts"])
        self.pending.append(command)


def random_price(rng: random.Random, tick: str, mid_ticks: int = 200) -> str:
    """A price a few ticks around a mid of `mid_ticks` ticks, as a decimal string."""
    tick_micro = protocol.parse_micro(tick)
    ticks = max(1, mid_ticks + rng.randint(-6, 6))
    if rng.random() < 0.02:
        return protocol.format_micro(ticks * tick_micro + 1)  # off the tick
    return protocol.format_micro(ticks * tick_micro)


def random_command(rng: random.Random, ts: int, live: list[tuple[str, str, int]],
                   every: list[tuple[str, str, int]], accounts: Iterable[str],
                   client_order_ids: list[tuple[str, str]]) -> dict[str, Any]:
    """One random command as a dict (or {"__raw__": bytes} for a malformed line)."""
    accounts = tuple(accounts)
    account = rng.choice(accounts)
    roll = rng.random()
    if roll < 0.50:
        symbol, tick, _ = rng.choice(live if rng.random() < 0.97 else every)
        coid = f"c{rng.randint(1, 12)}"
        client_order_ids.append((account, coid))
        del client_order_ids[:-200]
        return random_new_order(rng, ts, account, coid, symbol, tick)
    if roll < 0.60:
        account, coid = _known_or_unknown(rng, client_order_ids, account)
        return {"type": "cancel_order", "ts": ts, "account": account, "client_order_id": coid}
    if roll < 0.72:
        account, coid = _known_or_unknown(rng, client_order_ids, account)
        _, tick, _ = rng.choice(every)
        fields: dict[str, Any] = {}
        if rng.random() < 0.6:
            fields["new_price"] = random_price(rng, tick)
        if rng.random() < 0.6 or not fields:
            fields["new_quantity"] = rng.randint(0, 12)
        if rng.random() < 0.03:
            fields = {}
        return {"type": "amend_order", "ts": ts, "account": account, "client_order_id": coid,
                **fields}
    if roll < 0.75:
        mass: dict[str, Any] = {"type": "mass_cancel", "ts": ts, "account": account}
        if rng.random() < 0.6:
            mass["instrument"] = rng.choice(every)[0] if rng.random() < 0.9 else "NOPE"
        return mass
    if roll < 0.82:
        return {"type": "tick", "ts": ts + rng.choice((0, SECOND, 10 * SECOND, 60 * SECOND))}
    if roll < 0.87:
        symbol = rng.choice(every)[0]
        asset = rng.choice(("USDC", "USDC", symbol, "ETH"))
        amount: str | int = rng.choice(("10", "0.5", "100000", "0", "1.0000001", "-1", 3, 50))
        if asset != "USDC" and rng.random() < 0.7:
            amount = rng.randint(1, 60)
        return {"type": "withdraw", "ts": ts, "account": account, "asset": asset,
                "amount": amount}
    if roll < 0.92:
        symbol = rng.choice(every)[0]
        asset = rng.choice(("USDC", "USDC", symbol, "BTC"))
        amount = rng.choice(("250", "0.000001", "12.5", "0", "1e3", 7, "7"))
        if asset != "USDC":
            amount = rng.choice((5, "5", 0, "x", 40))
        deposit_fields: dict[str, Any] = {}
        if rng.random() < 0.7:
            deposit_fields["deposit_id"] = f"r-{rng.randint(1, 30)}"
        return {"type": "deposit", "ts": ts, "account": account, "asset": asset,
                "amount": amount, **deposit_fields}
    return {"__raw__": rng.choice(MALFORMED_LINES).replace(b"TS", str(ts).encode())}


def _known_or_unknown(rng: random.Random, client_order_ids: list[tuple[str, str]],
                      account: str) -> tuple[str, str]:
    if client_order_ids and rng.random() < 0.9:
        return rng.choice(client_order_ids[-12:])
    return account, f"c{rng.randint(1, 20)}"


def random_new_order(rng: random.Random, ts: int, account: str, coid: str, symbol: str,
                     tick: str) -> dict[str, Any]:
    """A random new_order near the mid: mostly valid, sometimes contradictory or bad."""
    order: dict[str, Any] = {
        "type": "new_order", "ts": ts, "account": account, "client_order_id": coid,
        "instrument": symbol, "side": rng.choice(("buy", "sell")),
        "quantity": rng.choice((1, 1, 2, 3, 5, 8, 13, 20)),
    }
    if rng.random() < 0.01:
        order["quantity"] = rng.choice((0, 51))
    if rng.random() < 0.4:
        order["stp"] = rng.choice(("cancel_newest", "cancel_oldest", "cancel_both",
                                   "decrement"))
    if rng.random() < 0.15:
        order["order_type"] = "market"
        if rng.random() < 0.3:
            order["time_in_force"] = rng.choice(("ioc", "fok", "fok", "gtc"))
        if rng.random() < 0.02:
            order["price"] = random_price(rng, tick)
        return order
    order["order_type"] = "limit"
    order["price"] = random_price(rng, tick)
    tif = rng.choice((None, "gtc", "gtc", "ioc", "fok", "gtd", "gtd"))
    if tif is not None:
        order["time_in_force"] = tif
    if tif == "gtd":
        order["expire_at"] = ts + rng.choice((-1, 1, 2 * SECOND, 30 * SECOND, 300 * SECOND))
    elif rng.random() < 0.01:
        order["expire_at"] = ts + SECOND
    if tif in (None, "gtc", "gtd") and rng.random() < 0.15 or rng.random() < 0.01:
        order["post_only"] = True
    return order


MALFORMED_LINES: tuple[bytes, ...] = (
    b"not json",
    b"[1, 2, 3]",
    b'"a string"',
    b"{}",
    b'{"type": "launch_rocket", "ts": TS}',
    b'{"type": "tick"}',
    b'{"type": "tick", "ts": -5}',
    b'{"type": "tick", "ts": TS, "extra": 1}',
    b'{"type": "cancel_order", "ts": TS, "account": "bad account!", "client_order_id": "c1"}',
    b'{"type": "cancel_order", "ts": TS, "account": "alice"}',
    b'{"type": "new_order", "ts": TS, "account": "alice", "client_order_id": "c1",'
    b' "instrument": "GPU-1", "side": "up", "order_type": "limit", "price": "1",'
    b' "quantity": 1}',
    b'{"type": "new_order", "ts": TS, "account": "bob", "client_order_id": "c2",'
    b' "instrument": "GPU-2", "side": "buy", "order_type": "limit", "price": 2,'
    b' "quantity": 1}',
    b'{"type": "new_order", "ts": TS, "account": "bob", "client_order_id": "c2",'
    b' "instrument": "NOPE", "side": "buy", "order_type": "limit", "price": "2",'
    b' "quantity": 1.5}',
    b'{"type": "amend_order", "ts": TS, "account": "carol", "client_order_id": "c3",'
    b' "new_quantity": "many"}',
    b'{"type": "deposit", "ts": TS, "account": "dave", "asset": "USDC", "amount": 1.5}',
    b'{"type": "mass_cancel", "ts": TS, "account": "dave", "instrument": 7}',
    b'{"type": "list_instrument", "ts": TS, "symbol": "X"}',
)
