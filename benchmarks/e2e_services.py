"""The processes `benchmarks.e2e` starts besides Kafka and `gpux engine`.

    python -m benchmarks.e2e_services gateway --kafka HOST:PORT --namespace NS --port P \
        --accounts N --keys-out keys.json --taps-dir DIR [--reuse-port] [--keys-in keys.json]
    python -m benchmarks.e2e_services echo --port P

`gateway` runs the gateway service (`gateway.service.GatewayService`, the code `gpux gateway
serve` runs, on the same Kafka adapter and websocket server) with two differences a
benchmark needs: API keys in memory (`gateway.testing.MemoryKeyStore`, written to
`--keys-out` for the clients) instead of PostgreSQL, and rate limits raised so that one
machine's clients, all on 127.0.0.1, are not refused by the per-IP bucket. It taps the
core's `apply_events`: for each order event whose client order id starts with `L` (the
latency runs) it keeps (client order id, command stamp `ts`, time the gateway received the
event); SIGUSR2 writes what it kept to the next `taps-N.msgpack` in `--taps-dir` and clears.
With `--reuse-port` several gateways share one port (SO_REUSEPORT); the second and later
take the first one's API keys (`--keys-in`).

`echo` is the baseline server: a websocket echo through the same library with the same
options (uvloop, no compression).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec

RATE_UNLIMITED = 10_000_000.0


def bench_gateway_config(port: int, namespace: str, *, reuse_port: bool = False,
                         gateway_id: str = "bench") -> Any:
    """Return the gateway config of the benchmark: defaults with the rate limits lifted."""
    from gateway.config import ANONYMOUS, GatewayConfig, RateLimit

    unlimited = RateLimit(per_second=RATE_UNLIMITED, burst=int(RATE_UNLIMITED))
    limits = dict(GatewayConfig().role_limits)
    limits["market_maker"] = unlimited
    limits[ANONYMOUS] = unlimited
    return GatewayConfig(port=port, reuse_port=reuse_port, topic_namespace=namespace,
                         gateway_id=gateway_id, role_limits=limits, ip_limit=unlimited,
                         connections_per_ip_max=5_000)


class EventTaps:
    """Keep (client order id, stamp, received ns) of the latency runs' order events."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rows: list[tuple[str, int, int]] = []
        self.dumps = 0

    def wrap(self, core: Any) -> None:
        from protocol import OrderAccepted, OrderRejected

        apply_events = core.apply_events
        rows = self.rows
        answers = (OrderAccepted, OrderRejected)

        def tapped(events: Any) -> None:
            received_ns = time.time_ns()
            for event in events:
                if isinstance(event, answers):
                    cid = event.client_order_id
                    if cid is not None and cid[0] == "L":
                        rows.append((cid, event.ts, received_ns))
            apply_events(events)

        core.apply_events = tapped

    def dump(self) -> None:
        path = self.directory / f"taps-{self.dumps}.msgpack"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(msgspec.msgpack.encode(self.rows))
        temporary.replace(path)
        self.rows.clear()
        self.dumps += 1


async def run_gateway(args: argparse.Namespace) -> None:
    from eventlog.kafka import KafkaConfig, KafkaLog
    from gateway.service import GatewayService
    from gateway.testing import MemoryKeyStore

    store = MemoryKeyStore()
    if args.keys_in:  # another gateway on the same port made the keys
        keys = json.loads(Path(args.keys_in).read_text())["keys"]
        for account, (key_id, private_key) in keys.items():
            store.add_existing_key(account, "market_maker", key_id, private_key)
    else:
        keys = {f"bench{index:04d}": store.add_key(f"bench{index:04d}", "market_maker")
                for index in range(args.accounts)}
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=args.kafka, client_id="gpux-bench",
                                     fetch_max_wait_ms=args.fetch_max_wait_ms,
                                     linger_ms=args.linger_ms))
    service = GatewayService(event_log, bench_gateway_config(
        args.port, args.namespace, reuse_port=args.reuse_port, gateway_id=args.gateway_id),
        store, tune_gc=True)  # as `gpux gateway serve` runs it
    taps = EventTaps(Path(args.taps_dir))
    taps.wrap(service.core)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, taps.dump)

    async def announce() -> None:
        await service.ready.wait()
        temporary = Path(args.keys_out + ".tmp")
        temporary.write_text(json.dumps({"port": service.port, "keys": keys}))
        os.replace(temporary, args.keys_out)

    announcer = asyncio.create_task(announce())
    try:
        await service.run(stop)
    finally:
        announcer.cancel()
        await event_log.close()


async def run_echo(args: argparse.Namespace) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(echo, "127.0.0.1", args.port, compression=None, max_queue=16):
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)
    gateway = roles.add_parser("gateway")
    gateway.add_argument("--kafka", required=True)
    gateway.add_argument("--namespace", required=True)
    gateway.add_argument("--port", type=int, default=0)
    gateway.add_argument("--accounts", type=int, required=True)
    gateway.add_argument("--keys-out", required=True)
    gateway.add_argument("--taps-dir", required=True)
    gateway.add_argument("--fetch-max-wait-ms", type=int, default=5)
    gateway.add_argument("--linger-ms", type=int, default=0)
    gateway.add_argument("--reuse-port", action="store_true",
                         help="bind with SO_REUSEPORT (several gateways on one port)")
    gateway.add_argument("--keys-in", help="take the API keys a first gateway wrote")
    gateway.add_argument("--gateway-id", default="bench")
    echo = roles.add_parser("echo")
    echo.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(run_gateway(args) if args.role == "gateway" else run_echo(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
