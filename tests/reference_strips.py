"""Strip orders (v2) in the reference model: all-or-nothing buys and sells of consecutive hours.

A part of `tests.reference_model.ReferenceEngine`, read from PROTOCOL.md "Strip orders (v2)"
and its readings in docs/protocol-notes.md (not from either core), and as independent of
`matching_engine` as the rest of the model. A strip leaves no state of its own: it is checked,
simulated against the books as they stand, and when every check passes executed fill by fill
exactly as simulated, each fill an ordinary trade of the engine with the leg as its taker.
"""

from __future__ import annotations

import dataclasses
import itertools

from protocol import (
    USDC,
    MalformedCommand,
    NewStripOrder,
    ProtocolError,
    StripAccepted,
    StripDone,
    StripRejected,
    format_micro,
    parse_micro,
)
from protocol import reasons as reason
from tests import reference_model as model  # a cycle: the model sends strips here

LEGS_MIN = 2
LEGS_MAX = 168
CLIENT_ORDER_ID_LENGTH_MAX = 59  # so that CLIENT_ORDER_ID:LEG_INDEX fits in 64 characters
HOUR_NS = 3600 * 10**9


@dataclasses.dataclass(frozen=True)
class Fill:
    """One fill of the simulation: `quantity` of leg `leg` (its index) from `maker`."""

    leg: int
    maker: model.Order
    quantity: int
    price_micro: int


@dataclasses.dataclass(frozen=True)
class Totals:
    """What the fills add up to: notional, and the strip's taker fees."""

    notional_micro: int
    fees_micro: int


def names_its_legs(command: MalformedCommand) -> bool:
    """Whether a malformed strip's client_order_id can name its legs (protocol-notes: one
    longer than 59 characters is malformed like a missing one, `command_rejected`)."""
    client_order_id = command.client_order_id
    return client_order_id is not None and len(client_order_id) <= CLIENT_ORDER_ID_LENGTH_MAX


def new_strip_order(engine: model.ReferenceEngine, command: NewStripOrder) -> None:
    """Check the strip, simulate it, and execute it when nothing stands in the way."""
    why = _rejection_before_simulation(engine, command)
    fills: list[Fill] = []
    if why is None:
        legs = [_listed(engine, symbol) for symbol in command.instruments]
        simulated = simulate(engine, command.account, command.side, legs, command.quantity)
        if simulated is None:
            why = reason.INSUFFICIENT_LIQUIDITY
        else:
            fills = simulated
            why = _simulation_rejection(engine, command, legs, fills)
    if why is not None:
        # protocol-notes: a rejected strip changes nothing.
        engine.emit(StripRejected, account=command.account,
                    client_order_id=command.client_order_id, reason=why)
        return
    _execute(engine, command, fills)


def simulate(engine: model.ReferenceEngine, account: str, side: str,
             legs: list[model.Instrument], quantity: int) -> list[Fill] | None:
    """The fills of every leg in order, against the opposite side of its book, best price
    first then oldest, passing over `account`'s own orders; None when some leg cannot fill
    `quantity`. Reads the books, changes nothing."""
    fills: list[Fill] = []
    for index, leg in enumerate(legs):
        needed = quantity
        for maker in engine.book(leg.symbol, model.opposite(side)):
            if needed == 0:
                break
            if maker.account == account:
                continue  # a strip never trades with its own account's orders
            taken = min(needed, maker.remaining)
            fills.append(Fill(leg=index, maker=maker, quantity=taken,
                              price_micro=engine.price(maker)))
            needed -= taken
        if needed > 0:
            return None
    return fills


def totals(legs: list[model.Instrument], fills: list[Fill]) -> Totals:
    """The fills' notional and taker fees, each fee floored per fill at its leg's bps."""
    notional = fees = 0
    for fill in fills:
        fill_notional = fill.quantity * fill.price_micro
        notional += fill_notional
        fees += model.fee_micro(fill_notional, legs[fill.leg].taker_fee_bps)
    return Totals(notional_micro=notional, fees_micro=fees)


# ------------------------------------------------------------------------------ checks


def _listed(engine: model.ReferenceEngine, symbol: str) -> model.Instrument:
    instrument = engine.instrument(symbol)
    if instrument is None:
        raise model.ModelError(f"strip leg {symbol} is not listed after the checks")
    return instrument


def _rejection_before_simulation(engine: model.ReferenceEngine,
                                 command: NewStripOrder) -> str | None:
    """The first reason, in the order of protocol-notes (checks 1 to 6), to reject a strip
    before it is simulated."""
    symbols = command.instruments
    if not LEGS_MIN <= len(symbols) <= LEGS_MAX or len(set(symbols)) != len(symbols):
        return reason.INVALID_ORDER
    if any(engine.instrument(symbol) is None for symbol in symbols):
        return reason.UNKNOWN_INSTRUMENT
    legs = [_listed(engine, symbol) for symbol in symbols]
    first = legs[0]
    for previous, leg in itertools.pairwise(legs):
        if (leg.gpu, leg.region) != (first.gpu, first.region):
            return reason.INVALID_ORDER
        if leg.delivery_start != previous.delivery_start + previous.delivery_hours * HOUR_NS:
            return reason.INVALID_ORDER
    if any(leg.closed for leg in legs):
        return reason.INSTRUMENT_CLOSED
    if any(not 1 <= command.quantity <= leg.max_order_quantity for leg in legs):
        return reason.INVALID_QUANTITY
    if _limit_total_micro(command) is None:
        return reason.INVALID_PRICE
    return None


def _limit_total_micro(command: NewStripOrder) -> int | None:
    """`limit_total` in micro-USDC, or None unless it is a positive USDC amount."""
    try:
        micro = parse_micro(command.limit_total, "limit_total")
    except ProtocolError:
        return None
    return micro if micro > 0 else None


def _simulation_rejection(engine: model.ReferenceEngine, command: NewStripOrder,
                          legs: list[model.Instrument], fills: list[Fill]) -> str | None:
    """The first reason the simulated fills give to reject the strip (every leg fills)."""
    limit = _limit_total_micro(command)
    assert limit is not None
    total = totals(legs, fills)
    if command.side == model.BUY:
        if total.notional_micro > limit:
            return reason.LIMIT_EXCEEDED
        if total.notional_micro + total.fees_micro > engine.balance(command.account, USDC):
            return reason.INSUFFICIENT_FUNDS
        return None
    if total.notional_micro < limit:
        return reason.LIMIT_EXCEEDED
    if any(engine.balance(command.account, leg.symbol) < command.quantity for leg in legs):
        return reason.INSUFFICIENT_FUNDS
    return None


# --------------------------------------------------------------------------- execution


def _execute(engine: model.ReferenceEngine, command: NewStripOrder, fills: list[Fill]) -> None:
    """Accept the strip under a fresh order id and trade its fills, legs in order; the
    taker of leg i is CLIENT_ORDER_ID:i under the strip's id, paying or delivering from
    `available` (a strip holds nothing)."""
    legs = [_listed(engine, symbol) for symbol in command.instruments]
    limit = _limit_total_micro(command)
    assert limit is not None
    engine.last_order_id += 1
    strip_id = engine.last_order_id
    engine.emit(StripAccepted, account=command.account, client_order_id=command.client_order_id,
                strip_id=str(strip_id), side=command.side, instruments=list(command.instruments),
                quantity=command.quantity, limit_total=format_micro(limit))
    for fill in fills:
        if fill.maker.remaining < fill.quantity or engine.price(fill.maker) != fill.price_micro:
            raise model.ModelError(f"strip {strip_id}: the book moved under its simulation")
        taker = model.Taker(account=command.account,
                            client_order_id=f"{command.client_order_id}:{fill.leg}",
                            order_id=strip_id, side=command.side)
        engine.trade(taker, fill.maker, fill.quantity)
    total = totals(legs, fills)
    engine.emit(StripDone, account=command.account, client_order_id=command.client_order_id,
                strip_id=str(strip_id), notional=format_micro(total.notional_micro),
                fees=format_micro(total.fees_micro))
