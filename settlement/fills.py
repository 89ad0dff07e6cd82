"""Fills as settlement sees them, their on-chain form, and netting into balance deltas.

Pure: no I/O. A `Fill` is a row of `ledger.trades` (`ledger.reads.TradeRecord`); with the
wallet addresses of its buyer and seller it becomes a `ChainFill`, whose ABI encoding is the
Merkle leaf of the batch.
Netting turns a batch of fills into one signed delta per (address, asset): the buyer pays
notional plus its fee, the seller receives notional minus its fee, the fees go to the fee
account's address, and the tokens move from seller to buyer; each asset sums to zero. A batch
that also carries delivery moves (`settlement.moves`) may mint and burn tokens: its deltas of
such a token sum to the declared supply change (`SupplyChange`) instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import msgspec
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address

from ledger.reads import TradeRecord
from protocol import FEE_ACCOUNT
from settlement.chain import token_id
from settlement.merkle import leaf_hash

USDC_ASSET: Final = 0
DELTA_BITS: Final = 88
DELTA_MAX: Final = 2 ** (DELTA_BITS - 1) - 1
ASSET_INDEX_MAX: Final = 255
BATCH_ASSETS_MAX: Final = 256
LEAF_TYPES: Final = ["uint256", "uint256", "uint256", "uint256", "uint256", "address",
                     "address", "uint256", "uint256"]  # fmt: skip


Fill = TradeRecord  # a fill as settlement sees it is the ledger's row of `ledger.trades`


class ChainFill(msgspec.Struct, frozen=True, kw_only=True):
    """A fill with its accounts resolved to addresses and its instrument to a token id."""

    seq: int
    trade_id: int
    asset: int
    price_micro: int
    quantity: int
    buyer: str
    seller: str
    buyer_fee_micro: int
    seller_fee_micro: int

    def encode(self) -> bytes:
        """ABI-encode the fields in Solidity's `abi.encode` order of LEAF_TYPES."""
        return abi_encode(LEAF_TYPES, [
            self.seq, self.trade_id, self.asset, self.price_micro, self.quantity,
            to_checksum_address(self.buyer), to_checksum_address(self.seller),
            self.buyer_fee_micro, self.seller_fee_micro,
        ])  # fmt: skip

    def leaf(self) -> bytes:
        return leaf_hash(self.encode())


def to_chain_fill(fill: Fill, addresses: Mapping[str, str], asset: int) -> ChainFill:
    """Resolve a fill's accounts; KeyError names an account without an address."""
    if not fill.trade_id.isdigit():
        raise ValueError(f"trade_id {fill.trade_id!r} is not a decimal counter")
    return ChainFill(
        seq=fill.seq, trade_id=int(fill.trade_id), asset=asset, price_micro=fill.price_micro,
        quantity=fill.quantity, buyer=addresses[fill.buyer], seller=addresses[fill.seller],
        buyer_fee_micro=fill.buyer_fee_micro, seller_fee_micro=fill.seller_fee_micro,
    )  # fmt: skip


def accounts_of(fills: Iterable[Fill]) -> set[str]:
    """Return every account a batch of fills moves value for, the fee account included."""
    accounts = {FEE_ACCOUNT}
    for fill in fills:
        accounts.add(fill.buyer)
        accounts.add(fill.seller)
    return accounts


class SupplyChange(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens of one instrument a batch mints into the Vault's custody (issued at the venue)
    and burns from it (redeemed at close)."""

    symbol: str
    minted: int
    burned: int

    @property
    def asset(self) -> int:
        return token_id(self.symbol)


# `Vault.SupplyChange` as the ABI takes it: (asset index, minted, burned, symbol)
SupplyTuple = tuple[int, int, int, str]


class NetDeltas(msgspec.Struct, frozen=True):
    """The `assets`, packed `deltas` and `supply` arguments of `Vault.settle`."""

    assets: list[int]
    deltas: list[int]
    supply: list[SupplyTuple] = []


def net(fills: Sequence[ChainFill], fee_address: str) -> dict[tuple[str, int], int]:
    """Return the net change per (address, asset) of a batch; zero entries are dropped."""
    totals: dict[tuple[str, int], int] = {}
    fee_address = fee_address.lower()

    def add(address: str, asset: int, amount: int) -> None:
        key = (address.lower(), asset)
        totals[key] = totals.get(key, 0) + amount

    for fill in fills:
        notional = fill.price_micro * fill.quantity
        add(fill.buyer, USDC_ASSET, -(notional + fill.buyer_fee_micro))
        add(fill.seller, USDC_ASSET, notional - fill.seller_fee_micro)
        add(fee_address, USDC_ASSET, fill.buyer_fee_micro + fill.seller_fee_micro)
        add(fill.seller, fill.asset, -fill.quantity)
        add(fill.buyer, fill.asset, fill.quantity)
    return {key: amount for key, amount in totals.items() if amount != 0}


def pack_delta(address: str, asset_index: int, delta: int) -> int:
    """Pack one delta into a word: address (160 bits) | asset index (8) | int88 delta."""
    if not 0 <= asset_index <= ASSET_INDEX_MAX:
        raise ValueError(f"asset index {asset_index} out of 0..{ASSET_INDEX_MAX}")
    if not -DELTA_MAX <= delta <= DELTA_MAX:
        raise ValueError(f"delta {delta} does not fit an int88")
    return (int(address, 16) << 96) | (asset_index << DELTA_BITS) | (delta % (1 << DELTA_BITS))


def unpack_delta(word: int) -> tuple[str, int, int]:
    """Return (address, asset index, delta) of a packed word."""
    raw = word & ((1 << DELTA_BITS) - 1)
    delta = raw - (1 << DELTA_BITS) if raw >> (DELTA_BITS - 1) else raw
    address = to_checksum_address((word >> 96).to_bytes(20, "big"))
    return address, (word >> DELTA_BITS) & 0xFF, delta


def encode_deltas(totals: Mapping[tuple[str, int], int],
                  supply: Sequence[SupplyChange] = ()) -> NetDeltas:
    """Order assets (USDC first, then by id), deltas (by asset, then address) and supply
    changes (by asset), and pack."""
    assets = sorted({asset for _, asset in totals} | {change.asset for change in supply})
    if len(assets) > BATCH_ASSETS_MAX:
        raise ValueError(f"{len(assets)} assets in one batch; at most {BATCH_ASSETS_MAX}")
    index_of = {asset: index for index, asset in enumerate(assets)}
    keys = sorted(totals, key=lambda key: (index_of[key[1]], key[0]))
    deltas = [pack_delta(address, index_of[asset], totals[(address, asset)])
              for address, asset in keys]
    encoded_supply = sorted((index_of[change.asset], change.minted, change.burned, change.symbol)
                            for change in supply)
    return NetDeltas(assets=assets, deltas=deltas, supply=encoded_supply)


def check_zero_sum(net_deltas: NetDeltas) -> None:
    """Raise ValueError unless every asset's deltas sum to its declared supply change (zero
    when none is declared), as the Vault requires."""
    sums = [0] * len(net_deltas.assets)
    for index, minted, burned, _symbol in net_deltas.supply:
        sums[index] -= minted - burned
    for word in net_deltas.deltas:
        _, index, delta = unpack_delta(word)
        sums[index] += delta
    for asset, total in zip(net_deltas.assets, sums, strict=True):
        if total != 0:
            raise ValueError(f"asset {asset} deltas sum to {total} off its supply change")
