"""The gateway's CPU per order on the e2e benchmark's flow, offline: no sockets, no Kafka.

    python -m benchmarks.e2e_gateway [--orders N] [--batch-size 1|20] [--rounds R] [--served-gc]

`benchmarks.e2e` measures the gateway as one of five processes on a shared machine; this
runs only the gateway's own work per order, the part issue 15 asks to make cheaper, so two
versions can be compared on a busy machine: `GatewayCore.receive` of each client frame (as
the SDK writes it, 16 logged-in connections, the e2e flow of `benchmarks.e2e_clients`),
the encoded commands taken from the sink, then the answering events, encoded by the pure
engine beforehand (not timed), through `EventSequencer.fresh` and `GatewayCore.apply_events`
with replies pushed to a transport that keeps nothing. It prints the CPU time (µs) per order
of each half and the time in garbage collections, best of `--rounds`. Baseline in the same
run: decoding and encoding the same frames with msgspec alone (the least any gateway does).
Python's default garbage collector thresholds unless `--served-gc`.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from benchmarks.e2e import SYMBOLS
from benchmarks.e2e_clients import OrderFlow
from benchmarks.e2e_services import bench_gateway_config
from eventlog.port import Record
from gateway.auth import Principal
from gateway.core import GatewayCore, Submission
from matching_engine.core import Engine
from protocol import Deposit, ListInstrument, decode_command
from protocol import encode as encode_message
from wsapi.requests import Login, LoginWallet

NOW_NS = 1_700_000_000_000_000_000
CONNECTIONS = 16
WINDOW = 256  # requests in flight per connection between two event batches


class NullTransport:
    """Count frames; keep none."""

    def __init__(self) -> None:
        self.frames = 0

    def push(self, conn_id: int, payload: bytes) -> None:
        self.frames += 1

    def push_many(self, conn_ids: Iterable[int], payload: bytes) -> None:
        for _ in conn_ids:
            self.frames += 1

    def close(self, conn_id: int, code: int, reason: str) -> None:
        pass


class ListSink:
    def __init__(self) -> None:
        self.submissions: list[Submission] = []

    def room(self) -> int:
        return 1_000_000

    def offer(self, submission: Submission) -> bool:
        self.submissions.append(submission)
        return True


class AcceptAll:
    def __init__(self) -> None:
        self.core: GatewayCore | None = None

    def begin(self, conn_id: int, req_id: int, request: Login | LoginWallet, nonce: str) -> None:
        assert self.core is not None and isinstance(request, Login)
        self.core.login_result(conn_id, req_id, "login",
                               Principal(f"bench{conn_id:04d}", "market_maker", request.key_id),
                               "off", 0)


def frames(orders: int, batch_size: int) -> list[tuple[int, bytes]]:
    """The clients' frames, round robin over the connections: (conn_id, frame)."""
    flow = OrderFlow(SYMBOLS, seed=1)
    out = []
    for number in range(orders // batch_size):
        conn_id = number % CONNECTIONS + 1
        items = [flow.item(f"S{conn_id}-{number}.{index}") for index in range(batch_size)]
        if batch_size == 1:
            request = {**items[0], "req_id": number}
        else:
            request = {"op": "batch", "req_id": number, "orders": items}
        out.append((conn_id, json.dumps(request, separators=(",", ":")).encode()))
    return out


def setup_events(engine: Engine) -> list[Any]:
    commands: list[Any] = [
        ListInstrument(ts=NOW_NS, symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                       delivery_start=NOW_NS + 10 * 86_400 * 10**9, delivery_hours=1,
                       tick_size="0.01", max_order_quantity=1000, maker_fee_bps=0,
                       taker_fee_bps=0) for symbol in SYMBOLS]
    for conn_id in range(1, CONNECTIONS + 1):
        account = f"bench{conn_id:04d}"
        commands.append(Deposit(ts=NOW_NS, account=account, asset="USDC", amount="1000000000"))
        commands += [Deposit(ts=NOW_NS, account=account, asset=symbol, amount=10**9)
                     for symbol in SYMBOLS]
    return [event for command in commands for event in engine.apply(command)]


def new_core() -> tuple[GatewayCore, ListSink, NullTransport]:
    transport, sink, auth = NullTransport(), ListSink(), AcceptAll()
    core = GatewayCore(bench_gateway_config(0, "bench."), transport, sink, auth)
    auth.core = core
    for conn_id in range(1, CONNECTIONS + 1):
        assert core.connect(conn_id, "127.0.0.1", NOW_NS, 0)
        core.receive(conn_id, json.dumps({
            "op": "login", "req_id": 0, "key_id": f"key{conn_id:08d}",
            "timestamp_ms": NOW_NS // 1_000_000, "signature": "A" * 88}), NOW_NS, 0)
    return core, sink, transport


def record_rounds(work: list[tuple[int, bytes]]) -> list[list[Record]]:
    """Run the flow once through a core and the pure engine; return the event records each
    window of frames makes (what the timed rounds apply)."""
    from gateway.sequencer import EventSequencer

    engine = Engine()
    core, sink, _ = new_core()
    core.apply_events(setup_events(engine))
    sequencer = EventSequencer(10**6, last_seq=core.projection.event_seq)
    offset = 0
    rounds = []
    for start in range(0, len(work), WINDOW * CONNECTIONS):
        for conn_id, frame in work[start:start + WINDOW * CONNECTIONS]:
            core.receive(conn_id, frame, NOW_NS + start, start)
        payloads = [p for submission in sink.submissions for p in submission.payloads]
        sink.submissions.clear()
        records = []
        for payload in payloads:
            for event in engine.apply(decode_command(payload)):
                records.append(Record(topic="events", partition=0, offset=offset, key=None,
                                      value=encode_message(event)))
                offset += 1
        core.apply_events(sequencer.fresh(records))
        rounds.append(records)
    return rounds


def timed_round(work: list[tuple[int, bytes]], rounds: list[list[Record]],
                served_gc: bool) -> dict[str, float]:
    from gateway.sequencer import EventSequencer

    engine = Engine()
    core, sink, transport = new_core()
    core.apply_events(setup_events(engine))
    sequencer = EventSequencer(10**6, last_seq=core.projection.event_seq)
    gc_ns = [0, 0]
    started = [0]

    def gc_timer(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter_ns()
        else:
            gc_ns[0] += time.perf_counter_ns() - started[0]
            gc_ns[1] += 1

    gc.collect()
    gc.freeze()  # the benchmark's own frames and records are no gateway's heap
    thresholds = gc.get_threshold()
    if served_gc:
        from gateway.service import tune_process_gc

        tune_process_gc()
    gc.callbacks.append(gc_timer)
    receive_s = apply_s = 0.0
    clock = time.process_time
    try:
        for index, start in enumerate(range(0, len(work), WINDOW * CONNECTIONS)):
            chunk = work[start:start + WINDOW * CONNECTIONS]
            began = clock()
            receive = core.receive
            for conn_id, frame in chunk:
                receive(conn_id, frame, NOW_NS + start, start)
            receive_s += clock() - began
            sink.submissions.clear()
            began = clock()
            core.apply_events(sequencer.fresh(rounds[index]))
            apply_s += clock() - began
    finally:
        gc.callbacks.remove(gc_timer)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert not core.correlator.groups, "every request is answered"
    assert core.requests_refused == 0, "no request is refused"
    return {"receive_s": receive_s, "apply_s": apply_s, "gc_s": gc_ns[0] / 1e9,
            "collections": gc_ns[1], "frames_out": transport.frames}


def baseline(work: list[tuple[int, bytes]]) -> float:
    """msgspec alone: decode each frame to a dict and encode a reply of the same size."""
    decoder, encoder = msgspec.json.Decoder(), msgspec.json.Encoder()
    began = time.process_time()
    for _conn_id, frame in work:
        encoder.encode(decoder.decode(frame))
    return time.process_time() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--served-gc", action="store_true",
                        help="set the garbage collector as `gpux gateway serve` does "
                             "(gateway.service.tune_process_gc); default: Python's")
    args = parser.parse_args(argv)
    work = frames(args.orders, args.batch_size)
    orders = len(work) * args.batch_size
    rounds = record_rounds(work)
    events = sum(len(records) for records in rounds)
    best: dict[str, float] | None = None
    for _ in range(args.rounds):
        figures = timed_round(work, rounds, args.served_gc)
        if best is None or (figures["receive_s"] + figures["apply_s"]
                            < best["receive_s"] + best["apply_s"]):
            best = figures
    assert best is not None
    base = min(baseline(work) for _ in range(args.rounds))
    per_order = {name: best[name] / orders * 1e6 for name in ("receive_s", "apply_s", "gc_s")}
    print(f"gateway core, {orders:,} orders in requests of {args.batch_size}, {events:,} "
          f"events, {CONNECTIONS} connections; best of {args.rounds} (CPU µs per order):")
    print(f"  requests in (receive)      {per_order['receive_s']:6.2f}")
    print(f"  events out (apply_events)  {per_order['apply_s']:6.2f}")
    print(f"  total                      {per_order['receive_s'] + per_order['apply_s']:6.2f}"
          f"   of which in {best['collections']:.0f} GC runs {per_order['gc_s']:.2f}")
    print(f"  baseline, msgspec decode + encode of each frame alone: "
          f"{base / orders * 1e6:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
