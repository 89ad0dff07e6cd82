"""The event log from the command line, one way for every service: `--log kafka|embedded`,
`--kafka HOST:PORT` (default $KAFKA_BOOTSTRAP), `--data-dir DIR` and `--topic-namespace`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from eventlog.port import EventLog


class LogFlagsError(Exception):
    """The flags parsed but name no log that can be opened; the message says which is missing."""


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", choices=("kafka", "embedded"), default="kafka")
    parser.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP"),
                        help="bootstrap servers (default: $KAFKA_BOOTSTRAP)")
    parser.add_argument("--data-dir", type=Path, help="embedded log directory (--log embedded)")
    parser.add_argument("--topic-namespace", default="", help="prefix of the topic names")


def open_log(kind: str, *, kafka: str | None, data_dir: Path | None,
             **kafka_options: Any) -> EventLog:
    """Open the Kafka log (`kafka_options` go to its `KafkaConfig`) or the embedded one;
    LogFlagsError names the flag that is missing."""
    if kind == "kafka":
        from eventlog.kafka import KafkaConfig, KafkaLog

        if not kafka:
            raise LogFlagsError("--kafka HOST:PORT (or $KAFKA_BOOTSTRAP) is required")
        return KafkaLog(KafkaConfig(bootstrap_servers=kafka, **kafka_options))
    from eventlog.embedded import EmbeddedLog

    if data_dir is None:
        raise LogFlagsError("--data-dir is required with --log embedded")
    return EmbeddedLog.open(data_dir / "log")


def open_log_from(args: argparse.Namespace, **kafka_options: Any) -> EventLog:
    """`open_log` with the flags `add_log_flags` added."""
    return open_log(args.log, kafka=args.kafka, data_dir=args.data_dir, **kafka_options)
