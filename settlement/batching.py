"""Cut a batch from unsettled trades, delivery moves and delivery reports: resolve accounts,
net, build the Merkle tree. Pure.

Batches are contiguous runs of the ledger's seqs (trades, the postings of delivery entries,
and delivery reports), so "settled through seq S" is one number. A trade or entry whose
account has no wallet address stops the batch before it (the batch waits for the
registration rather than skipping it: a later batch cannot settle what an earlier one left
out without breaking that order). An entry is never split: all its postings (and its report)
settle in one batch. The fee account must have an address for any batch to be cut.

A redemption (the `redeemed` entry of a close) also waits for the payout of every withdrawal
before it: once the Vault has burned the instrument's tokens it pays none of them out, and a
withdrawal of the token before the close is owed.

A delivery report (`settlement.reports`) settles with the entry of its seq, when it has
one: it needs no address and moves no asset, and its evidence leaf only commits the
measurement to the batch's root.

The tree's leaves are the batch's fills, then its moves, then its reports' evidence leaves,
each in seq order (a batch without reports has exactly the tree it had before reports were
batched).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from protocol import FEE_ACCOUNT
from settlement.chain import token_id
from settlement.fills import (
    BATCH_ASSETS_MAX,
    USDC_ASSET,
    ChainFill,
    Fill,
    SupplyTuple,
    accounts_of,
    check_zero_sum,
    encode_deltas,
    net,
    to_chain_fill,
)
from settlement.merkle import MerkleTree
from settlement.moves import (
    ChainMove,
    Move,
    accounts_of_moves,
    asset_id,
    net_moves,
    supply_changes,
    to_chain_move,
)
from settlement.reports import ChainEvidence, Report, to_chain_evidence

# What a batch settles: a trade, one posting of a delivery entry, or a delivery report.
Item = Fill | Move | Report


class BatchPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a new batch holds: its fills, moves and evidence leaves, their tree root, the
    settle arguments."""

    fills: list[ChainFill]
    trade_ids: list[str]
    moves: list[ChainMove]
    evidence: list[ChainEvidence]
    fills_root: bytes
    assets: list[int]
    deltas: list[int]
    supply: list[SupplyTuple]
    first_seq: int
    last_seq: int


class Blocked(msgspec.Struct, frozen=True):
    """No more can settle yet: the item at `seq` waits for these accounts' addresses, or
    (a redemption) for the payout of withdrawal `withdrawal_seq`."""

    seq: int
    accounts: list[str]
    withdrawal_seq: int | None = None


def split(items: Sequence[Item]) -> tuple[list[Fill], list[Move], list[Report]]:
    """Return the fills, the moves and the reports of `items`, each in the given order."""
    fills = [item for item in items if isinstance(item, Fill)]
    moves = [item for item in items if isinstance(item, Move)]
    return fills, moves, [item for item in items if isinstance(item, Report)]


def entries(items: Sequence[Item]) -> list[list[Item]]:
    """Group items in seq order into entries: a trade alone, or a delivery event's postings
    and report."""
    grouped: list[list[Item]] = []
    for item in items:
        if grouped and grouped[-1][0].seq == item.seq:
            grouped[-1].append(item)
        else:
            grouped.append([item])
    return grouped


def in_seq_order(fills: Sequence[Fill], moves: Sequence[Move], entries_max: int,
                 reports: Sequence[Report] = ()) -> list[Item]:
    """Merge reads after one seq into the items to consider for a batch, in seq order.

    `fills` are up to `entries_max` trades, `moves` the postings of up to `entries_max`
    delivery entries, `reports` up to `entries_max` delivery reports, all read in one
    snapshot. A read that came back full may have left out what lies beyond its last seq,
    so only the seqs every read covers are kept; of those, the first `entries_max` entries.
    Within a seq, moves come before the report.
    """
    bounds: list[int] = []
    if len(fills) == entries_max:
        bounds.append(fills[-1].seq)
    if moves and len(entries(moves)) == entries_max:
        bounds.append(moves[-1].seq)
    if len(reports) == entries_max:
        bounds.append(reports[-1].seq)
    bound = min(bounds, default=None)
    merged: list[Item] = sorted([*fills, *moves, *reports], key=lambda item: item.seq)
    kept = [item for item in merged if bound is None or item.seq <= bound]
    return [item for entry in entries(kept)[:entries_max] for item in entry]


def accounts_to_resolve(items: Sequence[Item]) -> set[str]:
    """Return the accounts of `items` that need a wallet address, the fee account included
    (a report needs none)."""
    fills, moves, _reports = split(items)
    return accounts_of(fills) | accounts_of_moves(moves)


def _assets(entry: Sequence[Item]) -> set[int]:
    return {asset_id(item.asset) if isinstance(item, Move) else token_id(item.instrument)
            for item in entry if not isinstance(item, Report)}


def redeemed_assets(items: Sequence[Item]) -> set[str]:
    """Return the assets (instrument symbols) whose tokens `items` redeem."""
    return {item.asset for item in items if isinstance(item, Move) and item.kind == "redeemed"}


def settleable_prefix(items: Sequence[Item], addresses: Mapping[str, str], *,
                      unpaid_withdrawals: Mapping[str, int] | None = None
                      ) -> tuple[list[Item], Blocked | None]:
    """Return the longest prefix of whole entries of `items` that can settle, and what stops
    the rest. `unpaid_withdrawals` maps an asset to its first withdrawal not paid out yet:
    a redemption burns its tokens, after which the Vault refuses to pay them out, so it
    waits for the earlier withdrawals of its own token (and of no other asset)."""
    unpaid = unpaid_withdrawals or {}
    if FEE_ACCOUNT not in addresses:
        return [], Blocked(items[0].seq if items else 0, [FEE_ACCOUNT])
    prefix: list[Item] = []
    assets = {USDC_ASSET}
    for entry in entries(items):
        seq = entry[0].seq
        missing = sorted(accounts_to_resolve(entry) - addresses.keys())
        if missing:
            return prefix, Blocked(seq, missing)
        waits_for = min((unpaid[asset] for asset in redeemed_assets(entry) if asset in unpaid),
                        default=None)
        if waits_for is not None and waits_for < seq:
            return prefix, Blocked(seq, [], waits_for)
        if len(assets | _assets(entry)) > BATCH_ASSETS_MAX:
            return prefix, None  # the vault takes at most 256 assets (USDC included)
        assets |= _assets(entry)
        prefix.extend(entry)
    return prefix, None


def plan_batch(fills: Sequence[Fill], addresses: Mapping[str, str],
               moves: Sequence[Move] = (), reports: Sequence[Report] = ()) -> BatchPlan:
    """Net `fills` and `moves` (all accounts resolved) into one batch with `reports`'
    evidence leaves."""
    if not fills and not moves and not reports:
        raise ValueError("a batch needs at least one fill, move or report")
    chain_fills = [to_chain_fill(fill, addresses, token_id(fill.instrument)) for fill in fills]
    chain_moves = [to_chain_move(move, addresses) for move in moves]
    evidence = [to_chain_evidence(report) for report in reports]
    totals = net(chain_fills, addresses[FEE_ACCOUNT])
    for key, amount in net_moves(chain_moves).items():
        totals[key] = totals.get(key, 0) + amount
    net_deltas = encode_deltas({key: amount for key, amount in totals.items() if amount != 0},
                               supply_changes(moves))
    check_zero_sum(net_deltas)
    leaves = [*(fill.leaf() for fill in chain_fills), *(move.leaf() for move in chain_moves),
              *(leaf.leaf() for leaf in evidence)]
    tree = MerkleTree(leaves)
    seqs = [*(fill.seq for fill in fills), *(move.seq for move in moves),
            *(report.seq for report in reports)]
    return BatchPlan(fills=chain_fills, trade_ids=[fill.trade_id for fill in fills],
                     moves=chain_moves, evidence=evidence, fills_root=tree.root,
                     assets=net_deltas.assets, deltas=net_deltas.deltas, supply=net_deltas.supply,
                     first_seq=min(seqs), last_seq=max(seqs))
