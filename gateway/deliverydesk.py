"""The delivery requests the gateway answers from the delivery database, not the engine:
`register_node` (an operator's node, its address and host key), `register_ssh_key` (a
holder's key the delivery service certifies for each assignment) and `delivery_access` (the
holder's assignments with node, window, certificates and `ssh` line).

The core (gateway.core) checks the role and hands a request to the `DeliveryDesk`, which
runs it off the request path, a bounded number at a time, through `delivery.registry`, then
tells the core the result or the RequestError to reply with. Errors:
`invalid_request` naming the field (a key or node id the delivery service cannot use),
`forbidden` (a node id another account registered), `ssh_key_limit` (the account has
`ssh_keys_per_account_max` keys), `unavailable` (no delivery database on this gateway; the
database unreadable, or no delivery service has published its certificate authority yet:
`retry_after_ms`).

Cancellation: the tasks are cancelled by `close`; a cancelled request is not answered (its
connection is closing).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from delivery import registry
from delivery.ca import PROBER_PRINCIPAL, holder_principal, parse_public_key, require_node_id
from delivery.errors import DeliveryError
from gateway.deliverysource import READ_ERRORS, DeliverySource
from wsapi.errors import (
    FORBIDDEN,
    INVALID_REQUEST,
    OVERLOADED,
    SSH_KEY_LIMIT,
    UNAVAILABLE,
    RequestError,
)
from wsapi.messages import (
    AccessCertificate,
    AccessItem,
    DeliveryAccessResult,
    RegisterNodeResult,
    SshKeyResult,
)
from wsapi.requests import (
    INVENTORY_BYTES_MAX,
    DeliveryAccess,
    RegisterNode,
    RegisterSshKey,
)

log = logging.getLogger("gpux.gateway.delivery")

DeskRequest = RegisterNode | RegisterSshKey | DeliveryAccess
# Called with (conn_id, req_id, op, the result or the refusal).
Answer = Callable[[int, int, str, "msgspec.Struct | RequestError"], None]

IN_FLIGHT_MAX: Final = 64
CA_RETRY_MS: Final = 5_000
READ_RETRY_MS: Final = 1_000
# The identity file OpenSSH tries by default for each key type: the `ssh` line the gateway
# shows names it; `gpux trade access` writes the certificate beside the real one.
DEFAULT_IDENTITY: Final = {
    "ssh-ed25519": "id_ed25519", "ecdsa-sha2-nistp256": "id_ecdsa",
    "ecdsa-sha2-nistp384": "id_ecdsa", "ecdsa-sha2-nistp521": "id_ecdsa", "ssh-rsa": "id_rsa",
}


# -- pure parts ------------------------------------------------------------------------------

def checked_node(account: str, request: RegisterNode) -> registry.Node:
    """The node to record, its host key in canonical form; RequestError names the field the
    delivery service could not use."""
    try:
        require_node_id(request.node_id)
    except DeliveryError as error:
        raise RequestError(INVALID_REQUEST, str(error), field="$.node_id") from None
    try:
        host_key, _ = parse_public_key(request.host_key)
    except DeliveryError as error:
        raise RequestError(INVALID_REQUEST, f"host_key: {error}", field="$.host_key") from None
    if len(msgspec.json.encode(request.inventory)) > INVENTORY_BYTES_MAX:
        raise RequestError(INVALID_REQUEST, f"the inventory is over {INVENTORY_BYTES_MAX} "
                           "bytes of JSON", field="$.inventory")
    return registry.Node(
        node_id=request.node_id, account=account, gpu=request.gpu, region=request.region,
        gpu_count=request.gpu_count, gpu_memory_mib=request.gpu_memory_mib, host=request.host,
        port=request.port, login=request.login, host_key=host_key,
        inventory=dict(request.inventory))


def checked_key(request: RegisterSshKey) -> tuple[str, str]:
    """(the key line without its comment, its fingerprint); RequestError names the field."""
    try:
        return parse_public_key(request.public_key)
    except DeliveryError as error:
        raise RequestError(INVALID_REQUEST, str(error), field="$.public_key") from None


def certificate_file(issue_id: str, fingerprint: str) -> str:
    """The file name a certificate is written under: the issue and the key's fingerprint
    (its first 12 base64 characters, made safe for a file name)."""
    digest = fingerprint.removeprefix("SHA256:")[:12].replace("/", "_").replace("+", "-")
    return f"gpux-{issue_id}-{digest}-cert.pub"


def known_hosts_file(node_id: str) -> str:
    return f"gpux-{node_id}.known_hosts"


def access_command(login: str, host: str, port: int, certificate: str, certificate_path: str,
                   known_hosts_path: str) -> str:
    """The `ssh` line of an assignment: OpenSSH's default identity file of the key type the
    certificate is for, the certificate and known_hosts files by their relative names."""
    key_type = certificate.split(" ", 1)[0].removesuffix("-cert-v01@openssh.com")
    identity = DEFAULT_IDENTITY.get(key_type, "id_ed25519")
    words = ["-o", f"CertificateFile={certificate_path}", "-o", "IdentitiesOnly=yes",
             "-o", f"UserKnownHostsFile={known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
             "-p", str(port), f"{login}@{host}"]
    return f"ssh -i ~/.ssh/{identity} {shlex.join(words)}"


def access_item(access: registry.Access) -> AccessItem:
    """One assignment as `delivery_access` shows it."""
    certificates = [AccessCertificate(fingerprint=c.fingerprint, certificate=c.certificate,
                                      file=certificate_file(access.issue_id, c.fingerprint))
                    for c in access.certificates]
    node = access.node
    common: dict[str, Any] = dict(
        issue_id=access.issue_id, instrument=access.instrument, node_id=access.node_id,
        issuer=access.issuer, quantity=access.quantity, window_start=access.window_start_ns,
        window_end=access.window_end_ns, certificates=certificates,
        pending=not certificates)
    if node is None:
        return AccessItem(**common)
    hosts_file = known_hosts_file(node.node_id)
    command = None if not certificates else access_command(
        node.login, node.host, node.port, certificates[0].certificate, certificates[0].file,
        hosts_file)
    return AccessItem(**common, host=node.host, port=node.port, login=node.login,
                      host_key=node.host_key, known_hosts_file=hosts_file, ssh_command=command)


# -- the desk --------------------------------------------------------------------------------

class DeliveryDesk:
    """Answer the delivery requests from the delivery database, `IN_FLIGHT_MAX` at a time."""

    def __init__(self, source: DeliverySource | None, *, ssh_keys_per_account_max: int,
                 access_assignments_max: int) -> None:
        """`source` None: this gateway serves no delivery database (every request is
        refused `unavailable`)."""
        if ssh_keys_per_account_max < 1 or access_assignments_max < 1:
            raise ValueError("ssh_keys_per_account_max and access_assignments_max must be >= 1")
        self.source = source
        self.ssh_keys_per_account_max = ssh_keys_per_account_max
        self.access_assignments_max = access_assignments_max
        self.answer: Answer | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def begin(self, conn_id: int, req_id: int, op: str, account: str,
              request: DeskRequest) -> None:
        """Answer `request` of `account` in the background, then call `answer`."""
        if self.source is None:
            self._answer(conn_id, req_id, op, RequestError(
                UNAVAILABLE, "this gateway serves no delivery database"))
            return
        if len(self.tasks) >= IN_FLIGHT_MAX:
            self._answer(conn_id, req_id, op, RequestError(
                OVERLOADED, "too many delivery requests in progress", retry_after_ms=200))
            return
        task = asyncio.get_running_loop().create_task(
            self._run(self.source, conn_id, req_id, op, account, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, source: DeliverySource, conn_id: int, req_id: int, op: str,
                   account: str, request: DeskRequest) -> None:
        try:
            outcome: msgspec.Struct | RequestError = await self.handle(source, account, request)
        except RequestError as error:
            outcome = error
        except READ_ERRORS as error:
            log.warning("%s: the delivery database failed: %s", op, error)
            outcome = RequestError(UNAVAILABLE, "the delivery database cannot be reached now",
                                   retry_after_ms=READ_RETRY_MS)
        except Exception as error:  # noqa: BLE001 -- every request gets its one reply
            log.exception("%s failed", op)
            outcome = RequestError(UNAVAILABLE, f"{op} failed ({type(error).__name__})")
        self._answer(conn_id, req_id, op, outcome)

    async def handle(self, source: DeliverySource, account: str,
                     request: DeskRequest) -> msgspec.Struct:
        """The result of one request; RequestError for a refusal."""
        now_ns = time.time_ns()
        if isinstance(request, RegisterNode):
            return await self._register_node(source, account, request, now_ns)
        if isinstance(request, RegisterSshKey):
            return await self._register_key(source, account, request, now_ns)
        issue_id = request.issue_id
        rows = await source.run(lambda c: registry.access(
            c, account, issue_id, self.access_assignments_max))
        return DeliveryAccessResult(assignments=[access_item(row) for row in rows])

    async def _register_node(self, source: DeliverySource, account: str,
                             request: RegisterNode, now_ns: int) -> RegisterNodeResult:
        node = checked_node(account, request)
        ca_key = await source.run(registry.ca_public_key)
        if ca_key is None:
            raise RequestError(UNAVAILABLE, "no delivery service has published its SSH "
                               "certificate authority yet; try again",
                               retry_after_ms=CA_RETRY_MS)
        owner = await source.run(lambda c: registry.register_node(c, node, now_ns))
        if owner != account:
            raise RequestError(FORBIDDEN, f"node {node.node_id} is registered by another "
                               "account", field="$.node_id")
        return RegisterNodeResult(node_id=node.node_id, ca_public_key=ca_key,
                                  holder_principal=holder_principal(node.node_id),
                                  prober_principal=PROBER_PRINCIPAL)

    async def _register_key(self, source: DeliverySource, account: str,
                            request: RegisterSshKey, now_ns: int) -> SshKeyResult:
        line, fingerprint = checked_key(request)
        keys_max = self.ssh_keys_per_account_max
        added = await source.run(lambda c: registry.add_ssh_key(
            c, account, fingerprint, line, now_ns, keys_max))
        if not added.added and not added.known:
            raise RequestError(SSH_KEY_LIMIT, f"the account has {added.count} SSH keys, the "
                               f"most it may register", field="$.public_key")
        return SshKeyResult(fingerprint=fingerprint, added=added.added)

    def _answer(self, conn_id: int, req_id: int, op: str,
                outcome: msgspec.Struct | RequestError) -> None:
        if self.answer is None:
            raise RuntimeError("the core sets DeliveryDesk.answer before any request")
        self.answer(conn_id, req_id, op, outcome)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


__all__ = ["DeliveryDesk", "DeskRequest", "access_command", "access_item", "certificate_file",
           "checked_key", "checked_node", "known_hosts_file"]
