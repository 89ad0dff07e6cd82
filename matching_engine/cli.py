"""`gpux engine`: run the matching engine service on Kafka or the embedded log."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from eventlog.flags import LogFlagsError, add_log_flags, open_log_from
from matching_engine.config import EngineConfig
from matching_engine.cores import CORES
from matching_engine.service import EngineSupervisor
from runtime.observability import MetricsServer, configure_logging

log = logging.getLogger("gpux.engine")

# Measured with benchmarks.e2e --core native (docs/exactly-once.md): order-to-ack p50 at 20%
# load 33.9 ms committing every batch, 10.2 ms every 20 ms, 7.5 ms every 100 ms.
KAFKA_COMMIT_INTERVAL_MS = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpux engine", description=__doc__.split("\n")[0])
    add_log_flags(parser)
    parser.add_argument("--snapshot-dir", type=Path, help="where snapshots go (none: no snapshots)")
    parser.add_argument("--batch-size-max", type=int, default=EngineConfig.batch_size_max)
    parser.add_argument("--batch-interval-ms", type=int, default=EngineConfig.batch_interval_ms)
    parser.add_argument("--commit-interval-ms", type=int,
                        help="commit a transaction once open this long (0: after every "
                             "batch); the gateway reads events before their commit. Default: "
                             f"{KAFKA_COMMIT_INTERVAL_MS} on Kafka, 0 on the embedded log "
                             "(whose readers see a transaction only once committed)")
    parser.add_argument("--commit-records-max", type=int,
                        default=EngineConfig.commit_records_max)
    parser.add_argument("--snapshot-every-commands", type=int,
                        default=EngineConfig.snapshot_every_commands)
    parser.add_argument("--transactional-id", default=EngineConfig.transactional_id)
    parser.add_argument("--group-id", default=EngineConfig.group_id)
    parser.add_argument("--core", choices=CORES, default=EngineConfig.core,
                        help="matching core: python or native (Rust, built by `make native`); "
                             "both read and write the same snapshots")
    parser.add_argument("--metrics-port", type=int, default=9101,
                        help="serve /metrics and /healthz here (0: any free port, -1: off)")
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines")
    return parser.parse_args(argv)


def commit_interval_ms(args: argparse.Namespace) -> int:
    """The flag's value, else the log's default."""
    if args.commit_interval_ms is not None:
        return int(args.commit_interval_ms)
    return KAFKA_COMMIT_INTERVAL_MS if args.log == "kafka" else EngineConfig.commit_interval_ms


async def serve(args: argparse.Namespace) -> None:
    config = EngineConfig(
        batch_size_max=args.batch_size_max, batch_interval_ms=args.batch_interval_ms,
        commit_interval_ms=commit_interval_ms(args), commit_records_max=args.commit_records_max,
        snapshot_every_commands=args.snapshot_every_commands, snapshot_dir=args.snapshot_dir,
        transactional_id=args.transactional_id, group_id=args.group_id,
        topic_namespace=args.topic_namespace, core=args.core,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        event_log = open_log_from(args)
    except LogFlagsError as error:
        raise SystemExit(f"gpux engine: {error}") from None
    supervisor = EngineSupervisor(event_log, config)
    metrics_server = None
    if args.metrics_port >= 0:
        metrics_server = MetricsServer(supervisor.metrics.registry, supervisor.healthy,
                                       port=args.metrics_port)
        await metrics_server.start()
        log.info("metrics on http://127.0.0.1:%d/metrics", metrics_server.port)
    try:
        await supervisor.run(stop)
    finally:
        if metrics_server is not None:
            await metrics_server.stop()
        await event_log.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(json_logs=args.json_logs)
    try:
        import uvloop

        uvloop.run(serve(args))
    except ImportError:
        asyncio.run(serve(args))
    return 0
