"""Market-data fan-out: 1,000 websocket connections on one book while orders flow, beside a
baseline of 1 connection, in the same run.

    python -m benchmarks.gateway_fanout [--connections 1000] [--rate 20] [--duration-s 8]
                                        [--kafka HOST:PORT] [--client-processes 2]

The engine and the gateway run in this process (the embedded log by default, real Kafka
with --kafka); the subscribers run in separate processes, each holding its share of the
connections, all subscribed to the `book` feed of one instrument. A driver places orders
at `--rate` per second (resting orders around the mid, one in four crossing), so every
order moves the book. For every book update a subscriber receives it records

- order -> feed latency: receive time minus the update's `ts` (the engine time, which is the
  gateway's clock stamp of the command that caused it): gateway, log, engine, log again,
  projection and fan-out;
- fan-out spread: per update, the last connection's receive time minus the first's: what
  the broadcast to every connection costs.

The file descriptor limit is raised to its hard limit first: 1,000 connections need 2,000
descriptors on this one machine (both ends).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

TARGET_CONNECTIONS = 1_000
SETTLE_S = 1.0


class BookTs(msgspec.Struct):
    """The two fields of a book message the subscribers read."""

    type: str
    seq: int = 0
    ts: int = 0
    kind: str = ""


def raise_file_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit toward `wanted` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- subscriber processes ---------------------------------------------------------------------

def subscriber_process(url: str, symbol: str, connections: int, ready: Any, start: Any,
                       stop: Any, results: Any) -> None:
    """Hold `connections` subscriptions; after `stop`, put (latencies, per-seq receive times)."""
    raise_file_limit(connections * 2 + 256)
    import uvloop

    uvloop.run(_subscribe(url, symbol, connections, ready, start, stop, results))


async def _subscribe(url: str, symbol: str, connections: int, ready: Any, start: Any,
                     stop: Any, results: Any) -> None:
    import websockets

    decoder = msgspec.json.Decoder(BookTs)
    latencies_ns: list[int] = []
    first_last: dict[int, list[int]] = {}
    recording = False
    sockets = []
    for index in range(connections):
        ws = await websockets.connect(url, compression=None, max_size=None, open_timeout=30)
        await ws.recv()  # hello
        await ws.send(msgspec.json.encode({"op": "subscribe", "req_id": index,
                                           "channel": "book", "instrument": symbol}))
        sockets.append(ws)

    async def read(ws: Any) -> None:
        async for frame in ws:
            now_ns = time.time_ns()
            message = decoder.decode(frame)
            if message.type != "book" or message.kind != "update" or not recording:
                continue
            latencies_ns.append(now_ns - message.ts)
            seen = first_last.get(message.seq)
            if seen is None:
                first_last[message.seq] = [now_ns, now_ns, 1]
            else:
                seen[0] = min(seen[0], now_ns)
                seen[1] = max(seen[1], now_ns)
                seen[2] += 1

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    ready.put(connections)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, start.wait)
    recording = True
    await loop.run_in_executor(None, stop.wait)
    await asyncio.sleep(SETTLE_S)
    recording = False
    for ws in sockets:
        await ws.close()
    for reader in readers:
        reader.cancel()
    results.put((latencies_ns, {seq: tuple(v) for seq, v in first_last.items()}))


# -- the venue and the driver ---------------------------------------------------------------

@dataclass
class Figures:
    connections: int
    orders: int
    updates: int
    deliveries: int
    latency_ms: dict[str, float]
    spread_ms: dict[str, float]
    dropped_slow: int
    complete_updates: int


def percentiles(values_ns: list[int]) -> dict[str, float]:
    if not values_ns:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"),
                "max": float("nan")}
    ordered = sorted(values_ns)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1] / 1e6}


async def drive(url: str, key: Any, symbol: str, rate_per_s: float, duration_s: float,
                seed: int) -> int:
    """Place orders at `rate_per_s` for `duration_s`; return how many were answered."""
    from sdk.client import Client

    rng = random.Random(seed)
    interval_s = 1.0 / rate_per_s
    placed = 0
    async with Client(url, credentials=key) as client:
        started = time.monotonic()
        deadline = started + duration_s
        tasks = []
        while time.monotonic() < deadline:
            side = rng.choice(("buy", "sell"))
            crossing = rng.random() < 0.25
            offset = -rng.randint(0, 2) if crossing else rng.randint(1, 10)
            ticks = 200 - offset if side == "buy" else 200 + offset
            tasks.append(asyncio.create_task(client.new_order(
                symbol, side, rng.randint(1, 5), f"{ticks / 100:.2f}",  # type: ignore[arg-type]
                time_in_force="ioc" if crossing else "gtc")))
            placed += 1
            next_s = started + placed * interval_s
            await asyncio.sleep(max(0.0, next_s - time.monotonic()))
        await asyncio.gather(*tasks)
        await client.mass_cancel(symbol)
    return placed


async def scenario(url: str, key: Any, symbol: str, connections: int, processes: int,
                   rate_per_s: float, duration_s: float, service: Any) -> Figures:
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    start, stop = context.Event(), context.Event()
    shares = [connections // processes + (1 if i < connections % processes else 0)
              for i in range(min(processes, connections))]
    workers = [context.Process(target=subscriber_process,
                               args=(url, symbol, share, ready, start, stop, results))
               for share in shares]
    for worker in workers:
        worker.start()
    loop = asyncio.get_running_loop()
    for _ in workers:
        await loop.run_in_executor(None, ready.get, True, 120)
    dropped_before = service.transport.slow_consumers_dropped
    start.set()
    orders = await drive(url, key, symbol, rate_per_s, duration_s, seed=connections)
    stop.set()
    latencies: list[int] = []
    merged: dict[int, list[int]] = {}
    for _ in workers:
        part_latencies, part_seqs = await loop.run_in_executor(None, results.get, True, 120)
        latencies += part_latencies
        for seq, (first, last, count) in part_seqs.items():
            entry = merged.setdefault(seq, [first, last, 0])
            entry[0], entry[1] = min(entry[0], first), max(entry[1], last)
            entry[2] += count
    for worker in workers:
        worker.join(30)
    complete = [last - first for first, last, count in merged.values() if count == connections]
    return Figures(connections=connections, orders=orders, updates=len(merged),
                   deliveries=len(latencies), latency_ms=percentiles(latencies),
                   spread_ms=percentiles(complete),
                   dropped_slow=service.transport.slow_consumers_dropped - dropped_before,
                   complete_updates=len(complete))


async def run(args: argparse.Namespace) -> list[Figures]:
    from eventlog.port import COMMANDS_TOPIC
    from gateway.config import ANONYMOUS, GatewayConfig, RateLimit
    from gateway.testing import MemoryKeyStore
    from gpux.venue import Venue
    from protocol import Deposit, ListInstrument, encode
    from sdk.client import ApiKey

    namespace = f"fanout{uuid.uuid4().hex[:6]}."
    if args.kafka:
        from eventlog.kafka import KafkaConfig, KafkaLog

        event_log: Any = KafkaLog(KafkaConfig(bootstrap_servers=args.kafka,
                                              fetch_max_wait_ms=args.fetch_max_wait_ms))
    else:
        from eventlog.embedded import EmbeddedConfig, EmbeddedLog

        event_log = EmbeddedLog.open(Path(tempfile.mkdtemp(prefix="gpux-fanout-")),
                                     EmbeddedConfig(fsync=False))
    store = MemoryKeyStore()
    key = ApiKey(*store.add_key("bench-mm", "market_maker"))
    limits = dict(GatewayConfig().role_limits)
    limits["market_maker"] = RateLimit(per_second=100_000, burst=100_000)
    limits[ANONYMOUS] = RateLimit(per_second=100_000, burst=100_000)
    # Every reader is anonymous and on 127.0.0.1: a real venue sees them from many IPs.
    config = GatewayConfig(port=0, connections_per_ip_max=args.connections * 2 + 10,
                           anonymous_per_ip_max=args.connections * 2 + 10, role_limits=limits,
                           ip_limit=RateLimit(per_second=1_000_000, burst=1_000_000))
    symbol = "H100-SXM-80GB.bench"
    figures: list[Figures] = []
    try:
        async with Venue.running(event_log, namespace=namespace, key_store=store,
                                 gateway=config) as venue:
            producer = event_log.producer()
            await producer.start()
            await producer.send_batch(namespace + COMMANDS_TOPIC, [encode(c) for c in (
                ListInstrument(ts=time.time_ns(), symbol=symbol, gpu="H100-SXM-80GB",
                               region="eu-west", delivery_start=time.time_ns() + 86_400 * 10**9,
                               delivery_hours=1, tick_size="0.01", max_order_quantity=1000,
                               maker_fee_bps=0, taker_fee_bps=0),
                Deposit(ts=time.time_ns(), account="bench-mm", asset="USDC", amount="1000000000"),
                Deposit(ts=time.time_ns(), account="bench-mm", asset=symbol, amount=10**9),
            )])
            await producer.stop()
            while symbol not in venue.gateways[0].core.projection.instruments:
                await asyncio.sleep(0.01)
            for connections in (1, args.connections):
                print(f"running {connections} connection(s) for {args.duration_s} s ...",
                      flush=True)
                figures.append(await scenario(
                    venue.urls[0], key, symbol, connections,
                    1 if connections == 1 else args.client_processes, args.rate,
                    args.duration_s, venue.gateways[0]))
    finally:
        await event_log.close()
    return figures


def report(figures: list[Figures], log_name: str) -> None:
    print(f"\ngateway fan-out on the {log_name} log (book feed of one instrument)")
    header = (f"{'connections':>11} {'orders':>7} {'updates':>8} {'deliveries':>11} "
              f"{'feed p50':>9} {'p90':>7} {'p99':>7} {'max':>7}  "
              f"{'spread p50':>10} {'p99':>7} {'slow drops':>10}")
    print(header)
    for f in figures:
        print(f"{f.connections:>11} {f.orders:>7} {f.updates:>8} {f.deliveries:>11} "
              f"{f.latency_ms['p50']:>7.2f}ms {f.latency_ms['p90']:>5.2f}ms "
              f"{f.latency_ms['p99']:>5.2f}ms {f.latency_ms['max']:>5.1f}ms  "
              f"{f.spread_ms['p50']:>8.2f}ms {f.spread_ms['p99']:>5.2f}ms {f.dropped_slow:>10}")
    if len(figures) == 2 and figures[0].latency_ms["p50"] > 0:
        base, load = figures
        print(f"\n{load.connections} connections vs the 1-connection baseline: feed latency "
              f"p50 x{load.latency_ms['p50'] / base.latency_ms['p50']:.1f}, "
              f"p99 x{load.latency_ms['p99'] / max(base.latency_ms['p99'], 1e-9):.1f}; "
              f"{load.complete_updates} of {load.updates} updates reached all "
              f"{load.connections} connections while recording "
              f"({load.deliveries / max(1, load.updates * load.connections):.2%} of deliveries)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=TARGET_CONNECTIONS)
    parser.add_argument("--rate", type=float, default=20.0, help="orders per second")
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--kafka", help="bootstrap servers (default: the embedded log)")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=5,
                        help="Kafka fetch wait of the engine's and the gateway's consumers")
    args = parser.parse_args(argv)
    limit = raise_file_limit(args.connections * 4 + 1024)
    print(f"RLIMIT_NOFILE soft limit: {limit}")
    import uvloop

    figures = uvloop.run(run(args))
    report(figures, "Kafka" if args.kafka else "embedded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
