"""Strips (PROTOCOL.md v2) at the gateway: the `strip_quote` request, and the reply of a
`new_strip_order` built from the events it caused.

A quote runs the engine's own simulation (`matching_engine.core.strips`: `simulate_strip`,
then `strip_refusal`) over the gateway's view: the checks before it in docs/protocol-notes.md's
order over the gateway's instruments, then each level of the opposite side of each leg's L2
book as one maker, less the account's own resting orders at that price (a strip passes over
them), and the account's available balances. Pure, like the projection it reads.

Where a quote can differ from the engine's answer: the engine decides on the books as they
are when the order reaches it, so the order can still be refused or trade at other prices;
and a level merges its makers, so its taker fee is floor(q x P x bps / 10000) once where the
engine floors each maker's fill: a quote's fees are at most a few micro-USDC high (one per
maker of a level), never low, and its `insufficient_funds` errs the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final, Literal, NamedTuple

from gateway.marketdata import InstrumentState
from gateway.projection import Projection
from matching_engine.core.strips import LegQuote, simulate_strip, strip_refusal
from matching_engine.core.strips import StripLeg as SimulatedLeg
from protocol import events, format_micro, parse_micro
from protocol import reasons as R
from protocol.errors import ProtocolError
from protocol.money import parse_positive_micro
from wsapi.messages import StripFill, StripLeg, StripQuoteResult, StripResult
from wsapi.requests import StripQuoteRequest

NS_PER_HOUR: Final = 3_600 * 10**9
# The account of a level's other makers: no account is empty, so the strip's never matches.
OTHERS: Final = ""


class LevelMaker(NamedTuple):
    """One level of an L2 book as the simulation reads a maker: what rests at `price` from
    accounts other than the strip's."""

    price: int
    remaining: int
    account: str


def quote_strip(projection: Projection, account: str,
                request: StripQuoteRequest) -> StripQuoteResult:
    """What `request` would trade for `account` now, leg by leg, or why it would be refused."""
    is_buy = request.side == "buy"
    reason, legs = _check(projection, request)
    if reason is not None:
        return StripQuoteResult(seq=projection.event_seq, side=request.side,
                                quantity=request.quantity, legs=[], notional="0", fees="0",
                                total="0", limit_total=request.limit_total, reason=reason)
    own = _own_resting(projection, account)
    quote = simulate_strip(
        lambda symbol, buy: _level_makers(projection.instruments[symbol], buy, own),
        account, is_buy, [SimulatedLeg(i.spec.symbol, i.spec.taker_fee_bps) for i in legs],
        request.quantity)
    if request.limit_total is None:  # nothing to exceed: a buy's above any notional, a sell's 0
        limit_total = sys.maxsize if is_buy else 0
    else:
        limit_total = parse_micro(request.limit_total)
    balances = projection.balances.get(account, {})
    reason = strip_refusal(quote, is_buy, limit_total,
                           lambda asset: _available(balances.get(asset)))
    return StripQuoteResult(
        seq=projection.event_seq, side=request.side, quantity=request.quantity,
        legs=[_quoted_leg(leg) for leg in quote.legs], notional=format_micro(quote.notional),
        fees=format_micro(quote.taker_fees),
        total=format_micro(_total(request.side, quote.notional, quote.taker_fees)),
        limit_total=request.limit_total, reason=reason)


def _check(projection: Projection,
           request: StripQuoteRequest) -> tuple[str | None, list[InstrumentState]]:
    """The first failing check before the simulation (protocol-notes' order), or None and
    the legs' instruments."""
    symbols = request.instruments
    if len(set(symbols)) < len(symbols):
        return R.INVALID_ORDER, []
    listed = projection.instruments
    if any(symbol not in listed for symbol in symbols):
        return R.UNKNOWN_INSTRUMENT, []
    legs = [listed[symbol] for symbol in symbols]
    if not _consecutive(legs):
        return R.INVALID_ORDER, []
    if any(leg.closed for leg in legs):
        return R.INSTRUMENT_CLOSED, []
    if any(request.quantity > leg.spec.max_order_quantity for leg in legs):
        return R.INVALID_QUANTITY, []
    if request.limit_total is not None:
        try:
            parse_positive_micro(request.limit_total, "limit_total")
        except ProtocolError:
            return R.INVALID_PRICE, []
    return None, legs


def _consecutive(legs: list[InstrumentState]) -> bool:
    """Whether the legs are of one GPU class and region, each delivering right after the one
    before it, in the order given."""
    first = legs[0].spec
    return all(leg.spec.gpu == first.gpu and leg.spec.region == first.region
               for leg in legs) and all(
        later.spec.delivery_start
        == earlier.spec.delivery_start + earlier.spec.delivery_hours * NS_PER_HOUR
        for earlier, later in pairwise(legs))


OwnResting = dict[tuple[str, bool, int], int]  # (symbol, is_buy, price) -> GPU-hours


def _own_resting(projection: Projection, account: str) -> OwnResting:
    """What the account's open limit orders leave resting at each price of each book."""
    own: OwnResting = {}
    for order in projection.accounts.by_account.get(account, {}).values():
        if not order.is_market:
            key = (order.instrument.spec.symbol, order.is_buy, order.price)
            own[key] = own.get(key, 0) + order.remaining
    return own


def _level_makers(instrument: InstrumentState, taker_is_buy: bool,
                  own: OwnResting) -> Iterator[LevelMaker]:
    """The opposite side's levels best first, each less the account's own orders there."""
    book = instrument.book
    maker_is_buy = not taker_is_buy
    prices = reversed(book.bids) if maker_is_buy else iter(book.asks)
    levels = book.bids if maker_is_buy else book.asks
    symbol = instrument.spec.symbol
    for price in prices:
        others = levels[price] - own.get((symbol, maker_is_buy, price), 0)
        if others > 0:
            yield LevelMaker(price=price, remaining=others, account=OTHERS)


def _available(pair: list[int] | None) -> int:
    return 0 if pair is None else pair[0] - pair[1]


def _quoted_leg(leg: LegQuote[LevelMaker]) -> StripLeg:
    return StripLeg(
        instrument=leg.symbol, filled=leg.filled, notional=format_micro(leg.notional),
        fees=format_micro(leg.taker_fees),
        fills=[StripFill(price=format_micro(fill.maker.price), quantity=fill.quantity,
                         fee=format_micro(fill.taker_fee)) for fill in leg.fills])


def _total(side: str, notional: int, fees: int) -> int:
    """What a buy pays (notional and fees) or a sell receives (notional less fees)."""
    return notional + fees if side == "buy" else notional - fees


@dataclass(slots=True)
class StripProgress:
    """An accepted strip awaiting its strip_done: the trades of each leg so far."""

    accepted: events.StripAccepted
    trades: dict[str, list[events.Trade]] = field(default_factory=dict)  # leg's id -> trades

    def add(self, trade: events.Trade) -> None:
        self.trades.setdefault(trade.taker_client_order_id, []).append(trade)

    def result(self, done: events.StripDone) -> StripResult:
        """The reply's result: the strip, every leg with its fills, and strip_done's totals."""
        accepted = self.accepted
        side: Literal["buy", "sell"] = "buy" if accepted.side == "buy" else "sell"
        legs = []
        for index, symbol in enumerate(accepted.instruments):
            leg_id = f"{accepted.client_order_id}:{index}"
            trades = self.trades.get(leg_id, [])
            legs.append(StripLeg(
                instrument=symbol, client_order_id=leg_id,
                filled=sum(trade.quantity for trade in trades),
                notional=format_micro(sum(trade.quantity * parse_micro(trade.price)
                                          for trade in trades)),
                fees=format_micro(sum(parse_micro(trade.taker_fee) for trade in trades)),
                fills=[StripFill(price=trade.price, quantity=trade.quantity,
                                 fee=trade.taker_fee, trade_id=trade.trade_id)
                       for trade in trades]))
        return StripResult(
            op="new_strip_order", status="accepted", client_order_id=accepted.client_order_id,
            strip_id=accepted.strip_id, side=side, quantity=accepted.quantity,
            limit_total=accepted.limit_total, notional=done.notional, fees=done.fees,
            total=format_micro(_total(side, parse_micro(done.notional),
                                      parse_micro(done.fees))),
            legs=legs)


def rejected_strip(event: events.StripRejected) -> StripResult:
    return StripResult(op="new_strip_order", status="rejected",
                       client_order_id=event.client_order_id, reason=event.reason)


__all__ = ["LevelMaker", "StripProgress", "quote_strip", "rejected_strip"]
