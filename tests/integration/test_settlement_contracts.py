"""The settlement contracts on a real anvil: deposits, netted settlement, payouts, refusals,
and Delivery (v2): issued capacity minted into custody, bonds in escrow, redemption."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from eth_account.signers.local import LocalAccount
from web3.logs import DISCARD

from settlement.chain import (
    BOND_ESCROW,
    USDC_ASSET,
    Chain,
    Contracts,
    deploy,
    dev_account,
    token_id,
)
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet, register_capacity
from settlement.errors import DeploymentError, TransactionRevertedError
from settlement.fills import (
    ChainFill,
    SupplyChange,
    check_zero_sum,
    encode_deltas,
    net,
    pack_delta,
)
from settlement.merkle import MerkleTree
from settlement.moves import ZERO_ADDRESS, ChainMove, net_moves
from settlement.testing import assert_reverts

SYMBOL = "H100-SXM-80GB.us-east.2026-01-01T00"


@pytest.fixture(scope="module")
def contracts(eth_rpc_url: str) -> Iterator[Contracts]:
    chain = Chain(eth_rpc_url)
    admin = dev_account(0)
    deployment = deploy(chain, admin, settler=dev_account(1).address, minter=admin.address)
    yield Contracts(chain, deployment)


def test_a_deployment_is_checked_against_the_chain_and_this_builds_sources(
        contracts: Contracts) -> None:
    contracts.check()  # deployed just now, from this build
    assert contracts.deployment.source_hash == contracts.chain.artifacts.source_hash
    for recorded in ("", "0" * 64):  # recorded before the hash was kept; another build
        older = Contracts(contracts.chain, msgspec.structs.replace(
            contracts.deployment, source_hash=recorded))
        with pytest.raises(DeploymentError, match="built from other sources"):
            older.check()
    elsewhere = Contracts(contracts.chain, msgspec.structs.replace(
        contracts.deployment, vault=new_wallet(contracts).address))
    with pytest.raises(DeploymentError, match="no contract code"):
        elsewhere.check()


def fill(seq: int, buyer: str, seller: str, asset: int, price: int, quantity: int,
         buyer_fee: int = 0, seller_fee: int = 0) -> ChainFill:
    return ChainFill(seq=seq, trade_id=seq, asset=asset, price_micro=price, quantity=quantity,
                     buyer=buyer, seller=seller, buyer_fee_micro=buyer_fee,
                     seller_fee_micro=seller_fee)


def funded_pair(contracts: Contracts) -> tuple[LocalAccount, LocalAccount]:
    """A buyer with 1,000 USDC and a seller with 50 GPU-hours of SYMBOL, both deposited."""
    buyer, seller = new_wallet(contracts), new_wallet(contracts)
    deposit_usdc(contracts, buyer, 1_000_000_000)
    deposit_tokens(contracts, dev_account(0), seller, SYMBOL, 50)
    return buyer, seller


def test_deposit_credits_the_depositor_and_names_the_account(contracts: Contracts) -> None:
    wallet = new_wallet(contracts)
    receipt = deposit_usdc(contracts, wallet, 2_500_000, account="alice")
    (event,) = contracts.vault.events.Deposited().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["depositor"] == wallet.address
    assert event["args"]["asset"] == USDC_ASSET
    assert event["args"]["amount"] == 2_500_000
    assert event["args"]["account"] == "alice"
    assert contracts.vault_balance(wallet.address, USDC_ASSET) == 2_500_000
    assert contracts.usdc.functions.balanceOf(contracts.vault.address).call() >= 2_500_000


def test_token_deposit_needs_a_registered_instrument(contracts: Contracts) -> None:
    wallet = new_wallet(contracts)
    deposit_tokens(contracts, dev_account(0), wallet, SYMBOL, 7)
    assert contracts.vault_balance(wallet.address, token_id(SYMBOL)) == 7
    assert contracts.symbol_of(token_id(SYMBOL)) == SYMBOL
    unknown = token_id("never-listed")
    call = contracts.vault.functions.deposit(unknown, 1, "")
    assert_reverts(contracts, call, wallet.address, "UnknownAsset")


def test_tokens_sent_to_the_vault_directly_are_refused(contracts: Contracts) -> None:
    wallet = new_wallet(contracts)
    contracts.chain.transact(
        contracts.gpu_hours.functions.registerCapacity(wallet.address, SYMBOL, 3), dev_account(0)
    )
    call = contracts.gpu_hours.functions.safeTransferFrom(
        wallet.address, contracts.vault.address, token_id(SYMBOL), 1, b""
    )
    assert_reverts(contracts, call, wallet.address, "UnexpectedTokenTransfer")


def test_only_the_minter_registers_capacity_and_holders_redeem(contracts: Contracts) -> None:
    wallet = new_wallet(contracts)
    call = contracts.gpu_hours.functions.registerCapacity(wallet.address, SYMBOL, 5)
    assert_reverts(contracts, call, wallet.address, "AccessControlUnauthorizedAccount")
    contracts.chain.transact(call, dev_account(0))
    contracts.chain.transact(contracts.gpu_hours.functions.redeem(token_id(SYMBOL), 2), wallet)
    assert contracts.gpu_hours.functions.balanceOf(wallet.address, token_id(SYMBOL)).call() == 3


def test_settle_applies_net_deltas_and_records_a_provable_root(contracts: Contracts) -> None:
    buyer, seller = funded_pair(contracts)
    fees = new_wallet(contracts)
    asset = token_id(SYMBOL)
    fills = [fill(1, buyer.address, seller.address, asset, 2_150_000, 10, 4_300, 2_150),
             fill(2, buyer.address, seller.address, asset, 2_200_000, 5, 2_200, 1_100)]
    net_deltas = encode_deltas(net(fills, fees.address))
    tree = MerkleTree([f.leaf() for f in fills])
    call = contracts.vault.functions.settle(101, tree.root, net_deltas.assets, net_deltas.deltas,
                                            [])
    receipt = contracts.chain.transact(call, dev_account(1))
    (event,) = contracts.vault.events.BatchSettled().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["batchId"] == 101 and event["args"]["deltaCount"] == 5
    notional = 10 * 2_150_000 + 5 * 2_200_000
    assert contracts.vault_balance(buyer.address, USDC_ASSET) == 1_000_000_000 - notional - 6_500
    assert contracts.vault_balance(seller.address, USDC_ASSET) == notional - 3_250
    assert contracts.vault_balance(fees.address, USDC_ASSET) == 9_750
    assert contracts.vault_balance(buyer.address, asset) == 15
    assert contracts.vault_balance(seller.address, asset) == 35
    assert contracts.batch_root(101) == tree.root
    for index, settled in enumerate(fills):
        proof = tree.proof(index)
        assert contracts.vault.functions.verifyLeaf(101, proof, settled.leaf()).call()
    assert not contracts.vault.functions.verifyLeaf(102, tree.proof(0), fills[0].leaf()).call()
    wrong = fill(1, buyer.address, seller.address, asset, 2_150_000, 11, 4_300, 2_150)
    assert not contracts.vault.functions.verifyLeaf(101, tree.proof(0), wrong.leaf()).call()


def test_settle_refusals(contracts: Contracts) -> None:
    buyer, seller = funded_pair(contracts)
    asset = token_id(SYMBOL)
    fills = [fill(1, buyer.address, seller.address, asset, 1_000_000, 2)]
    good = encode_deltas(net(fills, seller.address))
    root = MerkleTree([f.leaf() for f in fills]).root
    settler = dev_account(1).address

    def settle(batch_id: int, root: bytes, assets: list[int], deltas: list[int]) -> Any:
        return contracts.vault.functions.settle(batch_id, root, assets, deltas, [])

    assert_reverts(contracts, settle(201, root, good.assets, good.deltas), buyer.address,
                   "AccessControlUnauthorizedAccount")
    contracts.chain.transact(settle(201, root, good.assets, good.deltas), dev_account(1))
    assert_reverts(contracts, settle(201, root, good.assets, good.deltas), settler,
                   "BatchAlreadySettled")
    assert_reverts(contracts, settle(202, b"\0" * 32, good.assets, good.deltas), settler,
                   "EmptyFillsRoot")
    unbalanced = [pack_delta(buyer.address, 0, -5), pack_delta(seller.address, 0, 4)]
    assert_reverts(contracts, settle(203, root, [USDC_ASSET], unbalanced), settler,
                   "DeltasNotZeroSum")
    too_much = contracts.vault_balance(buyer.address, USDC_ASSET) + 1
    overdraft = [pack_delta(buyer.address, 0, -too_much), pack_delta(seller.address, 0, too_much)]
    assert_reverts(contracts, settle(204, root, [USDC_ASSET], overdraft), settler,
                   "InsufficientBalance")
    with pytest.raises(TransactionRevertedError):  # an asset index past the end: a panic
        contracts.chain.transact(settle(205, root, [], good.deltas), dev_account(1))
    assert contracts.batch_root(202) == b"\0" * 32
    assert contracts.batch_root(204) == b"\0" * 32


def test_payout_pays_the_wallet_once_and_never_more_than_the_balance(contracts: Contracts) -> None:
    buyer, seller = funded_pair(contracts)
    payout = contracts.vault.functions.payout
    settler = dev_account(1)
    assert_reverts(contracts, payout(1, buyer.address, USDC_ASSET, 1), buyer.address,
                   "AccessControlUnauthorizedAccount")
    contracts.chain.transact(payout(301, buyer.address, USDC_ASSET, 400_000_000), settler)
    assert contracts.usdc.functions.balanceOf(buyer.address).call() == 400_000_000
    assert contracts.vault_balance(buyer.address, USDC_ASSET) == 600_000_000
    assert_reverts(contracts, payout(301, buyer.address, USDC_ASSET, 1), settler.address,
                   "WithdrawalAlreadyPaid")
    assert_reverts(contracts, payout(302, buyer.address, USDC_ASSET, 600_000_001),
                   settler.address, "InsufficientBalance")
    contracts.chain.transact(payout(303, seller.address, token_id(SYMBOL), 20), settler)
    assert contracts.gpu_hours.functions.balanceOf(seller.address, token_id(SYMBOL)).call() == 20
    assert contracts.vault_balance(seller.address, token_id(SYMBOL)) == 30


# --- Delivery (v2): minting issued capacity, bonds in escrow, redemption -------------------


def custody(contracts: Contracts, asset: int) -> int:
    """What the Vault holds of a GPU-hour token on the token contract itself."""
    return int(contracts.gpu_hours.functions.balanceOf(contracts.vault.address, asset).call())


def settle_with_supply(contracts: Contracts, batch_id: int, moves: list[ChainMove],
                       supply: list[SupplyChange]) -> MerkleTree:
    """Settle `moves` (netted, `@chain` as declared supply) as batch `batch_id`."""
    net_deltas = encode_deltas(net_moves(moves), supply)
    check_zero_sum(net_deltas)
    tree = MerkleTree([move.leaf() for move in moves])
    call = contracts.vault.functions.settle(batch_id, tree.root, net_deltas.assets,
                                            net_deltas.deltas, net_deltas.supply)
    contracts.chain.transact(call, dev_account(1))
    return tree


def move(seq: int, kind: str, account: str, wallet: str, asset: int, amount: int) -> ChainMove:
    return ChainMove(seq=seq, kind=kind, account=account, wallet=wallet, asset=asset,
                     amount=amount)


def issue(seq: int, issuer: str, symbol: str, quantity: int, bond: int) -> list[ChainMove]:
    """The moves of a `capacity_issued` entry of issue "i<seq>"."""
    asset = token_id(symbol)
    return [move(seq, "capacity_issued", f"@bond:i{seq}", BOND_ESCROW, USDC_ASSET, bond),
            move(seq, "capacity_issued", "@chain", ZERO_ADDRESS, asset, -quantity),
            move(seq, "capacity_issued", "op", issuer, USDC_ASSET, -bond),
            move(seq, "capacity_issued", "op", issuer, asset, quantity)]


def test_the_bond_escrow_is_the_vaults_and_pays_out_only_through_a_batch(
    contracts: Contracts,
) -> None:
    assert contracts.vault.functions.BOND_ESCROW().call() == BOND_ESCROW
    issuer, holder = new_wallet(contracts), new_wallet(contracts)
    deposit_usdc(contracts, issuer, 50_000_000)
    symbol = f"{SYMBOL}.escrow"
    settle_with_supply(contracts, 401, issue(1, issuer.address, symbol, 10, 30_000_000),
                       [SupplyChange(symbol=symbol, minted=10, burned=0)])
    escrow_before = contracts.vault_balance(BOND_ESCROW, USDC_ASSET)
    settler = dev_account(1).address
    payout = contracts.vault.functions.payout
    assert_reverts(contracts, payout(402, BOND_ESCROW, USDC_ASSET, 1), settler,
                   "BondEscrowPayout")
    compensation = [move(2, "delivery_settled", "@bond:i1", BOND_ESCROW, USDC_ASSET, -7_500_000),
                    move(2, "delivery_settled", "holder", holder.address, USDC_ASSET, 7_500_000)]
    tree = settle_with_supply(contracts, 403, compensation, [])
    assert contracts.vault_balance(holder.address, USDC_ASSET) == 7_500_000
    assert contracts.vault_balance(BOND_ESCROW, USDC_ASSET) == escrow_before - 7_500_000
    leaf = compensation[1].leaf()
    assert contracts.vault.functions.verifyLeaf(403, tree.proof(1), leaf).call()
    overdrawn = escrow_before  # more than is left in escrow
    net_deltas = encode_deltas(net_moves([
        move(3, "bond_released", "@bond:i1", BOND_ESCROW, USDC_ASSET, -overdrawn),
        move(3, "bond_released", "op", issuer.address, USDC_ASSET, overdrawn)]))
    call = contracts.vault.functions.settle(404, tree.root, net_deltas.assets, net_deltas.deltas,
                                            [])
    assert_reverts(contracts, call, settler, "InsufficientBalance")


def test_a_batch_mints_issued_capacity_into_custody_for_the_issuer(contracts: Contracts) -> None:
    issuer = new_wallet(contracts)
    deposit_usdc(contracts, issuer, 40_000_000)
    symbol = f"{SYMBOL}.mint"
    asset = token_id(symbol)
    assert contracts.symbol_of(asset) == ""
    escrow_before = contracts.vault_balance(BOND_ESCROW, USDC_ASSET)
    moves = issue(5, issuer.address, symbol, 12, 36_000_000)
    tree = settle_with_supply(contracts, 501, moves,
                              [SupplyChange(symbol=symbol, minted=12, burned=0)])
    assert contracts.vault_balance(issuer.address, asset) == 12
    assert contracts.vault_balance(issuer.address, USDC_ASSET) == 4_000_000
    assert contracts.vault_balance(BOND_ESCROW, USDC_ASSET) == escrow_before + 36_000_000
    assert custody(contracts, asset) == 12
    assert contracts.symbol_of(asset) == symbol  # a deposit watcher can name it now
    for index, minted in enumerate(moves):
        assert contracts.vault.functions.verifyLeaf(501, tree.proof(index), minted.leaf()).call()


def test_settle_refuses_supply_changes_that_do_not_match_the_deltas(contracts: Contracts) -> None:
    issuer = new_wallet(contracts)
    deposit_usdc(contracts, issuer, 40_000_000)
    symbol = f"{SYMBOL}.refusals"
    asset = token_id(symbol)
    moves = issue(6, issuer.address, symbol, 4, 0)
    root = MerkleTree([m.leaf() for m in moves]).root
    net_deltas = encode_deltas(net_moves(moves), [SupplyChange(symbol=symbol, minted=4,
                                                               burned=0)])
    index = net_deltas.assets.index(asset)
    settler = dev_account(1).address

    def settle(supply: list[tuple[int, int, int, str]], assets: list[int] | None = None) -> Any:
        return contracts.vault.functions.settle(601, root, assets or net_deltas.assets,
                                                net_deltas.deltas, supply)

    refusals = {
        "DeltasNotZeroSum": [settle([]), settle([(index, 5, 0, symbol)]),
                             settle([(index, 4, 1, symbol)])],
        "SymbolMismatch": [settle([(index, 4, 0, f"{symbol}x")]), settle([(0, 4, 0, "USDC")])],
        "DuplicateSupplyChange": [settle([(index, 4, 0, symbol), (index, 4, 0, symbol)])],
        "ZeroAmount": [settle([(index, 0, 0, symbol)])],
    }
    for error, calls in refusals.items():
        for call in calls:
            assert_reverts(contracts, call, settler, error)
    with pytest.raises(TransactionRevertedError):  # a supply index past the assets: a panic
        contracts.chain.transact(settle([(len(net_deltas.assets), 4, 0, symbol)]),
                                 dev_account(1))
    assert contracts.batch_root(601) == b"\0" * 32
    assert custody(contracts, asset) == 0
    stranger = new_wallet(contracts)
    assert_reverts(contracts, settle(net_deltas.supply), stranger.address,
                   "AccessControlUnauthorizedAccount")


def test_a_redemption_burns_the_tokens_in_custody_and_the_token_is_redeemed_for_good(
    contracts: Contracts,
) -> None:
    issuer, holder = new_wallet(contracts), new_wallet(contracts)
    deposit_usdc(contracts, issuer, 40_000_000)
    deposit_usdc(contracts, holder, 10_000_000)
    symbol = f"{SYMBOL}.redeem"
    asset = token_id(symbol)
    settle_with_supply(contracts, 701, issue(7, issuer.address, symbol, 10, 0),
                       [SupplyChange(symbol=symbol, minted=10, burned=0)])
    # the holder also deposited 3 tokens minted outside the venue, and bought 4 from the issuer
    deposit_tokens(contracts, dev_account(0), holder, symbol, 3)
    trade = [fill(8, holder.address, issuer.address, asset, 1_000_000, 4)]
    trade_deltas = encode_deltas(net(trade, issuer.address))
    contracts.chain.transact(contracts.vault.functions.settle(
        702, MerkleTree([f.leaf() for f in trade]).root, trade_deltas.assets,
        trade_deltas.deltas, []), dev_account(1))
    assert custody(contracts, asset) == 13
    too_much = [move(9, "redeemed", "holder", holder.address, asset, -8),
                move(9, "redeemed", "@chain", ZERO_ADDRESS, asset, 8)]
    net_deltas = encode_deltas(net_moves(too_much), [SupplyChange(symbol=symbol, minted=0,
                                                                  burned=8)])
    call = contracts.vault.functions.settle(703, MerkleTree([m.leaf() for m in too_much]).root,
                                            net_deltas.assets, net_deltas.deltas,
                                            net_deltas.supply)
    assert_reverts(contracts, call, dev_account(1).address, "InsufficientBalance")
    redemption = [move(9, "redeemed", "holder", holder.address, asset, -7),
                  move(9, "redeemed", "op", issuer.address, asset, -6),
                  move(9, "redeemed", "@chain", ZERO_ADDRESS, asset, 13)]
    settle_with_supply(contracts, 704, redemption, [SupplyChange(symbol=symbol, minted=0,
                                                                 burned=13)])
    assert custody(contracts, asset) == 0
    assert contracts.vault_balance(holder.address, asset) == 0
    assert contracts.vault_balance(issuer.address, asset) == 0
    assert contracts.vault.functions.redeemed(asset).call()
    settler = dev_account(1).address
    payout = contracts.vault.functions.payout
    assert_reverts(contracts, payout(705, holder.address, asset, 1), settler, "TokenRedeemed")
    outside = new_wallet(contracts)
    register_capacity(contracts, dev_account(0), outside.address, symbol, 2)
    contracts.chain.transact(
        contracts.gpu_hours.functions.setApprovalForAll(contracts.vault.address, True), outside)
    assert_reverts(contracts, contracts.vault.functions.deposit(asset, 2, ""), outside.address,
                   "TokenRedeemed")
    again = issue(10, issuer.address, symbol, 1, 0)
    again_deltas = encode_deltas(net_moves(again), [SupplyChange(symbol=symbol, minted=1,
                                                                 burned=0)])
    call = contracts.vault.functions.settle(706, MerkleTree([m.leaf() for m in again]).root,
                                            again_deltas.assets, again_deltas.deltas,
                                            again_deltas.supply)
    assert_reverts(contracts, call, settler, "TokenRedeemed")


def test_one_batch_may_issue_and_redeem_the_same_token(contracts: Contracts) -> None:
    issuer = new_wallet(contracts)
    deposit_usdc(contracts, issuer, 10_000_000)
    symbol = f"{SYMBOL}.both"
    asset = token_id(symbol)
    moves = [*issue(11, issuer.address, symbol, 5, 0),
             move(12, "redeemed", "@chain", ZERO_ADDRESS, asset, 5),
             move(12, "redeemed", "op", issuer.address, asset, -5)]
    settle_with_supply(contracts, 801, moves, [SupplyChange(symbol=symbol, minted=5, burned=5)])
    assert custody(contracts, asset) == 0
    assert contracts.vault_balance(issuer.address, asset) == 0
    assert contracts.vault.functions.redeemed(asset).call()
