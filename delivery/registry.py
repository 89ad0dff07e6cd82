"""The gateway's reads and writes of the delivery schema (delivery/migrations): nodes their
operators register, holders' SSH public keys, the certificate authority's public key, the
holders' assignments with their nodes and certificates, and the measured reports the
quality record is made of. asyncpg, like `index.store`; the delivery service (delivery.store)
owns every other write, and reads a node through `node` here.

Why a module of its own: the gateway needs a handful of statements over tables the service
writes, and nothing of the service; both sides apply the same migrations, so either may
start first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from runtime.migrations import apply_migrations, load_migrations

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
SSH_CA: Final = "ssh_ca"


async def migrate(connection: asyncpg.Connection) -> None:
    """Apply the delivery schema's migrations not yet applied (`runtime.migrations`)."""
    await apply_migrations(connection, "delivery", load_migrations(MIGRATIONS_DIR))


# -- the certificate authority ---------------------------------------------------------------

async def ca_public_key(connection: asyncpg.Connection) -> str | None:
    """The SSH CA's public key line, None until a delivery service has published it."""
    key: str | None = await connection.fetchval(
        "SELECT public_key FROM delivery.authority WHERE name = $1", SSH_CA)
    return key


async def publish_ca(connection: asyncpg.Connection, public_key: str, now_ns: int) -> None:
    """Record the CA's public key (the delivery service does at its start; tests too)."""
    await connection.execute(
        "INSERT INTO delivery.authority (name, public_key, created_ns) VALUES ($1, $2, $3) "
        "ON CONFLICT (name) DO UPDATE SET public_key = EXCLUDED.public_key", SSH_CA,
        public_key, now_ns)


# -- nodes -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Node:
    """A node as `register_node` records it; `inventory` is the agent's JSON object."""

    node_id: str
    account: str
    gpu: str
    region: str
    gpu_count: int
    gpu_memory_mib: int
    host: str
    port: int
    login: str
    host_key: str
    inventory: dict[str, Any]


async def register_node(connection: asyncpg.Connection, node: Node, now_ns: int) -> str:
    """Insert `node`, or update it when its account registered it before; return the account
    that owns the node id: `node.account` when written, another one when refused."""
    owner: str | None = await connection.fetchval(
        """
        INSERT INTO delivery.nodes (node_id, account, gpu, region, gpu_count, gpu_memory_mib,
                                    host, port, login, host_key, inventory, registered_ns,
                                    updated_ns)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $12)
        ON CONFLICT (node_id) DO UPDATE SET
            gpu = EXCLUDED.gpu, region = EXCLUDED.region, gpu_count = EXCLUDED.gpu_count,
            gpu_memory_mib = EXCLUDED.gpu_memory_mib, host = EXCLUDED.host,
            port = EXCLUDED.port, login = EXCLUDED.login, host_key = EXCLUDED.host_key,
            inventory = EXCLUDED.inventory, updated_ns = EXCLUDED.updated_ns
        WHERE delivery.nodes.account = EXCLUDED.account
        RETURNING account
        """, node.node_id, node.account, node.gpu, node.region, node.gpu_count,
        node.gpu_memory_mib, node.host, node.port, node.login, node.host_key,
        msgspec.json.encode(node.inventory).decode(), now_ns)
    if owner is not None:
        return owner
    other: str = await connection.fetchval(
        "SELECT account FROM delivery.nodes WHERE node_id = $1", node.node_id)
    return other


async def node(connection: asyncpg.Connection, node_id: str) -> Node | None:
    """The node registered as `node_id`, None when there is none (the gateway's requests and
    the delivery service's probes read it alike)."""
    row = await connection.fetchrow("SELECT * FROM delivery.nodes WHERE node_id = $1", node_id)
    return None if row is None else _node(row)


def _node(row: Any) -> Node:
    """The Node of a row with the columns of `delivery.nodes`."""
    return Node(node_id=row["node_id"], account=row["account"], gpu=row["gpu"],
                region=row["region"], gpu_count=row["gpu_count"],
                gpu_memory_mib=row["gpu_memory_mib"], host=row["host"], port=row["port"],
                login=row["login"], host_key=row["host_key"],
                inventory=msgspec.json.decode(row["inventory"]))


# -- holders' SSH keys -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeyAdded:
    """What `add_ssh_key` did: `added` False when the key was there already or the account
    has `keys_max` keys (`count` then says how many)."""

    added: bool
    known: bool
    count: int


async def add_ssh_key(connection: asyncpg.Connection, account: str, fingerprint: str,
                      public_key: str, now_ns: int, keys_max: int) -> KeyAdded:
    """Record an account's SSH public key unless it is known or the account has `keys_max`
    keys; the account's keys are counted and written under a lock of the account, so two
    registrations at once cannot pass the bound together."""
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('delivery.ssh_keys:' || $1, 0))",
            account)
        known = await connection.fetchval(
            "SELECT 1 FROM delivery.ssh_keys WHERE account = $1 AND fingerprint = $2",
            account, fingerprint)
        count: int = await connection.fetchval(
            "SELECT count(*) FROM delivery.ssh_keys WHERE account = $1", account)
        if known is not None:
            return KeyAdded(added=False, known=True, count=count)
        if count >= keys_max:
            return KeyAdded(added=False, known=False, count=count)
        await connection.execute(
            "INSERT INTO delivery.ssh_keys (account, fingerprint, public_key, added_ns) "
            "VALUES ($1, $2, $3, $4)", account, fingerprint, public_key, now_ns)
        return KeyAdded(added=True, known=False, count=count + 1)


async def ssh_keys(connection: asyncpg.Connection, account: str) -> list[tuple[str, str]]:
    """The account's keys as (fingerprint, public key line), oldest first."""
    rows = await connection.fetch(
        "SELECT fingerprint, public_key FROM delivery.ssh_keys WHERE account = $1 "
        "ORDER BY added_ns, fingerprint", account)
    return [(row["fingerprint"], row["public_key"]) for row in rows]


# -- access ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Certificate:
    fingerprint: str
    certificate: str
    valid_after_ns: int
    valid_before_ns: int


@dataclass(frozen=True, slots=True)
class Access:
    """One assignment of a holder with its node (None while no node of that id is
    registered) and the certificates issued for it so far, by fingerprint."""

    issue_id: str
    holder: str
    instrument: str
    issuer: str
    node_id: str
    quantity: int
    window_start_ns: int
    window_end_ns: int
    node: Node | None
    certificates: list[Certificate]


async def access(connection: asyncpg.Connection, holder: str, issue_id: str | None,
                 limit: int) -> list[Access]:
    """The holder's assignments (one issue's when `issue_id` is given), the latest windows
    first, at most `limit`, each with its node and certificates."""
    rows = await connection.fetch(
        """
        SELECT a.issue_id, a.holder, a.instrument, a.issuer, a.node_id, a.quantity,
               a.window_start_ns, a.window_end_ns, n.account, n.gpu, n.region, n.gpu_count,
               n.gpu_memory_mib, n.host, n.port, n.login, n.host_key, n.inventory
        FROM delivery.assignments a LEFT JOIN delivery.nodes n ON n.node_id = a.node_id
        WHERE a.holder = $1 AND ($2::text IS NULL OR a.issue_id = $2)
        ORDER BY a.window_start_ns DESC, a.issue_id
        LIMIT $3
        """, holder, issue_id, limit)
    if not rows:
        return []
    certificates = await connection.fetch(
        "SELECT issue_id, fingerprint, certificate, valid_after_ns, valid_before_ns "
        "FROM delivery.certificates WHERE holder = $1 AND issue_id = ANY($2::text[]) "
        "ORDER BY issue_id, fingerprint", holder, [row["issue_id"] for row in rows])
    by_issue: dict[str, list[Certificate]] = {}
    for row in certificates:
        by_issue.setdefault(row["issue_id"], []).append(Certificate(
            fingerprint=row["fingerprint"], certificate=row["certificate"],
            valid_after_ns=row["valid_after_ns"], valid_before_ns=row["valid_before_ns"]))
    return [_access(row, by_issue.get(row["issue_id"], [])) for row in rows]


def _access(row: Any, certificates: list[Certificate]) -> Access:
    node = None if row["account"] is None else _node(row)
    return Access(issue_id=row["issue_id"], holder=row["holder"], instrument=row["instrument"],
                  issuer=row["issuer"], node_id=row["node_id"], quantity=row["quantity"],
                  window_start_ns=row["window_start_ns"], window_end_ns=row["window_end_ns"],
                  node=node, certificates=certificates)


# -- reports (the quality record) ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReportRow:
    """A report as the quality record reads it: `quality` is the stored JSON of the
    assignment's `delivery.quality.HourRecord`, undecoded."""

    recorded_id: int
    issue_id: str
    holder: str
    issuer: str
    node_id: str
    delivered_ppm: int
    quality: bytes


async def reports_after(connection: asyncpg.Connection, recorded_id: int, limit: int,
                        skip: Sequence[int] = ()) -> list[ReportRow]:
    """The reports recorded after `recorded_id` but those in `skip` (read already), in
    recorded_id order, at most `limit`."""
    rows = await connection.fetch(
        "SELECT recorded_id, issue_id, holder, issuer, node_id, delivered_ppm, "
        "quality::text AS quality FROM delivery.reports WHERE recorded_id > $1 "
        "AND recorded_id <> ALL($3::bigint[]) ORDER BY recorded_id LIMIT $2",
        recorded_id, limit, list(skip))
    return [ReportRow(recorded_id=row["recorded_id"], issue_id=row["issue_id"],
                      holder=row["holder"], issuer=row["issuer"], node_id=row["node_id"],
                      delivered_ppm=row["delivered_ppm"], quality=row["quality"].encode())
            for row in rows]


__all__ = ["Access", "Certificate", "KeyAdded", "Node", "ReportRow", "access", "add_ssh_key",
           "ca_public_key", "migrate", "node", "publish_ca", "register_node", "reports_after",
           "ssh_keys"]
