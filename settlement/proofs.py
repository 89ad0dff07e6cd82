"""Proof of a fill: its batch, the settling transaction, the Merkle proof, and checks of it
against the root the Vault holds on chain (locally and by the Vault's own `verifyFill`)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec

from settlement import store
from settlement.chain import Contracts, call_rpc
from settlement.errors import SettlementError
from settlement.merkle import MerkleTree, verify


class FillProof(msgspec.Struct, frozen=True, kw_only=True):
    """A fill's proof. Ids and the fill's integers (uint256 on chain: the token id, the
    amounts) are decimal strings, which no JSON reader rounds (a JavaScript verifier would
    round a 76-digit token id and recompute a wrong leaf)."""

    trade_id: str
    batch_id: str
    batch_status: str
    tx_hash: str | None
    block_number: int | None
    fill: dict[str, str]
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


def _as_strings(fields: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in fields.items()}


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


async def prove(conn: asyncpg.Connection, contracts: Contracts, trade_id: str) -> FillProof:
    """Build and check the proof of trade `trade_id`; raise SettlementError if not batched."""
    stored = await store.find_fill(conn, trade_id)
    if stored is None:
        raise SettlementError(f"trade {trade_id} is in no batch yet")
    batch = await store.get_batch(conn, stored.batch_id)
    if batch is None:
        raise SettlementError(f"batch {stored.batch_id} of trade {trade_id} is missing")
    tree = MerkleTree(await store.batch_leaves(conn, batch.batch_id))
    leaf = stored.fill.leaf()
    if tree.levels[0][stored.leaf_index] != leaf or tree.root != batch.fills_root:
        raise SettlementError(f"batch {batch.batch_id}'s stored leaves do not match its root")
    proof = tree.proof(stored.leaf_index)
    chain_root = await asyncio.to_thread(contracts.batch_root, batch.batch_id)
    by_vault = await asyncio.to_thread(
        call_rpc,
        lambda: bool(contracts.vault.functions.verifyFill(batch.batch_id, proof, leaf).call()),
        "Vault.verifyFill",
    )
    return FillProof(
        trade_id=trade_id, batch_id=str(batch.batch_id), batch_status=batch.status,
        tx_hash=_hex(batch.tx_hash) if batch.tx_hash else None,
        block_number=batch.block_number, fill=_as_strings(msgspec.to_builtins(stored.fill)),
        leaf_index=stored.leaf_index, leaf=_hex(leaf), proof=[_hex(node) for node in proof],
        stored_root=_hex(batch.fills_root), chain_root=_hex(chain_root),
        verified_locally=verify(proof, chain_root, leaf), verified_by_vault=by_vault,
    )  # fmt: skip
