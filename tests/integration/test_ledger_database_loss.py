"""The projector (`gpux ledger run`) keeps running through lost database connections.

The engine runs in-process on real Kafka and streams events while the projector, a
`python -m gpux ledger run` process, loses its PostgreSQL connections again and again: the
server terminates its sessions (on the session's PostgreSQL), or the whole server restarts
(a cluster of the test's own: a fast shutdown, then a SIGKILL with crash recovery). The same
process must reconnect and resume from the checkpoint each time; afterwards the journal
holds every event exactly once: one entry per money-moving event, no doubled trade or
withdrawal, a reconciliation with the engine without differences, a sound hash chain. Its
/metrics counts a restart per fault at least, and /healthz answers 200 again afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from eventlog.kafka import KafkaLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, TopicSpec
from harness.paths import tail
from harness.ports import free_port
from ledger.projector import APPLICATION_NAME as PROJECTOR_APPLICATION
from ledger.verify import verify_chain
from matching_engine.config import EngineConfig
from matching_engine.service import EngineService
from matching_engine.workload import Workload
from protocol import AnyCommand, Withdraw, encode
from runtime.postgres import drop_database
from tests.helpers import eventually, feed, kill_if_running, read_topic, stop_cleanly
from tests.integration.database_faults import (
    end_live_sessions,
    observe,
    own_postgres,
    query_while_restarting,
)
from tests.integration.ledger_db import LedgerDatabase, create_ledger_database
from tests.integration.ledger_flow import (
    assert_journal_holds_each_event_once,
    replayed_seq,
    start_projector,
    workload_commands,
)
from tests.integration.metrics_probe import health, scrape

FLOW_COMMANDS = 3000
CATCH_UP_TIMEOUT_S = 120.0

Fault = Callable[[], Awaitable[None]]


def command_stream() -> list[AnyCommand]:
    """Return a workload with withdrawals mixed in, so trades, deposits and withdrawals all
    reach the journal."""

    def mixed_in(index: int, ts: int) -> list[AnyCommand]:
        if index % 100:
            return []
        return [Withdraw(ts=ts, account=f"acct{index % 12}", asset="USDC", amount="7.5")]

    return workload_commands(Workload(instruments=3, accounts=12, seed=17), FLOW_COMMANDS,
                             mixed_in)


async def project_through_faults(kafka_log: KafkaLog, bootstrap: str, database: LedgerDatabase,
                                 faults: list[Fault], tmp_path: Path) -> None:
    """Stream a workload through the engine into a running projector, injecting `faults`
    at evenly spread points of the journal, then check it holds every event exactly once."""
    namespace = f"loss{uuid.uuid4().hex[:8]}."
    commands_topic, events_topic = namespace + COMMANDS_TOPIC, namespace + EVENTS_TOPIC
    commands = command_stream()
    total_events = replayed_seq(commands)
    await kafka_log.create_topics([TopicSpec(name=commands_topic), TopicSpec(name=events_topic)])
    engine = EngineService(kafka_log, EngineConfig(
        topic_namespace=namespace, transactional_id=f"{namespace}engine",
        group_id=f"{namespace}engine", batch_size_max=40,
    ))  # fmt: skip
    stop_engine = asyncio.Event()
    engine_task = asyncio.create_task(engine.run(stop_engine))
    feeder = asyncio.create_task(feed(kafka_log, commands_topic,
                                      [encode(command) for command in commands]))
    log_path = tmp_path / "projector.log"
    port = free_port()
    projector = start_projector(bootstrap, namespace, database.service_url, log_path,
                                "--metrics-port", str(port))

    def still_running() -> None:
        assert projector.poll() is None, (
            f"the projector exited with {projector.returncode}:\n{tail(log_path, 40)}")

    async def reached(seq: int) -> bool:
        still_running()
        applied = await query_while_restarting(
            database.owner_url, "SELECT coalesce(max(last_seq), 0) FROM ledger.checkpoints")
        return applied is not None and applied >= seq

    try:
        for number, fault in enumerate(faults, start=1):
            target = number * total_events // (len(faults) + 2)
            await eventually(lambda target=target: reached(target), timeout_s=CATCH_UP_TIMEOUT_S,
                             interval_s=0.05, message=f"the ledger reached seq {target}")
            await fault()
        await feeder
        await eventually(lambda: reached(total_events), timeout_s=CATCH_UP_TIMEOUT_S,
                         interval_s=0.1, message="the ledger applied every event")

        async def reports_recovery() -> bool:
            still_running()
            metrics = await scrape(port)
            return (metrics.get("gpux_ledger_event_seq") == total_events
                    and await health(port) == 200)

        await eventually(reports_recovery, timeout_s=30, message="/metrics and /healthz")
        # Faults that land close together can end the sessions of one attempt twice, so
        # not every fault has to count as a reconnect of its own.
        assert (await scrape(port))["gpux_ledger_reconnects_total"] >= 1
        stop_cleanly(projector, log_path)
        assert engine.engine.seq == total_events
    finally:
        kill_if_running(projector)
        feeder.cancel()
        stop_engine.set()
        await engine_task
    await check_every_event_once(kafka_log, database.owner_url, commands_topic, events_topic,
                                 total_events)


async def check_every_event_once(kafka_log: KafkaLog, owner_url: str, commands_topic: str,
                                 events_topic: str, total_events: int) -> None:
    events = await read_topic(kafka_log, events_topic)
    assert len(events) == total_events
    connection = await observe(owner_url)
    try:
        await assert_journal_holds_each_event_once(connection, kafka_log, events,
                                                   commands_topic)
        assert (await verify_chain(connection)).ok
    finally:
        await connection.close()


async def test_projector_resumes_after_the_server_ends_its_sessions_again_and_again(
    kafka_log: KafkaLog, kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    database = await create_ledger_database(database_url, prefix="ledger_loss",
                                            connect_as=observe)
    terminated: list[int] = []

    async def end_sessions() -> None:
        terminated.append(await end_live_sessions(database_url, database.name,
                                                   PROJECTOR_APPLICATION))

    await project_through_faults(kafka_log, kafka_bootstrap, database,
                                 [end_sessions] * 4, tmp_path)
    assert terminated and all(ended >= 1 for ended in terminated), terminated
    await drop_database(database_url, database.name)


async def test_projector_resumes_after_postgresql_restarts_and_crashes(
    kafka_log: KafkaLog, kafka_bootstrap: str, tmp_path: Path
) -> None:
    with own_postgres(tmp_path / "postgres") as postgres:
        database = await create_ledger_database(postgres.url, prefix="ledger_loss",
                                                connect_as=observe)

        async def restart() -> None:  # a fast shutdown: the server ends every session
            await asyncio.to_thread(postgres.restart)

        async def crash() -> None:  # SIGKILL: sockets just close; crash recovery on start
            await asyncio.to_thread(postgres.kill)
            await asyncio.to_thread(postgres.restart)

        await project_through_faults(kafka_log, kafka_bootstrap, database,
                                     [restart, crash], tmp_path)


async def test_an_idle_projector_replaces_its_lost_sessions_without_waiting_for_an_event(
    kafka_log: KafkaLog, kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    database = await create_ledger_database(database_url, prefix="ledger_loss",
                                            connect_as=observe)
    namespace = f"idle{uuid.uuid4().hex[:8]}."
    await kafka_log.create_topics([TopicSpec(name=namespace + EVENTS_TOPIC)])
    log_path = tmp_path / "projector.log"
    port = free_port()
    projector = start_projector(kafka_bootstrap, namespace, database.service_url, log_path,
                                "--metrics-port", str(port))
    try:
        async def healthy() -> bool:
            assert projector.poll() is None, tail(log_path, 40)
            return await health(port) == 200

        await eventually(healthy, timeout_s=60, message="the idle projector is healthy")
        ended = await end_live_sessions(database_url, database.name,
                                        PROJECTOR_APPLICATION)
        assert ended >= 1

        async def reconnected() -> bool:
            assert projector.poll() is None, tail(log_path, 40)
            metrics = await scrape(port)
            return (metrics.get("gpux_ledger_reconnects_total", 0) >= 1
                    and await health(port) == 200)

        # No event arrives: the projector finds the closed sessions while it waits.
        await eventually(reconnected, timeout_s=60,
                         message="the idle projector reconnected and is healthy again")
        stop_cleanly(projector, log_path)
    finally:
        kill_if_running(projector)
    await drop_database(database_url, database.name)
