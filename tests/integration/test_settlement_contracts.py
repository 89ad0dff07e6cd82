"""The settlement contracts on a real anvil: deposits, netted settlement, payouts, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from settlement.chain import USDC_ASSET, Chain, Contracts, deploy, dev_account, token_id
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet
from settlement.errors import TransactionRevertedError
from settlement.fills import ChainFill, encode_deltas, net, pack_delta
from settlement.merkle import MerkleTree

SYMBOL = "H100-SXM-80GB.us-east.2026-01-01T00"


@pytest.fixture(scope="module")
def contracts(eth_rpc_url: str) -> Iterator[Contracts]:
    chain = Chain(eth_rpc_url)
    admin = dev_account(0)
    deployment = deploy(chain, admin, settler=dev_account(1).address, minter=admin.address)
    yield Contracts(chain, deployment)


def error_selector(contracts: Contracts, name: str) -> str:
    for entry in contracts.vault.abi + contracts.gpu_hours.abi:
        if entry["type"] == "error" and entry["name"] == name:
            types = ",".join(item["type"] for item in entry["inputs"])
            return "0x" + keccak(text=f"{name}({types})")[:4].hex()
    raise KeyError(name)


def assert_reverts(contracts: Contracts, call: ContractFunction, sender: str, name: str) -> None:
    """Check that `call` from `sender` reverts with custom error `name` (via eth_call)."""
    with pytest.raises(ContractCustomError) as raised:
        call.call({"from": sender})
    data = raised.value.data if isinstance(raised.value.data, str) else raised.value.args[0]
    assert str(data).startswith(error_selector(contracts, name)), (name, data)


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
