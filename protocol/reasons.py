"""Reject and cancel reasons of PROTOCOL.md, as the strings that go on the wire."""

from __future__ import annotations

from typing import Final

# Rejections
INVALID_COMMAND: Final = "invalid_command"
DUPLICATE_INSTRUMENT: Final = "duplicate_instrument"
UNKNOWN_INSTRUMENT: Final = "unknown_instrument"
INSTRUMENT_CLOSED: Final = "instrument_closed"
INVALID_PRICE: Final = "invalid_price"
INVALID_QUANTITY: Final = "invalid_quantity"
INVALID_ORDER: Final = "invalid_order"
INSUFFICIENT_FUNDS: Final = "insufficient_funds"
DUPLICATE_CLIENT_ORDER_ID: Final = "duplicate_client_order_id"
POST_ONLY_WOULD_CROSS: Final = "post_only_would_cross"
UNKNOWN_ORDER: Final = "unknown_order"
INVALID_AMOUNT: Final = "invalid_amount"
UNKNOWN_ASSET: Final = "unknown_asset"
DUPLICATE_DEPOSIT: Final = "duplicate_deposit"
# Delivery (v2)
DUPLICATE_ISSUE: Final = "duplicate_issue"
NOT_DELIVERABLE: Final = "not_deliverable"
UNKNOWN_ISSUE: Final = "unknown_issue"
NOT_ASSIGNED: Final = "not_assigned"
ALREADY_REPORTED: Final = "already_reported"
INVALID_PPM: Final = "invalid_ppm"
# Strip orders (v2)
INSUFFICIENT_LIQUIDITY: Final = "insufficient_liquidity"
LIMIT_EXCEEDED: Final = "limit_exceeded"

# Cancellations (INSTRUMENT_CLOSED is shared with the rejections)
USER: Final = "user"
MASS_CANCEL: Final = "mass_cancel"
IOC: Final = "ioc"
FOK: Final = "fok"
MARKET: Final = "market"
STP: Final = "stp"
EXPIRED: Final = "expired"
AMENDED: Final = "amended"
# Cancels the venue makes for a trader (v2): cancel-on-disconnect, the dead-man's switch
DISCONNECT: Final = "disconnect"
DEAD_MAN_SWITCH: Final = "dead_man_switch"
