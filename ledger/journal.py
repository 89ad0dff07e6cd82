"""Turn engine events into double-entry journal rows: the pure core of the ledger.

No I/O, no clock, no `await`: `JournalBuilder.build` takes raw event records (offset and
bytes) and returns the rows to append (a `JournalBatch`), so the same code runs in the
projector, the benchmark and the tests.

Money-moving events and their postings (amounts in integer units: micro-USDC for USDC,
whole tokens for an instrument's token, whose asset id is the instrument symbol):

    deposited  chain -amount, account +amount
    withdrawn  account -amount, chain +amount
    trade      buyer USDC -(q*P + buyer_fee), seller USDC +(q*P - seller_fee),
               fees USDC +(maker_fee + taker_fee), seller token -q, buyer token +q

where the buyer is the taker when `aggressor_side` is buy, else the maker. Delivery (v2)
adds a bond account per issue, `@bond:ISSUE_ID`, and these entries (B is the instrument's
bond per GPU-hour):

    capacity_issued   issuer USDC -q*B, bond +q*B; chain token -q, issuer token +q
    bond_released     bond USDC -amount, account +amount
    delivery_settled  bond USDC -compensation, holder +compensation
    redeemed          (a deliverable instrument's `instrument_closed`) every holder's
                      token balance -> 0, chain token +what they held

Every `delivery_settled` also leaves a `ledger.delivery_reports` row (seq, issue_id, holder,
delivered_ppm, evidence), whether or not it moves money: the report itself, which settlement
commits on chain as its batch's evidence leaf.

Postings of one entry are merged per (account, asset) and zero amounts are dropped, so an
entry has at most one posting per account and asset, and an event whose postings are all
zero (a bond of 0, a release of 0, a close with no tokens left) has no entry. Every entry
balances per asset.

To book a close the builder must know every holder's tokens of the instrument at that
seq: `DeliveryState` keeps them for the open deliverable instruments, moved by each
entry as it is built (so a close right after trades of the same batch sees them), and
`ledger.store.read_delivery_state` restores it from the database on a restart.

Each entry carries `hash = sha256(prev_hash || canonical)`, chained from `GENESIS_HASH`,
where `canonical` is the compact JSON array `[seq, [[seq, account, asset, amount], ...]]`
of the entry's posting rows sorted by (account, asset, amount); e.g.
`[7,[[7,"@chain","USDC",-2500000],[7,"alice","USDC",2500000]]]`. JSON escaping makes the
encoding unambiguous whatever text a tampered row holds.

Of events that move no money only `type` and `seq` are read (listings and closes aside):
the journal needs nothing else from them, and skipping their other fields halves the
decoding cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from eventlog.port import Record
from ledger.errors import EventError, LedgerError, SeqGapError
from protocol import (
    FEE_ACCOUNT,
    USDC,
    AnyEvent,
    BondReleased,
    CapacityIssued,
    DeliverySettled,
    Deposited,
    InstrumentClosed,
    InstrumentListed,
    Trade,
    Withdrawn,
    decode_event,
    effects,
)
from protocol.commands import EVIDENCE_MAX_LENGTH, PPM
from protocol.errors import ProtocolError
from protocol.money import parse_micro

__all__ = [
    "BOND_ACCOUNT_PREFIX",
    "CHAIN_ACCOUNT",
    "DELIVERY_ENTRY_KINDS",
    "GENESIS_HASH",
    "MONEY_EVENT_KINDS",
    "EntryRow",
    "JournalBatch",
    "JournalBuilder",
    "PostingRow",
    "trade_entry",
    "TradeRow",
    "WithdrawalRow",
    "bond_account",
    "entry_hash",
    "postings_of",
]

# The outside world that deposits come from and withdrawals go to. '@' is outside the
# protocol's account alphabet [A-Za-z0-9_.:-], so no trading account can ever be named so.
CHAIN_ACCOUNT: Final = "@chain"
GENESIS_HASH: Final = bytes(32)
# Entries of Delivery (v2), each keyed by its event's seq as any other; "redeemed" is the
# entry of a deliverable instrument's `instrument_closed`.
DELIVERY_ENTRY_KINDS: Final = ("capacity_issued", "bond_released", "delivery_settled", "redeemed")
MONEY_EVENT_KINDS: Final = frozenset(
    ("deposited", "withdrawn", "trade", "capacity_issued", "bond_released", "delivery_settled")
)
# Events read whole though they may move no money: a listing says whether its instrument
# is deliverable, and the close of a deliverable one redeems its tokens.
_INSTRUMENT_EVENT_KINDS: Final = frozenset(("instrument_listed", "instrument_closed"))
_DECODED_KINDS: Final = MONEY_EVENT_KINDS | _INSTRUMENT_EVENT_KINDS
# An issue's bond is the account BOND_ACCOUNT_PREFIX + issue_id: '@' keeps it outside the
# protocol's account alphabet, as for CHAIN_ACCOUNT.
BOND_ACCOUNT_PREFIX: Final = "@bond:"

EntryRow = tuple[int, str, int, bytes, bytes]  # (seq, kind, ts, prev_hash, hash)
PostingRow = tuple[int, str, str, int]  # (seq, account, asset, signed amount)
# (seq, trade_id, instrument, price_micro, quantity, buyer, seller, buyer_fee_micro,
#  seller_fee_micro, maker_account, taker_account, aggressor_side, ts)
TradeRow = tuple[int, str, str, int, int, str, str, int, int, str, str, str, int]
WithdrawalRow = tuple[int, str, str, int, int]  # (seq, account, asset, amount, ts)
InstrumentRow = tuple[str, int, int | None]  # (symbol, seq, bond_per_gpu_hour or None)
# (seq, issue_id, account, instrument, node_id, quantity, bond, ts)
IssueRow = tuple[int, str, str, str, str, int, int, int]
# (seq, issue_id, account, quantity, amount, ts)
BondReleaseRow = tuple[int, str, str, int, int, int]
RedemptionRow = tuple[int, str, int, int]  # (seq, instrument, quantity, ts)
# (seq, issue_id, holder, delivered_ppm, evidence or None, ts)
DeliveryReportRow = tuple[int, str, str, int, str | None, int]

ENTRY_COLUMNS: Final = ("seq", "kind", "ts", "prev_hash", "hash")
POSTING_COLUMNS: Final = ("seq", "account", "asset", "amount")
TRADE_COLUMNS: Final = (
    "seq", "trade_id", "instrument", "price_micro", "quantity", "buyer", "seller",
    "buyer_fee_micro", "seller_fee_micro", "maker_account", "taker_account",
    "aggressor_side", "ts",
)  # fmt: skip
WITHDRAWAL_COLUMNS: Final = ("seq", "account", "asset", "amount", "ts")
INSTRUMENT_COLUMNS: Final = ("symbol", "seq", "bond_per_gpu_hour")
ISSUE_COLUMNS: Final = (
    "seq", "issue_id", "account", "instrument", "node_id", "quantity", "bond", "ts",
)  # fmt: skip
BOND_RELEASE_COLUMNS: Final = ("seq", "issue_id", "account", "quantity", "amount", "ts")
REDEMPTION_COLUMNS: Final = ("seq", "instrument", "quantity", "ts")
DELIVERY_REPORT_COLUMNS: Final = (
    "seq", "issue_id", "holder", "delivered_ppm", "evidence", "ts",
)  # fmt: skip

_MICRO_CACHE_SIZE_MAX: Final = 1 << 14
_micro_cache: dict[str, int] = {}
_canonical_encoder = msgspec.json.Encoder()


class _Head(msgspec.Struct, frozen=True, gc=False):
    """The two fields every event has that the ledger needs: read the rest only for money."""

    type: str
    seq: int


_decode_head = msgspec.json.Decoder(_Head).decode


def bond_account(issue_id: str) -> str:
    """Return the account that holds an issue's bond."""
    return BOND_ACCOUNT_PREFIX + issue_id


def _micro(text: str, name: str) -> int:
    """Parse a USDC decimal string, memoised: prices and fees repeat a lot."""
    value = _micro_cache.get(text)
    if value is None:
        try:
            value = parse_micro(text, name)
        except ProtocolError as error:
            raise ValueError(str(error)) from error
        if len(_micro_cache) >= _MICRO_CACHE_SIZE_MAX:
            _micro_cache.clear()
        _micro_cache[text] = value
    return value


def asset_amount(asset: str, amount: str | int) -> int:
    """Return a deposit's or withdrawal's amount in integer units; it must be positive."""
    if asset == USDC:
        if not isinstance(amount, str):
            raise ValueError(f"USDC amount must be a decimal string, got {amount!r}")
        units = _micro(amount, "amount")
    else:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise ValueError(f"token amount must be an integer, got {amount!r}")
        units = amount
    if units <= 0:
        raise ValueError(f"amount must be positive, got {amount!r}")
    return units


def trade_sides(event: Trade) -> tuple[str, int, str, int]:
    """Return (buyer, buyer_fee_micro, seller, seller_fee_micro) of a trade."""
    if event.aggressor_side not in ("buy", "sell"):
        raise ValueError(f"aggressor_side must be buy or sell, got {event.aggressor_side!r}")
    return effects.trade_sides(
        event.aggressor_side == "buy", event.maker_account, _micro(event.maker_fee, "maker_fee"),
        event.taker_account, _micro(event.taker_fee, "taker_fee"))


def _merged(moves: Sequence[PostingRow]) -> list[PostingRow]:
    """Merge moves per (account, asset), drop zeros, and sort: the entry's postings."""
    totals: dict[tuple[str, str], int] = {}
    for _seq, account, asset, amount in moves:
        key = (account, asset)
        totals[key] = totals.get(key, 0) + amount
    seq = moves[0][0]
    return sorted((seq, account, asset, amount)
                  for (account, asset), amount in totals.items() if amount != 0)


def trade_entry(event: Trade) -> tuple[list[PostingRow], TradeRow]:
    """Return the sorted postings of a trade and its row in `ledger.trades`."""
    if event.quantity < 1:
        raise ValueError(f"trade quantity must be >= 1, got {event.quantity}")
    buyer, buyer_fee, seller, seller_fee = trade_sides(event)
    seq, quantity, symbol = event.seq, event.quantity, event.instrument
    price = _micro(event.price, "price")
    moves = [(seq, account, asset, amount) for account, asset, amount in effects.trade_moves(
        buyer, buyer_fee, seller, seller_fee, symbol, quantity, price) if amount != 0]
    if buyer == seller or buyer == FEE_ACCOUNT or seller == FEE_ACCOUNT:
        postings = _merged(moves)
    else:  # the usual case: every (account, asset) appears once and no amount is zero
        moves.sort()
        postings = moves
    row = (
        seq, event.trade_id, symbol, price, quantity, buyer, seller, buyer_fee, seller_fee,
        event.maker_account, event.taker_account, event.aggressor_side, event.ts,
    )
    return postings, row


def postings_of(event: Deposited | Withdrawn | Trade) -> list[PostingRow]:
    """Return the sorted postings of a money-moving event; raise ValueError if impossible."""
    if isinstance(event, Trade):
        return trade_entry(event)[0]
    seq, account, asset = event.seq, event.account, event.asset
    amount = asset_amount(asset, event.amount)
    if isinstance(event, Deposited):
        return _merged(((seq, CHAIN_ACCOUNT, asset, -amount), (seq, account, asset, amount)))
    return _merged(((seq, account, asset, -amount), (seq, CHAIN_ACCOUNT, asset, amount)))


@dataclass(slots=True)
class DeliveryState:
    """What the builder remembers between events to book Delivery (v2).

    `bonds` holds every deliverable instrument's bond per GPU-hour in micro-USDC, closed or
    not (a report after the close needs it); `holdings` every open deliverable instrument's
    non-zero token balances per account (the chain account aside), which its close redeems.
    """

    bonds: dict[str, int] = field(default_factory=dict)
    holdings: dict[str, dict[str, int]] = field(default_factory=dict)

    def bond_per_gpu_hour(self, instrument: str) -> int:
        """Return the instrument's bond per GPU-hour; raise ValueError if not deliverable."""
        bond = self.bonds.get(instrument)
        if bond is None:
            raise ValueError(f"instrument {instrument!r} is not a deliverable instrument")
        return bond

    def hold(self, postings: Sequence[PostingRow]) -> None:
        """Move the holdings by an entry's postings of open deliverable instruments' tokens."""
        holdings = self.holdings
        for _seq, account, asset, amount in postings:
            holders = holdings.get(asset)
            if holders is None or account == CHAIN_ACCOUNT:
                continue
            balance = holders.get(account, 0) + amount
            if balance:
                holders[account] = balance
            else:
                del holders[account]


def listing_row(event: InstrumentListed) -> InstrumentRow:
    """Return a listing's row in `ledger.instruments`: its bond in micro-USDC, or None."""
    bond = event.bond_per_gpu_hour
    return event.symbol, event.seq, None if bond is None else _micro(bond, "bond_per_gpu_hour")


def capacity_issued_entry(
    event: CapacityIssued, bond_per_gpu_hour: int
) -> tuple[list[PostingRow], IssueRow]:
    """Return an issue's postings (its bond, its minted tokens) and its `ledger.issues` row.

    The bond must be what the instrument's bond per GPU-hour makes of the quantity.
    """
    seq, account, symbol, quantity = event.seq, event.account, event.instrument, event.quantity
    if quantity < 1:
        raise ValueError(f"issued quantity must be >= 1, got {quantity}")
    bond = effects.bond(quantity, bond_per_gpu_hour)
    if _micro(event.bond, "bond") != bond:
        raise ValueError(f"bond {event.bond} is not {quantity} GPU-hours at the instrument's "
                         f"bond of {bond_per_gpu_hour} micro-USDC per GPU-hour")
    postings = _merged((
        (seq, account, USDC, -bond), (seq, bond_account(event.issue_id), USDC, bond),
        (seq, CHAIN_ACCOUNT, symbol, -quantity), (seq, account, symbol, quantity),
    ))
    row = (seq, event.issue_id, account, symbol, event.node_id, quantity, bond, event.ts)
    return postings, row


def bond_released_entry(event: BondReleased) -> tuple[list[PostingRow], BondReleaseRow]:
    """Return a release's postings (none when its amount is 0) and its `ledger.bond_releases`
    row."""
    if event.quantity < 1:
        raise ValueError(f"released quantity must be >= 1, got {event.quantity}")
    seq, amount = event.seq, _micro(event.amount, "amount")
    postings = _merged(((seq, bond_account(event.issue_id), USDC, -amount),
                        (seq, event.account, USDC, amount)))
    return postings, (seq, event.issue_id, event.account, event.quantity, amount, event.ts)


def delivery_settled_postings(event: DeliverySettled, bond_per_gpu_hour: int) -> list[PostingRow]:
    """Return a report's postings: the compensation from the bond to the holder (none when 0).

    The compensation must be what `effects.compensation` makes of the assignment.
    """
    if event.quantity < 1:
        raise ValueError(f"settled quantity must be >= 1, got {event.quantity}")
    if not 0 <= event.delivered_ppm <= PPM:
        raise ValueError(f"delivered_ppm must be within 0..{PPM}, got {event.delivered_ppm}")
    compensation = effects.compensation(event.quantity, bond_per_gpu_hour, event.delivered_ppm)
    if _micro(event.compensation, "compensation") != compensation:
        raise ValueError(f"compensation {event.compensation} is not what {event.quantity} "
                         f"GPU-hours delivered at {event.delivered_ppm} ppm earn")
    seq = event.seq
    return _merged(((seq, bond_account(event.issue_id), USDC, -compensation),
                    (seq, event.holder, USDC, compensation)))


def delivery_report_row(event: DeliverySettled) -> DeliveryReportRow:
    """Return a report's `ledger.delivery_reports` row; raise ValueError for evidence longer
    than the protocol allows."""
    evidence = event.evidence
    if evidence is not None and len(evidence) > EVIDENCE_MAX_LENGTH:
        raise ValueError(f"evidence of {len(evidence)} characters; at most "
                         f"{EVIDENCE_MAX_LENGTH}")
    return (event.seq, event.issue_id, event.holder, event.delivered_ppm, evidence, event.ts)


def redeemed_entry(
    event: InstrumentClosed, holders: dict[str, int]
) -> tuple[list[PostingRow], RedemptionRow]:
    """Return the postings that redeem every holder's tokens at a deliverable instrument's
    close (none when nobody holds any) and its `ledger.redemptions` row."""
    seq, symbol = event.seq, event.symbol
    negative = sorted(account for account, amount in holders.items() if amount < 0)
    if negative:
        raise ValueError(f"{negative[0]} holds {holders[negative[0]]} tokens of {symbol} at "
                         "its close")
    total = sum(holders.values())
    moves = [(seq, account, symbol, -amount) for account, amount in holders.items()]
    moves.append((seq, CHAIN_ACCOUNT, symbol, total))
    return _merged(moves), (seq, symbol, total, event.ts)


def entry_hash(prev_hash: bytes, seq: int, postings: Sequence[PostingRow]) -> bytes:
    """Return sha256 over the previous hash and the canonical encoding of the entry.

    `postings` are the entry's posting rows sorted, as `postings_of` returns them.
    """
    return hashlib.sha256(prev_hash + _canonical_encoder.encode((seq, postings))).digest()


@dataclass(slots=True)
class JournalBatch:
    """Rows to append in one database transaction, and where the log stands after them.

    `failure` is set when the records ran into an event that must stop the projector (a
    gap, an undecodable event): the rows are everything before it, and the caller appends
    them before raising `failure`.
    """

    first_seq: int
    last_seq: int
    next_offset: int
    head_hash: bytes
    entries: list[EntryRow] = field(default_factory=list)
    postings: list[PostingRow] = field(default_factory=list)
    trades: list[TradeRow] = field(default_factory=list)
    withdrawals: list[WithdrawalRow] = field(default_factory=list)
    instruments: list[InstrumentRow] = field(default_factory=list)
    issues: list[IssueRow] = field(default_factory=list)
    bond_releases: list[BondReleaseRow] = field(default_factory=list)
    redemptions: list[RedemptionRow] = field(default_factory=list)
    delivery_reports: list[DeliveryReportRow] = field(default_factory=list)
    failure: LedgerError | None = None

    @property
    def event_count(self) -> int:
        return self.last_seq - self.first_seq + 1


class JournalBuilder:
    """Build journal batches from event records, holding the seq, hash and delivery state
    they continue.

    The builder's state moves on in `build`; if the caller then fails to append a batch,
    the builder is stale and must be rebuilt from what the database holds.
    """

    def __init__(self, last_seq: int, head_hash: bytes,
                 delivery: DeliveryState | None = None) -> None:
        if last_seq < 0 or len(head_hash) != 32:
            raise ValueError("last_seq must be >= 0 and head_hash 32 bytes")
        self.last_seq = last_seq
        self.head_hash = head_hash
        self.delivery = DeliveryState() if delivery is None else delivery

    def build(self, records: Sequence[Record]) -> JournalBatch:
        """Decode the records and return the rows of every event up to the first failure."""
        batch = self.new_batch()
        self.extend(batch, records)
        return batch

    def new_batch(self) -> JournalBatch:
        """Return an empty batch that continues where the builder stands."""
        return JournalBatch(self.last_seq + 1, self.last_seq, 0, self.head_hash)

    def extend(self, batch: JournalBatch, records: Sequence[Record]) -> None:
        """Add the records' rows to `batch`, stopping at the first failure.

        The batch must be this builder's latest, and must not have failed already. Only
        money-moving events, listings and closes are decoded whole; of the others the
        ledger reads type and seq.
        """
        if batch.failure is not None or batch.last_seq != self.last_seq:
            raise ValueError("extend only the builder's latest batch, before any failure")
        decode_head = _decode_head
        append_entry = self._append_entry
        for record in records:
            try:
                head = decode_head(record.value)
            except (msgspec.ValidationError, msgspec.DecodeError) as error:
                batch.failure = _event_error(f"undecodable event: {error}", record)
                break
            seq = head.seq
            if seq != self.last_seq + 1:
                batch.failure = _gap_error(self.last_seq + 1, seq, record)
                break
            if head.type in _DECODED_KINDS:
                failure = append_entry(batch, head.type, record)
                if failure is not None:
                    batch.failure = failure
                    break
            self.last_seq = seq
            batch.next_offset = record.offset + 1
        batch.last_seq = self.last_seq
        batch.head_hash = self.head_hash

    def _append_entry(self, batch: JournalBatch, kind: str, record: Record) -> EventError | None:
        """Add the event's entry (when it moves money), postings and side rows; advance the
        hash chain.

        Return the error instead when the event cannot be decoded or moves impossible money.
        """
        try:
            event = decode_event(record.value)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            return _event_error(f"undecodable {kind} event: {error}", record)
        try:
            postings = self._book(batch, event)
        except ValueError as error:
            return _event_error(f"event seq {event.seq}: {error}", record)
        if postings:
            if isinstance(event, InstrumentClosed):
                kind = "redeemed"
            new_hash = entry_hash(self.head_hash, event.seq, postings)
            batch.entries.append((event.seq, kind, event.ts, self.head_hash, new_hash))
            batch.postings += postings
            self.head_hash = new_hash
        return None

    def _book(self, batch: JournalBatch, event: AnyEvent) -> list[PostingRow]:
        """Return the event's postings; add its side rows to `batch` and move the delivery
        state. Raise ValueError, having changed nothing, when the event is impossible."""
        delivery = self.delivery
        if isinstance(event, Trade):
            postings, trade_row = trade_entry(event)
            batch.trades.append(trade_row)
            if event.instrument in delivery.holdings:
                delivery.hold(postings)
            return postings
        if isinstance(event, Withdrawn | Deposited):
            postings = postings_of(event)
            if isinstance(event, Withdrawn):
                amount = asset_amount(event.asset, event.amount)
                batch.withdrawals.append((event.seq, event.account, event.asset, amount,
                                          event.ts))
            delivery.hold(postings)
            return postings
        if isinstance(event, CapacityIssued):
            return self._book_issue(batch, event)
        if isinstance(event, BondReleased):
            postings, release_row = bond_released_entry(event)
            batch.bond_releases.append(release_row)
            return postings
        if isinstance(event, DeliverySettled):
            postings = delivery_settled_postings(
                event, delivery.bond_per_gpu_hour(event.instrument))
            batch.delivery_reports.append(delivery_report_row(event))
            return postings
        if isinstance(event, InstrumentListed):
            return self._book_listing(batch, event)
        if isinstance(event, InstrumentClosed):
            return self._book_close(batch, event)
        raise ValueError(f"the journal does not book {type(event).__name__} events")

    def _book_issue(self, batch: JournalBatch, event: CapacityIssued) -> list[PostingRow]:
        """Book an issue; its instrument must be deliverable and still open."""
        delivery = self.delivery
        postings, issue_row = capacity_issued_entry(
            event, delivery.bond_per_gpu_hour(event.instrument))
        if event.instrument not in delivery.holdings:
            raise ValueError(f"capacity issued on {event.instrument}, which is closed")
        batch.issues.append(issue_row)
        delivery.hold(postings)
        return postings

    def _book_listing(self, batch: JournalBatch, event: InstrumentListed) -> list[PostingRow]:
        """Record the listing; a deliverable instrument starts with no holder."""
        row = listing_row(event)
        symbol, _seq, bond = row
        if bond is not None:
            if symbol in self.delivery.bonds:
                raise ValueError(f"instrument {symbol} is listed a second time")
            self.delivery.bonds[symbol] = bond
            self.delivery.holdings[symbol] = {}
        batch.instruments.append(row)
        return []

    def _book_close(self, batch: JournalBatch, event: InstrumentClosed) -> list[PostingRow]:
        """Redeem every token of a deliverable instrument at its close; others move nothing."""
        holders = self.delivery.holdings.get(event.symbol)
        if holders is None:
            return []
        postings, redemption_row = redeemed_entry(event, holders)
        del self.delivery.holdings[event.symbol]
        batch.redemptions.append(redemption_row)
        return postings


def _gap_error(expected_seq: int, got_seq: int, record: Record) -> SeqGapError:
    return SeqGapError(expected_seq, got_seq, record.offset)


def _event_error(message: str, record: Record) -> EventError:
    return EventError(message, offset=record.offset)
