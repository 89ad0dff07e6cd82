"""The demo's taker buys strips now and then (sdk.bots.strip_buyer): it quotes a strip of
consecutive hours from a class's nearest open hour and sends it at the quoted notional plus
the slippage, rounded against itself; a quote that says the strip would be refused sends
nothing; the engine's refusal of a sent strip is told apart from the quote's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

import pytest

from gpux.dev.bots import STRIP_HOURS_MAX, STRIP_QUANTITY_MAX, STRIP_SLIPPAGE_BPS, DemoBots
from gpux.dev.market import REGION
from sdk.bots.strip_buyer import limit_with_slippage, trade_strip
from sdk.client import Client
from wsapi.messages import Instrument, StripLeg, StripQuoteResult, StripResult

HOUR_NS = 3600 * 10**9


def test_the_limit_is_the_quoted_notional_plus_the_slippage_rounded_against_the_trader() -> None:
    assert limit_with_slippage("100", "buy", 50) == "100.5"
    assert limit_with_slippage("9.84", "buy", 50) == "9.8892"
    assert limit_with_slippage("0.000001", "buy", 50) == "0.000002", "a buy rounds up"
    assert limit_with_slippage("0.000199", "sell", 50) == "0.000198", "a sell rounds down"
    assert limit_with_slippage("100", "sell", 50) == "99.5"
    assert limit_with_slippage("100", "buy", 0) == "100"
    for wrong in (-1, 1_001):
        with pytest.raises(ValueError, match="slippage_bps"):
            limit_with_slippage("100", "buy", wrong)


class StubClient:
    """strip_quote answered from a script, new_strip_order recorded and answered."""

    def __init__(self, reason: str | None = None, engine_reason: str | None = None) -> None:
        self.reason = reason
        self.engine_reason = engine_reason
        self.quoted: list[tuple[list[str], str, int]] = []
        self.sent: list[tuple[list[str], str, int, str]] = []

    async def strip_quote(self, instruments: Sequence[str], side: str, quantity: int,
                          limit_total: str | None = None) -> StripQuoteResult:
        legs = list(instruments)
        self.quoted.append((legs, side, quantity))
        filled = quantity if self.reason is None else quantity - 1
        return StripQuoteResult(
            seq=7, side=side, quantity=quantity,  # type: ignore[arg-type]
            legs=[StripLeg(instrument=leg, filled=filled, notional="2", fees="0.001", fills=[])
                  for leg in legs],
            notional=str(2 * len(legs)), fees="0.001", total="4.001", reason=self.reason)

    async def new_strip_order(self, instruments: Sequence[str], side: str, quantity: int,
                              limit_total: str) -> StripResult:
        self.sent.append((list(instruments), side, quantity, limit_total))
        if self.engine_reason is not None:
            return StripResult(op="new_strip_order", status="rejected",
                               reason=self.engine_reason)
        return StripResult(op="new_strip_order", status="accepted", strip_id="41",
                           side=side, quantity=quantity,  # type: ignore[arg-type]
                           limit_total=limit_total, notional=str(2 * len(self.sent[-1][0])),
                           fees="0.001", total="4.001")


async def test_a_strip_is_sent_at_the_quote_plus_slippage_only_when_the_quote_executes() -> None:
    stub = StubClient()
    outcome = await trade_strip(cast(Client, stub), ["a", "b"], "buy", 3, 50)
    assert stub.sent == [(["a", "b"], "buy", 3, "4.02")]
    assert outcome.traded and outcome.reason is None and outcome.limit_total == "4.02"

    refused_by_quote = StubClient(reason="insufficient_liquidity")
    outcome = await trade_strip(cast(Client, refused_by_quote), ["a", "b"], "buy", 3, 50)
    assert refused_by_quote.quoted and refused_by_quote.sent == [], "nothing sent"
    assert not outcome.traded and outcome.result is None
    assert outcome.reason == "insufficient_liquidity"

    refused_by_engine = StubClient(engine_reason="limit_exceeded")
    outcome = await trade_strip(cast(Client, refused_by_engine), ["a", "b"], "buy", 3, 50)
    assert len(refused_by_engine.sent) == 1 and not outcome.traded
    assert outcome.result is not None and outcome.reason == "limit_exceeded"


def hour(gpu: str, index: int, now_ns: int) -> Instrument:
    start = (now_ns // HOUR_NS + 2 + index) * HOUR_NS  # past the lead whatever the minute
    return Instrument(symbol=f"{gpu}.{index}", gpu=gpu, region=REGION, delivery_start=start,
                      delivery_hours=1, tick_size="0.01", max_order_quantity=1000,
                      maker_fee_bps=2, taker_fee_bps=5, status="open")


class FixedRandom:
    """random.Random's choice and randint, answering the first choice and the highest."""

    def choice(self, items: Sequence[str]) -> str:
        return items[0]

    def randint(self, low: int, high: int) -> int:
        return high


async def test_the_taker_buys_the_nearest_consecutive_hours_of_a_class() -> None:
    now_ns = time.time_ns()
    gpus = ["A100-SXM-80GB", "H100-SXM-80GB"]
    instruments = [hour(gpu, index, now_ns) for gpu in gpus for index in range(6)]
    bots = DemoBots("ws://unused", {})
    stub = StubClient()
    await bots._buy_strip(cast(Client, stub), FixedRandom(), instruments)  # type: ignore[arg-type]
    assert stub.sent == [([f"A100-SXM-80GB.{index}" for index in range(STRIP_HOURS_MAX)],
                          "buy", STRIP_QUANTITY_MAX,
                          limit_with_slippage(str(2 * STRIP_HOURS_MAX), "buy",
                                              STRIP_SLIPPAGE_BPS))]
    assert bots.taker_strips == 1

    refused = StubClient(reason="insufficient_liquidity")
    await bots._buy_strip(cast(Client, refused), FixedRandom(), instruments)  # type: ignore[arg-type]
    assert refused.sent == [] and bots.taker_strips == 1, "a refused quote sends nothing"

    gap = [i for i in instruments if i.symbol != "A100-SXM-80GB.1"]
    broken = StubClient()
    await bots._buy_strip(cast(Client, broken), FixedRandom(), gap)  # type: ignore[arg-type]
    assert broken.quoted == [] and broken.sent == [], "hours that do not follow: no strip"
