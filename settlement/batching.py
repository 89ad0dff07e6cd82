"""Cut a batch from unsettled trades: resolve accounts, net, build the Merkle tree. Pure.

Batches are contiguous runs of trades in seq order, so "settled through seq S" is one
number. A trade whose buyer or seller has no wallet address stops the batch before it (the
batch waits for the registration rather than skipping the trade: a later batch cannot settle
a fill that an earlier one left out without breaking that order). The fee account must have
an address for any batch to be cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from protocol import FEE_ACCOUNT
from settlement.chain import token_id
from settlement.fills import (
    BATCH_ASSETS_MAX,
    ChainFill,
    Fill,
    check_zero_sum,
    encode_deltas,
    net,
    to_chain_fill,
)
from settlement.merkle import MerkleTree


class BatchPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a new batch holds: its fills, their tree root, and the packed deltas."""

    fills: list[ChainFill]
    trade_ids: list[str]
    fills_root: bytes
    assets: list[int]
    deltas: list[int]

    @property
    def first_seq(self) -> int:
        return self.fills[0].seq

    @property
    def last_seq(self) -> int:
        return self.fills[-1].seq


class Blocked(msgspec.Struct, frozen=True):
    """No batch can be cut yet: the first trade waits for these accounts' addresses."""

    seq: int
    accounts: list[str]


def settleable_prefix(fills: Sequence[Fill], addresses: Mapping[str, str]
                      ) -> tuple[list[Fill], Blocked | None]:
    """Return the longest prefix of `fills` that can settle, and what stops the rest."""
    if FEE_ACCOUNT not in addresses:
        return [], Blocked(fills[0].seq if fills else 0, [FEE_ACCOUNT])
    prefix: list[Fill] = []
    instruments: set[str] = set()
    for fill in fills:
        missing = sorted({fill.buyer, fill.seller} - addresses.keys())
        if missing:
            return prefix, Blocked(fill.seq, missing)
        if fill.instrument not in instruments and len(instruments) + 1 >= BATCH_ASSETS_MAX:
            return prefix, None  # the vault takes at most 256 assets (USDC included)
        instruments.add(fill.instrument)
        prefix.append(fill)
    return prefix, None


def plan_batch(fills: Sequence[Fill], addresses: Mapping[str, str]) -> BatchPlan:
    """Net `fills` (all accounts resolved) into one batch."""
    if not fills:
        raise ValueError("a batch needs at least one fill")
    chain_fills = [to_chain_fill(fill, addresses, token_id(fill.instrument)) for fill in fills]
    net_deltas = encode_deltas(net(chain_fills, addresses[FEE_ACCOUNT]))
    check_zero_sum(net_deltas)
    tree = MerkleTree([fill.leaf() for fill in chain_fills])
    return BatchPlan(fills=chain_fills, trade_ids=[fill.trade_id for fill in fills],
                     fills_root=tree.root, assets=net_deltas.assets, deltas=net_deltas.deltas)
