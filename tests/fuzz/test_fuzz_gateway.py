"""Fuzz the gateway's decoding of client frames, and its state machine behind it, with no I/O.

tests/e2e/test_gateway_fuzz.py sends broken `new_order` frames and garbage over real
websockets; here every op is generated from its own Struct, broken one field at a time or
byte by byte, and fed to `decode_request` and to `GatewayCore.receive` with stub ports:

- a frame that decodes re-encodes to itself; one that does not raises only RequestError,
  whose `field` is the JSON path of what was broken;
- every frame gets exactly one reply; a refused frame changes no session and sends nothing
  to the engine;
- every command the gateway plans decodes in the engine as that command, never as a
  MalformedCommand: the gateway's schema is at least as strict as the engine's.
"""

from __future__ import annotations

from dataclasses import astuple
from typing import Any, get_args

import msgspec
from hypothesis import event, given
from hypothesis import strategies as st

from gateway.config import ANONYMOUS, ROLES, RateLimit
from gateway.core import GatewayCore
from protocol import MalformedCommand, decode_command
from tests.fuzz.support import fuzz, mutated_bytes, mutated_object, raw_structs
from tests.unit.test_gateway_core import EngineSink, StubAuth, StubTransport, connect, make_core
from wsapi.errors import INVALID_JSON, INVALID_REQUEST, UNKNOWN_OP, RequestError
from wsapi.requests import AnyRequest, decode_request, salvage_req_id

REQUEST_CLASSES: tuple[type[msgspec.Struct], ...] = get_args(AnyRequest)
REFUSAL_CODES = {INVALID_JSON, INVALID_REQUEST, UNKNOWN_OP}
UNLIMITED = RateLimit(per_second=10**9, burst=10**9)
CONN = 1

raw_requests = st.one_of(*(raw_structs(cls) for cls in REQUEST_CLASSES))


def frame_of(raw: dict[str, Any]) -> bytes:
    return msgspec.json.encode(raw)


def names_path(field: str | None, name: str) -> bool:
    """Whether the JSON path `field` is the top-level field `name` or inside it."""
    path = f"$.{name}"
    return field is not None and (field == path or field.startswith((f"{path}.", f"{path}[")))


# --- decode_request ----------------------------------------------------------------------------


@fuzz(300)
@given(raw=raw_requests)
def test_every_valid_request_decodes_and_reencodes_to_itself(raw: dict[str, Any]) -> None:
    request = decode_request(frame_of(raw))
    assert isinstance(request, REQUEST_CLASSES)
    assert decode_request(msgspec.json.encode(request)) == request
    assert salvage_req_id(frame_of(raw)) == raw["req_id"]


@fuzz(400)
@given(data=st.data(), raw=raw_requests)
def test_a_request_broken_in_one_field_is_refused_naming_that_field(
    data: st.DataObject, raw: dict[str, Any]
) -> None:
    changed, name, how = data.draw(mutated_object(raw))
    try:
        request = decode_request(frame_of(changed))
    except RequestError as error:
        assert error.code in REFUSAL_CODES, error
        assert names_path(error.field, name), (name, how, error.field, error.message)
    else:
        assert isinstance(request, REQUEST_CLASSES)


@fuzz(300)
@given(data=st.data(), raw=raw_requests)
def test_the_bytes_of_a_request_mutated_decode_or_are_refused(
    data: st.DataObject, raw: dict[str, Any]
) -> None:
    frame = data.draw(mutated_bytes(frame_of(raw)))
    for form in (frame, frame.decode("utf-8", "surrogateescape")):
        try:
            assert isinstance(decode_request(form), REQUEST_CLASSES)
        except RequestError as error:
            assert error.code in REFUSAL_CODES, error
        salvaged = salvage_req_id(form)
        assert salvaged is None or 0 <= salvaged <= 2**53


def test_regression_a_frame_with_a_lone_surrogate_is_refused_as_invalid_json() -> None:
    """msgspec raised UnicodeEncodeError (not caught) for a str it could not encode."""
    for frame in ('{"op":"ping","req_id":1,"x":"\ud800"}', '{"op":"\udcff"}'):
        try:
            decode_request(frame)
        except RequestError as error:
            assert error.code == INVALID_JSON
        assert salvage_req_id(frame) is None


# --- GatewayCore.receive -----------------------------------------------------------------------


def logged_in_core(role: str = "admin") -> tuple[GatewayCore, StubTransport, EngineSink]:
    limits = {role: UNLIMITED for role in (*ROLES, ANONYMOUS)}
    core, transport, sink, auth = make_core(role_limits=limits, ip_limit=UNLIMITED)
    connect(core, auth, CONN, "alice", role=role)
    assert isinstance(auth, StubAuth) and core.sessions[CONN].principal is not None
    transport.frames.clear()
    return core, transport, sink


def session_state(core: GatewayCore) -> tuple[Any, ...]:
    session = core.sessions[CONN]
    return (astuple(session.principal) if session.principal else None, session.nonce,
            session.login_pending, session.cancel_on_disconnect, set(session.subscriptions),
            set(session.pending), dict(session.placed), dict(core.subscribers),
            dict(core.dead_man), set(core.sessions))


frames = st.one_of(
    raw_requests.map(frame_of),
    raw_requests.flatmap(mutated_object).map(lambda broken: frame_of(broken[0])),
    raw_requests.flatmap(lambda raw: mutated_bytes(frame_of(raw))),
    st.binary(max_size=100),
)


# The delivery service's role is the only one whose delivery_report reaches the engine.
@fuzz(400)
@given(frame=frames, role=st.sampled_from(["admin", "delivery"]))
def test_every_frame_gets_one_reply_and_a_refused_one_changes_nothing(
    frame: bytes, role: str
) -> None:
    core, transport, sink = logged_in_core(role)
    before = session_state(core)
    core.receive(CONN, frame, 0, 0)
    submitted = [payload for submission in sink.submissions for payload in submission.payloads]
    sink.run(core)
    replies = [f for f in transport.frames.get(CONN, []) if f["type"] == "reply"]
    assert len(replies) == 1, replies
    reply = replies[0]
    event(f"{reply['op']} {reply['status']} {reply.get('error', {}).get('code', '')}")
    assert CONN not in transport.closed
    if reply["status"] == "error" and reply["error"]["code"] in REFUSAL_CODES:
        assert reply["req_id"] == salvage_req_id(frame)
        assert submitted == [] and session_state(core) == before
        return
    for payload in submitted:
        command = decode_command(payload)
        assert not isinstance(command, MalformedCommand), (frame, payload, command)
