"""The whole engine state as msgspec Structs, to snapshot and restore: the Python core's
implementation of the snapshot format, and its definition.

Restoring a snapshot and applying the commands after it gives the same events, byte for
byte, as never having stopped: books keep their time priority (orders are stored per side
in priority order) and accounts keep their orders in acceptance order. Version 2 adds
Delivery (docs/protocol-notes.md, "Snapshot (version 2)"): each instrument's bond, every
issue and every assignment.

The Rust core (matching_engine/native) implements the same format in `snapshot.rs`: for
the same state it writes the same bytes as `encode_snapshot` (maps in insertion order, the
expiry heap in `heapq`'s layout, stale entries included), and it reads what
`decode_snapshot` reads. A change to these Structs is a change to both.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Final

import msgspec

from matching_engine.core.book import Instrument, Order
from matching_engine.core.delivery import Assignment, Issue

if TYPE_CHECKING:
    from matching_engine.core.engine import Engine

SNAPSHOT_VERSION = 2
# Version 1 (before Delivery) reads as a version 2 without issues, assignments or bonds.
SNAPSHOT_VERSIONS_READ: Final = (1, 2)


class OrderState(msgspec.Struct, frozen=True, array_like=True):
    order_id: int
    account: str
    client_order_id: str
    is_buy: bool
    price: int
    quantity: int
    filled: int
    time_in_force: str
    expire_at: int | None
    post_only: bool
    stp: str


class InstrumentState(msgspec.Struct, frozen=True):
    symbol: str
    gpu: str
    region: str
    delivery_start: int
    delivery_hours: int
    tick: int
    max_order_quantity: int
    maker_fee_bps: int
    taker_fee_bps: int
    closed: bool
    bids: list[OrderState]
    asks: list[OrderState]
    bond: int | None = None  # v2: micro-USDC per GPU-hour of a deliverable instrument


class IssueState(msgspec.Struct, frozen=True, array_like=True):
    issue_id: str
    account: str
    instrument: str
    node_id: str
    quantity: int
    unassigned: int
    bonded: int


class AssignmentState(msgspec.Struct, frozen=True, array_like=True):
    issue_id: str
    holder: str
    quantity: int
    reported: bool


class EngineSnapshot(msgspec.Struct, frozen=True):
    version: int
    time: int
    seq: int
    order_counter: int
    trade_counter: int
    instruments: list[InstrumentState]
    balances: dict[str, dict[str, tuple[int, int]]]
    expiries: list[tuple[int, int, str, str]]
    deposit_ids: list[str]
    supply: dict[str, int]
    issues: list[IssueState] = []  # v2
    deliveries: list[AssignmentState] = []  # v2


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(EngineSnapshot)


def capture(engine: Engine) -> EngineSnapshot:
    """Return the engine's whole state as plain data."""
    return EngineSnapshot(
        version=SNAPSHOT_VERSION,
        time=engine.time,
        seq=engine.seq,
        order_counter=engine.order_counter,
        trade_counter=engine.trade_counter,
        instruments=[_instrument_state(i) for i in engine.instruments.values()],
        balances={
            account: {asset: (pair[0], pair[1]) for asset, pair in assets.items()}
            for account, assets in engine.balances.items()
        },
        expiries=list(engine.expiries),
        deposit_ids=sorted(engine.deposit_ids),
        supply=dict(engine.supply),
        issues=[_issue_state(issue) for issue in engine.issues.values()],
        deliveries=[_assignment_state(a) for a in engine.assignments.values()],
    )


def restore_into(engine: Engine, snapshot: EngineSnapshot) -> None:
    """Load a captured state into a fresh engine."""
    engine.time = snapshot.time
    engine.seq = snapshot.seq
    engine.order_counter = snapshot.order_counter
    engine.trade_counter = snapshot.trade_counter
    engine.balances = {
        account: {asset: [available, held] for asset, (available, held) in assets.items()}
        for account, assets in snapshot.balances.items()
    }
    engine.expiries = [tuple(entry) for entry in snapshot.expiries]  # type: ignore[misc]
    engine.deposit_ids = set(snapshot.deposit_ids)
    engine.supply = dict(snapshot.supply)
    orders: list[Order] = []
    for state in snapshot.instruments:
        instrument = _instrument(state)
        engine.instruments[instrument.symbol] = instrument
        for side, order_states in ((instrument.bids, state.bids), (instrument.asks, state.asks)):
            for order_state in order_states:
                order = _order(order_state, instrument)
                side.add(order)
                orders.append(order)
    for order in sorted(orders, key=lambda o: o.order_id):
        engine.register(order)
    for issue_state in snapshot.issues:
        engine.issues[issue_state.issue_id] = _issue(issue_state, engine.instruments)
    for assignment_state in snapshot.deliveries:
        assignment = _assignment(assignment_state)
        engine.assignments[(assignment.issue_id, assignment.holder)] = assignment
    engine.next_close_ns = min(
        (i.delivery_start for i in engine.instruments.values() if not i.closed),
        default=engine.next_close_ns,
    )


def encode_snapshot(snapshot: EngineSnapshot) -> bytes:
    """Encode as MessagePack: Structs as maps of their fields in order (`OrderState` as an
    array), tuples as arrays, dicts as maps in insertion order."""
    return _encoder.encode(snapshot)


def decode_snapshot(data: bytes) -> EngineSnapshot:
    """Decode a snapshot of either core, of version 1 or 2; ValueError for another version."""
    snapshot: EngineSnapshot = _decoder.decode(data)
    if snapshot.version not in SNAPSHOT_VERSIONS_READ:
        raise ValueError(f"snapshot version {snapshot.version} is not one of "
                         f"{SNAPSHOT_VERSIONS_READ}")
    return snapshot


# What a listing fixed, the same in the engine's Instrument and the snapshot's record of it.
_LISTING_FIELDS: Final = ("symbol", "gpu", "region", "delivery_start", "delivery_hours", "tick",
                          "max_order_quantity", "maker_fee_bps", "taker_fee_bps", "closed",
                          "bond")


def _listing(source: Instrument | InstrumentState) -> dict[str, Any]:
    return {name: getattr(source, name) for name in _LISTING_FIELDS}


def _instrument_state(instrument: Instrument) -> InstrumentState:
    return InstrumentState(
        **_listing(instrument),
        bids=[_order_state(o) for o in instrument.bids.orders_in_priority()],
        asks=[_order_state(o) for o in instrument.asks.orders_in_priority()],
    )


def _order_state(order: Order) -> OrderState:
    return OrderState(
        order_id=order.order_id, account=order.account, client_order_id=order.client_order_id,
        is_buy=order.is_buy, price=order.price, quantity=order.quantity, filled=order.filled,
        time_in_force=order.time_in_force, expire_at=order.expire_at,
        post_only=order.post_only, stp=order.stp,
    )


def _instrument(state: InstrumentState) -> Instrument:
    return Instrument(**_listing(state))


def _order(state: OrderState, instrument: Instrument) -> Order:
    order = Order(
        order_id=state.order_id, account=state.account, client_order_id=state.client_order_id,
        instrument=instrument, is_buy=state.is_buy, is_market=False, price=state.price,
        quantity=state.quantity, time_in_force=state.time_in_force,
        expire_at=state.expire_at, post_only=state.post_only, stp=state.stp,
        filled=state.filled,
    )
    order.hold = order.required_hold()
    return order


def _issue_state(issue: Issue) -> IssueState:
    return IssueState(
        issue_id=issue.issue_id, account=issue.account, instrument=issue.instrument.symbol,
        node_id=issue.node_id, quantity=issue.quantity, unassigned=issue.unassigned,
        bonded=issue.bonded,
    )


def _issue(state: IssueState, instruments: dict[str, Instrument]) -> Issue:
    instrument = instruments.get(state.instrument)
    if instrument is None:
        raise ValueError(f"snapshot issue {state.issue_id!r} names instrument "
                         f"{state.instrument!r}, which the snapshot does not list")
    return Issue(
        issue_id=state.issue_id, account=state.account, instrument=instrument,
        node_id=state.node_id, quantity=state.quantity, unassigned=state.unassigned,
        bonded=state.bonded,
    )


def _assignment_state(assignment: Assignment) -> AssignmentState:
    return AssignmentState(issue_id=assignment.issue_id, holder=assignment.holder,
                           quantity=assignment.quantity, reported=assignment.reported)


def _assignment(state: AssignmentState) -> Assignment:
    return Assignment(issue_id=state.issue_id, holder=state.holder, quantity=state.quantity,
                      reported=state.reported)


def snapshot_digest(data: bytes) -> str:
    """The sha256 of a snapshot's state with every map in key order: the same for equal
    states, whatever order their maps were filled in."""
    canonical = msgspec.msgpack.encode(decode_snapshot(data), order="sorted")
    return hashlib.sha256(canonical).hexdigest()
