"""Proof of a fill, a delivery move or a delivery report's evidence: its batch, the settling
transaction, the Merkle proof, and checks of it against the root the Vault holds on chain
(locally and by the Vault's own `verifyLeaf`)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec

from settlement import store
from settlement.chain import Contracts, call_rpc
from settlement.errors import SettlementError
from settlement.merkle import MerkleTree, verify
from settlement.moves import asset_id


class _Proof(msgspec.Struct, frozen=True, kw_only=True):
    """What every proof holds. Ids and integers that are uint256 on chain (the token id, the
    amounts) are decimal strings, which no JSON reader rounds (a JavaScript verifier would
    round a 76-digit token id and recompute a wrong leaf)."""

    batch_id: str
    batch_status: str
    tx_hash: str | None
    block_number: int | None
    leaf_index: int
    leaf: str
    proof: list[str]
    stored_root: str
    chain_root: str
    verified_locally: bool
    verified_by_vault: bool

    @property
    def verified(self) -> bool:
        return self.verified_locally and self.verified_by_vault


class FillProof(_Proof, frozen=True, kw_only=True):
    """A fill's proof: `fill` holds the fields its leaf encodes."""

    trade_id: str
    fill: dict[str, str]


class MoveProof(_Proof, frozen=True, kw_only=True):
    """A delivery move's proof: the ledger's posting (seq, account, asset) and, in `move`, the
    fields its leaf encodes."""

    seq: int
    account: str
    asset: str
    move: dict[str, str]


class EvidenceProof(_Proof, frozen=True, kw_only=True):
    """A delivery report's proof: the assignment (issue_id, holder), the report's seq and, in
    `evidence`, the fields its leaf encodes (delivered_ppm, the evidence string)."""

    issue_id: str
    holder: str
    seq: int
    evidence: dict[str, str]


def _as_strings(fields: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in fields.items()}


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


async def _check(conn: asyncpg.Connection, contracts: Contracts, what: str, batch_id: int,
                 leaf_index: int, leaf: bytes) -> dict[str, Any]:
    """Prove leaf `leaf_index` of batch `batch_id` against its root on chain; return the
    fields every proof has."""
    batch = await store.get_batch(conn, batch_id)
    if batch is None:
        raise SettlementError(f"batch {batch_id} of {what} is missing")
    tree = MerkleTree(await store.batch_leaves(conn, batch.batch_id))
    if tree.levels[0][leaf_index] != leaf or tree.root != batch.fills_root:
        raise SettlementError(f"batch {batch.batch_id}'s stored leaves do not match its root")
    proof = tree.proof(leaf_index)
    chain_root, by_vault = await on_chain(contracts, batch.batch_id, proof, leaf)
    return {
        "batch_id": str(batch.batch_id), "batch_status": batch.status,
        "tx_hash": _hex(batch.tx_hash) if batch.tx_hash else None,
        "block_number": batch.block_number, "leaf_index": leaf_index, "leaf": _hex(leaf),
        "proof": [_hex(node) for node in proof], "stored_root": _hex(batch.fills_root),
        "chain_root": _hex(chain_root), "verified_locally": verify(proof, chain_root, leaf),
        "verified_by_vault": by_vault,
    }  # fmt: skip


async def on_chain(contracts: Contracts, batch_id: int, proof: list[bytes], leaf: bytes
                   ) -> tuple[bytes, bool]:
    """Return batch `batch_id`'s root on chain (zeros before it settles) and whether the
    Vault's `verifyLeaf` takes `proof` of `leaf` against it."""
    chain_root = await asyncio.to_thread(contracts.batch_root, batch_id)
    by_vault = await asyncio.to_thread(
        call_rpc,
        lambda: bool(contracts.vault.functions.verifyLeaf(batch_id, proof, leaf).call()),
        "Vault.verifyLeaf",
    )
    return chain_root, by_vault


async def prove(conn: asyncpg.Connection, contracts: Contracts, trade_id: str) -> FillProof:
    """Build and check the proof of trade `trade_id`; raise SettlementError if not batched."""
    stored = await store.find_fill(conn, trade_id)
    if stored is None:
        raise SettlementError(f"trade {trade_id} is in no batch yet")
    checked = await _check(conn, contracts, f"trade {trade_id}", stored.batch_id,
                           stored.leaf_index, stored.fill.leaf())
    return FillProof(trade_id=trade_id, fill=_as_strings(msgspec.to_builtins(stored.fill)),
                     **checked)


async def prove_move(conn: asyncpg.Connection, contracts: Contracts, seq: int, account: str,
                     asset: str) -> MoveProof:
    """Build and check the proof of the ledger's delivery posting (seq, account, asset: "USDC"
    or an instrument symbol); raise SettlementError if it is in no batch."""
    what = f"the posting of seq {seq} to {account} in {asset}"
    stored = await store.find_move(conn, seq, account, asset_id(asset))
    if stored is None:
        raise SettlementError(f"{what} is in no batch yet")
    checked = await _check(conn, contracts, what, stored.batch_id, stored.leaf_index,
                           stored.move.leaf())
    return MoveProof(seq=seq, account=account, asset=asset,
                     move=_as_strings(msgspec.to_builtins(stored.move)), **checked)


async def prove_evidence(conn: asyncpg.Connection, contracts: Contracts, issue_id: str,
                         holder: str) -> EvidenceProof:
    """Build and check the proof of the delivery report of (`issue_id`, `holder`) as the
    ledger recorded it; raise SettlementError if it is in no batch."""
    what = f"the delivery report of {issue_id} for {holder}"
    stored = await store.find_evidence(conn, issue_id, holder)
    if stored is None:
        raise SettlementError(f"{what} is in no batch yet")
    checked = await _check(conn, contracts, what, stored.batch_id, stored.leaf_index,
                           stored.evidence.leaf())
    return EvidenceProof(issue_id=issue_id, holder=holder, seq=stored.evidence.seq,
                         evidence=_as_strings(msgspec.to_builtins(stored.evidence)),
                         **checked)
