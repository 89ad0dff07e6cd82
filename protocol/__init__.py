"""The engine protocol (PROTOCOL.md): commands, events, codecs and fixed-point money.

| module | what it owns |
|---|---|
| `message` | the base every command and event shares |
| `commands`, `events`, `reasons` | the messages and the reasons they carry |
| `codec` | JSON and MessagePack, the salvage of a malformed command |
| `money` | exact fixed-point USDC (micro-USDC inside) |
| `effects` | what an event does to money: fees, holds, a trade's moves |
| `errors` | `ProtocolError`, for outside input that does not fit |
"""

from protocol.codec import FORMATS, Format, decode_command, decode_event, encode
from protocol.commands import (
    FEE_ACCOUNT,
    USDC,
    AmendOrder,
    AnyCommand,
    CancelOrder,
    Command,
    DeliveryReport,
    Deposit,
    IssueCapacity,
    ListInstrument,
    MalformedCommand,
    MassCancel,
    NewOrder,
    NewStripOrder,
    Tick,
    Withdraw,
)
from protocol.errors import ProtocolError
from protocol.events import (
    AmendRejected,
    AnyEvent,
    BondReleased,
    CancelRejected,
    CapacityIssued,
    CommandRejected,
    DeliveryAssigned,
    DeliverySettled,
    Deposited,
    DepositRejected,
    Event,
    InstrumentClosed,
    InstrumentListed,
    IssueRejected,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderReduced,
    OrderRejected,
    ReportRejected,
    StripAccepted,
    StripDone,
    StripRejected,
    Trade,
    WithdrawalRejected,
    Withdrawn,
)
from protocol.money import MICRO_PER_USDC, format_micro, parse_micro, parse_token_amount

__all__ = [
    "FEE_ACCOUNT", "FORMATS", "MICRO_PER_USDC", "USDC", "AmendOrder", "AmendRejected",
    "AnyCommand", "AnyEvent", "BondReleased", "CancelOrder", "CancelRejected",
    "CapacityIssued", "Command", "CommandRejected", "DeliveryAssigned", "DeliveryReport",
    "DeliverySettled", "Deposit", "DepositRejected", "Deposited", "Event", "Format",
    "InstrumentClosed", "InstrumentListed", "IssueCapacity", "IssueRejected",
    "ListInstrument", "MalformedCommand", "MassCancel", "NewOrder", "NewStripOrder",
    "OrderAccepted", "OrderAmended", "OrderCanceled", "OrderReduced", "OrderRejected",
    "ProtocolError", "ReportRejected", "StripAccepted", "StripDone", "StripRejected", "Tick",
    "Trade", "Withdraw", "WithdrawalRejected", "Withdrawn",
    "decode_command", "decode_event", "encode", "format_micro", "parse_micro",
    "parse_token_amount",
]
