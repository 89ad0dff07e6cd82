"""The event log port and its adapters: Kafka for production, embedded files for dev and tests.

Import the port from here; import an adapter from its module (`eventlog.kafka`,
`eventlog.embedded`), so a service that never uses Kafka never imports aiokafka.

| module | what it owns |
|---|---|
| `port` | `EventLog`, `Producer`, `Consumer`, `Record`: the contract both adapters keep |
| `processor` | the one consume-transform-produce loop, exactly once (the engine runs it) |
| `readahead`, `reading` | reading on while a batch commits; reading up to an offset |
| `memory` | a read-only log over records in memory, for benchmarks and tests |
| `lag` | a reader's lag behind a partition's end, for a gauge |
| `kafka`, `kafka_clients`, `kafka_support` | the Kafka adapter (aiokafka) |
| `embedded`, `embedded_clients`, `embedded_store`, `frames` | the embedded file log |
| `flags` | the log from the command line, one way for every service |
| `errors` | `LogError` and its kinds, each `retriable` or not |
"""

from __future__ import annotations

from eventlog.errors import (
    CorruptRecordError,
    FencedError,
    LogClosedError,
    LogError,
    LogTimeoutError,
    RecordError,
    TopicError,
    TornRecordError,
    TransactionStateError,
)
from eventlog.port import (
    COMMANDS_TOPIC,
    EVENTS_TOPIC,
    Consumer,
    EventLog,
    Isolation,
    Producer,
    Record,
    StartPosition,
    TopicPartition,
    TopicSpec,
    default_topic_specs,
)
from eventlog.processor import (
    BatchResult,
    ProcessorConfig,
    TransactionalProcessor,
    Transform,
)
from eventlog.reading import read_to_end, read_until, settled_end_offset

__all__ = [
    "COMMANDS_TOPIC",
    "EVENTS_TOPIC",
    "BatchResult",
    "Consumer",
    "CorruptRecordError",
    "EventLog",
    "FencedError",
    "Isolation",
    "LogClosedError",
    "LogError",
    "LogTimeoutError",
    "ProcessorConfig",
    "Producer",
    "Record",
    "RecordError",
    "StartPosition",
    "TopicError",
    "TopicPartition",
    "TopicSpec",
    "TornRecordError",
    "TransactionStateError",
    "TransactionalProcessor",
    "Transform",
    "default_topic_specs",
    "read_to_end",
    "read_until",
    "settled_end_offset",
]
