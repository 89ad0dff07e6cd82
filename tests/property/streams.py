"""A seeded generator of command streams that cover every command, valid and broken.

`Generator(seed).stream(count)` is a JSON Lines log: listings, funding, then orders of
every type, time in force and self-trade mode, cancels, amends, mass cancels, ticks that
expire orders and close instruments, deposits and withdrawals, a share of every command
broken at the JSON-value or the byte level (types, duplicates, unknown fields, escapes,
bytes, nesting). With `delivery` or `strips` it covers those v2 commands too. The
differential tests feed its streams to the two cores (`tests/property/differential.py`)
and to the engine and the reference model.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec

SECOND = 1_000_000_000
HOUR = 3600 * SECOND
T0 = 1_700_000_000 * SECOND


def json_pairs(pairs: list[tuple[str, Any]]) -> bytes:
    """An object from (key, value) pairs, duplicates and order kept."""
    body = b",".join(msgspec.json.encode(k) + b":" + msgspec.json.encode(v) for k, v in pairs)
    return b"{" + body + b"}"


class Generator:
    """Random commands over a few accounts and instruments, valid and broken.

    It tracks what it listed (tick, delivery start) and the time, so most orders are
    well formed and priced on the tick near a mid of 1 USDC, where they trade, rest, meet
    their own account's orders, expire and get closed; a share of every command is broken.

    With `delivery` (Delivery, v2) most listings carry a bond, accounts issue capacity (ids
    new and repeated) and report on deliveries; the funding then gives no tokens, so the
    tokens that trade are mostly issued ones. With `strips` (Strip orders, v2) instruments
    are listed hour after hour in three series of class and region (a broken listing leaves
    a gap), time now and then jumps an hour so that hours close, and strips are sent over
    runs of the hours, mostly consecutive. Without either the stream is the v1 stream of
    the same seed, byte for byte.
    """

    ACCOUNTS = ("a", "b", "c", "fees", "0xAbC", "d.e:f-g_h")
    TICKS = ("0.01", "0.05", "0.02", "0.000001", "0.250", "0.010")
    MID = 1_000_000
    SERIES = (("H100-SXM-80GB", "eu-west"), ("H100-SXM-80GB", "us-east"),
              ("A100-SXM-80GB", "eu-west"))

    def __init__(self, seed: int, delivery: bool = False, strips: bool = False) -> None:
        self.delivery = delivery
        self.strips = strips
        self.series_of: dict[str, tuple[int, int]] = {}  # symbol -> (series, hours)
        self.issues: list[tuple[str, str]] = []  # (issue_id, instrument) as sent
        self.offers: list[list[tuple[str, Any]]] = []  # issuers' sells, sent next
        self.rng = random.Random(seed)
        self.ts = T0
        self.time = T0  # the engine time: the largest ts so far
        self.listed: dict[str, tuple[int, int]] = {}  # symbol -> (tick micro, delivery start)
        self.client_order_ids: list[tuple[str, str]] = []
        self.deposit_ids: list[str] = []
        self.counter = 0

    # -- the pieces of a command

    def account(self) -> str:
        return self.rng.choice(self.ACCOUNTS)

    def open_symbols(self) -> list[str]:
        return [s for s, (_, start) in self.listed.items() if start > self.time]

    def symbol(self) -> str:
        rng = self.rng
        open_symbols = self.open_symbols()
        roll = rng.random()
        if open_symbols and roll < 0.9:
            return rng.choice(open_symbols)
        if self.listed and roll < 0.96:
            return rng.choice(list(self.listed))
        return rng.choice(("NOPE", "USDC", ""))

    def next_ts(self) -> int:
        rng = self.rng
        roll = rng.random()
        if roll < 0.03:
            ts = max(0, self.ts - rng.randint(1, 5 * SECOND))  # late: time holds
        else:
            if self.strips and roll > 0.997:
                self.ts += HOUR  # the next hour closes
            elif roll < 0.04:
                self.ts += rng.randint(1, 60) * SECOND  # a jump: expiries and closes
            else:
                self.ts += rng.randint(0, 3) * SECOND // 10
            ts = self.ts
        self.time = max(self.time, ts)
        return ts

    @staticmethod
    def decimal(micro: int) -> str:
        return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"

    def price(self, symbol: str | None = None) -> str:
        rng = self.rng
        tick = self.listed.get(symbol or "", (10_000, 0))[0]
        if rng.random() < 0.9:
            ticks = self.MID // tick + rng.randint(-6, 6)
            text = self.decimal(max(1, ticks) * tick)
            return text.rstrip("0").rstrip(".") if rng.random() < 0.5 else text
        return rng.choice(
            ("0", "-1", "1e2", ".5", "5.", "1.0000001", "1.2345678", "0.000001", "3",
             "1000000000000", "1000000000000.000001", "12345678901234567890", "1.005", "abc")
        )

    def quantity(self) -> Any:
        roll = self.rng.random()
        if roll < 0.93:
            return self.rng.randint(1, 30)
        return self.rng.choice((0, -1, 1001, 10**9, 10**30, -(10**30), 2**63, 2**64 + 1))

    def usdc_amount(self) -> Any:
        rng = self.rng
        if rng.random() < 0.85:
            return str(rng.randint(1, 5000)) + rng.choice(("", ".5", ".000001", ".10"))
        return rng.choice(("0", "-5", "1e3", "1.0000001", "1000000000001", 5, "", " 1",
                           "1000000000000", "\u0663", 2**63 - 1, -(2**63), 2**63))

    def token_amount(self) -> Any:
        rng = self.rng
        if rng.random() < 0.85:
            value = rng.randint(1, 500)
            return value if rng.random() < 0.5 else str(value).zfill(rng.randint(1, 5))
        return rng.choice((0, -3, "0", "-3", "1.5", "", "12345678901234567890",
                           "1000000000000000000", 10**18, 10**18 + 1, "\u00b2", 2**63 - 1,
                           -(2**63), 2**63, -(2**63) - 1, 10**40, True))

    # -- commands as (key, value) pairs

    def list_instrument(self) -> list[tuple[str, Any]]:
        rng = self.rng
        ts = self.next_ts()
        valid = rng.random() < 0.8
        symbol = (rng.choice(list(self.listed)) if self.listed and not valid and rng.random() < 0.5
                  else f"G-{len(self.listed)}")
        # With delivery, instruments close within the stream, so that issues are redeemed.
        offsets = (30, 60, 120, 300, 600) if self.delivery else (30, 120, 600, 10**6, 10**6)
        delivery = self.time + rng.choice(offsets) * SECOND
        tick = rng.choice(self.TICKS)
        pairs: list[tuple[str, Any]] = [
            ("type", "list_instrument"), ("ts", ts), ("symbol", symbol),
            ("gpu", rng.choice(("H100-SXM-80GB", "\u00e9" * 64, "a\u0000b"))),
            ("region", rng.choice(("eu-west", "us-east", "\"q\"\\/\t"))),
            ("delivery_start", delivery), ("delivery_hours", rng.choice((1, 24, 8784))),
            ("tick_size", tick), ("max_order_quantity", rng.choice((1000, 1000, 50, 10**9))),
            ("maker_fee_bps", rng.choice((0, 2, 10, 1000))),
            ("taker_fee_bps", rng.choice((0, 5, 20, 999))),
        ]
        if self.delivery and rng.random() < 0.8:
            pairs.append(("bond_per_gpu_hour", rng.choice(("1.5", "3", "0", "0.000001",
                                                           "1.500", "1000000000"))))
        hour = None
        if self.strips:
            hour = self.on_the_hour(pairs)
            delivery = hour[2]
        if valid and symbol not in self.listed:
            self.listed[symbol] = (round(float(tick) * 1_000_000), delivery)
            if hour is not None:
                self.series_of[symbol] = hour[:2]
                self.quote_hour(symbol)
            return pairs
        index = rng.randrange(3, len(pairs))
        key, _ = pairs[index]
        broken = {"gpu": "x" * 65, "region": "\u00e9" * 65, "delivery_start": self.time - 1,
                  "delivery_hours": 0, "tick_size": rng.choice(("0", "0.0000001", "-1", "x")),
                  "max_order_quantity": 10**9 + 1, "maker_fee_bps": 1001, "taker_fee_bps": 2000}
        if self.delivery:  # a draw only here: the v1 stream of a seed stays as it was
            broken["bond_per_gpu_hour"] = rng.choice(("-1", "1.0000001", 3, "", "1e3"))
        pairs[index] = (key, broken[key])
        if rng.random() < 0.2:
            pairs[2] = ("symbol", "USDC")
        return pairs

    def on_the_hour(self, pairs: list[tuple[str, Any]]) -> tuple[int, int, int]:
        """Make a listing the hour after the last one listed of the series with the fewest
        open hours (1 or 2 hours long, after the engine time); return its series, hours and
        delivery start."""
        open_hours = self.open_hours()
        series = open_hours.index(min(open_hours, key=len))
        gpu, region = self.SERIES[series]
        hours = self.rng.choice((1, 1, 1, 2))
        start = max((self.listed[symbol][1] + listed_hours * HOUR
                     for symbol, (listed_series, listed_hours) in self.series_of.items()
                     if listed_series == series and symbol in self.listed),
                    default=T0 + 300 * SECOND)
        while start <= self.time:
            start += HOUR
        fields = {"gpu": gpu, "region": region, "delivery_start": start, "delivery_hours": hours}
        pairs[:] = [(key, fields.get(key, value)) for key, value in pairs]
        return series, hours, start

    def strip_legs(self) -> list[str]:
        """Mostly a run of a series' hours in delivery order (open, or now and then any);
        else any listed symbols, or legs too few, too many, repeated or unknown."""
        rng = self.rng
        roll = rng.random()
        runs = [run for run in (self.all_hours() if roll < 0.05 else self.open_hours())
                if len(run) >= 2]
        if roll < 0.85 and runs:
            hours = rng.choice(runs)
            first = rng.randrange(len(hours) - 1)
            return hours[first:first + rng.randint(2, 6)]
        if roll < 0.92 and self.listed:
            return rng.sample(list(self.listed), min(len(self.listed), rng.randint(1, 4)))
        legs = rng.choice((0, 1, 2, 168, 169))
        return [rng.choice(("NOPE", "USDC", f"X{index}")) if legs > 2 else self.symbol()
                for index in range(legs)]

    def quote_hour(self, symbol: str) -> None:
        """Queue a book for a new hour: one account deposits its tokens and offers them
        above the mid, another bids below it (sent next, tokens first)."""
        rng = self.rng
        tick = self.listed[symbol][0]
        seller, buyer = rng.sample(self.ACCOUNTS, 2)
        quotes: list[list[tuple[str, Any]]] = [
            [("type", "deposit"), ("ts", self.ts), ("account", seller), ("asset", symbol),
             ("amount", 40)]]
        for account, side, sign in ((seller, "sell", 1), (buyer, "buy", -1)):
            self.counter += 1
            ticks = max(1, self.MID // tick + sign * rng.randint(1, 3))
            quotes.append([("type", "new_order"), ("ts", self.ts), ("account", account),
                           ("client_order_id", f"o{self.counter}"), ("instrument", symbol),
                           ("side", side), ("order_type", "limit"),
                           ("price", self.decimal(ticks * tick)),
                           ("quantity", rng.randint(5, 15))])
        self.offers += reversed(quotes)

    def all_hours(self) -> list[list[str]]:
        """The listed hours of each series, in delivery order."""
        hours: list[list[tuple[int, str]]] = [[] for _ in self.SERIES]
        for symbol, (series, _) in self.series_of.items():
            if symbol in self.listed:
                hours[series].append((self.listed[symbol][1], symbol))
        return [[symbol for _, symbol in sorted(series)] for series in hours]

    def open_hours(self) -> list[list[str]]:
        """The listed hours of each series still open, in delivery order."""
        return [[symbol for symbol in series if self.listed[symbol][1] > self.time]
                for series in self.all_hours()]

    def strip(self) -> list[tuple[str, Any]]:
        """A strip: priced per GPU-hour about the mid, or with any USDC amount as its limit."""
        rng = self.rng
        self.counter += 1
        legs = self.strip_legs()
        quantity = self.quantity() if rng.random() < 0.3 else rng.randint(1, 5)
        if rng.random() < 0.8 and isinstance(quantity, int) and 1 <= quantity <= 1000:
            per_hour = rng.choice((900_000, 1_000_000, 1_060_000, 1_200_000, 3_000_000))
            limit_total = self.decimal(per_hour * quantity * max(1, len(legs)))
        else:
            limit_total = self.usdc_amount()
        client_order_id = rng.choice((f"s{self.counter}",) * 8 + ("x" * 59, "x" * 60))
        if self.client_order_ids and rng.random() < 0.1:  # an open order's id, perhaps
            client_order_id = rng.choice(self.client_order_ids[-10:])[1]
        return [("type", "new_strip_order"), ("ts", self.next_ts()), ("account", self.account()),
                ("client_order_id", client_order_id),
                ("side", rng.choice(("buy", "buy", "sell"))), ("instruments", legs),
                ("quantity", quantity), ("limit_total", limit_total)]

    def deposit(self, withdraw: bool = False) -> list[tuple[str, Any]]:
        rng = self.rng
        asset = "USDC" if rng.random() < 0.5 else self.symbol()
        amount = self.usdc_amount() if asset == "USDC" else self.token_amount()
        if withdraw:
            if rng.random() < 0.5 and isinstance(amount, str) and amount[:1].isdigit():
                amount = amount[:1]
            return [("type", "withdraw"), ("ts", self.next_ts()), ("account", self.account()),
                    ("asset", asset), ("amount", amount)]
        pairs: list[tuple[str, Any]] = [
            ("type", "deposit"), ("ts", self.next_ts()), ("account", self.account()),
            ("asset", asset), ("amount", amount),
        ]
        roll = rng.random()
        if roll < 0.3:
            deposit_id = (rng.choice(self.deposit_ids) if self.deposit_ids and roll < 0.1
                          else f"0xdep{len(self.deposit_ids)}\u00e9\n")
            self.deposit_ids.append(deposit_id)
            pairs.append(("deposit_id", deposit_id))
        elif roll < 0.35:
            pairs.append(("deposit_id", None))
        return pairs

    def new_order(self) -> list[tuple[str, Any]]:
        rng = self.rng
        self.counter += 1
        account = self.account()
        client_order_id = (rng.choice(self.client_order_ids[-10:])[1]
                           if self.client_order_ids and rng.random() < 0.05 else f"o{self.counter}")
        market = rng.random() < 0.15
        ts = self.next_ts()
        symbol = self.symbol()
        pairs: list[tuple[str, Any]] = [
            ("type", "new_order"), ("ts", ts), ("account", account),
            ("client_order_id", client_order_id), ("instrument", symbol),
            ("side", rng.choice(("buy", "sell"))), ("order_type", "market" if market else "limit"),
        ]
        if not market or rng.random() < 0.03:
            pairs.append(("price", self.price(symbol)))
        pairs.append(("quantity", self.quantity()))
        time_in_force = rng.choice((None, None, None, "gtc", "ioc", "fok", "gtd", "gtd"))
        if market and rng.random() < 0.9:
            time_in_force = rng.choice((None, "ioc", "fok"))
        if time_in_force is not None or rng.random() < 0.05:
            pairs.append(("time_in_force", time_in_force))
        if time_in_force == "gtd" or rng.random() < 0.02:
            if rng.random() < 0.95:
                expire_at = self.time + rng.choice((-1, 0, 1, 2, 5, 30)) * SECOND // 2
                pairs.append(("expire_at", expire_at))
        if rng.random() < 0.1:
            pairs.append(("post_only", rng.random() < 0.8))
        if rng.random() < 0.7:
            pairs.append(("stp", rng.choice(("cancel_newest", "cancel_oldest", "cancel_both",
                                             "decrement", "decrement"))))
        self.client_order_ids.append((account, client_order_id))
        return pairs

    def order_ref(self) -> tuple[str, str]:
        if self.client_order_ids and self.rng.random() < 0.9:
            return self.rng.choice(self.client_order_ids[-40:])
        return self.account(), "missing"

    def cancel(self) -> list[tuple[str, Any]]:
        account, client_order_id = self.order_ref()
        pairs: list[tuple[str, Any]] = [("type", "cancel_order"), ("ts", self.next_ts()),
                                        ("account", account),
                                        ("client_order_id", client_order_id)]
        if self.rng.random() < 0.3:
            pairs.append(("reason", self.rng.choice(["user", "disconnect", "mass_cancel"])))
        return pairs

    def amend(self) -> list[tuple[str, Any]]:
        rng = self.rng
        account, client_order_id = self.order_ref()
        pairs: list[tuple[str, Any]] = [("type", "amend_order"), ("ts", self.next_ts()),
                                        ("account", account), ("client_order_id", client_order_id)]
        roll = rng.random()
        if roll < 0.7:
            pairs.append(("new_price", self.price(rng.choice(list(self.listed) or [""]))))
        if roll > 0.4 or roll < 0.03:
            pairs.append(("new_quantity", self.quantity() if rng.random() < 0.8
                          else rng.randint(0, 3)))
        if rng.random() < 0.03:
            pairs.append(("new_price", None))
        return pairs

    def mass_cancel(self) -> list[tuple[str, Any]]:
        pairs: list[tuple[str, Any]] = [("type", "mass_cancel"), ("ts", self.next_ts()),
                                        ("account", self.account())]
        if self.rng.random() < 0.6:
            pairs.append(("instrument", self.symbol()))
        if self.rng.random() < 0.3:
            pairs.append(("reason", self.rng.choice(
                ["mass_cancel", "disconnect", "dead_man_switch", "user"])))
        return pairs

    def tick(self) -> list[tuple[str, Any]]:
        return [("type", "tick"), ("ts", self.next_ts())]

    def issue(self) -> list[tuple[str, Any]]:
        rng = self.rng
        if self.issues and rng.random() < 0.1:
            issue_id = rng.choice(self.issues)[0]  # duplicate_issue, if that one was accepted
        else:
            issue_id = f"is{len(self.issues)}"
        symbol, account, quantity = self.symbol(), self.account(), self.quantity()
        self.issues.append((issue_id, symbol))
        if isinstance(quantity, int) and 1 <= quantity <= 30:  # offer part of it at once
            self.counter += 1
            self.offers.append([
                ("type", "new_order"), ("ts", self.ts), ("account", account),
                ("client_order_id", f"o{self.counter}"), ("instrument", symbol),
                ("side", "sell"), ("order_type", "limit"), ("price", self.price(symbol)),
                ("quantity", rng.randint(1, quantity))])
        return [("type", "issue_capacity"), ("ts", self.next_ts()), ("account", account),
                ("issue_id", issue_id), ("instrument", symbol),
                ("node_id", rng.choice(("n1", "n2", "rack-7:gpu.3"))),
                ("quantity", quantity)]

    def report(self) -> list[tuple[str, Any]]:
        """A report, mostly on an issue of an instrument that has closed (where deliveries
        are assigned), for any account."""
        rng = self.rng
        closed = [issue_id for issue_id, symbol in self.issues[-60:]
                  if symbol in self.listed and self.listed[symbol][1] <= self.time]
        if closed and rng.random() < 0.8:
            issue_id = rng.choice(closed)
        else:
            issue_id = rng.choice(self.issues)[0] if self.issues else "is0"
        roll = rng.random()
        if roll < 0.8:
            ppm: Any = rng.randint(0, 1_000_000)
        else:
            ppm = rng.choice((0, 1_000_000, -1, 1_000_001, 2**63 - 1, -(2**63), 2**63))
        pairs: list[tuple[str, Any]] = [
            ("type", "delivery_report"), ("ts", self.next_ts()), ("issue_id", issue_id),
            ("holder", self.account()), ("delivered_ppm", ppm),
        ]
        if rng.random() < 0.3:
            pairs.append(("evidence", rng.choice(("", "0xabc", "\u00e9" * 128, None))))
        return pairs

    def pairs(self) -> list[tuple[str, Any]]:
        if self.offers:
            return self.offers.pop()
        if self.delivery:
            roll = self.rng.random()
            if roll < 0.06:
                return self.issue()
            if roll < 0.12:
                return self.report()
        if self.strips:
            roll = self.rng.random()
            if roll < 0.12:
                return self.strip()
            if roll < 0.15 and min(map(len, self.open_hours())) < 4:
                return self.list_instrument()  # hours enough for runs of them
            open_hours = sum(self.open_hours(), [])
            if roll < 0.2 and open_hours:
                self.quote_hour(self.rng.choice(open_hours))  # depth where strips take
                return self.offers.pop()
        roll = self.rng.random()
        if roll < 0.015 or len(self.open_symbols()) < 2:
            return self.list_instrument()
        if roll < 0.12:
            return self.deposit()
        if roll < 0.15:
            return self.deposit(withdraw=True)
        if roll < 0.70:
            return self.new_order()
        if roll < 0.80:
            return self.cancel()
        if roll < 0.92:
            return self.amend()
        if roll < 0.94:
            return self.mass_cancel()
        return self.tick()

    def funding(self) -> list[bytes]:
        """List two instruments and fund every account in USDC and their tokens."""
        lines = [json_pairs(self.list_instrument()) for _ in range(2)]
        for account in self.ACCOUNTS:
            lines.append(json_pairs([("type", "deposit"), ("ts", self.ts), ("account", account),
                                     ("asset", "USDC"), ("amount", "20000")]))
            for symbol in self.listed if not self.delivery else ():
                lines.append(json_pairs([("type", "deposit"), ("ts", self.ts),
                                         ("account", account), ("asset", symbol),
                                         ("amount", 5000)]))
        return lines

    def line(self) -> bytes:
        rng = self.rng
        listed = len(self.listed)
        pairs = self.pairs()
        roll = rng.random()
        if roll < 0.80:
            if rng.random() < 0.2:
                rng.shuffle(pairs)
            return json_pairs(pairs)
        if len(self.listed) > listed:  # the listing will not take
            self.listed.popitem()
        if roll < 0.93:
            return json_pairs(self.break_pairs(pairs))
        return self.break_bytes(json_pairs(pairs))

    def break_pairs(self, pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Make a command malformed at the JSON-value level."""
        rng = self.rng
        pairs = list(pairs)
        index = rng.randrange(len(pairs))
        key, value = pairs[index]
        how = rng.randrange(9)
        if how == 0:
            del pairs[index]
        elif how == 1:
            pairs.insert(rng.randrange(len(pairs) + 1), ("extra", rng.choice((1, "x", None))))
        elif how == 2 and key == "ts":
            pairs[index] = (key, rng.choice((None, -1, 2**63, 1.5, "1", True)))
        elif how == 2:
            pairs[index] = (key, rng.choice((
                None, True, False, 1, -1, 0, 1.0, 1.5, "1", "", [1], {"a": 1}, 2**63, 2**63 - 1,
                -(2**63), 10**40, "x" * 65, "bad id", "é", "buy", "gtd", "cancel_both",
            )))
        elif how == 3:
            bad = rng.choice((None, 1, "x", True, "tick", "deposit", "new_order"))
            pairs.insert(rng.randrange(len(pairs) + 1), (key, bad))  # a duplicate key
        elif how == 4:
            pairs.append((key, value))  # a valid duplicate
        elif how == 5:
            pairs = [(k, v) for k, v in pairs if k != "type"]
            pairs.insert(rng.randrange(len(pairs) + 1),
                         ("type", rng.choice(("", "TICK", "tick ", "nope", 7, None))))
        elif how == 6:
            pairs = [(k, v) for k, v in pairs if k != "ts"]
            if rng.random() < 0.5:
                pairs.append(("ts", rng.choice((-1, 2**63, 1.0, "1", None))))
        elif how == 7:
            pairs.append(("type", rng.choice(("tick", "deposit", "cancel_order"))))
        else:
            pairs.insert(0, ("type", "new_order"))  # a second, leading tag
        return pairs

    def break_bytes(self, line: bytes) -> bytes:
        """Damage a line at the byte level."""
        rng = self.rng
        how = rng.randrange(12)
        position = rng.randrange(len(line) + 1)
        if how == 0:
            return line[:position]
        if how == 1:
            return line[:position] + bytes([rng.randrange(256)]) + line[position + 1:]
        if how == 2:
            return line[:position] + line[position + 1:]
        if how == 3:
            return line + rng.choice((b" ", b"\t ", b"x", b"{}", b",", b"\r", b"\r\r", b"\x0b"))
        if how == 4:
            return rng.choice((b" ", b"\t", b"\x0b", b"\x0c", b"\xef\xbb\xbf")) + line
        if how == 5:
            return line.replace(b'"', b'"\\u0041', 1)
        if how == 6:
            return line.replace(b'":', b'" :\n\t', 2)
        if how == 7:
            depth = rng.choice((1, 5, 100))
            return line[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"
        if how == 8:
            return rng.choice((b"[]", b"null", b"1", b'"x"', b"{}", b"{", b"}", b"nul", b"true",
                               b'{"type":"tick"}', b'{"ts":1}', b"\xff\xfe", b'{"a":1,}',
                               b'{"type":"tick","ts":1,}', b'{"type":"tick" "ts":1}',
                               b'{"type":"tick","ts":01}', b'{"type":"tick","ts":1e400}',
                               b'{"type":"tick","ts":-0}', b'{"type":"tick","ts":1E2}'))
        if how == 9:
            return line.replace(b"acct", b"a\\u0063ct").replace(b'"a"', b'"\\u0061"')
        if how == 10:
            escape = rng.choice((b"\\ud800", b"\\udc00", b"\\ud83d\\ude00", b"\\u00e9", b"\\x",
                                 b"\\u12", b"\x01", b"\x7f", b"\xc3\xa9", b"\xc3", b"\xed\xa0\x80"))
            return line.replace(b'"', b'"' + escape, 1 + rng.randrange(6))
        return line.replace(b",", b", ", 3)

    def stream(self, count: int) -> bytes:
        out = self.funding()
        for _ in range(count - len(out)):
            roll = self.rng.random()
            if roll < 0.01:
                out.append(self.rng.choice((b"", b"   ", b"\t\r", b"\x0b\x0c")))
            else:
                out.append(self.line())
        ending = b"\r\n" if self.rng.random() < 0.1 else b"\n"
        return ending.join(out) + ending
