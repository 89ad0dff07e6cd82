"""Pure settlement logic: Merkle trees and proofs, delta packing, netting, batch cutting."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from settlement.accounts import is_wallet_address
from settlement.batching import Blocked, plan_batch, settleable_prefix
from settlement.chain import token_id
from settlement.fills import (
    DELTA_MAX,
    USDC_ASSET,
    ChainFill,
    Fill,
    check_zero_sum,
    encode_deltas,
    net,
    pack_delta,
    unpack_delta,
)
from settlement.merkle import MerkleTree, hash_pair, leaf_hash, verify

ADDRESSES = [f"0x{index:040x}" for index in range(1, 9)]
FEES = "0x" + "fe" * 20


def leaves(count: int) -> list[bytes]:
    return [leaf_hash(index.to_bytes(32, "big")) for index in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100])
def test_every_leaf_proves_against_the_root(count: int) -> None:
    tree = MerkleTree(leaves(count))
    for index, leaf in enumerate(leaves(count)):
        assert verify(tree.proof(index), tree.root, leaf)
    assert not verify(tree.proof(0), tree.root, leaf_hash(b"not a leaf"))


def test_a_single_leaf_is_its_own_root_and_pairs_hash_sorted() -> None:
    (leaf,) = leaves(1)
    assert MerkleTree([leaf]).root == leaf and MerkleTree([leaf]).proof(0) == []
    low, high = sorted(leaves(2))
    assert hash_pair(high, low) == hash_pair(low, high) == keccak(low + high)


def test_a_proof_of_one_leaf_does_not_prove_another() -> None:
    tree = MerkleTree(leaves(6))
    assert not verify(tree.proof(2), tree.root, leaves(6)[3])


@given(st.sampled_from(ADDRESSES), st.integers(0, 255), st.integers(-DELTA_MAX, DELTA_MAX))
def test_a_packed_delta_unpacks_to_itself(address: str, index: int, delta: int) -> None:
    unpacked = unpack_delta(pack_delta(address, index, delta))
    assert (unpacked[0].lower(), unpacked[1], unpacked[2]) == (address, index, delta)


def test_packing_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError):
        pack_delta(ADDRESSES[0], 256, 1)
    with pytest.raises(ValueError):
        pack_delta(ADDRESSES[0], 0, DELTA_MAX + 1)


fills_strategy = st.lists(
    st.builds(
        ChainFill, seq=st.integers(1, 10**9), trade_id=st.integers(1, 10**9),
        asset=st.sampled_from([token_id("A"), token_id("B"), token_id("C")]),
        price_micro=st.integers(1, 10**9), quantity=st.integers(1, 10**4),
        buyer=st.sampled_from(ADDRESSES), seller=st.sampled_from(ADDRESSES),
        buyer_fee_micro=st.integers(0, 10**6), seller_fee_micro=st.integers(0, 10**6),
    ),
    min_size=1, max_size=60,
)  # fmt: skip


@given(fills_strategy)
def test_net_deltas_sum_to_zero_per_asset_and_match_fill_by_fill_moves(
    fills: list[ChainFill],
) -> None:
    totals = net(fills, FEES)
    net_deltas = encode_deltas(totals)
    check_zero_sum(net_deltas)
    assert net_deltas.assets == sorted(net_deltas.assets)  # USDC (0) first when present
    assert len(net_deltas.deltas) == len(totals) <= len(ADDRESSES) + 1 + 3 * len(ADDRESSES)
    expected: dict[tuple[str, int], int] = {}
    for fill in fills:
        for key, amount in (
            ((fill.buyer, USDC_ASSET), -fill.price_micro * fill.quantity - fill.buyer_fee_micro),
            ((fill.seller, USDC_ASSET), fill.price_micro * fill.quantity - fill.seller_fee_micro),
            ((FEES, USDC_ASSET), fill.buyer_fee_micro + fill.seller_fee_micro),
            ((fill.seller, fill.asset), -fill.quantity),
            ((fill.buyer, fill.asset), fill.quantity),
        ):
            expected[key] = expected.get(key, 0) + amount
    assert totals == {key: value for key, value in expected.items() if value != 0}
    unpacked = {(address.lower(), net_deltas.assets[index]): delta
                for address, index, delta in map(unpack_delta, net_deltas.deltas)}
    assert unpacked == totals


def test_check_zero_sum_refuses_an_unbalanced_asset() -> None:
    net_deltas = encode_deltas({(ADDRESSES[0], USDC_ASSET): -5, (ADDRESSES[1], USDC_ASSET): 4})
    with pytest.raises(ValueError):
        check_zero_sum(net_deltas)


def fill(seq: int, buyer: str, seller: str, instrument: str = "H100") -> Fill:
    return Fill(seq=seq, trade_id=str(seq), instrument=instrument, price_micro=1_000_000,
                quantity=2, buyer=buyer, seller=seller, buyer_fee_micro=200,
                seller_fee_micro=100)


def test_a_batch_stops_before_the_first_trade_of_an_account_without_address() -> None:
    addresses = {"fees": FEES, "alice": ADDRESSES[0], "bob": ADDRESSES[1]}
    fills = [fill(1, "alice", "bob"), fill(2, "bob", "alice"), fill(3, "carol", "bob"),
             fill(4, "alice", "bob")]
    prefix, blocked = settleable_prefix(fills, addresses)
    assert [f.seq for f in prefix] == [1, 2]
    assert blocked == Blocked(3, ["carol"])
    assert settleable_prefix(fills, {"alice": ADDRESSES[0]}) == ([], Blocked(1, ["fees"]))


def test_a_planned_batch_nets_and_roots_its_fills() -> None:
    addresses = {"fees": FEES, "alice": ADDRESSES[0], "bob": ADDRESSES[1]}
    plan = plan_batch([fill(1, "alice", "bob"), fill(2, "alice", "bob", "A100")], addresses)
    assert plan.assets == sorted([USDC_ASSET, token_id("H100"), token_id("A100")])
    assert len(plan.deltas) == 3 + 4
    assert plan.fills_root == MerkleTree([f.leaf() for f in plan.fills]).root
    assert (plan.first_seq, plan.last_seq, plan.trade_ids) == (1, 2, ["1", "2"])


def test_wallet_addresses_are_told_from_named_accounts() -> None:
    assert is_wallet_address("0x" + "aB" * 20)
    assert not is_wallet_address("alice")
    assert not is_wallet_address("0x" + "g" * 40)
    assert not is_wallet_address("0x" + "a" * 39)
