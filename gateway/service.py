"""Run the gateway: a websocket server, a command producer and an event consumer.

Why the `websockets` library's asyncio server: it is the reference implementation of RFC
6455 for asyncio, with its protocol state machine (Sans-I/O) kept apart from the connection
that drives it, as we keep ours (gateway.core) apart from this module. It enforces the frame
size limit (`max_size`, a 1009 close) and a bounded incoming queue per connection, answers
pings, and its `broadcast` writes one encoded frame to many connections without a task or a
copy per message per connection, which is what market-data fan-out needs on two cores. We
turn compression off: per-connection deflate would cost more CPU than the fan-out itself.

Outgoing messages are written straight into each connection's transport buffer, in the
order the core produces them. That buffer is the per-connection bounded queue: a
connection with more than `outbound_bytes_max` bytes unsent is dropped (its TCP connection
aborted: a close frame would wait behind the backlog) rather than buffered without limit.

Tasks: the event loop (consume the events topic from the beginning, answer requests, fan
out), the sender (batch queued commands into the commands topic), housekeeping (timeouts,
dead-man's switches, heartbeats), with a clock the ticker, with an index database the
index poller (gateway.indexsource), and with a delivery database the reports poller
(gateway.deliverysource) and the delivery desk's requests (gateway.deliverydesk). Plain HTTP
requests on the port go to gateway.indexhttp (`/index`, `/index/latest`, `/quality`), which
hands the rest to the site given. Cancellation: `run` returns
when `stop` is set, closes the server (1001 to every client), sends the commands queued so
far (cancel-on-disconnect included) within `shutdown_timeout_s`, then stops the clients.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from delivery.registry import ReportRow
from eventlog.errors import LogError
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, Consumer, EventLog, Producer, TopicSpec
from gateway.auth import Authenticator, KeyStore
from gateway.config import GatewayConfig
from gateway.core import GatewayCore, Submission
from gateway.deliverydesk import DeliveryDesk
from gateway.deliverysource import DeliverySource
from gateway.errors import AuthError, StoreError
from gateway.indexhttp import GatewayHttp
from gateway.indexsource import IndexSource
from gateway.metrics import CountingRateLimiter, GatewayMetrics, timed_correlator
from gateway.sequencer import EventSequencer
from wsapi.errors import OVERLOADED, UNAVAILABLE, RequestError
from wsapi.requests import Login, LoginWallet

log = logging.getLogger("gpux.gateway")
ProcessRequest = Callable[[ServerConnection, Request], Response | None]

LOGINS_IN_FLIGHT_MAX = 256
SHUTDOWN_TIMEOUT_S = 5.0
EVENT_POLL_TIMEOUT_MS = 100
GC_YOUNG_THRESHOLD = 10_000


class WebsocketTransport:
    """Write frames into connections' buffers; drop a connection whose buffer overflows."""

    def __init__(self, outbound_bytes_max: int, metrics: GatewayMetrics | None = None) -> None:
        self.outbound_bytes_max = outbound_bytes_max
        self.connections: dict[int, ServerConnection] = {}
        self.slow_consumers_dropped = 0
        self.frames_out = metrics.frames_out if metrics is not None else None
        self._closing: set[asyncio.Task[None]] = set()
        self._corked: dict[int, list[bytes]] | None = None

    def _writable(self, conn_id: int) -> ServerConnection | None:
        connection = self.connections.get(conn_id)
        if connection is None:
            return None
        if connection.transport.get_write_buffer_size() > self.outbound_bytes_max:
            self._drop_slow(conn_id, connection)
            return None
        return connection

    def push(self, conn_id: int, payload: bytes) -> None:
        corked = self._corked
        if corked is not None:
            corked.setdefault(conn_id, []).append(payload)
            return
        connection = self._writable(conn_id)
        if connection is not None:
            broadcast((connection,), payload, text=True)
            if self.frames_out is not None:
                self.frames_out.inc()

    def push_many(self, conn_ids: Iterable[int], payload: bytes) -> None:
        corked = self._corked
        if corked is not None:
            for conn_id in conn_ids:
                corked.setdefault(conn_id, []).append(payload)
            return
        writable = [c for c in map(self._writable, list(conn_ids)) if c is not None]
        if writable:
            broadcast(writable, payload, text=True)
            if self.frames_out is not None:
                self.frames_out.inc(len(writable))

    def cork(self) -> None:
        """Hold what is pushed until `uncork`, which writes each connection's frames at once."""
        self._corked = {}

    def uncork(self) -> None:
        """Write the frames pushed since `cork`: one socket write per connection, in order.

        An event batch answers many requests of the same connection; written one frame at a
        time, each was a send() of its own (14% of the gateway's samples at saturation).
        """
        corked, self._corked = self._corked, None
        if not corked:
            return
        written = 0
        for conn_id, payloads in corked.items():
            connection = self._writable(conn_id)
            if connection is None or connection.protocol.state is not State.OPEN:
                continue
            if connection.send_in_progress is not None:  # never here: nothing is fragmented
                continue
            protocol = connection.protocol
            for payload in payloads:
                protocol.send_text(payload)
            connection.transport.write(b"".join(protocol.data_to_send()))
            written += len(payloads)
        if self.frames_out is not None and written:
            self.frames_out.inc(written)

    def close(self, conn_id: int, code: int, reason: str) -> None:
        connection = self.connections.pop(conn_id, None)
        if connection is not None:
            task = asyncio.get_running_loop().create_task(connection.close(code, reason))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _drop_slow(self, conn_id: int, connection: ServerConnection) -> None:
        self.slow_consumers_dropped += 1
        self.connections.pop(conn_id, None)
        log.info("closing connection %d: slow consumer (%d bytes unsent)", conn_id,
                 connection.transport.get_write_buffer_size())
        # The close frame would queue behind the backlog: abort the TCP connection instead.
        connection.transport.abort()


class QueueSink:
    """Hold submissions for the sender task in a bounded queue."""

    def __init__(self, size_max: int) -> None:
        self.queue: asyncio.Queue[Submission] = asyncio.Queue(maxsize=size_max)

    def room(self) -> int:
        return self.queue.maxsize - self.queue.qsize()

    def offer(self, submission: Submission) -> bool:
        try:
            self.queue.put_nowait(submission)
        except asyncio.QueueFull:
            log.warning("command queue full: refusing a submission of %d commands",
                        len(submission.payloads))
            return False
        return True


class ServiceAuth:
    """Verify logins off the request path, bounded in number, then tell the core."""

    def __init__(self, authenticator: Authenticator | None) -> None:
        self.authenticator = authenticator
        self.core: GatewayCore | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def begin(self, conn_id: int, req_id: int, request: Login | LoginWallet, nonce: str) -> None:
        if len(self.tasks) >= LOGINS_IN_FLIGHT_MAX:
            self._finish(conn_id, req_id, request, RequestError(
                OVERLOADED, "too many logins in progress", retry_after_ms=200))
            return
        task = asyncio.get_running_loop().create_task(
            self._verify(conn_id, req_id, request, nonce))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _verify(
        self, conn_id: int, req_id: int, request: Login | LoginWallet, nonce: str
    ) -> None:
        try:
            if self.authenticator is None:
                raise RequestError(UNAVAILABLE, "this gateway has no key store")
            if isinstance(request, Login):
                outcome: object = await self.authenticator.login(nonce, request)
            else:
                outcome = await self.authenticator.login_wallet(nonce, request)
        except RequestError as error:
            outcome = error
        except (StoreError, OSError, TimeoutError) as error:
            log.warning("login failed on the key store: %s", error)
            outcome = RequestError(UNAVAILABLE, "the key store is unavailable",
                                   retry_after_ms=1000)
        except Exception as error:  # noqa: BLE001 -- asyncpg's errors have no common base here
            log.exception("login verification failed")
            outcome = AuthError(f"login could not be verified ({type(error).__name__})")
        self._finish(conn_id, req_id, request, outcome)

    def _finish(
        self, conn_id: int, req_id: int, request: Login | LoginWallet, outcome: object
    ) -> None:
        assert self.core is not None
        op = "login" if isinstance(request, Login) else "login_wallet"
        self.core.login_result(conn_id, req_id, op, outcome,  # type: ignore[arg-type]
                               request.cancel_on_disconnect, time.monotonic_ns())


class LimitReport:
    """Count the connection limits as they bite (metrics), and log what bit at most once
    every `interval_s`, so a flood of refusals is seen without flooding the log."""

    def __init__(self, metrics: GatewayMetrics | None, interval_s: float = 10.0) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self.last_ip: dict[str, str] = {}
        self.next_log_s = 0.0

    def __call__(self, limit: str, ip: str) -> None:
        if self.metrics is not None:
            self.metrics.limits_bit.labels(limit).inc()
        self.counts[limit] = self.counts.get(limit, 0) + 1
        self.last_ip[limit] = ip
        self.flush_due()

    def flush_due(self) -> None:
        now_s = time.monotonic()
        if not self.counts or now_s < self.next_log_s:
            return
        log.warning("connection limits bit: %s", ", ".join(
            f"{limit} {count}x (last from {self.last_ip[limit]})"
            for limit, count in sorted(self.counts.items())))
        self.counts.clear()
        self.next_log_s = now_s + self.interval_s


class GatewayService:
    """Own the core and drive it from the websocket server and the log."""

    def __init__(
        self, event_log: EventLog, config: GatewayConfig, store: KeyStore | None = None,
        *, process_request: ProcessRequest | None = None, metrics: GatewayMetrics | None = None,
        tune_gc: bool = False,
    ) -> None:
        """`process_request` answers the plain HTTP requests on the same port that are not
        the index's (the trading page: gateway.static.StaticSite.process_request); None lets
        them all upgrade. `metrics` (gateway.metrics) is fed when given. `tune_gc`: the
        service owns its process (`gpux gateway serve`), so it may set the process's garbage
        collector (see `tune_process_gc`)."""
        self.process_request = process_request
        self.tune_gc = tune_gc
        self.store = store
        self.log = event_log
        self.config = config
        self.metrics = metrics
        self.transport = WebsocketTransport(config.outbound_bytes_max, metrics)
        self.sink = QueueSink(config.command_queue_max)
        authenticator = (
            Authenticator(store, chain_id=config.eip712_chain_id,
                          cache_ttl_ms=config.key_cache_ttl_ms)
            if store is not None else None
        )
        self.auth = ServiceAuth(authenticator)
        self.delivery_source = (
            DeliverySource(config.delivery_database_url, page_size=config.quality_page_size)
            if config.delivery_database_url is not None else None)
        self.desk = DeliveryDesk(
            self.delivery_source, ssh_keys_per_account_max=config.ssh_keys_per_account_max,
            access_assignments_max=config.access_assignments_max)
        self.core = GatewayCore(config, self.transport, self.sink, self.auth,
                                desk=self.desk if self.delivery_source is not None else None)
        self.auth.core = self.core
        core = self.core
        self.desk.answer = lambda conn_id, req_id, op, outcome: core.desk_result(
            conn_id, req_id, op, outcome, time.monotonic_ns())
        self.index_source = (
            IndexSource(config.index_database_url, page_seqs_max=config.index_page_seqs_max)
            if config.index_database_url is not None else None)
        delivery_source = self.delivery_source
        self.http = GatewayHttp(
            self.core.index, self.index_source, process_request, config.index_history_max,
            quality=self.core.quality if delivery_source is not None else None,
            quality_readable=delivery_source.readable if delivery_source is not None else None)
        self.limit_report = LimitReport(metrics)
        self.core.limit_bit = self.limit_report
        if metrics is not None:
            self._watch(metrics)
        self.ready = asyncio.Event()
        self.port: int | None = None
        self.sequencer = EventSequencer(config.event_check_window)
        self.commands_topic = config.topic_namespace + COMMANDS_TOPIC
        self.events_topic = config.topic_namespace + EVENTS_TOPIC
        self._conn_ids = itertools.count(1)

    def _watch(self, metrics: GatewayMetrics) -> None:
        """Feed `metrics` from the core's correlator and limiter and the service's state."""
        self.core.correlator = timed_correlator(metrics, self.config.request_timeout_ms)
        self.core.limiter = CountingRateLimiter(self.config.ip_limit, metrics)
        metrics.watch(
            connections=lambda: len(self.transport.connections),
            refused=lambda: self.core.requests_refused,
            queued=self.sink.queue.qsize,
            slow_dropped=lambda: self.transport.slow_consumers_dropped,
            event_seq=lambda: self.core.projection.event_seq,
            events_repeated=lambda: self.sequencer.duplicates,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set."""
        await self.log.create_topics([TopicSpec(name=self.commands_topic),
                                      TopicSpec(name=self.events_topic)])
        producer = self.log.producer()
        await producer.start()
        try:
            position = await self._catch_up()
            if self.tune_gc:
                tune_process_gc()
            consumer = self.log.consumer(self.events_topic, start=position,
                                         isolation=self.config.events_isolation)
            async with consumer:
                await self._serve(producer, consumer, stop)
        finally:
            await producer.stop()

    async def _catch_up(self) -> int:
        """Rebuild the projection from the committed events before serving; return the
        offset the live reading goes on from. The past is read committed: an aborted copy
        of an event, kept in the topic for good, never has to be checked again on a start
        (no client of this gateway has been told of it)."""
        started = time.perf_counter()
        applied = 0
        async with self.log.consumer(self.events_topic, start="earliest",
                                     isolation="read_committed") as consumer:
            end = await consumer.end_offset()
            while await consumer.position() < end:
                records = await consumer.getmany(self.config.event_batch_max, 500)
                events = self.sequencer.fresh(records)
                self.core.apply_events(events)
                applied += len(events)
            position = await consumer.position()
        log.info("caught up: %d events to seq %d in %.3f s", applied,
                 self.core.projection.event_seq, time.perf_counter() - started)
        return position

    async def _serve(self, producer: Producer, consumer: Consumer, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._consume(consumer), name="gateway-events"),
            asyncio.create_task(self._send(producer), name="gateway-sender"),
            asyncio.create_task(self._housekeep(), name="gateway-housekeeping"),
        ]
        if self.config.clock_interval_ms is not None:
            tasks.append(asyncio.create_task(self._clock(self.config.clock_interval_ms),
                                             name="gateway-clock"))
        if self.store is not None:
            tasks.append(asyncio.create_task(self._prune_nonces(self.store),
                                             name="gateway-nonce-pruning"))
        if self.index_source is not None:
            tasks.append(asyncio.create_task(self.index_source.follow(
                lambda: self.core.index.last_seq, self.core.add_index,
                self.config.index_poll_interval_ms), name="gateway-index"))
        if self.delivery_source is not None:
            tasks.append(asyncio.create_task(self.delivery_source.follow(
                self._add_reports, self.config.quality_poll_interval_ms),
                name="gateway-quality"))
        server = await serve(
            self._handle, self.config.host, self.config.port,
            reuse_port=self.config.reuse_port, compression=None,
            process_request=self.http.process_request,
            max_size=self.config.frame_bytes_max, max_queue=16, ping_interval=20,
            ping_timeout=20, close_timeout=2,
        )
        self.port = _bound_port(server)
        self.ready.set()
        log.info("gateway %s listening on %s:%d", self.config.gateway_id, self.config.host,
                 self.port)
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping:
                    task.result()  # a loop died: raise its error
                    raise RuntimeError(f"{task.get_name()} stopped unexpectedly")
        finally:
            server.close()
            with suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), SHUTDOWN_TIMEOUT_S)
            await self._drain_commands()
            stopping.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
            if self.index_source is not None:
                await self.index_source.close()
            await self.desk.close()
            if self.delivery_source is not None:
                await self.delivery_source.close()

    def _add_reports(self, rows: list[ReportRow]) -> None:
        """Hand new reports to the core (its quality feed), writing its frames at once."""
        self.transport.cork()
        try:
            self.core.add_reports(rows)
        finally:
            self.transport.uncork()
        board = self.core.quality
        if board.last_refusal is not None:
            log.warning("%d delivery reports refused so far; the last: %s", board.rows_refused,
                        board.last_refusal)
            board.last_refusal = None

    async def _drain_commands(self) -> None:
        """Wait (bounded) until the commands queued at shutdown have been sent."""
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
        while not self.sink.queue.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _handle(self, connection: ServerConnection) -> None:
        conn_id = next(self._conn_ids)
        address = connection.remote_address
        ip = str(address[0]) if address else "unknown"
        self.transport.connections[conn_id] = connection
        metrics = self.metrics
        if not self.core.connect(conn_id, ip, time.time_ns(), time.monotonic_ns()):
            self.transport.connections.pop(conn_id, None)
            if metrics is not None:
                metrics.connections_refused.inc()
            await connection.close(1013, "too many connections")
            return
        if metrics is not None:
            metrics.connections_opened.inc()
        receive = self.core.receive
        frames_in = metrics.frames_in if metrics is not None else None
        try:
            async for message in connection:
                receive(conn_id, message, time.time_ns(), time.monotonic_ns())
                if frames_in is not None:
                    frames_in.inc()
        except ConnectionClosed:
            pass
        finally:
            self.transport.connections.pop(conn_id, None)
            self.core.disconnect(conn_id, time.time_ns())

    async def _consume(self, consumer: Consumer) -> None:
        batch_max = self.config.event_batch_max
        transport = self.transport
        while True:
            records = await consumer.getmany(batch_max, EVENT_POLL_TIMEOUT_MS)
            events = self.sequencer.fresh(records) if records else None
            if events:
                transport.cork()
                try:
                    self.core.apply_events(events)
                finally:
                    transport.uncork()

    async def _send(self, producer: Producer) -> None:
        queue = self.sink.queue
        batch_max = self.config.send_batch_max
        while True:
            batch = [await queue.get()]
            count = len(batch[0].payloads)
            while not queue.empty() and count < batch_max:
                submission = queue.get_nowait()
                batch.append(submission)
                count += len(submission.payloads)
            payloads = [payload for submission in batch for payload in submission.payloads]
            try:
                await producer.send_batch(self.commands_topic, payloads)
            except LogError as error:
                log.error("could not write %d commands: %s", len(payloads), error)
                for submission in batch:
                    self.core.submission_failed(submission, UNAVAILABLE)

    async def _housekeep(self) -> None:
        interval_s = self.config.housekeeping_interval_ms / 1000
        while True:
            self.core.housekeeping(time.time_ns(), time.monotonic_ns())
            self.limit_report.flush_due()
            await asyncio.sleep(interval_s)

    async def _prune_nonces(self, store: KeyStore) -> None:
        """Forget used login nonces past `nonce_keep_ms`, now and then, so the table stays
        as small as the logins of that span; a failure is logged and tried next time."""
        keep_s = self.config.nonce_keep_ms // 1000
        while True:
            try:
                pruned = await store.prune_nonces(keep_s)
            except Exception as error:  # noqa: BLE001 -- pruning must never stop the gateway
                log.warning("could not prune login nonces: %s", error)
            else:
                if pruned:
                    log.info("pruned %d login nonces used over %d s ago", pruned, keep_s)
            await asyncio.sleep(self.config.nonce_prune_interval_ms / 1000)

    async def _clock(self, interval_ms: int) -> None:
        """Send a tick every interval, so expiries and closes happen without any client."""
        interval_s = interval_ms / 1000
        next_s = time.monotonic()
        while True:
            if self.sink.room() > 0:
                self.sink.offer(Submission([self.core.tick(time.time_ns())], None))
            next_s += interval_s
            await asyncio.sleep(max(0.0, next_s - time.monotonic()))


def tune_process_gc() -> None:
    """Keep the caught-up projection out of every later collection (`gc.freeze`) and
    collect the young generation every `GC_YOUNG_THRESHOLD` allocations instead of 700.

    Each order makes a few container objects that live until its answer; at the default
    threshold the collector ran about once every 120 orders and took about 7% of the core's
    time (benchmarks.e2e_gateway), and each full collection walked the whole projection."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _bound_port(server: Server) -> int:
    for sock in server.sockets:
        return int(sock.getsockname()[1])
    raise RuntimeError("the websocket server has no socket")
