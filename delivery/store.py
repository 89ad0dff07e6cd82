"""The delivery service's PostgreSQL adapter: schema `delivery`, its writes and its reads.

What the service keeps (delivery/migrations/001_delivery.sql):
- the venue's public keys (`authority`, `signers`), published at every start;
- deliverable instruments and their assignments, taken from the event log with the log
  position in the same transaction (`apply_events`), so a service killed anywhere takes
  every event exactly once: rows are inserted by their key (a second insert changes
  nothing) and events at or below the stored `last_seq` are skipped;
- the certificates issued for an assignment and a holder's key;
- the signed samples, appended one minute at a time: the table's trigger refuses a sample
  that does not extend its assignment's chain, another refuses any change or deletion;
- one report per assignment and the engine's answer to it.

Every function takes an open asyncpg connection; lists are bounded by a `limit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from delivery.evidence import StoredSample
from runtime.migrations import apply_migrations, load_migrations

__all__ = [
    "LIMIT_MAX",
    "ZERO_HASH",
    "Assignment",
    "ChainRefused",
    "Instrument",
    "MissingCertificate",
    "Progress",
    "ReportRow",
    "active_assignments",
    "append_sample",
    "apply_events",
    "assignment",
    "missing_certificates",
    "migrate",
    "next_serial",
    "pending_reports",
    "progress",
    "publish_authority",
    "publish_signer",
    "record_outcome",
    "report",
    "samples",
    "signer_keys",
    "store_certificate",
    "write_report",
]

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
LIMIT_MAX: Final = 100_000
ZERO_HASH: Final = bytes(32)
HOUR_NS: Final = 3600 * 10**9


class ChainRefused(Exception):
    """The database refused a sample: its minute is taken, or it does not extend the chain."""


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """The event log position applied: the last event's seq, the offset to read on from."""

    last_seq: int
    next_offset: int


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """A deliverable instrument as listed (`instrument_listed` with `bond_per_gpu_hour`)."""

    symbol: str
    gpu: str
    region: str
    delivery_start_ns: int
    delivery_hours: int
    listed_seq: int

    @property
    def window_end_ns(self) -> int:
        return self.delivery_start_ns + self.delivery_hours * HOUR_NS


class Assignment(msgspec.Struct, frozen=True, kw_only=True):
    """A `delivery_assigned` with its window (from the instrument) and the instrument's
    class."""

    issue_id: str
    holder: str
    instrument: str
    issuer: str
    node_id: str
    quantity: int
    window_start_ns: int
    window_end_ns: int
    assigned_seq: int
    gpu: str = ""
    region: str = ""

    @property
    def window_minutes(self) -> int:
        return (self.window_end_ns - self.window_start_ns) // (60 * 10**9)


class MissingCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """An assignment and one of its holder's keys with no certificate yet."""

    issue_id: str
    holder: str
    node_id: str
    window_start_ns: int
    window_end_ns: int
    fingerprint: str
    public_key: str


class ReportRow(msgspec.Struct, frozen=True, kw_only=True):
    """One assignment's report and, once answered, the engine's outcome."""

    issue_id: str
    holder: str
    node_id: str
    issuer: str
    delivered_ppm: int
    delivered_minutes: int
    window_minutes: int
    evidence_root: bytes
    quality: bytes  # the HourRecord's JSON
    reported_ns: int
    outcome: str | None


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIMIT_MAX}, got {limit}")


async def migrate(connection: asyncpg.Connection) -> None:
    """Apply the delivery schema's migrations not yet applied (`runtime.migrations`)."""
    await apply_migrations(connection, "delivery", load_migrations(MIGRATIONS_DIR))


# -- the venue's keys ------------------------------------------------------------------------

async def publish_authority(connection: asyncpg.Connection, ca_public_key: str,
                            now_ns: int) -> None:
    """Publish the SSH CA's public key line (replacing another one: the key file rules)."""
    await connection.execute(
        "INSERT INTO delivery.authority (name, public_key, created_ns) VALUES ('ssh_ca', $1, $2) "
        "ON CONFLICT (name) DO UPDATE SET public_key = EXCLUDED.public_key, "
        "created_ns = EXCLUDED.created_ns WHERE delivery.authority.public_key "
        "<> EXCLUDED.public_key", ca_public_key, now_ns)


async def publish_signer(connection: asyncpg.Connection, signer_id: str, public_key: bytes,
                         now_ns: int) -> None:
    """Publish a sample-signing key; a signer id already published with another key is a
    bug (the id is derived from the key) and raises."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    await connection.execute(
        "INSERT INTO delivery.signers (signer_id, public_key, created_ns) VALUES ($1, $2, $3) "
        "ON CONFLICT (signer_id) DO NOTHING", signer_id, public_key, now_ns)
    stored = await connection.fetchval(
        "SELECT public_key FROM delivery.signers WHERE signer_id = $1", signer_id)
    if bytes(stored) != public_key:
        raise ValueError(f"signer {signer_id} is published with another key")


async def signer_keys(connection: asyncpg.Connection) -> dict[str, bytes]:
    """Every published signer's raw Ed25519 public key, by signer id."""
    rows = await connection.fetch("SELECT signer_id, public_key FROM delivery.signers")
    return {row["signer_id"]: bytes(row["public_key"]) for row in rows}


# -- intake from the event log ---------------------------------------------------------------

async def progress(connection: asyncpg.Connection) -> Progress | None:
    """The log position applied so far; None before the first batch."""
    row = await connection.fetchrow(
        "SELECT last_seq, next_offset FROM delivery.progress WHERE name = 'events'")
    return None if row is None else Progress(last_seq=row["last_seq"],
                                             next_offset=row["next_offset"])


async def apply_events(connection: asyncpg.Connection, instruments: Sequence[Instrument],
                       assignments: Sequence[Assignment], position: Progress) -> None:
    """Store one batch's instruments and assignments and the position after it, in one
    transaction. Rows already stored are left as they are (a batch read again after a crash
    before its commit is the same batch)."""
    async with connection.transaction():
        stored = await progress(connection)
        if stored is not None and position.last_seq < stored.last_seq:
            raise ValueError(f"position {position.last_seq} is behind the stored "
                             f"{stored.last_seq}")
        if instruments:
            await connection.executemany(
                "INSERT INTO delivery.instruments (symbol, gpu, region, delivery_start_ns, "
                "delivery_hours, listed_seq) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (symbol) DO NOTHING",
                [(i.symbol, i.gpu, i.region, i.delivery_start_ns, i.delivery_hours,
                  i.listed_seq) for i in instruments])
        if assignments:
            await connection.executemany(
                "INSERT INTO delivery.assignments (issue_id, holder, instrument, issuer, "
                "node_id, quantity, window_start_ns, window_end_ns, assigned_seq) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                "ON CONFLICT (issue_id, holder) DO NOTHING",
                [(a.issue_id, a.holder, a.instrument, a.issuer, a.node_id, a.quantity,
                  a.window_start_ns, a.window_end_ns, a.assigned_seq) for a in assignments])
        await connection.execute(
            "INSERT INTO delivery.progress (name, last_seq, next_offset) "
            "VALUES ('events', $1, $2) ON CONFLICT (name) DO UPDATE SET "
            "last_seq = EXCLUDED.last_seq, next_offset = EXCLUDED.next_offset",
            position.last_seq, position.next_offset)


async def instruments(connection: asyncpg.Connection, symbols: Sequence[str]
                      ) -> dict[str, Instrument]:
    """The stored deliverable instruments among `symbols`."""
    rows = await connection.fetch(
        "SELECT symbol, gpu, region, delivery_start_ns, delivery_hours, listed_seq "
        "FROM delivery.instruments WHERE symbol = ANY($1::text[])", list(symbols))
    return {row["symbol"]: Instrument(**dict(row)) for row in rows}


_ASSIGNMENT_SELECT: Final = (
    "SELECT a.issue_id, a.holder, a.instrument, a.issuer, a.node_id, a.quantity, "
    "a.window_start_ns, a.window_end_ns, a.assigned_seq, i.gpu, i.region "
    "FROM delivery.assignments a JOIN delivery.instruments i ON i.symbol = a.instrument "
)


async def assignment(connection: asyncpg.Connection, issue_id: str, holder: str
                     ) -> Assignment | None:
    row = await connection.fetchrow(
        _ASSIGNMENT_SELECT + "WHERE a.issue_id = $1 AND a.holder = $2", issue_id, holder)
    return None if row is None else Assignment(**dict(row))


async def active_assignments(connection: asyncpg.Connection, starts_before_ns: int,
                             limit: int) -> list[Assignment]:
    """Assignments whose window starts before `starts_before_ns` and that have no report
    yet, oldest assignment first."""
    _check_limit(limit)
    rows = await connection.fetch(
        _ASSIGNMENT_SELECT + "WHERE a.window_start_ns < $1 AND NOT EXISTS (SELECT 1 FROM "
        "delivery.reports r WHERE r.issue_id = a.issue_id AND r.holder = a.holder) "
        "ORDER BY a.assigned_seq LIMIT $2", starts_before_ns, limit)
    return [Assignment(**dict(row)) for row in rows]


# -- certificates ----------------------------------------------------------------------------

async def missing_certificates(connection: asyncpg.Connection, now_ns: int, limit: int
                               ) -> list[MissingCertificate]:
    """(assignment, holder key) pairs with no certificate whose window has not ended."""
    _check_limit(limit)
    rows = await connection.fetch(
        "SELECT a.issue_id, a.holder, a.node_id, a.window_start_ns, a.window_end_ns, "
        "k.fingerprint, k.public_key FROM delivery.assignments a "
        "JOIN delivery.ssh_keys k ON k.account = a.holder "
        "WHERE a.window_end_ns > $1 AND NOT EXISTS (SELECT 1 FROM delivery.certificates c "
        "WHERE c.issue_id = a.issue_id AND c.holder = a.holder "
        "AND c.fingerprint = k.fingerprint) "
        "ORDER BY a.assigned_seq, k.fingerprint LIMIT $2", now_ns, limit)
    return [MissingCertificate(**dict(row)) for row in rows]


async def next_serial(connection: asyncpg.Connection) -> int:
    """A certificate serial never handed out before."""
    serial: int = await connection.fetchval("SELECT nextval('delivery.certificate_serial')")
    return serial


async def store_certificate(connection: asyncpg.Connection, missing: MissingCertificate,
                            serial: int, certificate: str, valid_after_ns: int,
                            valid_before_ns: int, issued_ns: int) -> bool:
    """Store a holder's certificate; False when one was stored for that key meanwhile."""
    status: str = await connection.execute(
        "INSERT INTO delivery.certificates (issue_id, holder, fingerprint, serial, certificate, "
        "valid_after_ns, valid_before_ns, issued_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (issue_id, holder, fingerprint) DO NOTHING",
        missing.issue_id, missing.holder, missing.fingerprint, serial, certificate,
        valid_after_ns, valid_before_ns, issued_ns)
    return status.endswith(" 1")


# -- samples ---------------------------------------------------------------------------------

async def append_sample(connection: asyncpg.Connection, issue_id: str, holder: str,
                        sample: StoredSample, written_ns: int) -> None:
    """Append one minute's signed sample; `ChainRefused` when that minute is stored already
    or the sample does not extend the stored chain (the table's trigger checks the link)."""
    try:
        await connection.execute(
            "INSERT INTO delivery.samples (issue_id, holder, minute, body, sample_hash, "
            "prev_hash, signer_id, signature, written_ns) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            issue_id, holder, sample.minute, sample.body, sample.sample_hash,
            sample.prev_hash, sample.signer_id, sample.signature, written_ns)
    except (asyncpg.UniqueViolationError, asyncpg.CheckViolationError) as error:
        raise ChainRefused(
            f"sample {issue_id}/{holder} minute {sample.minute}: {error}") from error


async def samples(connection: asyncpg.Connection, issue_id: str, holder: str
                  ) -> list[StoredSample]:
    """An assignment's samples in minute order (at most a window's minutes: bounded by the
    trigger)."""
    rows = await connection.fetch(
        "SELECT minute, body, sample_hash, prev_hash, signer_id, signature "
        "FROM delivery.samples WHERE issue_id = $1 AND holder = $2 ORDER BY minute",
        issue_id, holder)
    return [StoredSample(minute=row["minute"], body=bytes(row["body"]),
                         sample_hash=bytes(row["sample_hash"]),
                         prev_hash=bytes(row["prev_hash"]), signer_id=row["signer_id"],
                         signature=bytes(row["signature"])) for row in rows]


# -- reports ---------------------------------------------------------------------------------

_REPORT_COLUMNS: Final = (
    "issue_id", "holder", "node_id", "issuer", "delivered_ppm", "delivered_minutes",
    "window_minutes", "evidence_root", "quality", "reported_ns", "outcome",
)


def _report(row: asyncpg.Record) -> ReportRow:
    values = dict(row)
    values["evidence_root"] = bytes(values["evidence_root"])
    values["quality"] = str(values["quality"]).encode()
    return ReportRow(**values)


async def write_report(connection: asyncpg.Connection, row: ReportRow) -> ReportRow:
    """Store an assignment's report unless one is stored; return the stored one."""
    await connection.execute(
        "INSERT INTO delivery.reports (" + ", ".join(_REPORT_COLUMNS) + ") VALUES ("
        "$1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11) "
        "ON CONFLICT (issue_id, holder) DO NOTHING",
        row.issue_id, row.holder, row.node_id, row.issuer, row.delivered_ppm,
        row.delivered_minutes, row.window_minutes, row.evidence_root, row.quality.decode(),
        row.reported_ns, row.outcome)
    stored = await report(connection, row.issue_id, row.holder)
    if stored is None:
        raise RuntimeError("a report written is not read back")
    return stored


async def report(connection: asyncpg.Connection, issue_id: str, holder: str
                 ) -> ReportRow | None:
    row = await connection.fetchrow(
        "SELECT " + ", ".join(_REPORT_COLUMNS) + " FROM delivery.reports "
        "WHERE issue_id = $1 AND holder = $2", issue_id, holder)
    return None if row is None else _report(row)


async def pending_reports(connection: asyncpg.Connection, limit: int) -> list[ReportRow]:
    """Reports the engine has not answered yet, oldest first."""
    _check_limit(limit)
    rows = await connection.fetch(
        "SELECT " + ", ".join(_REPORT_COLUMNS) + " FROM delivery.reports "
        "WHERE outcome IS NULL ORDER BY recorded_id LIMIT $1", limit)
    return [_report(row) for row in rows]


async def record_outcome(connection: asyncpg.Connection, issue_id: str, holder: str,
                         outcome: str) -> None:
    """Record the engine's answer to a report (the first answer stays)."""
    await connection.execute(
        "UPDATE delivery.reports SET outcome = $3 WHERE issue_id = $1 AND holder = $2 "
        "AND outcome IS NULL", issue_id, holder, outcome)
