"""Delivery moves as settlement sees them: bonds, compensation, issued and redeemed tokens.

Pure: no I/O. A `Move` is one posting of a Delivery (v2) entry of the ledger
(`ledger.reads.DeliveryPosting`: `capacity_issued`, `bond_released`, `delivery_settled`,
`redeemed`). With its account resolved to a wallet it becomes a `ChainMove`, whose ABI
encoding is a leaf of the batch beside the fills' leaves.

Where each account's postings land in the Vault:
- a trading account: its wallet address, as in a fill;
- a bond, `@bond:ISSUE_ID`: `BOND_ESCROW`, the one address all bonds are held under (which
  issue a bond move belongs to is in its leaf, and in the ledger);
- `@chain`, the world outside the venue: no balance. Its postings are the tokens a batch
  mints into custody (`capacity_issued`: `@chain` -quantity) or burns from it (`redeemed`:
  `@chain` +total), declared to `Vault.settle` as supply changes; its leaf names the zero
  address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import msgspec
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ledger.journal import BOND_ACCOUNT_PREFIX, CHAIN_ACCOUNT, DELIVERY_ENTRY_KINDS
from ledger.reads import DeliveryPosting
from protocol import USDC
from settlement.chain import BOND_ESCROW, ZERO_ADDRESS, token_id
from settlement.fills import USDC_ASSET, SupplyChange
from settlement.merkle import leaf_hash

# The first word of every move leaf. A fill leaf starts with its seq (below 2**63), so no
# move's encoding can ever equal a fill's.
MOVE_LEAF_TAG: Final = keccak(text="gpux.settlement.delivery-move")
MOVE_LEAF_TYPES: Final = ["bytes32", "uint256", "string", "string", "address", "uint256",
                          "int256"]  # fmt: skip
RESERVED_PREFIX: Final = "@"  # ledger accounts outside the protocol's account alphabet

Move = DeliveryPosting  # a move as settlement sees it is the ledger's posting


class ChainMove(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery posting with its account resolved to a wallet and its asset to an id."""

    seq: int
    kind: str
    account: str
    wallet: str
    asset: int
    amount: int

    def encode(self) -> bytes:
        """ABI-encode the fields in Solidity's `abi.encode` order of MOVE_LEAF_TYPES."""
        return abi_encode(MOVE_LEAF_TYPES, [
            MOVE_LEAF_TAG, self.seq, self.kind, self.account, to_checksum_address(self.wallet),
            self.asset, self.amount,
        ])  # fmt: skip

    def leaf(self) -> bytes:
        return leaf_hash(self.encode())


def asset_id(asset: str) -> int:
    """Return the Vault's id of a ledger asset: 0 for USDC, else the instrument's token id."""
    return USDC_ASSET if asset == USDC else token_id(asset)


def _wallet(move: Move, addresses: Mapping[str, str]) -> str:
    """Return where a move's account lands in the Vault; raise ValueError for a reserved
    account that cannot hold the asset, KeyError for an account without an address."""
    account = move.account
    if account == CHAIN_ACCOUNT:
        if move.asset == USDC:
            raise ValueError(f"seq {move.seq}: USDC posted to {CHAIN_ACCOUNT} by a "
                             f"{move.kind} entry; only tokens are minted or burned")
        return ZERO_ADDRESS
    if account.startswith(BOND_ACCOUNT_PREFIX):
        if move.asset != USDC:
            raise ValueError(f"seq {move.seq}: bond account {account} holds {move.asset}; "
                             "a bond is USDC")
        return BOND_ESCROW
    if account.startswith(RESERVED_PREFIX):
        raise ValueError(f"seq {move.seq}: account {account} settles nowhere on chain")
    return addresses[account]


def to_chain_move(move: Move, addresses: Mapping[str, str]) -> ChainMove:
    """Resolve a move's account; KeyError names an account without an address."""
    if move.kind not in DELIVERY_ENTRY_KINDS:
        raise ValueError(f"seq {move.seq}: {move.kind!r} is not a delivery entry")
    if move.amount == 0:
        raise ValueError(f"seq {move.seq}: a posting of 0 to {move.account}")
    return ChainMove(seq=move.seq, kind=move.kind, account=move.account,
                     wallet=_wallet(move, addresses), asset=asset_id(move.asset),
                     amount=move.amount)


def accounts_of_moves(moves: Iterable[Move]) -> set[str]:
    """Return the trading accounts moves credit or debit (the ones that need an address)."""
    return {move.account for move in moves if not move.account.startswith(RESERVED_PREFIX)}


def net_moves(moves: Sequence[ChainMove]) -> dict[tuple[str, int], int]:
    """Return the net change per (address, asset) of a batch's moves, `@chain` left out (its
    postings are supply changes); zero entries are dropped."""
    totals: dict[tuple[str, int], int] = {}
    for move in moves:
        if move.account == CHAIN_ACCOUNT:
            continue
        key = (move.wallet.lower(), move.asset)
        totals[key] = totals.get(key, 0) + move.amount
    return {key: amount for key, amount in totals.items() if amount != 0}


def supply_changes(moves: Sequence[Move]) -> list[SupplyChange]:
    """Return the tokens the moves mint (`@chain` debited) and burn (`@chain` credited), per
    instrument in the order first met."""
    changes: dict[str, tuple[int, int]] = {}
    for move in moves:
        if move.account != CHAIN_ACCOUNT:
            continue
        minted, burned = changes.get(move.asset, (0, 0))
        if move.amount < 0:
            minted -= move.amount
        else:
            burned += move.amount
        changes[move.asset] = (minted, burned)
    return [SupplyChange(symbol=symbol, minted=minted, burned=burned)
            for symbol, (minted, burned) in changes.items()]
