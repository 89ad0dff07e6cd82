"""What an event does to money (PROTOCOL.md, Balances, holds and fees), as pure integer
functions in micro-USDC and whole tokens.

The Python matching core, the ledger's journal and the gateway's account view all compute
holds, fees and a trade's balance moves here, so a rule is written once. The reference
model in tests/ keeps its own on purpose: it checks these.
"""

from __future__ import annotations

from typing import Final, TypeVar

from protocol.commands import FEE_ACCOUNT, PPM, USDC

BPS: Final = 10_000

Party = TypeVar("Party")


def fee(notional: int, bps: int) -> int:
    """A fee: floor(notional * bps / 10000)."""
    return notional * bps // BPS


def buy_cost(quantity: int, price: int, fee_bps: int) -> int:
    """Notional plus fee of `quantity` at `price`: a limit buy's hold (at the instrument's
    higher bps) and what a market buy's fill costs (at the taker bps)."""
    notional = quantity * price
    return notional + notional * fee_bps // BPS


def order_hold(is_buy: bool, is_market: bool, remaining: int, price: int,
               hold_fee_bps: int) -> int:
    """What an order holds now: a sell its remaining tokens, a limit buy its remaining
    notional plus fee at max(maker, taker) bps, a market buy nothing."""
    if not is_buy:
        return remaining
    if is_market:
        return 0
    return buy_cost(remaining, price, hold_fee_bps)


def trade_sides(aggressor_is_buy: bool, maker: Party, maker_fee: int, taker: Party,
                taker_fee: int) -> tuple[Party, int, Party, int]:
    """(buyer, buyer's fee, seller, seller's fee) of a trade, from its maker and taker."""
    if aggressor_is_buy:
        return taker, taker_fee, maker, maker_fee
    return maker, maker_fee, taker, taker_fee


def trade_moves(buyer: str, buyer_fee: int, seller: str, seller_fee: int, asset: str,
                quantity: int, price: int) -> tuple[tuple[str, str, int], ...]:
    """A trade's balance moves as (account, asset, amount): the buyer pays the notional
    plus its fee and gets the tokens, the seller gives the tokens and gets the notional
    less its fee, and both fees go to the fee account. They sum to zero per asset."""
    notional = quantity * price
    return (
        (buyer, USDC, -(notional + buyer_fee)),
        (buyer, asset, quantity),
        (seller, asset, -quantity),
        (seller, USDC, notional - seller_fee),
        (FEE_ACCOUNT, USDC, buyer_fee + seller_fee),
    )


def bond(quantity: int, bond_per_gpu_hour: int) -> int:
    """The bond of `quantity` GPU-hours of a deliverable instrument, in micro-USDC."""
    return quantity * bond_per_gpu_hour


def compensation(quantity: int, bond_per_gpu_hour: int, delivered_ppm: int) -> int:
    """What a holder is paid from the bond for the undelivered share of an assignment:
    floor(q * B * (1,000,000 - delivered_ppm) / 1,000,000) micro-USDC (PROTOCOL.md v2)."""
    return bond(quantity, bond_per_gpu_hour) * (PPM - delivered_ppm) // PPM
