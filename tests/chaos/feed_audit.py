"""Check everything the clients were told at a seq against the final committed event log.

The gateway answers from events the engine has not committed yet (docs/exactly-once.md);
the engine is killed at random points, so some of those events are aborted and written again
by the restarted engine. A client must never have been told anything the committed log
does not say. `tests.chaos.feeds` holds what each client received; here:

1. The committed log is replayed through a fresh `gateway.projection.Projection`, the pure
   code every gateway runs, with a flush after every event: that gives, from the committed
   log alone, each account's execution reports, fills and delivery events, one per event
   (by seq), and the state (balances, open orders, issues and assignments, each book's
   levels) at every seq a client was told about.
2. No message carries an event's own bytes: every one is built from events (a report, a
   fill, a balance). So each is compared *field for field* with what the committed log
   gives at its seq: every item of an orders, fills or deliveries message equal (every
   field: seq, ts, ids, prices, quantities, the order's state after the event) to the one
   the committed event at its seq makes; every balances, open-orders, deliveries and book
   state equal to the replay's at its seq (a book at its own seq, its count of level
   changes, and its checksum). Where they differ, the problem names the seq, the frame's
   bytes as received and the committed event's bytes.
3. No seq is skipped or repeated on one subscription: from its snapshot to the last
   position the connection proved the gateway had written (heartbeats, position replies,
   balances messages; `Stream.bound`), a client's orders reports are exactly the account's
   reports of the events after the snapshot's seq, in order; its fills and delivery
   events, the snapshot's then the updates', are one unbroken run of the account's, as
   the log has them; balances updates come at increasing seqs and, applied to the
   snapshot, equal the replay's balances at each; a book's updates chain `prev_seq` to
   the previous `seq` and, applied to the snapshot, equal the replay's book at each. A
   reconnect (a killed gateway) starts new subscriptions with new snapshots: each is
   checked the same way, so the resync itself must match the log.
   An orders snapshot with no open order carries no seq: that subscription's start is
   known only to lie before the first position the connection proves after it (usually
   the next batch's balances update), so a report lost between the two would go unseen;
   such subscriptions are counted (`orders_starts_bounded`; `orders_starts_unknown` when
   there was no such position either, and the start is taken as its first update's).
4. Heartbeats: each connection's `event_seq` never goes back, and never passes the log's
   last seq.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from gateway.config import GatewayConfig
from gateway.marketdata import ProjectionError
from gateway.projection import Projection
from protocol import AnyEvent
from tests.chaos.feeds import Connection, FeedRecorder, Received, Stream, parse
from wsapi.messages import (
    Balance,
    BalancesMessage,
    BookMessage,
    DeliveriesMessage,
    DeliveryEvent,
    Fill,
    FillsMessage,
    OrderReport,
    OrdersMessage,
    Reply,
)

PROBLEMS_PER_KIND_MAX: Final = 10
BYTES_SHOWN_MAX: Final = 700
ITEM_CHANNELS: Final = ("orders", "fills", "deliveries")
_decoders: Final = {"orders": msgspec.json.Decoder(OrdersMessage),
                    "fills": msgspec.json.Decoder(FillsMessage),
                    "deliveries": msgspec.json.Decoder(DeliveriesMessage)}
_encoder: Final = msgspec.json.Encoder()

Item = OrderReport | Fill | DeliveryEvent
Book = tuple[dict[str, int], dict[str, int], int]  # bids, asks (price -> quantity), checksum


@dataclass
class FeedAudit:
    """Counts for the report, and each problem (the first few of each kind)."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    seqs_seen: set[int] = field(default_factory=set)

    def problem(self, kind: str, text: str) -> None:
        self.by_kind[kind] += 1
        if self.by_kind[kind] <= PROBLEMS_PER_KIND_MAX:
            self.problems.append(f"client feeds, {kind}: {text}")

    def finish(self) -> None:
        for kind, count in self.by_kind.items():
            if count > PROBLEMS_PER_KIND_MAX:
                self.problems.append(f"client feeds, {kind}: {count - PROBLEMS_PER_KIND_MAX} "
                                     "more not shown")
        self.counts["problems"] = sum(self.by_kind.values())
        self.counts["seqs_seen"] = len(self.seqs_seen)


@dataclass
class Needs:
    """The states the replay must give: (account or instrument, seq) -> the state."""

    balances: dict[tuple[str, int], dict[str, Balance] | None] = field(default_factory=dict)
    open_orders: dict[tuple[str, int], list[OrderReport] | None] = field(default_factory=dict)
    deliveries: dict[tuple[str, int], Any] = field(default_factory=dict)
    books: dict[tuple[str, int], Book | None] = field(default_factory=dict)


@dataclass
class Expected:
    """What the committed log gives: each account's items per channel, in log order."""

    items: dict[str, dict[str, list[Item]]] = field(
        default_factory=lambda: {channel: defaultdict(list) for channel in ITEM_CHANNELS})
    last_seq: int = 0


def audit_feeds(recorder: FeedRecorder, event_bytes: Sequence[bytes],
                events: Sequence[AnyEvent]) -> FeedAudit:
    """Check every recorded frame against the committed log (`events`, seq 1..N, and their
    bytes); return the counts and the problems."""
    audit = FeedAudit()
    if recorder.truncated:
        audit.problem("recording", f"truncated at {recorder.frames_max} frames: the rest of "
                      "what the clients received is unchecked")
    connections = [c for recording in recorder.clients for c in parse(recording)]
    audit.counts.update(frames_recorded=recorder.frames, clients=len(recorder.clients),
                        connections=len(connections))
    accounts = {recording.account for recording in recorder.clients}
    needs = _needs(audit, connections, len(events))
    expected = _replay(audit, events, accounts, needs)
    config = GatewayConfig()
    windows = {"fills": config.fills_snapshot_max,
               "deliveries": config.delivery_events_snapshot_max}
    for connection in connections:
        _check_connection(audit, connection, expected, needs, windows, event_bytes)
    audit.finish()
    return audit


# -- what the replay must give -------------------------------------------------------------

def _needs(audit: FeedAudit, connections: Iterable[Connection], last_seq: int) -> Needs:
    needs = Needs()

    def position(kind: str, key: tuple[str, int], table: dict[tuple[str, int], Any],
                 data: bytes) -> None:
        if key[1] > last_seq:
            audit.problem("beyond the log", f"{kind} of {key[0]} at seq {key[1]}, past the "
                          f"committed log's last seq {last_seq}: {_show(data)}")
            return
        audit.seqs_seen.add(key[1])
        table[key] = None

    for connection in connections:
        account = connection.account
        for reply in connection.replies:
            message = reply.message
            table = needs.balances if message.op == "balances" else needs.deliveries
            position(f"{message.op} reply", (account, int(message.result["seq"])), table,
                     reply.data)
        for stream in connection.streams:
            if stream.snapshot.message is None:
                continue
            if stream.channel == "balances":
                for received in (stream.snapshot, *stream.updates):
                    position("balances", (account, received.message.seq), needs.balances,
                             received.data)
                if stream.bound is not None:
                    position("position", (account, stream.bound), needs.balances, b"")
            elif stream.channel == "orders" and stream.snapshot.message.orders:
                seq = stream.snapshot.message.orders[0].seq
                position("open orders", (account, seq), needs.open_orders, stream.snapshot.data)
            elif stream.channel == "book":
                for received in (stream.snapshot, *stream.updates):
                    needs.books[(stream.key, received.message.seq)] = None
    return needs


def _replay(audit: FeedAudit, events: Sequence[AnyEvent], accounts: set[str],
            needs: Needs) -> Expected:
    """Apply the committed events to a fresh projection, flushing after each; collect the
    accounts' items and the states `needs` names."""
    config = GatewayConfig()
    projection = Projection(
        trades_kept_max=config.trades_snapshot_max, candles_kept_max=config.candles_kept_max,
        fills_kept_max=config.fills_snapshot_max,
        delivery_events_kept_max=config.delivery_events_snapshot_max,
        deliveries_settled_kept_max=config.deliveries_settled_kept_max)
    expected = Expected()

    def wanted(channel: str, key: str) -> bool:
        return channel in ITEM_CHANNELS and key in accounts

    by_seq: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for table_name in ("balances", "open_orders", "deliveries"):
        for account, seq in getattr(needs, table_name):
            by_seq[seq].append((table_name, account))
    book_symbols = sorted({symbol for symbol, _ in needs.books})
    for event in events:
        try:
            projection.apply(event)
        except (ProjectionError, KeyError) as error:
            audit.problem("replay", f"the committed log does not project at seq {event.seq}: "
                          f"{error!r}; the rest is unchecked")
            break
        for update in projection.flush(wanted):
            message = _decoders[update.channel].decode(update.payload)
            items = message.events if update.channel == "deliveries" else (
                message.orders if update.channel == "orders" else message.fills)
            expected.items[update.channel][update.key].extend(items)
        for table_name, account in by_seq.get(event.seq, ()):
            _store(projection, needs, table_name, account, event.seq)
        for symbol in book_symbols:
            instrument = projection.instruments.get(symbol)
            if (instrument is not None and (symbol, instrument.seq) in needs.books
                    and needs.books[(symbol, instrument.seq)] is None):
                bids, asks = instrument.book.levels()
                needs.books[(symbol, instrument.seq)] = (
                    dict(bids), dict(asks), instrument.book.checksum())
        expected.last_seq = event.seq
    return expected


def _store(projection: Projection, needs: Needs, table_name: str, account: str,
           seq: int) -> None:
    if table_name == "balances":
        needs.balances[(account, seq)] = projection.balances_message(account).balances
    elif table_name == "open_orders":
        needs.open_orders[(account, seq)] = projection.open_orders(account)
    else:
        needs.deliveries[(account, seq)] = msgspec.json.decode(
            _encoder.encode(projection.deliveries(account)))


# -- the checks ----------------------------------------------------------------------------

def _check_connection(audit: FeedAudit, connection: Connection, expected: Expected,
                      needs: Needs, windows: dict[str, int],
                      event_bytes: Sequence[bytes]) -> None:
    label = f"{connection.client} connection {connection.number}"
    for data in connection.undecodable:
        audit.problem("undecodable", f"{label}: {_show(data)}")
    _check_heartbeats(audit, connection, label, expected.last_seq)
    _check_replies(audit, connection, label, needs)
    for stream in connection.streams:
        audit.counts[f"subscriptions_{stream.channel}"] += 1
        audit.counts["messages_checked"] += 1 + len(stream.updates)
        if connection.number > 1:
            audit.counts["subscriptions_after_reconnect"] += 1
        where = f"{label}, {stream.channel} {stream.key}"
        if stream.snapshot.message is None:
            audit.problem("update before snapshot", f"{where}: "
                          f"{_show(stream.updates[0].data)}")
            continue
        if stream.channel == "balances":
            _check_balances(audit, stream, where, needs)
        elif stream.channel == "book":
            _check_book(audit, stream, where, needs)
        else:
            _check_items_stream(audit, stream, where, expected, needs, windows, event_bytes)


def _check_heartbeats(audit: FeedAudit, connection: Connection, label: str,
                      last_seq: int) -> None:
    previous = 0
    for heartbeat in connection.heartbeats:
        seq = heartbeat.message.event_seq
        audit.counts["heartbeats_checked"] += 1
        if seq < previous:
            audit.problem("heartbeat went back", f"{label}: event_seq {seq} after {previous}")
        if seq > last_seq:
            audit.problem("beyond the log", f"{label}: heartbeat event_seq {seq} past the "
                          f"committed log's last seq {last_seq}")
        previous = max(previous, seq)


def _check_replies(audit: FeedAudit, connection: Connection, label: str, needs: Needs) -> None:
    for reply in connection.replies:
        message: Reply = reply.message
        seq = int(message.result["seq"])
        key = (connection.account, seq)
        audit.counts["replies_checked"] += 1
        if message.op == "balances":
            told = msgspec.convert(message.result["balances"], dict[str, Balance])
            if key in needs.balances and _nonzero(told) != needs.balances[key]:
                audit.problem("divergent state", f"{label}: balances reply at seq {seq} "
                              f"{_show(reply.data)} != the committed log's "
                              f"{_show(_encoder.encode(needs.balances[key]))}")
        elif key in needs.deliveries and message.result != needs.deliveries[key]:
            audit.problem("divergent state", f"{label}: deliveries reply at seq {seq} "
                          f"{_show(reply.data)} != the committed log's "
                          f"{_show(_encoder.encode(needs.deliveries[key]))}")


def _check_balances(audit: FeedAudit, stream: Stream, where: str, needs: Needs) -> None:
    """Applied in order to the snapshot, the updates must give the replay's balances at
    each one's seq, and at the last position the connection proved (`bound`)."""
    account = stream.key
    told: dict[str, Balance] = {}
    last = -1
    for received in (stream.snapshot, *stream.updates):
        message: BalancesMessage = received.message
        if message.seq <= last:
            audit.problem("repeated seq", f"{where}: balances at seq {message.seq} after seq "
                          f"{last}: {_show(received.data)}")
        last = max(last, message.seq)
        told.update(message.balances)
        state = needs.balances.get((account, message.seq))
        audit.counts["states_checked"] += 1
        if state is not None and _nonzero(told) != state:
            audit.problem("divergent state", f"{where}: at seq {message.seq} the client holds "
                          f"{_show(_encoder.encode(_nonzero(told)))} after "
                          f"{_show(received.data)}; the committed log gives "
                          f"{_show(_encoder.encode(state))}")
    if stream.bound is not None and stream.bound > last:
        state = needs.balances.get((account, stream.bound))
        audit.counts["states_checked"] += 1
        if state is not None and _nonzero(told) != state:
            audit.problem("skipped seq", f"{where}: at position {stream.bound} (last balances "
                          f"message at seq {last}) the client holds "
                          f"{_show(_encoder.encode(_nonzero(told)))}; the committed log gives "
                          f"{_show(_encoder.encode(state))}")


def _nonzero(balances: dict[str, Balance]) -> dict[str, Balance]:
    return {asset: balance for asset, balance in sorted(balances.items())
            if balance.available not in ("0", 0) or balance.held not in ("0", 0)}


def _check_book(audit: FeedAudit, stream: Stream, where: str, needs: Needs) -> None:
    """The updates chain `prev_seq` to the seq before; applied to the snapshot they give
    the replay's book (levels and checksum) at each seq."""
    bids: dict[str, int] = {}
    asks: dict[str, int] = {}
    last: int | None = None
    for received in (stream.snapshot, *stream.updates):
        message: BookMessage = received.message
        if last is None:
            if message.prev_seq != message.seq:
                audit.problem("book snapshot", f"{where}: prev_seq != seq: {_show(received.data)}")
        elif message.prev_seq != last:
            kind = "skipped seq" if message.prev_seq > last else "repeated seq"
            audit.problem(kind, f"{where}: book update from {message.prev_seq} after book seq "
                          f"{last}: {_show(received.data)}")
        last = message.seq
        for side, levels in ((bids, message.bids), (asks, message.asks)):
            for price, quantity in levels:
                if quantity:
                    side[price] = quantity
                else:
                    side.pop(price, None)
        state = needs.books.get((stream.key, message.seq))
        audit.counts["states_checked"] += 1
        if state is None:
            audit.problem("divergent state", f"{where}: book seq {message.seq} is no state the "
                          f"committed log's book passes at an event: {_show(received.data)}")
        elif (bids, asks, message.checksum) != state:
            audit.problem("divergent state", f"{where}: at book seq {message.seq} the client "
                          f"holds bids {bids} asks {asks} after {_show(received.data)}; the "
                          f"committed log gives bids {state[0]} asks {state[1]} checksum "
                          f"{state[2]}")


def _check_items_stream(audit: FeedAudit, stream: Stream, where: str, expected: Expected,
                        needs: Needs, windows: dict[str, int],
                        event_bytes: Sequence[bytes]) -> None:
    """Every item equal to the committed log's at its seq; the items one unbroken run of
    the account's, from the subscription's start to its bound."""
    channel, account = stream.channel, stream.key
    log_items = expected.items[channel].get(account, [])
    seqs = [item.seq for item in log_items]
    snapshot_items = _items(channel, stream.snapshot.message)
    received = [(stream.snapshot, item) for item in snapshot_items] if channel != "orders" \
        else []
    received += [(update, item) for update in stream.updates
                 for item in _items(channel, update.message)]
    for frame, item in received:
        audit.counts["items_checked"] += 1
        audit.seqs_seen.add(item.seq)
        _check_item(audit, where, frame, item, log_items, seqs, event_bytes)
    if channel == "orders":
        if snapshot_items:
            _check_open_orders(audit, stream, where, snapshot_items, needs)
            start = bisect_right(seqs, snapshot_items[0].seq)
        else:  # no open order, no seq: the start lies before the first position after it
            start = _index_of(received[0][1], log_items, seqs) if received else None
            if stream.first_bound is not None:
                after = bisect_right(seqs, stream.first_bound)
                start = after if start is None else min(start, after)
                audit.counts["orders_starts_bounded"] += 1
            else:
                audit.counts["orders_starts_unknown"] += 1
    elif snapshot_items and len(snapshot_items) >= windows[channel]:
        start = _index_of(snapshot_items[0], log_items, seqs)
    else:  # the snapshot holds every item the account had (none, or fewer than kept)
        start = 0
    if start is None:
        return  # its first item is not in the log: reported above
    top = max([stream.bound or 0, *(item.seq for _, item in received)])
    run = log_items[start:bisect_right(seqs, top)]
    _compare_run(audit, where, received, run, event_bytes)


def _items(channel: str, message: Any) -> list[Item]:
    if channel == "orders":
        return list(message.orders)
    if channel == "fills":
        return list(message.fills)
    return list(message.events)


def _index_of(item: Item, log_items: list[Item], seqs: list[int]) -> int | None:
    for index in range(bisect_left(seqs, item.seq), bisect_right(seqs, item.seq)):
        if log_items[index] == item:
            return index
    return None


def _check_item(audit: FeedAudit, where: str, frame: Received, item: Item,
                log_items: list[Item], seqs: list[int], event_bytes: Sequence[bytes]) -> None:
    if item.seq > len(event_bytes):
        audit.problem("beyond the log", f"{where}: seq {item.seq} past the committed log's "
                      f"last seq {len(event_bytes)}: {_show(frame.data)}")
        return
    if _index_of(item, log_items, seqs) is not None:
        return
    audit.problem("divergent", f"{where}: at seq {item.seq} the client was told "
                  f"{_show(_encoder.encode(item))} (frame {_show(frame.data)}); the committed "
                  f"event is {_show(event_bytes[item.seq - 1])}, which gives "
                  f"{_show(_encoder.encode([i for i in log_items if i.seq == item.seq]))}")


def _check_open_orders(audit: FeedAudit, stream: Stream, where: str,
                       snapshot_items: list[Item], needs: Needs) -> None:
    seq = snapshot_items[0].seq
    audit.counts["states_checked"] += 1
    if any(item.seq != seq for item in snapshot_items):
        audit.problem("orders snapshot", f"{where}: reports of different seqs: "
                      f"{_show(stream.snapshot.data)}")
    state = needs.open_orders.get((stream.key, seq))
    if state is not None and state != snapshot_items:
        audit.problem("divergent state", f"{where}: open orders at seq {seq} "
                      f"{_show(stream.snapshot.data)}; the committed log gives "
                      f"{_show(_encoder.encode(state))}")


def _compare_run(audit: FeedAudit, where: str, received: list[tuple[Received, Item]],
                 run: list[Item], event_bytes: Sequence[bytes]) -> None:
    """The received items must be the run exactly: none missing, none twice, in order."""
    told = [item for _, item in received]
    if told == run:
        return
    told_count = Counter(_encoder.encode(item) for item in told)
    run_count = Counter(_encoder.encode(item) for item in run)
    for item in run:
        if told_count[_encoder.encode(item)] < run_count[_encoder.encode(item)]:
            audit.problem("skipped seq", f"{where}: the client never got "
                          f"{_show(_encoder.encode(item))}, the committed event "
                          f"{_show(event_bytes[item.seq - 1])}")
            break
    repeated = [(frame, item) for frame, item in received
                if told_count[_encoder.encode(item)] > run_count[_encoder.encode(item)]]
    if repeated:
        frame, item = repeated[0]
        audit.problem("repeated seq", f"{where}: {len(repeated)} items beyond the log's run, "
                      f"first at seq {item.seq}: {_show(frame.data)}")
    if told_count == run_count:
        audit.problem("out of order", f"{where}: the items came in another order than the "
                      f"log's, first at seq "
                      f"{next(t.seq for t, r in zip(told, run, strict=True) if t != r)}")


def _show(data: bytes) -> str:
    text = data.decode(errors="replace")
    return text if len(text) <= BYTES_SHOWN_MAX else text[:BYTES_SHOWN_MAX] + "..."
