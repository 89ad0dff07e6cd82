"""Money rules of PROTOCOL.md written once (protocol/effects.py), on the worked numbers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol import FEE_ACCOUNT, USDC
from protocol.effects import buy_cost, fee, order_hold, trade_moves, trade_sides


def test_a_limit_buy_holds_its_notional_plus_the_higher_fee_floored() -> None:
    # 3 GPU-hours at 2.15 USDC with maker 10 / taker 20 bps: 6.45 + floor(6450000*20/10000)
    assert order_hold(True, False, 3, 2_150_000, 20) == 6_450_000 + 12_900
    assert buy_cost(1, 333, 20) == 333  # the fee floors to 0
    assert fee(6_450_000, 10) == 6_450


def test_a_sell_holds_its_tokens_and_a_market_buy_nothing() -> None:
    assert order_hold(False, False, 7, 2_150_000, 20) == 7
    assert order_hold(False, True, 7, 0, 20) == 7
    assert order_hold(True, True, 7, 0, 20) == 0


def test_the_aggressor_decides_who_buys() -> None:
    assert trade_sides(True, "maker", 1, "taker", 2) == ("taker", 2, "maker", 1)
    assert trade_sides(False, "maker", 1, "taker", 2) == ("maker", 1, "taker", 2)


@given(quantity=st.integers(1, 10**9), price=st.integers(1, 10**12),
       buyer_bps=st.integers(0, 1000), seller_bps=st.integers(0, 1000))
def test_a_trade_moves_nothing_out_of_thin_air(quantity: int, price: int, buyer_bps: int,
                                                seller_bps: int) -> None:
    notional = quantity * price
    moves = trade_moves("b", fee(notional, buyer_bps), "s", fee(notional, seller_bps), "H100",
                        quantity, price)
    for asset in (USDC, "H100"):
        assert sum(amount for _, moved, amount in moves if moved == asset) == 0
    assert ("b", "H100", quantity) in moves and ("s", "H100", -quantity) in moves
    assert (FEE_ACCOUNT, USDC, fee(notional, buyer_bps) + fee(notional, seller_bps)) in moves
