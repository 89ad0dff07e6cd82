"""What the fault suite's clients were told that carries an event seq, as they received it.

Each SDK client of the load (`tests.chaos.load`) records, through the SDK's frame hook, every
frame it receives that carries a seq of the event log, with its bytes as received (a text
frame's UTF-8, which the SDK hands over decoded and this module encodes back, byte for byte):

| frame | its seq | what it represents |
|---|---|---|
| `orders` update | each report's `seq` | one event of an order of the account |
| `orders` snapshot | each report's: the gateway's position | the open orders then |
| `fills` update or snapshot | each fill's `seq` | one side of one `trade` event |
| `deliveries` update or snapshot | each item's `seq` | one Delivery event of the account |
| `balances` update or snapshot | `seq`: the gateway's position | the balances then |
| `book` update or snapshot | `seq`, `prev_seq`: its count of level changes | the levels then |
| `heartbeat` | `event_seq`: the gateway's position | how far the gateway has applied |
| reply to `balances`, `deliveries` | `result.seq`: the gateway's position | the state then |

Replies to order entry carry no seq (`OrderResult`); the audit's order check finds each one in
the committed log by its order id. `trades`, `ticker` and `candles` carry none either.

A connection's frames start at its `hello`: a reconnect (the gateway killed and restarted,
a slow consumer dropped) begins a new connection, whose subscriptions begin with the
snapshot the SDK's resubscription gets. `parse` cuts the frames into those connections and
each connection into its subscriptions (a snapshot and the updates after it), which
`tests.chaos.feed_audit` checks against the committed event log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from wsapi.messages import (
    BalancesMessage,
    BookMessage,
    DeliveriesMessage,
    FillsMessage,
    Heartbeat,
    Hello,
    OrdersMessage,
    Reply,
    decode_message,
)

FRAMES_MAX: Final = 3_000_000  # recorded in one run, over every client; past it, truncated
_HELLO: Final = b'{"type":"hello"'
_REPLY: Final = b'{"type":"reply"'
_SEQ_FREE: Final = (b'{"type":"trades"', b'{"type":"ticker"', b'{"type":"candles"',
                    b'{"type":"notice"', b'{"type":"index"')
# Replies whose result is a state of the log at a seq (gateway.core._dispatch).
POSITION_REPLIES: Final = frozenset({"balances", "deliveries"})

Channel = Literal["orders", "fills", "balances", "deliveries", "book"]
FeedMessage = OrdersMessage | FillsMessage | BalancesMessage | DeliveriesMessage | BookMessage


@dataclass
class ClientRecording:
    """The frames one client received: (connection number, bytes), in order."""

    name: str
    account: str
    recorder: FeedRecorder
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    connection: int = 0

    def hook(self, direction: Literal["send", "recv"], text: str) -> None:
        """The SDK's `on_frame`: keep a received frame that carries a seq (and each hello,
        which starts a connection)."""
        if direction != "recv":
            return
        data = text.encode()
        if data.startswith(_HELLO):
            self.connection += 1
        elif data.startswith(_SEQ_FREE) or (data.startswith(_REPLY) and b'"seq"' not in data):
            return
        recorder = self.recorder
        if recorder.frames >= recorder.frames_max:
            recorder.truncated = True
            return
        recorder.frames += 1
        self.frames.append((self.connection, data))


@dataclass
class FeedRecorder:
    """Every client's recording, under one bound on the frames kept."""

    frames_max: int = FRAMES_MAX
    clients: list[ClientRecording] = field(default_factory=list)
    frames: int = 0
    truncated: bool = False

    def client(self, name: str, account: str) -> ClientRecording:
        recording = ClientRecording(name, account, self)
        self.clients.append(recording)
        return recording


@dataclass
class Received:
    """One recorded frame, decoded: `index` is its place in its connection."""

    index: int
    data: bytes
    message: Any


@dataclass
class Stream:
    """One subscription as a client saw it: the snapshot, then the updates, in order."""

    channel: Channel
    key: str  # the account, or the book's instrument
    snapshot: Received
    updates: list[Received] = field(default_factory=list)
    # The highest gateway position the connection reported after the snapshot at which
    # every update of this feed up to it had been written before (heartbeats, position
    # replies, balances snapshots; for orders and fills also balances updates, which a
    # flush writes after them): None when there was none.
    bound: int | None = None
    first_bound: int | None = None  # the first such position after the snapshot


@dataclass
class Connection:
    """One connection of one client: its subscriptions, heartbeats and position replies."""

    client: str
    account: str
    number: int
    streams: list[Stream] = field(default_factory=list)
    frames: int = 0
    heartbeats: list[Received] = field(default_factory=list)
    replies: list[Received] = field(default_factory=list)  # position replies, ok
    undecodable: list[bytes] = field(default_factory=list)


def parse(recording: ClientRecording) -> list[Connection]:
    """Cut a client's frames into connections and each connection into subscriptions."""
    connections: dict[int, Connection] = {}
    for number, data in recording.frames:
        connection = connections.get(number)
        if connection is None:
            connection = connections[number] = Connection(recording.name, recording.account,
                                                          number)
        connection.frames += 1
        _take(connection, connection.frames, data)
    return list(connections.values())


def _take(connection: Connection, index: int, data: bytes) -> None:
    try:
        message = decode_message(data)
    except msgspec.DecodeError:
        connection.undecodable.append(data)
        return
    received = Received(index, data, message)
    if isinstance(message, Hello):
        return
    if isinstance(message, Heartbeat):
        connection.heartbeats.append(received)
        _raise_bounds(connection, message.event_seq, private_only=False)
        return
    if isinstance(message, Reply):
        if message.op in POSITION_REPLIES and message.status == "ok":
            connection.replies.append(received)
            _raise_bounds(connection, int(message.result["seq"]), private_only=False)
        return
    if not isinstance(message, (OrdersMessage, FillsMessage, BalancesMessage,
                                DeliveriesMessage, BookMessage)):
        return
    channel, key = _feed(message, connection.account)
    if message.kind == "snapshot":
        connection.streams.append(Stream(channel, key, received))
    else:
        stream = _current(connection, channel, key)
        if stream is None:  # an update before any snapshot: kept to be reported
            stream = Stream(channel, key, Received(-1, b"", None))
            connection.streams.append(stream)
        stream.updates.append(received)
    if isinstance(message, BalancesMessage):
        _raise_bounds(connection, message.seq, private_only=message.kind == "update")


def _feed(message: FeedMessage, account: str) -> tuple[Channel, str]:
    if isinstance(message, BookMessage):
        return "book", message.instrument
    channel: Channel = ("orders" if isinstance(message, OrdersMessage) else
                        "fills" if isinstance(message, FillsMessage) else
                        "balances" if isinstance(message, BalancesMessage) else "deliveries")
    return channel, account


def _current(connection: Connection, channel: Channel, key: str) -> Stream | None:
    for stream in reversed(connection.streams):
        if stream.channel == channel and stream.key == key:
            return stream
    return None


def _raise_bounds(connection: Connection, position: int, *, private_only: bool) -> None:
    """Tell the subscriptions begun before this frame that the gateway had written their
    updates through `position`: every one (a heartbeat, a position reply, a snapshot, all
    written between event batches), or, for a balances update, the orders and fills ones
    (written before it in the same batch; deliveries come after it)."""
    for stream in connection.streams:
        if private_only and stream.channel not in ("orders", "fills"):
            continue
        if stream.channel == "book":  # a book counts level changes, not events
            continue
        if stream.bound is None or position > stream.bound:
            stream.bound = position
        if stream.first_bound is None:
            stream.first_bound = position
