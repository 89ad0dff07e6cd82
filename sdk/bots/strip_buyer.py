"""Trade a strip at what it costs now: quote it (`strip_quote`), and only when the quote says
it would execute, send `new_strip_order` with the quoted notional plus a slippage as its
limit (a sell: less the slippage). A quote that says the strip would be refused sends
nothing; the engine, deciding on the books as they are when the order reaches it, may
still refuse it, or fill it at other prices within the limit. The demo's taker buys strips
this way now and then (gpux.dev.bots).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from protocol import format_micro, parse_micro
from sdk.client import Client
from wsapi.messages import StripQuoteResult, StripResult
from wsapi.requests import Side

BPS_PER_UNIT: Final = 10_000
SLIPPAGE_BPS_MAX: Final = 1_000  # 10 %: past it a limit no longer guards anything


def limit_with_slippage(notional: str, side: Side, slippage_bps: int) -> str:
    """The limit on a quoted `notional`: a buy pays up to `slippage_bps` more, rounded up to
    the micro-USDC; a sell takes down to `slippage_bps` less, rounded down."""
    if not 0 <= slippage_bps <= SLIPPAGE_BPS_MAX:
        raise ValueError(f"slippage_bps must be 0 to {SLIPPAGE_BPS_MAX}, got {slippage_bps}")
    micro = parse_micro(notional)
    if side == "buy":
        return format_micro(-(-micro * (BPS_PER_UNIT + slippage_bps) // BPS_PER_UNIT))
    return format_micro(micro * (BPS_PER_UNIT - slippage_bps) // BPS_PER_UNIT)


@dataclass(frozen=True, slots=True)
class StripOutcome:
    """What became of a strip: its quote, and the engine's answer when it was sent (None
    when the quote said it would be refused, and nothing was sent)."""

    quote: StripQuoteResult
    limit_total: str | None = None
    result: StripResult | None = None

    @property
    def traded(self) -> bool:
        return self.result is not None and self.result.accepted

    @property
    def reason(self) -> str | None:
        """Why it did not trade: the quote's refusal or the engine's; None when it traded."""
        if self.result is None:
            return self.quote.reason
        return None if self.result.accepted else self.result.reason


async def trade_strip(client: Client, legs: Sequence[str], side: Side, quantity: int,
                      slippage_bps: int) -> StripOutcome:
    """Quote the strip of `quantity` GPU-hours in each of `legs` (consecutive hours, in
    delivery order) and send it at the quote plus `slippage_bps` if the quote would
    execute."""
    quote = await client.strip_quote(legs, side, quantity)
    if not quote.executable:
        return StripOutcome(quote=quote)
    limit_total = limit_with_slippage(quote.notional, side, slippage_bps)
    if parse_micro(limit_total) <= 0:  # a sell of almost nothing, less the slippage
        return StripOutcome(quote=quote)
    result = await client.new_strip_order(legs, side, quantity, limit_total)
    return StripOutcome(quote=quote, limit_total=limit_total, result=result)
