"""The gateway's projection of the event log equals the engine's own state, however the
events are batched: balances, open orders, L2 books, sequence numbers and checksums."""

from __future__ import annotations

import random

from gateway.books import L2Book
from gateway.projection import Projection
from matching_engine.core import Engine
from matching_engine.workload import Workload
from protocol import AnyEvent, Trade, format_micro
from wsapi.checksum import book_checksum, checksum_string


def engine_events(count: int, seed: int = 3) -> tuple[Engine, list[AnyEvent]]:
    workload = Workload(instruments=3, accounts=12, seed=seed)
    engine = Engine()
    events = [event for command in workload.setup() + workload.flow(count)
              for event in engine.apply(command)]
    return engine, events


def engine_levels(engine: Engine, symbol: str) -> tuple[list[tuple[str, int]], ...]:
    sides = []
    instrument = engine.instruments[symbol]
    for side in (instrument.bids, instrument.asks):
        levels: dict[int, int] = {}
        for order in side.orders_in_priority():
            levels[order.price] = levels.get(order.price, 0) + order.quantity - order.filled
        sides.append([(format_micro(price), quantity) for price, quantity in levels.items()])
    return tuple(sides)


def project(events: list[AnyEvent], flush_every: int) -> Projection:
    projection = Projection()
    for index, event in enumerate(events, 1):
        projection.apply(event)
        if index % flush_every == 0:
            projection.flush()
    projection.flush()
    return projection


def test_balances_and_open_orders_equal_the_engines_final_state() -> None:
    engine, events = engine_events(15_000)
    projection = project(events, flush_every=97)
    final = engine.final_state()
    balances = {}
    for account in projection.balances:
        message = projection.balances_message(account).balances
        if message:
            balances[account] = {asset: {"available": b.available, "held": b.held}
                                 for asset, b in message.items()}
    assert balances == final["accounts"]
    projected = sorted((o.account, o.client_order_id, o.order_id, o.remaining)
                       for o in projection.orders.values())
    expected = sorted((o["account"], o["client_order_id"], o["order_id"],
                       o["remaining_quantity"]) for o in final["open_orders"])
    assert projected == expected


def test_books_equal_the_engines_and_batching_changes_neither_seq_nor_checksum() -> None:
    engine, events = engine_events(8_000, seed=5)
    one_by_one = project(events, flush_every=1)
    batched = project(events, flush_every=501)
    for symbol in engine.instruments:
        assert one_by_one.instruments[symbol].book.levels() == engine_levels(engine, symbol)
        for projection in (one_by_one, batched):
            snapshot = projection.book_snapshot(symbol)
            assert (snapshot.bids, snapshot.asks) == engine_levels(engine, symbol)
        assert one_by_one.book_snapshot(symbol).seq == batched.book_snapshot(symbol).seq
        assert (one_by_one.book_snapshot(symbol).checksum
                == batched.book_snapshot(symbol).checksum)


def test_book_updates_chain_by_prev_seq_and_rebuild_the_snapshot() -> None:
    import msgspec

    from wsapi.messages import BookMessage

    _, events = engine_events(3_000, seed=9)
    projection = Projection()
    rng = random.Random(1)
    copies: dict[str, dict[str, dict[str, int]]] = {}
    last_seq: dict[str, int] = {}
    index = 0
    while index < len(events):
        step = rng.randint(1, 40)
        for event in events[index:index + step]:
            projection.apply(event)
        index += step
        for update in projection.flush():
            if update.channel != "book":
                continue
            message = msgspec.json.decode(update.payload, type=BookMessage)
            assert message.prev_seq == last_seq.get(message.instrument, 0)
            last_seq[message.instrument] = message.seq
            book = copies.setdefault(message.instrument, {"bids": {}, "asks": {}})
            for name, levels in (("bids", message.bids), ("asks", message.asks)):
                for price, quantity in levels:
                    if quantity:
                        book[name][price] = quantity
                    else:
                        book[name].pop(price, None)
            bids = sorted(book["bids"].items(), key=lambda level: -float(level[0]))[:10]
            asks = sorted(book["asks"].items(), key=lambda level: float(level[0]))[:10]
            assert book_checksum(bids, asks) == message.checksum
    for symbol, book in copies.items():
        snapshot = projection.book_snapshot(symbol)
        assert dict(snapshot.bids) == book["bids"] and dict(snapshot.asks) == book["asks"]


def test_checksum_string_is_the_documented_format() -> None:
    book = L2Book()
    book.add(True, 2_150_000, 10)
    book.add(True, 2_100_000, 4)
    book.add(False, 2_200_000, 3)
    bids, asks = book.levels(10)
    assert checksum_string(bids, asks) == "2.15:10,2.1:4|2.2:3"
    assert book_checksum([], []) == 2343686810
    for price in range(1, 30):
        book.add(False, 3_000_000 + price * 10_000, price)
    assert book.checksum() == book_checksum(*book.levels(10))
    assert len(book.levels(10)[1]) == 10


def test_candles_and_ticker_follow_trades_in_engine_time() -> None:
    engine, events = engine_events(4_000, seed=2)
    projection = project(events, flush_every=50)
    trades = [e for e in events if isinstance(e, Trade) and e.instrument == "GPU-0"]
    ticker = projection.ticker("GPU-0")
    assert ticker.volume_24h == sum(t.quantity for t in trades)
    assert ticker.last == trades[-1].price
    candles = projection.candles_snapshot("GPU-0", 10).candles
    assert sum(c.trades for c in candles) == len(trades)


def test_reports_are_built_only_for_accounts_with_a_reader_and_the_state_is_the_same() -> None:
    _, events = engine_events(3_000)
    readers = {"acct1"}
    projection = Projection(reports_wanted=lambda account: account in readers)
    everyone = Projection()
    report_accounts: set[str] = set()
    for start in range(0, len(events), 50):
        for event in events[start:start + 50]:
            projection.apply(event)
            everyone.apply(event)
        everyone.flush()
        report_accounts |= {update.key for update in projection.flush()
                            if update.channel == "orders"}
    assert report_accounts == {"acct1"}
    for account in everyone.accounts.by_account:
        assert projection.open_orders(account) == everyone.open_orders(account)
