"""Ledger projection into PostgreSQL: events/s of the projector's batched path.

    python -m benchmarks.ledger_projection [--commands N] [--naive-events N] [--profile]

Events are generated up front by the engine core from `matching_engine.workload.Workload`
(8 books, 64 accounts, its deposits, plus a withdrawal every 500 commands) and served from
memory by a stub log, so the figure is the projector's own path (decode, postings, hash
chain, COPY in one transaction per batch, checkpoint) and PostgreSQL, not Kafka. The
baseline, in the same run on a fresh database, is the naive path: the same rows written
with one INSERT statement per row (an entry's postings in one statement, since the
database refuses a statement that leaves an entry unbalanced), in the same transactions.

PostgreSQL comes from $DATABASE_URL (a fresh database is created on that server and
dropped afterwards) or else is started by the test harness (`harness.postgres`, which runs
with fsync=off: commits cost no disk flush here).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from eventlog.memory import MemoryLog
from eventlog.port import Record
from ledger import journal
from ledger.migrate import apply_migrations
from ledger.projector import Projector, ProjectorConfig
from matching_engine.core import Engine
from matching_engine.workload import Workload
from protocol import AnyCommand, Withdraw, encode
from runtime.postgres import connect, create_database, drop_database

TARGET_EVENTS_PER_S = 100_000
WITHDRAW_EVERY_COMMANDS = 500
TOPIC = "bench.gpux.events"
RUN_TIMEOUT_S = 600.0


def generate_records(commands_count: int, seed: int) -> list[Record]:
    """Run the engine core over a workload with withdrawals; return its events as records."""
    workload = Workload(instruments=8, accounts=64, seed=seed)
    commands: list[AnyCommand] = list(workload.setup())
    for index, command in enumerate(workload.flow(commands_count)):
        commands.append(command)
        if index % WITHDRAW_EVERY_COMMANDS == 0:
            commands.append(Withdraw(ts=command.ts, account=f"acct{index % 64}", asset="USDC",
                                     amount="25.5"))
    engine = Engine()
    payloads = [encode(event) for command in commands for event in engine.apply(command)]
    return [Record(TOPIC, 0, offset, None, payload) for offset, payload in enumerate(payloads)]


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """Wall seconds of a run, and CPU seconds of this process and of its database backends."""

    wall_s: float
    client_cpu_s: float
    server_cpu_s: float | None  # None when the backends' /proc entries cannot be read


def _process_cpu_s(pid: int) -> float | None:
    """Return user + system CPU seconds of a local process, or None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _backend_pids(admin_url: str, database_url: str) -> list[int]:
    """Return the pids of the projector's connections to the benchmark database."""
    database = database_url.rsplit("/", 1)[1]
    connection = await connect(admin_url)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 "
            "AND application_name = 'gpux-ledger' AND pid <> pg_backend_pid()", database)
    finally:
        await connection.close()
    return [row[0] for row in rows]


def _servers_cpu_s(pids: list[int]) -> float | None:
    samples = [_process_cpu_s(pid) for pid in pids]
    if not samples or any(sample is None for sample in samples):
        return None
    return sum(sample for sample in samples if sample is not None)


async def run_batched(
    admin_url: str, database_url: str, records: list[Record], config: ProjectorConfig
) -> Timing:
    """Project every record through the real projector; return how long it took."""
    last_seq = len(records)  # the engine numbers events 1..n
    projector = Projector(MemoryLog(records), database_url, config)
    stop = asyncio.Event()
    started_s, client_started_s = time.perf_counter(), time.process_time()
    task = asyncio.create_task(projector.run(stop))
    await asyncio.wait_for(projector.ready.wait(), 60)
    pids = await _backend_pids(admin_url, database_url)
    server_started_s = _servers_cpu_s(pids)
    deadline_s = started_s + RUN_TIMEOUT_S
    while projector.applied_seq < last_seq and not task.done():
        if time.perf_counter() > deadline_s:
            raise TimeoutError(f"projector at seq {projector.applied_seq} after {RUN_TIMEOUT_S} s")
        await asyncio.sleep(0.002)
    wall_s = time.perf_counter() - started_s
    client_s = time.process_time() - client_started_s
    server_ended_s = _servers_cpu_s(pids)
    stop.set()
    await task
    server_s = (None if server_started_s is None or server_ended_s is None
                else server_ended_s - server_started_s)
    return Timing(wall_s=wall_s, client_cpu_s=client_s, server_cpu_s=server_s)


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    placeholders = ", ".join(f"${index}" for index in range(1, len(columns) + 1))
    return f"INSERT INTO ledger.{table} ({', '.join(columns)}) VALUES ({placeholders})"


async def run_naive(database_url: str, records: list[Record], batch_size_max: int) -> float:
    """Write the same rows one INSERT per row, one transaction per batch; return seconds."""
    connection = await connect(database_url, role="gpux_ledger")
    entry_sql = _insert_sql("entries", journal.ENTRY_COLUMNS)
    trade_sql = _insert_sql("trades", journal.TRADE_COLUMNS)
    withdrawal_sql = _insert_sql("withdrawals", journal.WITHDRAWAL_COLUMNS)
    checkpoint_sql = ("INSERT INTO ledger.checkpoints (first_seq, last_seq, next_offset) "
                      "VALUES ($1, $2, $3)")
    builder = journal.JournalBuilder(0, journal.GENESIS_HASH)
    started_s = time.perf_counter()
    try:
        for start in range(0, len(records), batch_size_max):
            batch = builder.build(records[start:start + batch_size_max])
            if batch.failure is not None:
                raise batch.failure
            async with connection.transaction():
                await _insert_rows(connection, batch, entry_sql, trade_sql, withdrawal_sql)
                await connection.execute(checkpoint_sql, batch.first_seq, batch.last_seq,
                                         batch.next_offset)
    finally:
        await connection.close()
    return time.perf_counter() - started_s


async def _insert_rows(
    connection: asyncpg.Connection, batch: journal.JournalBatch, entry_sql: str, trade_sql: str,
    withdrawal_sql: str,
) -> None:
    postings_by_seq: dict[int, list[tuple[int, str, str, int]]] = {}
    for posting in batch.postings:
        postings_by_seq.setdefault(posting[0], []).append(posting)
    for entry in batch.entries:
        await connection.execute(entry_sql, *entry)
        postings = postings_by_seq[entry[0]]
        values = ", ".join(f"(${4 * i + 1}, ${4 * i + 2}, ${4 * i + 3}, ${4 * i + 4})"
                           for i in range(len(postings)))
        arguments = [value for posting in postings for value in posting]
        await connection.execute(
            f"INSERT INTO ledger.postings ({', '.join(journal.POSTING_COLUMNS)}) VALUES {values}",
            *arguments,
        )
    for trade in batch.trades:
        await connection.execute(trade_sql, *trade)
    for withdrawal in batch.withdrawals:
        await connection.execute(withdrawal_sql, *withdrawal)


def build_only(records: list[Record], batch_size_max: int) -> float:
    """Return the CPU seconds the pure core takes to turn every record into rows."""
    builder = journal.JournalBuilder(0, journal.GENESIS_HASH)
    started_s = time.process_time()
    for start in range(0, len(records), batch_size_max):
        builder.build(records[start:start + batch_size_max])
    return time.process_time() - started_s


async def fresh_database(admin_url: str, name: str) -> str:
    """Create and migrate a new database; return its URL."""
    await drop_database(admin_url, name)
    url = await create_database(admin_url, name)
    connection = await connect(url)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()
    return url


async def count_rows(database_url: str) -> Mapping[str, int]:
    connection = await connect(database_url)
    try:
        return {table: await connection.fetchval(f"SELECT count(*) FROM ledger.{table}")
                for table in ("entries", "postings", "trades", "withdrawals", "checkpoints")}
    finally:
        await connection.close()


async def measure(admin_url: str, args: argparse.Namespace, records: list[Record]) -> None:
    naive_records = records[: args.naive_events]
    config = ProjectorConfig(batch_size_max=args.batch_size_max,
                             writer_connections=args.writer_connections,
                             topic_namespace="bench.")
    prefix = f"gpux_ledger_bench_{os.getpid()}"
    timings: list[Timing] = []
    rows: Mapping[str, int] = {}
    try:
        for run in range(args.runs):
            url = await fresh_database(admin_url, f"{prefix}_{run}")
            if args.profile:
                from pyinstrument import Profiler

                with Profiler(async_mode="enabled") as profiler:
                    await run_batched(admin_url, url, records, config)
                profiler.print()
                return
            timings.append(await run_batched(admin_url, url, records, config))
            rows = await count_rows(url)
            await drop_database(admin_url, f"{prefix}_{run}")
        naive_url = await fresh_database(admin_url, f"{prefix}_naive")
        naive_s = await run_naive(naive_url, naive_records, args.batch_size_max)
    finally:
        for run in range(args.runs):
            await drop_database(admin_url, f"{prefix}_{run}")
        await drop_database(admin_url, f"{prefix}_naive")
    build_s = build_only(records, args.batch_size_max)
    _report(records, naive_records, rows, timings, naive_s, build_s, config)


def _report(records: list[Record], naive_records: list[Record], rows: Mapping[str, int],
            timings: list[Timing], naive_s: float, build_s: float,
            config: ProjectorConfig) -> None:
    count = len(records)
    rates = sorted(count / timing.wall_s for timing in timings)
    median = statistics.median(rates)
    naive_rate = len(naive_records) / naive_s
    print(f"events: {count:,} (entries {rows['entries']:,}, postings {rows['postings']:,}, "
          f"trades {rows['trades']:,}, withdrawals {rows['withdrawals']:,}); batch "
          f"{config.batch_size_max:,} events, {config.writer_connections} writer connection(s)")
    print(f"batched (COPY)      : {median:12,.0f} events/s median of {len(rates)} runs "
          f"(best {rates[-1]:,.0f}, worst {rates[0]:,.0f}; target {TARGET_EVENTS_PER_S:,})")
    print(f"naive (row inserts) : {naive_rate:12,.0f} events/s   "
          f"(first {len(naive_records):,} events)")
    print(f"batched/naive       : {median / naive_rate:12.1f}")
    print(f"pure core alone     : {count / build_s:12,.0f} events/s   "
          "(decode, postings, hashes; no database; CPU time)")
    for timing in timings:
        server = ("n/a" if timing.server_cpu_s is None
                  else f"{timing.server_cpu_s * 1e6 / count:.2f}")
        print(f"  run: {count / timing.wall_s:10,.0f} events/s; CPU per event: projector "
              f"{timing.client_cpu_s * 1e6 / count:.2f} us, PostgreSQL backends {server} us")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


async def _main_async(args: argparse.Namespace, records: list[Record]) -> None:
    admin_url = os.environ.get("DATABASE_URL", "").strip()
    if admin_url:
        await measure(admin_url, args, records)
        return
    from harness.postgres import PostgresService

    with tempfile.TemporaryDirectory(prefix="gpux-bench-pg-") as run_dir:
        Path(run_dir).chmod(0o755)  # when root, PostgreSQL runs as another user
        service = PostgresService(Path(run_dir) / "postgres")
        service.start()
        try:
            await measure(service.url, args, records)
        finally:
            service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=300_000)
    parser.add_argument("--naive-events", type=int, default=30_000)
    parser.add_argument("--batch-size-max", type=int, default=ProjectorConfig.batch_size_max)
    parser.add_argument("--writer-connections", type=int,
                        default=ProjectorConfig.writer_connections)
    parser.add_argument("--runs", type=int, default=3, help="batched runs (median reported)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="profile the batched run")
    args = parser.parse_args(argv)
    records = generate_records(args.commands, args.seed)
    gc.collect()
    gc.freeze()  # the pre-generated events are not garbage: keep collections off them
    asyncio.run(_main_async(args, records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
