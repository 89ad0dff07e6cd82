"""Strip orders (PROTOCOL.md v2): the same quantity in each of 2-168 consecutive delivery
hours of one GPU class and region, all or nothing, at a total price limit.

A strip is checked whole before it changes anything: the checks of docs/protocol-notes.md
("Strip orders (v2)") in their order, then a simulation of every leg against the resting
orders of other accounts. Only when everything passes does it execute, each fill through
the same trade as any order's (fees, maker holds, a maker filled whole leaves the book), so
a rejected strip leaves the state as it found it and a strip never rests.

`simulate_strip` and `strip_refusal` are pure and read the books through one small
interface, `MakersOf` (each maker's price, remaining quantity and account, in priority):
the gateway's `strip_quote` runs the same simulation on its own view of the books.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Final, Generic, NamedTuple, Protocol, TypeVar

from matching_engine.core.book import Instrument, Order
from matching_engine.core.invariants import check
from matching_engine.core.orders import OrderFlow
from protocol import (
    USDC,
    CommandRejected,
    NewStripOrder,
    StripAccepted,
    StripDone,
    StripRejected,
    format_micro,
)
from protocol import reasons as R
from protocol.commands import STRIP_CLIENT_ORDER_ID_PATTERN, STRIP_LEGS_MAX, STRIP_LEGS_MIN
from protocol.effects import fee
from protocol.errors import ProtocolError
from protocol.money import parse_positive_micro

NS_PER_HOUR: Final = 3_600 * 10**9
_STRIP_CLIENT_ORDER_ID: Final = re.compile(STRIP_CLIENT_ORDER_ID_PATTERN)


class Maker(Protocol):
    """A resting order as the simulation reads it: the engine's `Order`, or anything with
    these three attributes (a NamedTuple of a view's book will do)."""

    @property
    def price(self) -> int:
        """Micro-USDC per GPU-hour."""
        ...

    @property
    def remaining(self) -> int:
        """GPU-hours still to fill."""
        ...

    @property
    def account(self) -> str:
        ...


MakerT = TypeVar("MakerT", bound=Maker)

# `makers_of(symbol, is_buy)`: the resting orders a taker of side `is_buy` meets on the
# instrument `symbol` (its asks for a buy, its bids for a sell), best price first, then
# oldest first. The simulation stops reading as soon as the leg is filled.
MakersOf = Callable[[str, bool], Iterable[MakerT]]


class StripLeg(NamedTuple):
    """A leg as the simulation needs it: the instrument and its taker fee."""

    symbol: str
    taker_fee_bps: int


class Fill(NamedTuple, Generic[MakerT]):
    """One fill of a leg: `quantity` GPU-hours from `maker` at its price, and the strip's
    taker fee on it, floor(quantity x price x taker_fee_bps / 10000) micro-USDC."""

    maker: MakerT
    quantity: int
    taker_fee: int


@dataclass(frozen=True, slots=True)
class LegQuote(Generic[MakerT]):
    """One leg's fills in the order they would happen; `filled` is below the strip's
    quantity when the book cannot fill the leg."""

    symbol: str
    fills: list[Fill[MakerT]]
    filled: int
    notional: int
    taker_fees: int


@dataclass(frozen=True, slots=True)
class StripQuote(Generic[MakerT]):
    """What a strip of `quantity` per leg would trade right now, leg by leg in the order
    given; `notional` and `taker_fees` are summed over every fill (micro-USDC)."""

    quantity: int
    legs: list[LegQuote[MakerT]]
    notional: int
    taker_fees: int

    def fills_every_leg(self) -> bool:
        return all(leg.filled == self.quantity for leg in self.legs)


def simulate_strip(makers_of: MakersOf[MakerT], account: str, is_buy: bool,
                   legs: Sequence[StripLeg], quantity: int) -> StripQuote[MakerT]:
    """Walk each leg's makers as the strip would take them, changing nothing.

    Best price first, then oldest; `account`'s own orders are passed over (a strip never
    trades with them); from each other maker, min(what is left of `quantity`, its
    remaining) at its price. Every leg is walked, a short one included, so a quote shows
    what each leg would get. Fees are per fill, as the trades will charge them: a view that
    merges makers into one (an L2 level) quotes fees high by less than a micro-USDC per
    maker merged.
    """
    quoted = [_simulate_leg(makers_of(leg.symbol, is_buy), account, leg, quantity)
              for leg in legs]
    return StripQuote(
        quantity=quantity, legs=quoted,
        notional=sum(leg.notional for leg in quoted),
        taker_fees=sum(leg.taker_fees for leg in quoted),
    )


def _simulate_leg(makers: Iterable[MakerT], account: str, leg: StripLeg,
                  quantity: int) -> LegQuote[MakerT]:
    fills: list[Fill[MakerT]] = []
    left = quantity
    notional = taker_fees = 0
    for maker in makers:
        if left == 0:
            break
        if maker.account == account:
            continue
        taken = min(left, maker.remaining)
        fill_notional = taken * maker.price
        taker_fee = fee(fill_notional, leg.taker_fee_bps)
        fills.append(Fill(maker, taken, taker_fee))
        left -= taken
        notional += fill_notional
        taker_fees += taker_fee
    return LegQuote(symbol=leg.symbol, fills=fills, filled=quantity - left, notional=notional,
                    taker_fees=taker_fees)


def strip_refusal(quote: StripQuote[MakerT], is_buy: bool, limit_total: int,
                  available: Callable[[str], int]) -> str | None:
    """The reason a simulated strip is refused, the simulation's checks in their order, or
    None when it executes. `limit_total` is micro-USDC; `available(asset)` is the strip
    account's available balance of USDC or of a leg's token."""
    if not quote.fills_every_leg():
        return R.INSUFFICIENT_LIQUIDITY
    if (quote.notional > limit_total) if is_buy else (quote.notional < limit_total):
        return R.LIMIT_EXCEEDED
    if is_buy:
        if quote.notional + quote.taker_fees > available(USDC):
            return R.INSUFFICIENT_FUNDS
    elif any(available(leg.symbol) < quote.quantity for leg in quote.legs):
        return R.INSUFFICIENT_FUNDS
    return None


class StripFlow(OrderFlow):
    """The strip handler, on top of the order flow whose trade it reuses."""

    def on_new_strip_order(self, command: NewStripOrder) -> None:
        reason, instruments, limit_total = self._check_strip(command)
        if reason is not None:
            self.reject_strip(command.account, command.client_order_id, reason)
            return
        is_buy = command.side == "buy"
        legs = [StripLeg(i.symbol, i.taker_fee_bps) for i in instruments]
        quote = simulate_strip(self._makers_of, command.account, is_buy, legs, command.quantity)
        reason = strip_refusal(quote, is_buy, limit_total,
                               partial(self.available, command.account))
        if reason is not None:
            self.reject_strip(command.account, command.client_order_id, reason)
            return
        self._execute_strip(command, instruments, limit_total, quote)

    def reject_malformed_strip(self, account: str, client_order_id: str) -> None:
        """Reject a `new_strip_order` that did not decode but names a valid account and
        order id: `command_rejected` when the id is too long to name its legs (60-64
        characters, an identifier still), else `strip_rejected` (`invalid_order`)."""
        if _STRIP_CLIENT_ORDER_ID.match(client_order_id) is None:
            self.emit(CommandRejected(seq=self.next_seq(), ts=self.time,
                                      command="new_strip_order", reason=R.INVALID_COMMAND))
            return
        self.reject_strip(account, client_order_id, R.INVALID_ORDER)

    def reject_strip(self, account: str, client_order_id: str, reason: str) -> None:
        self.emit(StripRejected(seq=self.next_seq(), ts=self.time, account=account,
                                client_order_id=client_order_id, reason=reason))

    def _check_strip(self, command: NewStripOrder) -> tuple[str | None, list[Instrument], int]:
        """Return the first failing check's reason before the simulation (protocol-notes'
        order), else the legs' instruments and `limit_total` in micro-USDC."""
        symbols = command.instruments
        leg_count = len(symbols)
        if not STRIP_LEGS_MIN <= leg_count <= STRIP_LEGS_MAX or len(set(symbols)) < leg_count:
            return R.INVALID_ORDER, [], 0
        listed = self.instruments
        if any(symbol not in listed for symbol in symbols):
            return R.UNKNOWN_INSTRUMENT, [], 0
        instruments = [listed[symbol] for symbol in symbols]
        if not _consecutive(instruments):
            return R.INVALID_ORDER, [], 0
        if any(instrument.closed for instrument in instruments):
            return R.INSTRUMENT_CLOSED, [], 0
        quantity = command.quantity
        if quantity < 1 or any(quantity > i.max_order_quantity for i in instruments):
            return R.INVALID_QUANTITY, [], 0
        try:
            limit_total = parse_positive_micro(command.limit_total, "limit_total")
        except ProtocolError:
            return R.INVALID_PRICE, [], 0
        return None, instruments, limit_total

    def _makers_of(self, symbol: str, is_buy: bool) -> Iterator[Order]:
        return self.instruments[symbol].opposite(is_buy).orders_in_priority()

    def _execute_strip(self, command: NewStripOrder, instruments: list[Instrument],
                       limit_total: int, quote: StripQuote[Order]) -> None:
        """Trade every simulated fill, leg by leg, as an immediate taker whose order id is
        the strip's and whose client order id names the leg (`CLIENT_ORDER_ID:i`)."""
        self.order_counter += 1
        strip_id = self.order_counter
        self.emit(StripAccepted(
            seq=self.next_seq(), ts=self.time, account=command.account,
            client_order_id=command.client_order_id, strip_id=str(strip_id), side=command.side,
            instruments=list(command.instruments), quantity=command.quantity,
            limit_total=format_micro(limit_total),
        ))
        for index, (instrument, leg) in enumerate(zip(instruments, quote.legs, strict=True)):
            taker = _leg_taker(command, index, instrument, strip_id)
            # As an order's at acceptance: a sell holds its tokens, which its trades release;
            # a buy (a market taker) holds nothing and pays each fill from `available`.
            self.set_hold(taker, taker.required_hold())
            for fill in leg.fills:
                self._trade(fill.maker, taker, fill.quantity)
            check(taker.filled == taker.quantity and taker.hold == 0,
                  f"strip {strip_id} leg {index}: filled {taker.filled} of {taker.quantity}, "
                  f"holding {taker.hold}")
        self.emit(StripDone(
            seq=self.next_seq(), ts=self.time, account=command.account,
            client_order_id=command.client_order_id, strip_id=str(strip_id),
            notional=format_micro(quote.notional), fees=format_micro(quote.taker_fees),
        ))


def _consecutive(instruments: list[Instrument]) -> bool:
    """Whether the legs are of one GPU class and region, each delivering right after the
    one before it, in the order given."""
    first = instruments[0]
    return all(i.gpu == first.gpu and i.region == first.region for i in instruments) and all(
        later.delivery_start == earlier.delivery_start + earlier.delivery_hours * NS_PER_HOUR
        for earlier, later in pairwise(instruments)
    )


def _leg_taker(command: NewStripOrder, index: int, instrument: Instrument,
               strip_id: int) -> Order:
    """The taker side of one leg's trades: never registered, never resting. Its `stp` is
    never read: the simulation already passed over the account's own orders."""
    return Order(
        order_id=strip_id, account=command.account,
        client_order_id=f"{command.client_order_id}:{index}", instrument=instrument,
        is_buy=command.side == "buy", is_market=True, price=0, quantity=command.quantity,
        time_in_force="ioc", expire_at=None, post_only=False, stp="cancel_newest",
    )
