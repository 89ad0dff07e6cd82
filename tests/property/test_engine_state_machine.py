"""A hypothesis state machine driving the real engine, checked from inside and outside.

Inside: `Engine(check_invariants=True)` validates after every command, and an invariant
calls `engine.validate()`. Outside, from nothing but the events and the final state:
- `seq` is 1, 2, 3, ... with no gap, and every event carries the engine time, which is
  the largest valid `ts` so far;
- no balance in the final state is negative;
- conservation: for USDC and every token, the sum of `available + held` over all accounts
  (the `fees` account included) equals what was deposited minus what was withdrawn; with
  Delivery (v2), USDC counts the bonds still held (the final state's `issues`), a token
  counts what was issued, and the token of a deliverable instrument is all redeemed at its
  close.

Every other instrument listed is deliverable, and accounts issue capacity on any and report
on deliveries. Once, three hours one after the other are listed, and accounts buy and sell
strips of them (Strip orders, v2) among the other commands.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import protocol
from matching_engine.core import Engine
from tests.engine_helpers import MALFORMED_LINES, SECOND, T0

ACCOUNTS = ("alice", "bob", "carol", "erin")
CLIENT_ORDER_IDS = tuple(f"c{n}" for n in range(1, 6))
# (tick, mid price in ticks, maker bps, taker bps) of the instruments listed, in turn.
INSTRUMENT_KINDS = (("0.0001", 20_008, 3, 7), ("0.05", 40, 17, 9), ("0.01", 200, 10, 20))
INSTRUMENTS_MAX = 5
BOND = "3"  # per GPU-hour, of the deliverable instruments (the odd ones)
ISSUE_IDS = tuple(f"i{n}" for n in range(1, 9))
HOUR = 3600 * SECOND
HOURS = 3  # consecutive hours listed for strips

accounts = st.sampled_from(ACCOUNTS)
client_order_ids = st.sampled_from(CLIENT_ORDER_IDS)
sides = st.sampled_from(("buy", "sell"))
quantities = st.sampled_from((1, 1, 2, 3, 5, 8, 13) * 3 + (0, 31))
price_offsets = st.integers(-4, 4)
stps = st.sampled_from(("cancel_newest", "cancel_oldest", "cancel_both", "decrement"))


def signed_units(asset: str, value: str | int) -> int:
    """A final-state balance in its unit (micro-USDC or tokens), negative ones included."""
    if asset != protocol.USDC:
        assert isinstance(value, int), f"{asset} balance {value!r} is not an integer"
        return value
    assert isinstance(value, str), f"USDC balance {value!r} is not a decimal string"
    if value.startswith("-"):
        return -protocol.parse_micro(value[1:])
    return protocol.parse_micro(value)


def event_units(asset: str, amount: str | int) -> int:
    """The amount of a deposited or withdrawn event in its unit."""
    return protocol.parse_micro(amount) if asset == protocol.USDC else int(amount)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine(check_invariants=True)
        self.clock = T0  # the ts the next command is sent with
        self.engine_time = 0  # what the engine time must be: the largest valid ts so far
        self.last_seq = 0
        self.net_deposits: dict[str, int] = defaultdict(int)  # asset -> deposited - withdrawn
        self.instruments: list[tuple[str, str, int]] = []  # (symbol, tick, mid in ticks)
        self.accepted: list[tuple[str, str]] = []  # (account, client_order_id), latest last
        self.deliverable: set[str] = set()
        self.issued: list[str] = []  # the issue ids accepted
        self.issuers: list[tuple[str, str]] = []  # (account, instrument) of each open issue
        self.hours: list[int] = []  # indexes in `instruments` of the consecutive hours

    # ------------------------------------------------------------------ plumbing

    def send(self, line: bytes) -> list[protocol.Event]:
        command = protocol.decode_command(line)
        if command.ts is not None:
            self.engine_time = max(self.engine_time, command.ts)
        events = self.engine.apply(command)
        for event in events:
            assert event.seq == self.last_seq + 1, f"seq {event.seq} after {self.last_seq}"
            self.last_seq = event.seq
            assert event.ts == self.engine_time, f"{event} is not at {self.engine_time}"
            if isinstance(event, protocol.Deposited):
                self.net_deposits[event.asset] += event_units(event.asset, event.amount)
            elif isinstance(event, protocol.Withdrawn):
                self.net_deposits[event.asset] -= event_units(event.asset, event.amount)
            elif isinstance(event, protocol.OrderAccepted):
                self.accepted = [*self.accepted[-9:], (event.account, event.client_order_id)]
            elif isinstance(event, protocol.InstrumentListed):
                kind = INSTRUMENT_KINDS[len(self.instruments) % len(INSTRUMENT_KINDS)]
                self.instruments.append((event.symbol, kind[0], kind[1]))
                if event.bond_per_gpu_hour is not None:
                    self.deliverable.add(event.symbol)
            elif isinstance(event, protocol.CapacityIssued):
                self.net_deposits[event.instrument] += event.quantity
                self.issued.append(event.issue_id)
                self.issuers.append((event.account, event.instrument))
            elif isinstance(event, protocol.InstrumentClosed) and event.symbol in self.deliverable:
                self.net_deposits[event.symbol] = 0  # every token is redeemed
                self.issuers = [issuer for issuer in self.issuers if issuer[1] != event.symbol]
        return list(events)

    def send_fields(self, command_type: str, late: bool = False, **fields: Any
                    ) -> list[protocol.Event]:
        ts = self.clock - 2 * SECOND if late else self.clock
        return self.send(msgspec.json.encode({"type": command_type, "ts": ts, **fields}))

    def list_next_instrument(self) -> None:
        number = len(self.instruments)
        tick, _, maker, taker = INSTRUMENT_KINDS[number % len(INSTRUMENT_KINDS)]
        symbol = f"GPU-{number}"
        # A deliverable instrument closes sooner, and its tokens are issued, not deposited.
        deliverable = number % 2 == 1
        bond: dict[str, Any] = {"bond_per_gpu_hour": BOND} if deliverable else {}
        closes_in = 60 + (60 if deliverable else 300) * number
        events = self.send_fields(
            "list_instrument", symbol=symbol, gpu="H100", region="eu",
            delivery_start=self.clock + closes_in * SECOND, delivery_hours=1,
            tick_size=tick, max_order_quantity=30, maker_fee_bps=maker, taker_fee_bps=taker,
            **bond)
        assert [type(event) for event in events] == [protocol.InstrumentListed]
        for account in ACCOUNTS:
            usdc, tokens = ("7.5", 4) if account == "erin" else ("3000", 100)
            self.send_fields("deposit", account=account, asset="USDC", amount=usdc)
            if not deliverable:
                self.send_fields("deposit", account=account, asset=symbol, amount=tokens)

    def price(self, index: int, offset: int) -> str:
        _, tick, mid = self.instruments[index % len(self.instruments)]
        return protocol.format_micro((mid + offset) * protocol.parse_micro(tick))

    def symbol(self, index: int) -> str:
        return self.instruments[index % len(self.instruments)][0]

    def order_key(self, data: st.DataObject, account: str, client_order_id: str
                  ) -> tuple[str, str]:
        """Mostly an order accepted lately (maybe done by now), else the drawn key."""
        if self.accepted and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(self.accepted))
        return account, client_order_id

    # --------------------------------------------------------------------- rules

    @initialize()
    def open_market(self) -> None:
        self.list_next_instrument()
        self.list_next_instrument()
        for index in range(2):  # a book to trade against
            for level in (1, 2):
                for account, side, sign in (("alice", "buy", -1), ("bob", "sell", 1)):
                    self.send_fields(
                        "new_order", account=account, client_order_id=f"seed-{index}-{level}",
                        instrument=self.symbol(index), side=side, order_type="limit",
                        price=self.price(index, sign * level), quantity=3 * level)

    @precondition(lambda self: len(self.instruments) < INSTRUMENTS_MAX)
    @rule()
    def list_instrument(self) -> None:
        self.list_next_instrument()

    @rule(account=accounts, client_order_id=client_order_ids, index=st.integers(0, 9),
          side=sides, offset=price_offsets, quantity=quantities,
          time_in_force=st.sampled_from((None, "gtc", "ioc", "fok", "gtd")),
          post_only=st.booleans(), stp=stps, late=st.booleans())
    def limit_order(self, account: str, client_order_id: str, index: int, side: str,
                    offset: int, quantity: int, time_in_force: str | None, post_only: bool,
                    stp: str, late: bool) -> None:
        fields: dict[str, Any] = {
            "account": account, "client_order_id": client_order_id,
            "instrument": self.symbol(index), "side": side, "order_type": "limit",
            "price": self.price(index, offset), "quantity": quantity, "stp": stp,
        }
        if time_in_force is not None:
            fields["time_in_force"] = time_in_force
        if time_in_force == "gtd":
            fields["expire_at"] = self.clock + (1 + index) * SECOND
        if post_only and time_in_force in (None, "gtc", "gtd"):
            fields["post_only"] = True
        self.send_fields("new_order", late=late, **fields)

    @rule(account=accounts, client_order_id=client_order_ids, index=st.integers(0, 9),
          side=sides, quantity=quantities, fok=st.booleans(), stp=stps)
    def market_order(self, account: str, client_order_id: str, index: int, side: str,
                     quantity: int, fok: bool, stp: str) -> None:
        time_in_force: dict[str, Any] = {"time_in_force": "fok"} if fok else {}  # else ioc
        self.send_fields("new_order", account=account, client_order_id=client_order_id,
                         instrument=self.symbol(index), side=side, order_type="market",
                         quantity=quantity, stp=stp, **time_in_force)

    @rule(data=st.data(), account=accounts, client_order_id=client_order_ids)
    def cancel_order(self, data: st.DataObject, account: str, client_order_id: str) -> None:
        account, client_order_id = self.order_key(data, account, client_order_id)
        self.send_fields("cancel_order", account=account, client_order_id=client_order_id)

    @rule(data=st.data(), account=accounts, client_order_id=client_order_ids,
          index=st.integers(0, 9), offset=st.one_of(st.none(), price_offsets),
          quantity=st.one_of(st.none(), st.integers(0, 14)))
    def amend_order(self, data: st.DataObject, account: str, client_order_id: str, index: int,
                    offset: int | None, quantity: int | None) -> None:
        account, client_order_id = self.order_key(data, account, client_order_id)
        fields: dict[str, Any] = {"account": account, "client_order_id": client_order_id}
        if offset is not None:
            fields["new_price"] = self.price(index, offset)
        if quantity is not None:
            fields["new_quantity"] = quantity
        self.send_fields("amend_order", **fields)

    @rule(account=accounts, index=st.one_of(st.none(), st.integers(0, 9)))
    def mass_cancel(self, account: str, index: int | None) -> None:
        fields: dict[str, Any] = {} if index is None else {"instrument": self.symbol(index)}
        self.send_fields("mass_cancel", account=account, **fields)

    @rule(account=accounts, index=st.one_of(st.none(), st.integers(0, 9)),
          amount=st.sampled_from(("1", "0.000001", "2.5", "10000", "0", 1, 7, 1000)),
          deposit_id=st.one_of(st.none(), st.sampled_from(("d1", "d2", "d3"))))
    def deposit(self, account: str, index: int | None, amount: str | int,
                deposit_id: str | None) -> None:
        asset = "USDC" if index is None else self.symbol(index)
        extra: dict[str, Any] = {} if deposit_id is None else {"deposit_id": deposit_id}
        self.send_fields("deposit", account=account, asset=asset, amount=amount, **extra)

    @rule(account=st.sampled_from((*ACCOUNTS, "fees")),
          index=st.one_of(st.none(), st.integers(0, 9)),
          amount=st.sampled_from(("1", "0.0003", "25", "5000", 2, 60, "-1")))
    def withdraw(self, account: str, index: int | None, amount: str | int) -> None:
        asset = "USDC" if index is None else self.symbol(index)
        self.send_fields("withdraw", account=account, asset=asset, amount=amount)

    @rule(step=st.sampled_from((0, 1, SECOND, 4 * SECOND, 45 * SECOND, 200 * SECOND)))
    def tick(self, step: int) -> None:
        self.clock += step
        self.send_fields("tick")

    @rule(data=st.data(), account=accounts, issue_id=st.sampled_from(ISSUE_IDS),
          quantity=quantities)
    def issue_capacity(self, data: st.DataObject, account: str, issue_id: str,
                       quantity: int) -> None:
        """Mostly on a deliverable instrument, sometimes on any."""
        symbols = sorted(self.deliverable) * 3 + [symbol for symbol, _, _ in self.instruments]
        self.send_fields("issue_capacity", account=account, issue_id=issue_id,
                         instrument=data.draw(st.sampled_from(symbols)), node_id="n1",
                         quantity=quantity)

    @precondition(lambda self: self.issuers)
    @rule(data=st.data(), quantity=st.integers(1, 3), client_order_id=client_order_ids)
    def issuer_sells(self, data: st.DataObject, quantity: int, client_order_id: str) -> None:
        """An issuer sells some of its tokens to the bids (its own bids canceled), so that
        the close has holders besides the issuers."""
        account, symbol = data.draw(st.sampled_from(self.issuers))
        self.send_fields("new_order", account=account, client_order_id=client_order_id,
                         instrument=symbol, side="sell", order_type="market",
                         quantity=quantity, stp="cancel_oldest")

    @rule(data=st.data(), holder=accounts,
          delivered_ppm=st.sampled_from((0, 1, 500_000, 999_999, 1_000_000, 1_000_001)))
    def delivery_report(self, data: st.DataObject, holder: str, delivered_ppm: int) -> None:
        issued = self.issued or list(ISSUE_IDS)
        self.send_fields("delivery_report", issue_id=data.draw(st.sampled_from(issued)),
                         holder=holder, delivered_ppm=delivered_ppm)

    @precondition(lambda self: not self.hours)
    @rule()
    def list_hours(self) -> None:
        """Three hours one after the other, of one class and region, with tokens to sell and
        a book on each (alice bids, bob offers)."""
        start = self.clock + 120 * SECOND
        for hour in range(HOURS):
            number = len(self.instruments)
            tick, _, maker, taker = INSTRUMENT_KINDS[number % len(INSTRUMENT_KINDS)]
            symbol = f"HOUR-{hour}"
            events = self.send_fields(
                "list_instrument", symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                delivery_start=start + hour * HOUR, delivery_hours=1, tick_size=tick,
                max_order_quantity=30, maker_fee_bps=maker, taker_fee_bps=taker)
            assert [type(event) for event in events] == [protocol.InstrumentListed]
            self.hours.append(number)
            for account in ACCOUNTS:
                self.send_fields("deposit", account=account, asset=symbol,
                                 amount=4 if account == "erin" else 100)
            for level in (1, 2):
                for account, side, sign in (("alice", "buy", -1), ("bob", "sell", 1)):
                    self.send_fields(
                        "new_order", account=account, client_order_id=f"{symbol}-{level}",
                        instrument=symbol, side=side, order_type="limit",
                        price=self.price(number, sign * level), quantity=3 * level)

    @precondition(lambda self: self.hours)
    @rule(account=accounts, client_order_id=client_order_ids, side=sides, quantity=quantities,
          first=st.integers(0, HOURS - 2), count=st.integers(2, HOURS),
          per_hour=st.sampled_from(("1", "2", "2.1", "3")), late=st.booleans())
    def strip(self, account: str, client_order_id: str, side: str, quantity: int, first: int,
              count: int, per_hour: str, late: bool) -> None:
        """A strip over a run of the hours, limited about the mid (2 USDC a GPU-hour)."""
        legs = [self.symbol(index) for index in self.hours[first:first + count]]
        limit = protocol.parse_micro(per_hour) * max(quantity, 1) * len(legs)
        self.send_fields("new_strip_order", late=late, account=account,
                         client_order_id=client_order_id, side=side, instruments=legs,
                         quantity=quantity, limit_total=protocol.format_micro(limit))

    @rule(line=st.sampled_from(MALFORMED_LINES))
    def malformed(self, line: bytes) -> None:
        self.send(line.replace(b"TS", str(self.clock).encode()))

    # ---------------------------------------------------------------- invariants

    @invariant()
    def engine_state_is_valid(self) -> None:
        self.engine.validate()

    @invariant()
    def balances_are_non_negative_and_conserved(self) -> None:
        totals: dict[str, int] = defaultdict(int)
        final_state = self.engine.final_state()
        for issue in final_state["issues"]:
            totals[protocol.USDC] += protocol.parse_micro(issue["bond"])
        for account, assets in final_state["accounts"].items():
            for asset, balance in assets.items():
                for part in ("available", "held"):
                    amount = signed_units(asset, balance[part])
                    assert amount >= 0, f"{account} {part} {asset} is {balance[part]}"
                    totals[asset] += amount
        for asset in set(totals) | set(self.net_deposits):
            assert totals[asset] == self.net_deposits[asset], (
                f"{asset}: balances sum to {totals[asset]}, net deposits are "
                f"{self.net_deposits[asset]}")


EngineMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=80, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEngineStateMachine = EngineMachine.TestCase
