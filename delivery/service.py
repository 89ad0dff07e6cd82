"""The delivery service (`gpux delivery run`): access at the hour, probes, signed samples,
reports.

One attempt (`DeliveryService.run`) opens a connection pool, applies the migrations, loads
the venue's keys (`delivery.keys`) and publishes their public halves, then runs four loops
until `stop`:

- intake: reads the events topic `read_committed` from the stored offset and stores the
  deliverable instruments and the `delivery_assigned` of each batch together with the log
  position, in one transaction (`store.apply_events`): a kill at any point neither loses
  nor doubles an event;
- certificates: every few seconds, a certificate for each (assignment, holder key) that
  has none, valid for exactly the window; and the prober's own, renewed at half-life;
- probing: every assignment whose window has begun and that has no report gets a task
  that writes one signed sample per minute (`delivery.prober.probe_minute`), in order,
  each extending the chain of the stored ones; minutes that passed while nobody probed
  (the service down, or too late for the minute) are written `unmeasured`; after the last
  minute it stores the report (ppm, evidence root, quality record);
- reports: every few seconds, each stored report the engine has not answered goes out as
  `delivery_report` through the gateway with the service's `delivery` key until answered
  (`already_reported` after a restart is an answer: the report was ours).

Restart goes through the same path as start: what the database holds (samples, reports,
position) is where an attempt resumes. `DeliverySupervisor` restarts an attempt after a
lost database or log connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from delivery import registry, store
from delivery.ca import holder_principal
from delivery.classes import ClassFloor, floor_for
from delivery.config import ServiceConfig
from delivery.errors import DeliveryError
from delivery.evidence import (
    ChallengeRecord,
    Outcome,
    SampleChain,
    decode_sample,
    delivered_ppm,
    evidence_root,
)
from delivery.keys import ProberCertificate, VenueKeys
from delivery.metrics import DeliveryMetrics
from delivery.prober import NodeAddress, ProbeClient, gpus_required, plan_minutes, probe_minute
from delivery.quality import hour_record
from delivery.transport import ProberClient
from eventlog.errors import LogError
from eventlog.port import EventLog, Record, TopicSpec
from protocol.events import DeliveryAssigned, InstrumentListed
from runtime.postgres import is_connection_failure
from runtime.retry import Supervisor

__all__ = ["DeliveryService", "DeliverySupervisor", "intake_batch", "is_retriable"]

log = logging.getLogger("gpux.delivery")
APPLICATION_NAME: Final = "gpux-delivery"
HOUR_NS: Final = 3600 * 10**9
# A probe starts at most minute / LATE_START_DIVISOR after it is due, else its minute is
# `unmeasured`: due at the latest at half the minute, it then has a quarter minute left.
LATE_START_DIVISOR: Final = 4
_LISTED: Final = b'"instrument_listed"'
_ASSIGNED: Final = b'"delivery_assigned"'


class _Head(msgspec.Struct):
    seq: int


_head_decoder = msgspec.json.Decoder(_Head)
_listed_decoder = msgspec.json.Decoder(InstrumentListed)
_assigned_decoder = msgspec.json.Decoder(DeliveryAssigned)


def intake_batch(records: list[Record], after_seq: int,
                 known: dict[str, store.Instrument]
                 ) -> tuple[list[store.Instrument], list[store.Assignment], int]:
    """The deliverable instruments and assignments of `records` with seq above `after_seq`,
    and the batch's last seq. `known` holds the stored instruments the batch's assignments
    name (and gains the batch's own listings). Pure."""
    instruments: list[store.Instrument] = []
    assignments: list[store.Assignment] = []
    last_seq = after_seq
    for record in records:
        value = record.value
        seq = _head_decoder.decode(value).seq
        last_seq = max(last_seq, seq)
        if seq <= after_seq:
            continue
        if _LISTED in value:
            listed = _listed_decoder.decode(value)
            if listed.bond_per_gpu_hour is None:
                continue
            instrument = store.Instrument(
                symbol=listed.symbol, gpu=listed.gpu, region=listed.region,
                delivery_start_ns=listed.delivery_start, delivery_hours=listed.delivery_hours,
                listed_seq=seq)
            known[instrument.symbol] = instrument
            instruments.append(instrument)
        elif _ASSIGNED in value:
            assigned = _assigned_decoder.decode(value)
            listing = known.get(assigned.instrument)
            if listing is None:
                log.warning("delivery_assigned seq %d names %s, not a deliverable instrument "
                            "the log listed; skipped", seq, assigned.instrument)
                continue
            assignments.append(store.Assignment(
                issue_id=assigned.issue_id, holder=assigned.holder,
                instrument=assigned.instrument, issuer=assigned.issuer,
                node_id=assigned.node_id, quantity=assigned.quantity,
                window_start_ns=listing.delivery_start_ns,
                window_end_ns=listing.window_end_ns, assigned_seq=seq,
                gpu=listing.gpu, region=listing.region))
    return instruments, assignments, last_seq


def _named_instruments(records: list[Record]) -> list[str]:
    """The instruments the batch's assignments name (their listings may be stored)."""
    return [_assigned_decoder.decode(record.value).instrument for record in records
            if _ASSIGNED in record.value]


class MinuteResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a minute's sample says: when it was probed and what the probe found."""

    probed_ns: int
    outcome: Outcome
    gpu_count: int | None = None
    gpu_memory_mib: int | None = None
    challenge: ChallengeRecord | None = None


class DeliveryService:
    """One attempt of the delivery service: run its loops until `stop` or a failure."""

    def __init__(self, event_log: EventLog, database_url: str, config: ServiceConfig,
                 metrics: DeliveryMetrics | None = None,
                 clock: Callable[[], int] = time.time_ns,
                 prober_factory: Callable[[Path, str], ProbeClient] = ProberClient) -> None:
        self.log = event_log
        self.database_url = database_url
        self.config = config
        self.metrics = metrics if metrics is not None else DeliveryMetrics()
        self.clock = clock
        self.prober_factory = prober_factory
        self.ready = asyncio.Event()
        self.random = secrets.SystemRandom()
        self.keys = VenueKeys(config.keys_dir)
        self._pool: asyncpg.Pool | None = None
        self._prober: ProbeClient | None = None
        self._prober_certificate: ProberCertificate | None = None
        self._probing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._probes = asyncio.Semaphore(config.probe_concurrency_max)
        self._ended = False

    def healthy(self) -> bool:
        pool = self._pool
        return self.ready.is_set() and not self._ended and pool is not None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the service is not running")
        return self._pool

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        try:
            self._pool = await asyncpg.create_pool(
                self.database_url, min_size=1, max_size=config.pool_size_max,
                timeout=config.connection.connect_timeout_s,
                command_timeout=config.connection.command_timeout_s,
                server_settings={"application_name": APPLICATION_NAME})
            async with self.pool.acquire() as connection:
                await store.migrate(connection)
                now_ns = self.clock()
                await store.publish_authority(connection, self.keys.ca.public_key_line(), now_ns)
                signer = self.keys.signer
                await store.publish_signer(connection, signer.signer_id,
                                           signer.public_key_raw, now_ns)
            await self._renew_prober_certificate()
            await self.log.create_topics([TopicSpec(name=config.events_topic)])
            self.ready.set()
            await self._run_loops(stop, [self._intake, self._certify, self._schedule,
                                         self._report])
        finally:
            self._ended = True
            for task in self._probing.values():
                task.cancel()
            await asyncio.gather(*self._probing.values(), return_exceptions=True)
            self._probing.clear()
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._pool.close(), 5)

    async def _run_loops(self, stop: asyncio.Event,
                         loops: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]
                         ) -> None:
        """Run the loops until `stop` or until one fails (then raise its error)."""
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(loop(stop)) for loop in loops]
        tasks.append(asyncio.create_task(stop.wait()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and not task.cancelled():
                    error = task.exception()
                    if error is not None:
                        raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pause(self, stop: asyncio.Event, interval_ms: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_ms / 1000)

    # -- intake ------------------------------------------------------------------------------

    async def _intake(self, stop: asyncio.Event) -> None:
        config = self.config
        async with self.pool.acquire() as connection:
            position = await store.progress(connection)
            after_seq = 0 if position is None else position.last_seq
            start: int | str = "earliest" if position is None else position.next_offset
            consumer = self.log.consumer(config.events_topic, isolation="read_committed",
                                         start=start)  # type: ignore[arg-type]
            await consumer.start()
            try:
                while not stop.is_set():
                    records = await consumer.getmany(config.batch_size_max,
                                                     config.poll_timeout_ms)
                    if not records:
                        continue
                    known = await store.instruments(connection, _named_instruments(records))
                    instruments, assignments, last_seq = intake_batch(records, after_seq, known)
                    await store.apply_events(connection, instruments, assignments, store.Progress(
                        last_seq=last_seq, next_offset=records[-1].offset + 1))
                    after_seq = last_seq
                    self.metrics.seq.set(last_seq)
                    self.metrics.assignments.inc(len(assignments))
                    for assignment in assignments:
                        log.info("assigned %s to %s on node %s (%d GPU-hours)",
                                 assignment.issue_id, assignment.holder, assignment.node_id,
                                 assignment.quantity)
            finally:
                await consumer.stop()

    # -- certificates ------------------------------------------------------------------------

    async def _certify(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._certify_pass()
            certificate = self._prober_certificate
            validity_ns = self.config.prober_certificate_validity_s * 10**9
            if certificate is None or self.clock() > certificate.valid_before_ns - validity_ns // 2:
                await self._renew_prober_certificate()
            await self._pause(stop, self.config.certificate_interval_ms)

    async def _certify_pass(self) -> int:
        """Issue the certificates owed now (at most a pass's bound); return how many."""
        issued = 0
        async with self.pool.acquire() as connection:
            missing = await store.missing_certificates(
                connection, self.clock(), self.config.certificates_per_pass_max)
            for owed in missing:
                serial = await store.next_serial(connection)
                try:
                    line = self.keys.ca.issue(
                        owed.public_key, f"{owed.holder}/{owed.issue_id}/{owed.fingerprint}",
                        [holder_principal(owed.node_id)], owed.window_start_ns,
                        owed.window_end_ns, serial)
                except DeliveryError as error:
                    log.error("no certificate for %s/%s key %s: %s", owed.issue_id, owed.holder,
                              owed.fingerprint, error)
                    continue
                if await store.store_certificate(connection, owed, serial, line,
                                                 owed.window_start_ns, owed.window_end_ns,
                                                 self.clock()):
                    issued += 1
                    self.metrics.certificates.inc()
        return issued

    async def _renew_prober_certificate(self) -> None:
        async with self.pool.acquire() as connection:
            serial = await store.next_serial(connection)
        certificate = self.keys.issue_prober_certificate(
            self.clock(), self.config.prober_certificate_validity_s, serial)
        self._prober_certificate = certificate
        self._prober = self.prober_factory(self.keys.prober_key_path, certificate.line)
        log.info("prober certificate valid until %d ns", certificate.valid_before_ns)

    # -- probing -----------------------------------------------------------------------------

    async def _schedule(self, stop: asyncio.Event) -> None:
        config = self.config
        while not stop.is_set():
            for key, task in list(self._probing.items()):
                if task.done():
                    del self._probing[key]
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
            room = config.assignments_active_max - len(self._probing)
            if room > 0:
                # Start a little ahead: the task sleeps until minute 0 is due.
                horizon_ns = self.clock() + 2 * config.schedule_interval_ms * 1_000_000
                async with self.pool.acquire() as connection:
                    due = await store.active_assignments(connection, horizon_ns,
                                                         config.assignments_active_max)
                for assignment in due:
                    key = (assignment.issue_id, assignment.holder)
                    if key not in self._probing and room > 0:
                        self._probing[key] = asyncio.create_task(self._deliver(assignment))
                        room -= 1
            self.metrics.probing.set(len(self._probing))
            await self._pause(stop, min(config.schedule_interval_ms, config.minute_ms))

    async def _deliver(self, assignment: store.Assignment) -> None:
        """Probe the assignment's remaining minutes, then store its report."""
        try:
            floor = floor_for(assignment.gpu, self.config.floors)
        except DeliveryError as error:
            log.error("assignment %s/%s not probed: %s", assignment.issue_id,
                      assignment.holder, error)
            return
        async with self.pool.acquire() as connection:
            stored = await store.samples(connection, assignment.issue_id, assignment.holder)
        chain = SampleChain(self.keys.signer, issue_id=assignment.issue_id,
                            holder=assignment.holder, node_id=assignment.node_id,
                            window_minutes=assignment.window_minutes,
                            last=stored[-1] if stored else None)
        config = self.config
        plan = plan_minutes(assignment.window_start_ns, assignment.window_minutes,
                            config.minute_ms, config.challenges_per_hour, self.random)
        for planned in plan[chain.next_minute:]:
            end_ns = assignment.window_start_ns + (planned.minute + 1) * config.minute_ns
            result = await self._measure(assignment, floor, planned.due_ns, planned.challenge,
                                         end_ns)
            sample = chain.append(probed_ns=result.probed_ns, outcome=result.outcome,
                                  gpu_count=result.gpu_count,
                                  gpu_memory_mib=result.gpu_memory_mib,
                                  challenge=result.challenge)
            async with self.pool.acquire() as connection:
                await store.append_sample(connection, assignment.issue_id, assignment.holder,
                                          sample, self.clock())
            self.metrics.samples.labels(result.outcome).inc()
        await self._write_report(assignment, floor)

    async def _measure(self, assignment: store.Assignment, floor: ClassFloor, due_ns: int,
                       challenge: bool, end_ns: int) -> MinuteResult:
        """One minute's result: `unmeasured` when the prober could not start its probe
        within a quarter minute of its due instant (the venue's lateness, not the node's:
        a later start would leave the node less than the quarter minute the plan promises),
        `unreachable` for a node not registered by the issuer, else the probe's."""
        latest_start_ns = due_ns + self.config.minute_ns // LATE_START_DIVISOR
        now_ns = self.clock()
        if now_ns > latest_start_ns:
            return MinuteResult(probed_ns=now_ns, outcome="unmeasured")
        if due_ns > now_ns:
            await asyncio.sleep((due_ns - now_ns) / 1e9)
        async with self.pool.acquire() as connection:
            node = await registry.node(connection, assignment.node_id)
        probed_ns = self.clock()
        if node is None or node.account != assignment.issuer:
            return MinuteResult(probed_ns=probed_ns, outcome="unreachable")
        try:
            async with asyncio.timeout(max(latest_start_ns - self.clock(), 0) / 1e9):
                await self._probes.acquire()
        except TimeoutError:
            return MinuteResult(probed_ns=self.clock(), outcome="unmeasured")
        try:
            probed_ns = self.clock()
            if probed_ns > latest_start_ns or self._prober is None:
                return MinuteResult(probed_ns=probed_ns, outcome="unmeasured")
            found = await probe_minute(
                self._prober, NodeAddress(host=node.host, port=node.port, login=node.login,
                                          host_key=node.host_key),
                floor, gpus_required(assignment.quantity, assignment.window_minutes // 60),
                challenge, self.random, end_ns, self.clock)
        finally:
            self._probes.release()
        return MinuteResult(probed_ns=probed_ns, outcome=found.outcome,
                            gpu_count=found.gpu_count, gpu_memory_mib=found.gpu_memory_mib,
                            challenge=found.challenge)

    async def _write_report(self, assignment: store.Assignment, floor: ClassFloor) -> None:
        async with self.pool.acquire() as connection:
            rows = await store.samples(connection, assignment.issue_id, assignment.holder)
            samples = [decode_sample(row.body) for row in rows]
            window_minutes = assignment.window_minutes
            if [sample.minute for sample in samples] != list(range(window_minutes)):
                raise DeliveryError(f"{assignment.issue_id}/{assignment.holder}: the samples "
                                    "do not cover the window once each")
            ppm = delivered_ppm(samples, window_minutes)
            record = hour_record(
                issue_id=assignment.issue_id, holder=assignment.holder,
                operator=assignment.issuer, node_id=assignment.node_id, gpu=assignment.gpu,
                region=assignment.region, window_start_ns=assignment.window_start_ns,
                quantity=assignment.quantity, window_minutes=window_minutes, samples=samples,
                floor=floor)
            stored = await store.write_report(connection, store.ReportRow(
                issue_id=assignment.issue_id, holder=assignment.holder,
                node_id=assignment.node_id, issuer=assignment.issuer, delivered_ppm=ppm,
                delivered_minutes=sum(1 for sample in samples if sample.delivered),
                window_minutes=window_minutes, evidence_root=evidence_root(rows),
                quality=msgspec.json.encode(record), reported_ns=self.clock(), outcome=None))
        log.info("measured %s/%s: delivered_ppm %d, evidence %s", stored.issue_id,
                 stored.holder, stored.delivered_ppm, stored.evidence_root.hex())

    # -- reports -----------------------------------------------------------------------------

    async def _report(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._report_pass()
            await self._pause(stop, self.config.report_interval_ms)

    async def _report_pass(self) -> None:
        """Send the unanswered reports (at most a pass's bound); a failure waits for the
        next pass."""
        config = self.config
        if config.gateway_url is None or config.api_key is None:
            return
        async with self.pool.acquire() as connection:
            pending = await store.pending_reports(connection, config.reports_per_pass_max)
        if not pending:
            return
        from sdk.client import ApiKey, Client, ClientError

        try:
            async with Client(config.gateway_url, credentials=ApiKey(*config.api_key),
                              reconnect=False,
                              request_timeout_s=config.report_timeout_ms / 1000) as client:
                for row in pending:
                    result = await client.delivery_report(
                        row.issue_id, row.holder, row.delivered_ppm,
                        evidence=row.evidence_root.hex())
                    if result.status == "error":
                        log.warning("report %s/%s: the gateway answered error %s; retrying",
                                    row.issue_id, row.holder, result.reason)
                        continue
                    outcome = ("settled" if result.status == "accepted"
                               else result.reason or result.status)
                    async with self.pool.acquire() as connection:
                        await store.record_outcome(connection, row.issue_id, row.holder,
                                                   outcome)
                    self.metrics.reports.labels(outcome).inc()
                    log.info("report %s/%s answered: %s", row.issue_id, row.holder, outcome)
        except (ClientError, OSError, TimeoutError) as error:
            log.warning("reports not sent now (%s: %s); next pass in %d ms",
                        type(error).__name__, error, config.report_interval_ms)


def is_retriable(error: BaseException) -> bool:
    """Tell whether running the service again may get past `error`."""
    if isinstance(error, LogError | DeliveryError):
        return error.retriable
    return is_connection_failure(error)


class DeliverySupervisor(Supervisor[DeliveryService]):
    """Run the service; after a retriable failure start a fresh attempt, which resumes
    from the database as after a crash."""

    def __init__(self, event_log: EventLog, database_url: str, config: ServiceConfig,
                 metrics: DeliveryMetrics | None = None,
                 prober_factory: Callable[[Path, str], ProbeClient] = ProberClient) -> None:
        self.metrics = metrics if metrics is not None else DeliveryMetrics()
        super().__init__(
            lambda: DeliveryService(event_log, database_url, config, self.metrics,
                                    prober_factory=prober_factory),
            what="delivery", policy=config.retry, is_retriable=is_retriable,
            on_restart=self.metrics.restarts.inc, logger=log,
        )
