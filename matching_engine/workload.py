"""A seeded, realistic order flow for benchmarks, tests and `gpux dev`.

The flow (on `instruments` books and `accounts` accounts): 50% passive limit orders around
the touch, 18% cancels, 10% amends, 15% aggressive limit orders that trade (2% of all as
ioc), 5% market orders. It tracks the orders it placed so cancels and amends mostly hit
live ones. The same seed gives the same commands.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from protocol import AmendOrder, AnyCommand, CancelOrder, Deposit, ListInstrument, NewOrder
from protocol.commands import Side, TimeInForce

TICK_MICRO = 10_000  # 0.01 USDC
MID_TICKS = 1000  # 10.00 USDC
DELIVERY_START_NS = 4_000_000_000_000_000_000  # far in the future: books never close


def price_text(ticks: int) -> str:
    micro = ticks * TICK_MICRO
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


@dataclass
class Workload:
    instruments: int = 8
    accounts: int = 64
    seed: int = 7
    prefix: str = "c"

    def symbols(self) -> list[str]:
        return [f"GPU-{index}" for index in range(self.instruments)]

    def setup(self, ts: int = 1) -> list[AnyCommand]:
        """List the instruments and fund every account with USDC and tokens."""
        commands: list[AnyCommand] = [
            ListInstrument(
                ts=ts, symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                delivery_start=DELIVERY_START_NS, delivery_hours=1, tick_size="0.01",
                max_order_quantity=1_000, maker_fee_bps=2, taker_fee_bps=5,
            )
            for symbol in self.symbols()
        ]
        for account in range(self.accounts):
            name = f"acct{account}"
            commands.append(Deposit(ts=ts, account=name, asset="USDC", amount="1000000000"))
            commands += [
                Deposit(ts=ts, account=name, asset=symbol, amount=10**9)
                for symbol in self.symbols()
            ]
        return commands

    def flow(self, count: int, ts_start: int = 10) -> list[AnyCommand]:
        """Return `count` order commands with `ts` counting up from `ts_start`."""
        rng = random.Random(self.seed)
        live: list[deque[tuple[str, str, bool]]] = [deque() for _ in range(self.instruments)]
        return [self._next(rng, live, n, ts_start + n) for n in range(count)]

    def _next(
        self, rng: random.Random, live: list[deque[tuple[str, str, bool]]], n: int, ts: int
    ) -> AnyCommand:
        index = rng.randrange(self.instruments)
        symbol = f"GPU-{index}"
        account = f"acct{rng.randrange(self.accounts)}"
        is_buy = rng.random() < 0.5
        side: Side = "buy" if is_buy else "sell"
        roll = rng.random()
        client_order_id = f"{self.prefix}{n}"
        resting = live[index]
        if roll < 0.18 and resting:
            owner, old, _ = resting.popleft()
            return CancelOrder(ts=ts, account=owner, client_order_id=old)
        if roll < 0.28 and resting:
            owner, old, old_buy = resting[rng.randrange(len(resting))]
            offset = rng.randint(1, 6)
            ticks = MID_TICKS - offset if old_buy else MID_TICKS + offset
            return AmendOrder(ts=ts, account=owner, client_order_id=old,
                              new_price=price_text(ticks), new_quantity=rng.randint(1, 20))
        if roll < 0.33:
            return NewOrder(ts=ts, account=account, client_order_id=client_order_id,
                            instrument=symbol, side=side, order_type="market",
                            quantity=rng.randint(1, 10))
        if roll < 0.50:
            offset = rng.randint(0, 3)
            ticks = MID_TICKS + offset if is_buy else MID_TICKS - offset
            time_in_force: TimeInForce = "ioc" if roll < 0.35 else "gtc"
        else:
            offset = rng.randint(1, 8)
            ticks = MID_TICKS - offset if is_buy else MID_TICKS + offset
            time_in_force = "gtc"
        if time_in_force == "gtc":
            resting.append((account, client_order_id, is_buy))
            if len(resting) > 5000:
                resting.popleft()
        return NewOrder(ts=ts, account=account, client_order_id=client_order_id,
                        instrument=symbol, side=side, order_type="limit",
                        price=price_text(ticks), quantity=rng.randint(1, 20),
                        time_in_force=time_in_force)
