"""The gateway's delivery desk and quality record with no I/O: who may register a node or a key
and ask for access, how the desk's answers reach the client, the checks made before the
database is touched, the access line built from an assignment, the `quality` request, feed
and HTTP query, the reports cursor that survives ids committed out of order, and the files
the SDK writes for a holder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from delivery.ca import public_key_line_of
from delivery.quality import HourRecord, Incident
from delivery.registry import Access, Certificate, Node, ReportRow
from gateway.config import GatewayConfig
from gateway.core import GatewayCore
from gateway.deliverydesk import access_item, checked_key, checked_node
from gateway.deliverysource import QualityCursor
from gateway.index import IndexBoard, QueryError
from gateway.indexhttp import GatewayHttp, quality_query
from sdk.access import fingerprint, write_access
from tests.unit.test_gateway_core import NOW_NS, EngineSink, StubAuth, StubTransport, replies
from wsapi.errors import RequestError
from wsapi.messages import AccessItem
from wsapi.requests import RegisterNode, RegisterSshKey, decode_request

HOST_KEY = public_key_line_of(ed25519.Ed25519PrivateKey.generate())
NODE = {"op": "register_node", "node_id": "n-17", "gpu": "H100-SXM-80GB", "region": "eu-west",
        "gpu_count": 8, "gpu_memory_mib": 81_559, "host": "10.1.2.3", "port": 2222,
        "login": "gpux", "host_key": HOST_KEY, "inventory": {"source": "profile"}}


class StubDesk:
    """Record what the core hands over; the test answers through `core.desk_result`."""

    def __init__(self) -> None:
        self.begun: list[tuple[int, int, str, str, Any]] = []

    def begin(self, conn_id: int, req_id: int, op: str, account: str, request: Any) -> None:
        self.begun.append((conn_id, req_id, op, account, request))


def make(desk: StubDesk | None) -> tuple[GatewayCore, StubTransport, StubAuth]:
    transport, auth = StubTransport(), StubAuth()
    core = GatewayCore(GatewayConfig(), transport, EngineSink(), auth, desk=desk)
    auth.core = core
    return core, transport, auth


def login(core: GatewayCore, auth: StubAuth, conn_id: int, account: str | None,
          role: str = "trader") -> None:
    assert core.connect(conn_id, "10.0.0.1", NOW_NS, 0)
    if account is not None:
        key_id = f"key{conn_id:08d}"
        auth.accounts[key_id] = (account, role)
        send(core, conn_id, {"op": "login", "req_id": 0, "key_id": key_id,
                             "timestamp_ms": NOW_NS // 1_000_000, "signature": "A" * 88})


def send(core: GatewayCore, conn_id: int, frame: dict[str, Any]) -> None:
    core.receive(conn_id, json.dumps(frame), NOW_NS, 0)


def error_of(transport: StubTransport, conn_id: int, req_id: int) -> tuple[str, str | None]:
    reply = replies(transport, conn_id)[req_id]
    assert reply["status"] == "error", reply
    return reply["error"]["code"], reply["error"].get("field")


def test_desk_requests_go_to_the_desk_with_the_sessions_account_and_come_back_once() -> None:
    desk = StubDesk()
    core, transport, auth = make(desk)
    login(core, auth, 1, "op1", "operator")
    send(core, 1, {**NODE, "req_id": 5})
    send(core, 1, {"op": "register_ssh_key", "req_id": 6, "public_key": HOST_KEY})
    send(core, 1, {"op": "delivery_access", "req_id": 7})
    assert [(b[1], b[2], b[3]) for b in desk.begun] == [
        (5, "register_node", "op1"), (6, "register_ssh_key", "op1"),
        (7, "delivery_access", "op1")]
    send(core, 1, {"op": "delivery_access", "req_id": 7})
    assert error_of(transport, 1, 7) == ("duplicate_request", "$.req_id")
    core.desk_result(1, 5, "register_node", {"node_id": "n-17"}, 0)
    core.desk_result(1, 6, "register_ssh_key", RequestError(
        "ssh_key_limit", "the account has 10 SSH keys", field="$.public_key"), 0)
    assert replies(transport, 1)[5]["result"] == {"node_id": "n-17"}
    assert error_of(transport, 1, 6) == ("ssh_key_limit", "$.public_key")
    assert core.sessions[1].pending == {7}


def test_who_may_send_which_delivery_request() -> None:
    desk = StubDesk()
    core, transport, auth = make(desk)
    login(core, auth, 1, "alice", "trader")
    login(core, auth, 2, None)
    login(core, auth, 3, "venue", "delivery")
    send(core, 1, {**NODE, "req_id": 1})
    assert error_of(transport, 1, 1) == ("forbidden", None)
    send(core, 1, {"op": "register_ssh_key", "req_id": 2, "public_key": HOST_KEY})
    send(core, 2, {"op": "delivery_access", "req_id": 3})
    assert error_of(transport, 2, 3) == ("unauthenticated", None)
    send(core, 3, {"op": "register_ssh_key", "req_id": 4, "public_key": HOST_KEY})
    assert error_of(transport, 3, 4) == ("forbidden", None)
    assert [b[2] for b in desk.begun] == ["register_ssh_key"]


def test_a_gateway_without_a_delivery_database_refuses_unavailable() -> None:
    core, transport, auth = make(None)
    login(core, auth, 1, "alice")
    send(core, 1, {"op": "register_ssh_key", "req_id": 1, "public_key": HOST_KEY})
    send(core, 1, {"op": "quality", "req_id": 2})
    send(core, 1, {"op": "subscribe", "req_id": 3, "channel": "quality"})
    assert [error_of(transport, 1, r)[0] for r in (1, 2, 3)] == ["unavailable"] * 3


def test_requests_out_of_bounds_are_refused_naming_the_field() -> None:
    for change, field in [({"port": 0}, "$.port"), ({"gpu_count": 0}, "$.gpu_count"),
                          ({"login": "root;rm"}, "$.login"), ({"host": "a b"}, "$.host"),
                          ({"inventory": {str(i): i for i in range(65)}}, "$.inventory")]:
        with pytest.raises(RequestError) as refused:
            decode_request(json.dumps({**NODE, "req_id": 1, **change}))
        assert refused.value.field == field, change


def test_a_node_is_checked_before_the_database_sees_it() -> None:
    node = checked_node("op1", msgspec.convert({**NODE, "req_id": 1}, RegisterNode))
    assert node.host_key == HOST_KEY and node.account == "op1"
    for change, field in [({"host_key": "ssh-ed25519 AAAA"}, "$.host_key"),
                          ({"node_id": "-n17"}, "$.node_id"),
                          ({"inventory": {"notes": "x" * 8200}}, "$.inventory")]:
        request = msgspec.convert({**NODE, "req_id": 1, **change}, RegisterNode)
        with pytest.raises(RequestError) as refused:
            checked_node("op1", request)
        assert (refused.value.code, refused.value.field) == ("invalid_request", field)
    line, key_fingerprint = checked_key(RegisterSshKey(req_id=1,
                                                       public_key=HOST_KEY + " me@laptop"))
    assert line == HOST_KEY and key_fingerprint == fingerprint(HOST_KEY)
    with pytest.raises(RequestError):
        checked_key(RegisterSshKey(req_id=1, public_key="ssh-dss AAAAB3Nza"))


def assignment(certificates: list[Certificate], node: Node | None) -> Access:
    return Access(issue_id="op1-h1-n17", holder="alice", instrument="H100.eu.h1",
                  issuer="op1", node_id="n-17", quantity=5, window_start_ns=3600 * 10**9,
                  window_end_ns=7200 * 10**9, node=node, certificates=certificates)


NODE_ROW = Node(node_id="n-17", account="op1", gpu="H100-SXM-80GB", region="eu-west",
                gpu_count=8, gpu_memory_mib=81_559, host="10.1.2.3", port=2222, login="gpux",
                host_key=HOST_KEY, inventory={})


def test_an_assignment_without_a_certificate_is_pending_and_one_with_has_its_ssh_line() -> None:
    pending = access_item(assignment([], NODE_ROW))
    assert pending.pending and pending.ssh_command is None and pending.host == "10.1.2.3"
    unregistered = access_item(assignment([], None))
    assert unregistered.host is None and unregistered.pending
    certificate = Certificate(fingerprint="SHA256:ab/c+def0123456789",
                              certificate="ssh-ed25519-cert-v01@openssh.com AAAA",
                              valid_after_ns=3600 * 10**9, valid_before_ns=7200 * 10**9)
    item = access_item(assignment([certificate], NODE_ROW))
    assert not item.pending
    assert item.certificates[0].file == "gpux-op1-h1-n17-ab_c-def0123-cert.pub"
    assert item.ssh_command == (
        "ssh -i ~/.ssh/id_ed25519 -o CertificateFile=gpux-op1-h1-n17-ab_c-def0123-cert.pub "
        "-o IdentitiesOnly=yes -o UserKnownHostsFile=gpux-n-17.known_hosts "
        "-o StrictHostKeyChecking=yes -p 2222 gpux@10.1.2.3")


def test_the_sdk_writes_the_certificate_of_its_key_and_the_nodes_host_key(tmp_path: Path
                                                                           ) -> None:
    key_line = public_key_line_of(ed25519.Ed25519PrivateKey.generate())
    identity = tmp_path / "id_ed25519"
    identity.write_text("private")
    (tmp_path / "id_ed25519.pub").write_text(key_line + " me@laptop\n")
    mine = Certificate(fingerprint=fingerprint(key_line),
                       certificate="ssh-ed25519-cert-v01@openssh.com AAAAmine",
                       valid_after_ns=1, valid_before_ns=2)
    other = Certificate(fingerprint="SHA256:other", certificate="other", valid_after_ns=1,
                        valid_before_ns=2)
    item = msgspec.convert(msgspec.to_builtins(access_item(assignment([other, mine],
                                                                      NODE_ROW))), AccessItem)
    (line,) = write_access([item], identity)
    certificate = tmp_path / item.certificates[1].file
    assert certificate.read_text() == "ssh-ed25519-cert-v01@openssh.com AAAAmine\n"
    assert (tmp_path / "gpux-n-17.known_hosts").read_text() == f"[10.1.2.3]:2222 {HOST_KEY}\n"
    assert line.ssh_command is not None and f"CertificateFile={certificate}" in line.ssh_command
    (waiting,) = write_access([msgspec.structs.replace(item, certificates=[])], identity)
    assert waiting.ssh_command is None and waiting.waiting_for is not None


def hour(issue_id: str, operator: str, node_id: str, delivered_minutes: int,
         ratios: list[float]) -> HourRecord:
    return HourRecord(
        issue_id=issue_id, holder="alice", operator=operator, node_id=node_id,
        gpu="H100-SXM-80GB", region="eu-west", window_start_ns=3600 * 10**9, quantity=2,
        window_minutes=60, delivered_minutes=delivered_minutes, unmeasured_minutes=0,
        delivered_ppm=delivered_minutes * 1_000_000 // 60, challenges_passed=len(ratios),
        challenges_failed=0, throughput_ratios=ratios,
        incidents=[] if delivered_minutes == 60 else [
            Incident(first_minute=delivered_minutes, last_minute=59, outcome="unreachable")])


def row(recorded_id: int, record: HourRecord) -> ReportRow:
    return ReportRow(recorded_id=recorded_id, issue_id=record.issue_id, holder=record.holder,
                     issuer=record.operator, node_id=record.node_id,
                     delivered_ppm=record.delivered_ppm, quality=msgspec.json.encode(record))


def test_the_quality_request_is_public_and_the_feed_sends_the_operators_reported() -> None:
    core, transport, auth = make(StubDesk())
    login(core, auth, 1, None)
    core.add_reports([row(1, hour("i1", "op1", "n-1", 60, [1.5]))])
    send(core, 1, {"op": "subscribe", "req_id": 1, "channel": "quality"})
    snapshot = transport.frames[1][-1]
    assert snapshot["type"] == "quality" and snapshot["kind"] == "snapshot"
    assert [o["operator"] for o in snapshot["operators"]] == ["op1"]
    core.add_reports([row(2, hour("i2", "op2", "n-2", 45, [])),
                      ReportRow(recorded_id=3, issue_id="bad", holder="x", issuer="y",
                                node_id="z", delivered_ppm=0, quality=b"{}")])
    update = transport.frames[1][-1]
    assert update["kind"] == "update" and [o["operator"] for o in update["operators"]] == ["op2"]
    record = update["operators"][0]
    assert (record["gpu_hours_assigned"], record["gpu_hours_delivered"],
            record["delivered_share_ppm"], record["incidents_count"]) == (2, 1_500_000, 750_000,
                                                                          1)
    assert record["delivered_share_histogram"]["0-75"] == 0
    assert record["delivered_share_histogram"]["75-90"] == 1
    assert core.quality.rows_refused == 1
    send(core, 1, {"op": "quality", "req_id": 2, "operator": "op1"})
    (op1,) = replies(transport, 1)[2]["result"]["operators"]
    assert op1["throughput_ratio_percentiles"] == {"p10": 1.5, "p50": 1.5, "p90": 1.5}
    send(core, 1, {"op": "quality", "req_id": 3})
    assert len(replies(transport, 1)[3]["result"]["operators"]) == 2


def test_the_quality_board_keeps_its_bound_and_a_report_again_replaces_its_hour() -> None:
    core = make(StubDesk())[0]
    board = core.quality
    board.hours_kept_max = 2
    board.add([row(1, hour("i1", "op1", "n-1", 60, [])), row(2, hour("i2", "op1", "n-1", 30, []))],
              lambda channel, key: False)
    board.add([row(3, hour("i2", "op1", "n-1", 60, []))], lambda channel, key: False)
    assert board.operators()[0].hours == 2
    board.add([row(4, hour("i3", "op2", "n-2", 60, []))], lambda channel, key: False)
    assert [(o.operator, o.hours) for o in board.operators()] == [("op1", 1), ("op2", 1)]


def test_the_cursor_rereads_a_gap_until_it_fills_or_stays_open_too_long() -> None:
    cursor = QualityCursor(gap_polls_max=2)
    record = hour("i1", "op1", "n-1", 60, [])
    assert [r.recorded_id for r in cursor.take([row(1, record), row(3, record)])] == [1, 3]
    assert (cursor.low, cursor.seen) == (1, {3})
    cursor.poll_done()
    assert [r.recorded_id for r in cursor.take([row(2, record), row(3, record)])] == [2]
    assert (cursor.low, cursor.seen) == (3, set())
    cursor.take([row(5, record)])
    cursor.poll_done()
    cursor.poll_done()
    assert (cursor.low, cursor.seen) == (5, set()), "id 4 given up after two polls"


async def test_get_quality_is_404_without_a_delivery_database_503_before_a_read() -> None:
    board = make(StubDesk())[0].quality
    board.add([row(1, hour("i1", "op1", "n-1", 60, []))], lambda channel, key: False)
    readable = False
    served = GatewayHttp(IndexBoard(), None, None, 10, quality=board,
                         quality_readable=lambda: readable)
    assert served.quality_record("").status_code == 503
    readable = True
    response = served.quality_record("operator=op1")
    assert response.status_code == 200
    assert [o["operator"] for o in json.loads(response.body)] == ["op1"]
    assert served.quality_record("operator=op1&x=1").status_code == 400
    assert GatewayHttp(IndexBoard(), None, None, 10).quality_record("").status_code == 404


def test_the_quality_query_names_what_is_wrong() -> None:
    assert quality_query("") is None
    assert quality_query("operator=op-1") == "op-1"
    for bad in ("operator=a&operator=b", "who=op1", "operator=a%20b", "operator="):
        with pytest.raises(QueryError):
            quality_query(bad)
