"""The gateway's protocol state machine: requests in, commands and messages out; no I/O.

`GatewayCore` never awaits and never reads a clock: the I/O layer (gateway.service) passes
`now_ns` (wall clock, for `ts` stamps and login windows) and `mono_ns` (monotonic, for rate
limits and deadlines) into every call, delivers frames and events, and gives the core three
ports: a `Transport` to push bytes to connections, a `CommandSink` that writes commands to
the log, and an `AuthPort` that verifies logins against the key store and calls back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from delivery.registry import ReportRow
from gateway.admission import ANONYMOUS_PER_IP, LOGIN_DEADLINE, Admission, key_of
from gateway.auth import Principal, check_timestamp, new_nonce
from gateway.config import ANONYMOUS, GatewayConfig, RateLimit
from gateway.correlation import Correlator, Group, PendingOp
from gateway.feeds import Feeds
from gateway.index import IndexBoard
from gateway.messages import API_VERSION, announced_limits, encode
from gateway.orderentry import Plan, Planner, new_order_command
from gateway.ports import AuthPort, CommandSink, DeskPort, Submission, Transport
from gateway.projection import Projection
from gateway.public import public_result
from gateway.quality import QualityBoard
from gateway.ratelimit import Charge, RateLimiter
from gateway.replies import group_reply, rate_usage
from gateway.session import Session
from gateway.strips import quote_strip
from index.value import IndexValue
from protocol import AnyCommand, AnyEvent, CancelOrder, Tick
from protocol import encode as encode_command
from protocol import reasons as R
from wsapi.errors import (
    ALREADY_AUTHENTICATED,
    AUTH_FAILED,
    CONNECTION_LIMIT,
    DUPLICATE_REQUEST,
    FORBIDDEN,
    INVALID_REQUEST,
    OVERLOADED,
    RATE_LIMITED,
    TOO_MANY_PENDING,
    UNAUTHENTICATED,
    UNAVAILABLE,
    RequestError,
)
from wsapi.messages import ErrorInfo, Heartbeat, Hello, Notice, Reply
from wsapi.requests import (
    ADMIN_OPS,
    DELIVERY_OPS,
    DELIVERY_ROLE,
    ISSUE_ROLES,
    MASS_QUOTE_ROLES,
    NODE_ROLES,
    TRADING_OPS,
    AmendOrderRequest,
    AnyRequest,
    Balances,
    BatchRequest,
    CancelAllAfter,
    CancelOrderRequest,
    Deliveries,
    DeliveryAccess,
    DeliveryReportRequest,
    DepositRequest,
    Instruments,
    IssueCapacityRequest,
    ListInstrumentRequest,
    Login,
    LoginWallet,
    MassCancelRequest,
    MassQuoteRequest,
    NewOrderRequest,
    NewStripOrderRequest,
    OpenOrders,
    Ping,
    QualityRequest,
    RegisterNode,
    RegisterSshKey,
    StripQuoteRequest,
    Subscribe,
    Time,
    Unsubscribe,
    decode_request,
    request_cost,
    salvage_req_id,
)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # a limit of gateway.admission closed the connection
# The requests answered by the engine (GatewayCore._order_entry), checked first.
ORDER_ENTRY_REQUESTS: Final = frozenset({
    NewOrderRequest, CancelOrderRequest, AmendOrderRequest, MassCancelRequest, BatchRequest,
    MassQuoteRequest, ListInstrumentRequest, DepositRequest, IssueCapacityRequest,
    DeliveryReportRequest, NewStripOrderRequest})
# Account operations any role but the delivery service's may send (_require_role).
ANY_TRADER_OPS: Final = (TRADING_OPS - DELIVERY_OPS - ADMIN_OPS
                         - {"mass_quote", "issue_capacity", "register_node"})


class GatewayCore:
    """Hold sessions, subscriptions, pending requests and the projection of the event log."""

    def __init__(
        self,
        config: GatewayConfig,
        transport: Transport,
        sink: CommandSink,
        auth: AuthPort,
        projection: Projection | None = None,
        desk: DeskPort | None = None,
    ) -> None:
        """`desk` None: this gateway serves no delivery database (its delivery requests
        are refused `unavailable`, and so is the quality record)."""
        self.config = config
        self.desk = desk
        self.transport = transport
        self.sink = sink
        self.auth = auth
        self.projection = projection or Projection(
            trades_kept_max=config.trades_snapshot_max, candles_kept_max=config.candles_kept_max,
            fills_kept_max=config.fills_snapshot_max,
            delivery_events_kept_max=config.delivery_events_snapshot_max,
            deliveries_settled_kept_max=config.deliveries_settled_kept_max,
            reports_wanted=lambda account: ("orders", account) in self.subscribers)
        self.index = IndexBoard()
        self.quality = QualityBoard(config.quality_hours_kept_max)
        self.feeds = Feeds(config, self.projection, self.index, self.quality,
                           quality_served=desk is not None)
        self.subscribers = self.feeds.subscribers
        self.correlator = Correlator()
        self.planner = Planner(config.gateway_id)
        self.limiter = RateLimiter(config.ip_limit)
        self.sessions: dict[int, Session] = {}
        self.admission = Admission(config)
        # Told each time a limit bites: (limit name, IP); the service counts and logs it.
        self.limit_bit: Callable[[str, str], None] = _ignore
        self._limits = announced_limits(config)
        self.dead_man: dict[str, int] = {}  # account -> deadline (monotonic ns)
        self.last_ts = 0
        self.next_heartbeat_ns = 0
        self.requests_refused = 0
        self.commands_sent = 0

    # -- connections -----------------------------------------------------------------------

    def connect(self, conn_id: int, ip: str, now_ns: int, mono_ns: int) -> bool:
        """Open a session and greet it; False when over a connection limit. Anonymous
        sessions of the same IP may be closed to make room (gateway.admission)."""
        refused = self.admission.refusal(ip)
        if refused is not None:
            self.limit_bit(refused, ip)
            return False
        session = Session(conn_id=conn_id, ip=ip, nonce=new_nonce())
        self.sessions[conn_id] = session
        for evicted in self.admission.open(session, mono_ns):
            self.limit_bit(ANONYMOUS_PER_IP, ip)
            self._close(evicted, "too many connections from this address without a login")
        assert session.nonce is not None
        self.transport.push(conn_id, encode(Hello(
            api_version=API_VERSION, gateway_id=self.config.gateway_id, nonce=session.nonce,
            server_time_ns=now_ns, frame_bytes_max=self.config.frame_bytes_max,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            batch_size_max=self.config.batch_size_max,
            mass_quote_size_max=self.config.mass_quote_size_max,
            eip712_chain_id=self.config.eip712_chain_id,
            login_window_ms=self.config.login_window_ms, limits=self._limits,
        )))
        return True

    def _close(self, session: Session, reason: str) -> None:
        """Close an anonymous session for a limit: forget it now, then close its socket."""
        self.disconnect(session.conn_id, 0)  # anonymous: nothing to cancel, no ts needed
        self.transport.close(session.conn_id, CLOSE_POLICY, reason)

    def disconnect(self, conn_id: int, now_ns: int) -> None:
        """Forget a session; cancel its orders if it asked for cancel-on-disconnect."""
        session = self.sessions.pop(conn_id, None)
        if session is None:
            return
        self.admission.close(session)
        self.feeds.drop(session)
        account = session.account
        if account is None or session.cancel_on_disconnect == "off":
            return
        ts = self._stamp(now_ns)
        commands: list[AnyCommand]
        if session.cancel_on_disconnect == "account":
            commands = [self.planner.mass_cancel_command(account, ts, R.DISCONNECT)]
        else:
            open_orders = self.projection.open_by_client
            commands = [CancelOrder(ts=ts, account=account, client_order_id=cid,
                                    reason=R.DISCONNECT)
                        for cid in session.placed if (account, cid) in open_orders]
        if commands:
            self._submit_unanswered(commands)

    # -- requests --------------------------------------------------------------------------

    def receive(self, conn_id: int, data: bytes | str, now_ns: int, mono_ns: int) -> None:
        """Handle one client frame: exactly one reply for it, now or when the engine answers."""
        session = self.sessions.get(conn_id)
        if session is None:
            return
        session.spoke = True
        try:
            request = decode_request(data)
        except RequestError as error:
            charge = self._charge(session, 1, mono_ns)
            self._refuse(session, salvage_req_id(data), "unknown", error, charge)
            return
        op = request.__struct_config__.tag
        assert isinstance(op, str)
        if isinstance(request, (Login, LoginWallet)):
            charge = self.limiter.charge_login(
                ip=session.ip, key=request.key_id if isinstance(request, Login)
                else request.address.lower(), ip_limit=self.config.login_ip_limit,
                key_limit=self.config.login_key_limit, now_ns=mono_ns)
        else:
            charge = self._charge(session, request_cost(request), mono_ns)
        if charge.retry_after_ms:
            self._refuse(session, request.req_id, op, RequestError(
                RATE_LIMITED, f"rate limit of {charge.bucket} exceeded",
                retry_after_ms=charge.retry_after_ms), charge)
            return
        if request.req_id in session.pending:
            self._refuse(session, request.req_id, op, RequestError(
                DUPLICATE_REQUEST, f"req_id {request.req_id} is still awaiting its reply on "
                "this connection", field="$.req_id"), charge)
            return
        try:
            self._dispatch(session, request, op, charge, now_ns, mono_ns)
        except RequestError as error:
            self._refuse(session, request.req_id, op, error, charge)

    def _dispatch(
        self, session: Session, request: AnyRequest, op: str, charge: Charge, now_ns: int,
        mono_ns: int,
    ) -> None:
        if type(request) in ORDER_ENTRY_REQUESTS:  # the hot path first
            self._order_entry(session, self._require_role(session, op), request, op, charge,
                              now_ns, mono_ns)
            return
        if isinstance(request, (Login, LoginWallet)):
            self._login(session, request, now_ns)
            return
        if isinstance(request, (Time, Ping, Instruments)):
            self._reply_ok(session, request.req_id, op, public_result(
                self.projection, request, now_ns, self.config.instruments_page_max), charge)
            return
        if isinstance(request, (Subscribe, Unsubscribe)):
            self._subscription(session, request, op, charge)
            return
        if isinstance(request, QualityRequest):
            self._quality(session, request, charge)
            return
        principal = self._require_role(session, op)
        if isinstance(request, (RegisterNode, RegisterSshKey, DeliveryAccess)):
            self._desk(session, principal, request, op)
            return
        if isinstance(request, CancelAllAfter):
            self._cancel_all_after(session, principal, request, charge, mono_ns)
        elif isinstance(request, OpenOrders):
            orders = self.projection.open_orders(principal.account, request.instrument)
            self._reply_ok(session, request.req_id, op, {"orders": orders}, charge)
        elif isinstance(request, Balances):
            message = self.projection.balances_message(principal.account)
            self._reply_ok(session, request.req_id, op,
                           {"seq": message.seq, "balances": message.balances}, charge)
        elif isinstance(request, Deliveries):
            self._reply_ok(session, request.req_id, op,
                           self.projection.deliveries(principal.account), charge)
        elif isinstance(request, StripQuoteRequest):
            self._reply_ok(session, request.req_id, op,
                           quote_strip(self.projection, principal.account, request), charge)
        else:
            self._order_entry(session, principal, request, op, charge, now_ns, mono_ns)

    def _require_role(self, session: Session, op: str) -> Principal:
        principal = session.principal
        if principal is None:
            raise RequestError(UNAUTHENTICATED, f"{op} needs a login")
        role = principal.role
        if op in ANY_TRADER_OPS and role != DELIVERY_ROLE:  # what an order needs, at once
            return principal
        if role == DELIVERY_ROLE and op not in DELIVERY_OPS:
            raise RequestError(FORBIDDEN, f"the delivery role sends delivery_report only, "
                               f"not {op}")
        if op in DELIVERY_OPS and role != DELIVERY_ROLE:
            raise RequestError(FORBIDDEN, f"{op} is for the delivery service's role "
                               f"(delivery), not {role}")
        if op in ADMIN_OPS and role != "admin":
            raise RequestError(FORBIDDEN, f"{op} is for the admin role, not {role}")
        if op == "mass_quote" and role not in MASS_QUOTE_ROLES:
            raise RequestError(FORBIDDEN, f"mass_quote is not for the {role} role")
        if op == "issue_capacity" and role not in ISSUE_ROLES:
            raise RequestError(FORBIDDEN, f"issue_capacity is for the operator, market_maker "
                               f"and admin roles, not {role}")
        if op == "register_node" and role not in NODE_ROLES:
            raise RequestError(FORBIDDEN, f"register_node is for the operator, market_maker "
                               f"and admin roles, not {role}")
        if op not in ADMIN_OPS and op not in TRADING_OPS and op not in DELIVERY_OPS:
            raise RequestError(INVALID_REQUEST, f"{op} is not an account operation")
        return principal

    def _order_entry(
        self, session: Session, principal: Principal, request: AnyRequest, op: str,
        charge: Charge, now_ns: int, mono_ns: int,
    ) -> None:
        if len(session.pending) >= self.config.pending_per_session_max:
            raise RequestError(TOO_MANY_PENDING, "too many requests awaiting the engine",
                               retry_after_ms=100)
        if self.sink.room() < 1:
            raise RequestError(OVERLOADED, "the command queue is full", retry_after_ms=100)
        ts = self._stamp(now_ns)
        account = principal.account
        req_id = request.req_id
        group = Group(conn_id=session.conn_id, req_id=req_id, op=op,
                      deadline_ns=mono_ns + self.config.request_timeout_ms * 1_000_000,
                      outcomes=[None], waiting=1, context=charge)
        if type(request) is NewOrderRequest:  # the hot path: one op, one command, no plan
            client_order_id = request.client_order_id
            self.correlator.register(group, [PendingOp(
                group=group, index=0, op=op, account=account, ts=ts,
                client_order_id=client_order_id, instrument=request.instrument)])
            session.pending.add(req_id)
            session.remember_placed(client_order_id, self.config.session_orders_max)
            self._offer(Submission([encode_command(new_order_command(request, account, ts))],
                                   group))
            return
        plan = self._plan(account, request, ts, group)
        group.outcomes = [None] * len(plan.ops)
        group.waiting = len(plan.ops)
        self.correlator.register(group, plan.ops)
        session.pending.add(req_id)
        session_orders_max = self.config.session_orders_max
        for pending in plan.ops:
            if pending.op == "new_order" and pending.client_order_id is not None:
                session.remember_placed(pending.client_order_id, session_orders_max)
        self._offer(Submission([encode_command(c) for c in plan.commands], group))

    def _offer(self, submission: Submission) -> None:
        """Queue a request's commands, or answer it overloaded when the queue is full."""
        if self.sink.offer(submission):
            self.commands_sent += len(submission.payloads)
        else:
            self.submission_failed(submission, OVERLOADED)

    def _plan(self, account: str, request: AnyRequest, ts: int, group: Group) -> Plan:
        planner = self.planner
        if isinstance(request, (NewOrderRequest, CancelOrderRequest, AmendOrderRequest,
                                MassCancelRequest)):
            return planner.single(request, account, ts, group)
        if isinstance(request, BatchRequest):
            return planner.batch(request, account, ts, self.config.batch_size_max, group)
        if isinstance(request, MassQuoteRequest):
            return planner.mass_quote(request, account, ts, self.config.mass_quote_size_max,
                                      group)
        if isinstance(request, ListInstrumentRequest):
            return planner.list_instrument(request, account, ts, group)
        if isinstance(request, DepositRequest):
            return planner.deposit(request, ts, group)
        if isinstance(request, IssueCapacityRequest):
            return planner.issue_capacity(request, account, ts, group)
        if isinstance(request, DeliveryReportRequest):
            return planner.delivery_report(request, account, ts, group)
        if isinstance(request, NewStripOrderRequest):
            return planner.new_strip_order(request, account, ts, group)
        raise AssertionError(f"no plan for {type(request).__name__}")

    def _cancel_all_after(
        self, session: Session, principal: Principal, request: CancelAllAfter, charge: Charge,
        mono_ns: int,
    ) -> None:
        if request.timeout_s == 0:
            self.dead_man.pop(principal.account, None)
            result: dict[str, Any] = {"armed": False}
        else:
            self.dead_man[principal.account] = mono_ns + request.timeout_s * 1_000_000_000
            result = {"armed": True, "timeout_s": request.timeout_s}
        self._reply_ok(session, request.req_id, "cancel_all_after", result, charge)

    # -- delivery desk and quality record ---------------------------------------------------

    def _desk(self, session: Session, principal: Principal,
              request: RegisterNode | RegisterSshKey | DeliveryAccess, op: str) -> None:
        """Hand a request of the delivery database to the desk; `desk_result` answers it."""
        if self.desk is None:
            raise RequestError(UNAVAILABLE, "this gateway serves no delivery database")
        if len(session.pending) >= self.config.pending_per_session_max:
            raise RequestError(TOO_MANY_PENDING, "too many requests awaiting an answer",
                               retry_after_ms=100)
        session.pending.add(request.req_id)
        self.desk.begin(session.conn_id, request.req_id, op, principal.account, request)

    def desk_result(self, conn_id: int, req_id: int, op: str, outcome: Any,
                    mono_ns: int) -> None:
        """Answer a request the desk handled: `outcome` is its result or a RequestError."""
        session = self.sessions.get(conn_id)
        if session is None:
            return
        session.pending.discard(req_id)
        charge = self._charge(session, 0, mono_ns)
        if isinstance(outcome, RequestError):
            self._refuse(session, req_id, op, outcome, charge)
        else:
            self._reply_ok(session, req_id, op, outcome, charge)

    def _quality(self, session: Session, request: QualityRequest, charge: Charge) -> None:
        if self.desk is None:
            raise RequestError(UNAVAILABLE, "this gateway serves no delivery database")
        self._reply_ok(session, request.req_id, "quality",
                       {"operators": self.quality.operators(request.operator)}, charge)

    def add_reports(self, rows: list[ReportRow]) -> None:
        """Take report rows read from the delivery database (new ones, in recorded_id order)
        and send the `quality` feed's update to its readers."""
        subscribers = self.subscribers
        for update in self.quality.add(rows, lambda channel, key: (channel, key) in subscribers):
            self.transport.push_many(subscribers[(update.channel, update.key)], update.payload)

    # -- login -----------------------------------------------------------------------------

    def _login(self, session: Session, request: Login | LoginWallet, now_ns: int) -> None:
        if session.principal is not None:
            raise RequestError(ALREADY_AUTHENTICATED, "this session is logged in")
        if session.login_pending:
            raise RequestError(AUTH_FAILED, "a login is in progress")
        nonce = session.nonce
        if nonce is None:
            raise RequestError(AUTH_FAILED, "the nonce of this connection was used; reconnect")
        session.nonce = None
        check_timestamp(request.timestamp_ms, now_ns, self.config.login_window_ms)
        session.login_pending = True
        session.pending.add(request.req_id)
        self.auth.begin(session.conn_id, request.req_id, request, nonce)

    def login_result(
        self, conn_id: int, req_id: int, op: str, outcome: Principal | RequestError,
        cancel_on_disconnect: str, mono_ns: int,
    ) -> None:
        """Finish a login the AuthPort verified (or refused)."""
        session = self.sessions.get(conn_id)
        if session is None:
            return
        session.login_pending = False
        session.pending.discard(req_id)
        refused = self.admission.login_refusal(outcome) if isinstance(outcome, Principal) else None
        if refused is not None:
            self.limit_bit(refused, session.ip)
            outcome = RequestError(CONNECTION_LIMIT, f"{refused} reached: the account or key "
                                   "already has as many connections as it may")
        if isinstance(outcome, RequestError):
            self.admission.watch(session, mono_ns)
            charge = self._charge(session, 0, mono_ns)
            self._refuse(session, req_id, op, outcome, charge)
            return
        session.principal = outcome
        self.admission.logged_in(session)
        session.cancel_on_disconnect = cancel_on_disconnect
        charge = self._charge(session, 0, mono_ns)
        self._reply_ok(session, req_id, op, {
            "account": outcome.account, "role": outcome.role,
            "cancel_on_disconnect": cancel_on_disconnect,
        }, charge)

    # -- subscriptions ---------------------------------------------------------------------

    def _subscription(
        self, session: Session, request: Subscribe | Unsubscribe, op: str, charge: Charge
    ) -> None:
        feed = self.feeds.feed_of(session, request)
        result: dict[str, Any] = {"channel": request.channel, "instrument": request.instrument}
        if request.gpu is not None:
            result.update(gpu=request.gpu, region=request.region)
        if isinstance(request, Unsubscribe):
            self.feeds.unsubscribe(session, feed)
            self._reply_ok(session, request.req_id, op, result, charge)
            return
        snapshot = self.feeds.subscribe(session, feed)
        self._reply_ok(session, request.req_id, op, result, charge)
        if snapshot is not None:
            self.transport.push(session.conn_id, snapshot)

    # -- events ----------------------------------------------------------------------------

    def apply_events(self, events: Sequence[AnyEvent]) -> None:
        """Answer the requests the events complete, then fan out what changed."""
        correlate = self.correlator.on_event
        apply = self.projection.apply
        for event in events:
            completed = correlate(event)
            apply(event)
            for group in completed:
                self._reply_group(group)
        subscribers = self.subscribers
        for update in self.projection.flush(lambda channel, key: (channel, key) in subscribers):
            conns = subscribers.get((update.channel, update.key))
            if conns:
                self.transport.push_many(conns, update.payload)

    def add_index(self, values: list[IndexValue]) -> None:
        """Take index values read from the store (in last_seq order) and send the updates
        to the readers of the `index` feeds."""
        subscribers = self.subscribers
        for update in self.index.add(values, lambda channel, key: (channel, key) in subscribers):
            self.transport.push_many(subscribers[(update.channel, update.key)], update.payload)

    def _reply_group(self, group: Group) -> None:
        session = self.sessions.get(group.conn_id)
        if session is None:
            return
        session.pending.discard(group.req_id)
        context = group.context
        charge = context if isinstance(context, Charge) else None
        self._send_reply(session, group_reply(group, rate_usage(charge)))

    def submission_failed(self, submission: Submission, reason: str) -> None:
        """Answer a group whose commands could not be written to the log."""
        group = submission.group
        if group is None or group.done:
            return
        self.correlator.fail(group, reason)
        self._reply_group(group)

    # -- time ------------------------------------------------------------------------------

    def housekeeping(self, now_ns: int, mono_ns: int) -> None:
        """Expire requests, fire dead-man's switches, close anonymous connections past their
        login deadline and send heartbeats that are due."""
        for group in self.correlator.expire(mono_ns):
            self._reply_group(group)
        for session in self.admission.overdue(mono_ns):
            self.limit_bit(LOGIN_DEADLINE, session.ip)
            self._close(session, "no login or subscription within the login deadline")
        fired = [account for account, deadline in self.dead_man.items() if deadline <= mono_ns]
        for account in fired:
            del self.dead_man[account]
            self._submit_unanswered([self.planner.mass_cancel_command(
                account, self._stamp(now_ns), R.DEAD_MAN_SWITCH)])
            notice = encode(Notice(code="dead_man_switch", ts=now_ns,
                                   message="cancel_all_after expired: all orders canceled"))
            for session in self.sessions.values():
                if session.account == account:
                    self.transport.push(session.conn_id, notice)
        if mono_ns >= self.next_heartbeat_ns:
            self.next_heartbeat_ns = mono_ns + self.config.heartbeat_interval_ms * 1_000_000
            if self.sessions:
                self.transport.push_many(list(self.sessions), encode(Heartbeat(
                    ts=now_ns, event_seq=self.projection.event_seq)))
            self.limiter.prune(mono_ns)

    def tick(self, now_ns: int) -> bytes:
        """Return a tick command stamped now (for the clock)."""
        return encode_command(Tick(ts=self._stamp(now_ns)))

    def _stamp(self, now_ns: int) -> int:
        """Return the `ts` for a command: the wall clock, never below an earlier stamp."""
        self.last_ts = max(self.last_ts, now_ns)
        return self.last_ts

    def _submit_unanswered(self, commands: list[AnyCommand]) -> bool:
        """Queue commands nobody awaits an answer to; False when the queue is full."""
        if not self.sink.offer(Submission([encode_command(c) for c in commands], None)):
            return False
        self.commands_sent += len(commands)
        return True

    # -- replies ---------------------------------------------------------------------------

    def _charge(self, session: Session, cost: int, mono_ns: int) -> Charge:
        principal = session.principal
        limit: RateLimit = self.config.role_limits[
            principal.role if principal is not None else ANONYMOUS]
        limiter = self.limiter
        names = session.bucket_names
        if names is None or names[0] is not principal:  # named once per login
            names = session.bucket_names = (principal, *limiter.bucket_names(
                session.ip, key_of(principal) if principal is not None else None))
        return limiter.charge_both((names[1], limiter.ip_limit), (names[2], limit), cost,
                                   mono_ns)

    def _reply_ok(
        self, session: Session, req_id: int, op: str, result: Any, charge: Charge
    ) -> None:
        self._send_reply(session, Reply(req_id=req_id, op=op, status="ok", result=result,
                                        rate_limit=rate_usage(charge)))

    def _refuse(
        self, session: Session, req_id: int | None, op: str, error: RequestError,
        charge: Charge | None,
    ) -> None:
        self.requests_refused += 1
        self._send_reply(session, Reply(
            req_id=req_id, op=op, status="error", rate_limit=rate_usage(charge),
            error=ErrorInfo(code=error.code, message=error.message, field=error.field,
                            retry_after_ms=error.retry_after_ms),
        ))

    def _send_reply(self, session: Session, reply: Reply) -> None:
        if not session.closed:
            self.transport.push(session.conn_id, encode(reply))


def _ignore(limit: str, ip: str) -> None:
    """The default `limit_bit`: a core without a service counts nothing."""


__all__ = [
    "AuthPort", "CLOSE_GOING_AWAY", "CommandSink",
    "GatewayCore", "Submission", "Transport",
]
